"""Annotation readers: inline cases for every format and quirk, then the real files when present."""

from __future__ import annotations

import math
import pickle
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from mtcnn.config import data_root
from mtcnn.data.annotations import (
    ANNOTATION_FORMATS,
    WIDER_ATTRIBUTES,
    AnnotationError,
    ImageAnnotation,
    ellipses_to_boxes,
    landmarks_68_to_5,
    read_68pt_csv,
    read_annotations,
    read_box_list,
    read_cnn_facepoint,
    read_dlib_xml,
    read_fddb,
    read_voc_dir,
    read_voc_xml,
    read_wider,
    split_by_name,
    write_landmark_sidefile,
    write_wider,
)


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise-equal arrays (NaN equals NaN), same dtype and shape."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


# --------------------------------------------------------------------------------------------
# ImageAnnotation / AnnotationError
# --------------------------------------------------------------------------------------------


def test_image_annotation_coerces_and_validates():
    boxes = np.array([[1, 2, 3, 4]], np.float64)
    rec = ImageAnnotation(path="a.jpg", boxes=boxes, landmarks=np.zeros((1, 0, 2)), ignore=[False])
    assert rec.path == Path("a.jpg") and rec.num_faces == 1 and rec.num_landmarks == 0
    assert rec.boxes.dtype == np.float32 and rec.landmarks.shape == (1, 0, 2) and rec.ignore.dtype == bool
    with pytest.raises(ValueError):
        rec.boxes[0, 0] = 5  # immutable record...
    boxes[0, 0] = 7  # ...without freezing the caller's own array
    empty = ImageAnnotation(path="b.jpg", boxes=np.zeros((0, 4)), landmarks=np.zeros((0, 5, 2)), ignore=np.zeros(0))
    assert empty.num_faces == 0 and empty.landmarks.shape == (0, 5, 2)
    with pytest.raises(ValueError, match=r"boxes must be \[M, 4\]"):
        ImageAnnotation(path="c.jpg", boxes=np.zeros((2, 5)), landmarks=np.zeros((2, 0, 2)), ignore=np.zeros(2))
    with pytest.raises(ValueError, match="landmarks"):
        ImageAnnotation(path="c.jpg", boxes=np.zeros((2, 4)), landmarks=np.zeros((1, 5, 2)), ignore=np.zeros(2))
    with pytest.raises(ValueError, match="ignore"):
        ImageAnnotation(path="c.jpg", boxes=np.zeros((2, 4)), landmarks=np.zeros((2, 0, 2)), ignore=np.zeros(3))
    with pytest.raises(ValueError, match="attribute 'blur'"):
        ImageAnnotation(
            path="c.jpg", boxes=np.zeros((2, 4)), landmarks=np.zeros((2, 0, 2)), ignore=np.zeros(2),
            attributes={"blur": np.zeros(3)},
        )


def test_annotation_error_is_one_line_and_pickles():
    err = AnnotationError("x/y.txt", "bad\nthing", 12)
    assert str(err) == "x/y.txt:12: bad thing" and isinstance(err, ValueError)
    assert str(AnnotationError("x/y.txt", "file not found")) == "x/y.txt: file not found"
    back = pickle.loads(pickle.dumps(err))
    assert (back.file, back.line, back.problem, str(back)) == (err.file, 12, "bad thing", str(err))


# --------------------------------------------------------------------------------------------
# WIDER
# --------------------------------------------------------------------------------------------

WIDER_TEXT = """\
0--Parade/a.jpg
2
10 20 30 40 2 0 1 0 1 0 
5 6 7 8 0 1 0 1 2 1 
0--Parade/b_zero_literature.jpg
0
0 0 0 0 0 0 0 0 0 0 
0--Parade/c_zero_official.jpg
1
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/d.jpg
3
100 100 0 12 0 0 0 0 0 0
1 2 3 4 0 0 0 0 0 0
7 7 20 0 0 0 0 0 0 0
1--Handshaking/e_zero_at_end.jpg
0
0 0 0 0 0 0 0 0 0 0 
"""


def test_read_wider_dummy_lines_invalid_and_conventions(tmp_path):
    f = _write(tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt", WIDER_TEXT)
    recs = read_wider(f, tmp_path / "imgs")
    assert [r.path.relative_to(tmp_path / "imgs").as_posix() for r in recs] == [
        "0--Parade/a.jpg", "0--Parade/b_zero_literature.jpg", "0--Parade/c_zero_official.jpg",
        "1--Handshaking/d.jpg", "1--Handshaking/e_zero_at_end.jpg",
    ]
    assert [r.num_faces for r in recs] == [2, 0, 0, 3, 0]
    a, b, c, d, e = recs
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [5, 6, 12, 14]])  # x2 = x + w
    assert a.boxes.dtype == np.float32 and a.landmarks.shape == (2, 0, 2)
    np.testing.assert_array_equal(a.ignore, [False, True])  # invalid == 1
    np.testing.assert_array_equal(a.attributes["blur"], [2, 0])
    np.testing.assert_array_equal(a.attributes["expression"], [0, 1])
    np.testing.assert_array_equal(a.attributes["illumination"], [1, 0])
    np.testing.assert_array_equal(a.attributes["occlusion"], [1, 2])
    np.testing.assert_array_equal(a.attributes["pose"], [0, 1])
    assert a.attributes["invalid"].dtype == np.int32
    for z in (b, c, e):
        assert z.boxes.shape == (0, 4) and z.ignore.shape == (0,) and z.attributes["blur"].shape == (0,)
    np.testing.assert_array_equal(d.ignore, [True, False, True])  # w <= 0 or h <= 0
    # Default images root: the official WIDER_<split>/images beside wider_face_split.
    assert read_wider(f)[0].path == tmp_path / "WIDER_train" / "images" / "0--Parade" / "a.jpg"


def test_read_wider_count_zero_without_dummy(tmp_path):
    f = _write(tmp_path / "gt.txt", "x/a.jpg\n0\nx/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    assert [r.num_faces for r in read_wider(f, tmp_path)] == [0, 1]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "expected 10 values, got 9"),
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 x 4 0 0 0 0 0 0\n", 4, "'x' is not a number"),
        ("a.jpg\n-1\nb.jpg\n", 2, "negative face count"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n5\n1 2 3 4 0 0 0 0 0 0\n", 5, "announces 5 faces but only 1"),
        ("a.jpg\nthree\n", 2, "expected a face count"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n", 4, "no face-count line"),
        # A count one too small: the extra face line turns up where a path belongs.
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4,
         "expected an image path, got a face line (face count on line 2 too small?)"),
        # A count too large in mid-file: the next path turns up where a face line belongs.
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4, "expected 10 values, got 1: 'b.jpg'"),
        ("a.jpg\n1\n1 2 3 4 0.5 0 0 0 0 0\n", 3, "integers"),
        ("a.jpg\n1\n1 2 nan 4 0 0 0 0 0 0\n", 3, "non-finite"),
    ],
)
def test_read_wider_malformed_names_file_and_line(tmp_path, text, line, fragment):
    f = _write(tmp_path / "gt.txt", text)
    with pytest.raises(AnnotationError) as info:
        read_wider(f, tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{f}:{line}: "), msg
    assert fragment in msg and "\n" not in msg
    assert info.value.line == line


def test_missing_files_raise_file_not_found(tmp_path):
    missing = tmp_path / "nope.txt"
    for reader in (read_wider, read_cnn_facepoint, read_fddb, read_dlib_xml, read_68pt_csv, read_box_list):
        with pytest.raises(AnnotationError, match="file not found") as info:
            reader(missing)
        assert str(info.value) == f"{missing}: file not found"
    with pytest.raises(AnnotationError, match="not found"):
        read_voc_dir(tmp_path / "no_dir")


def _scene_records(root: Path) -> list[ImageAnnotation]:
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 500, (3, 5, 2)).astype(np.float32)
    lm[1] = np.nan  # a face without points
    return [
        ImageAnnotation(
            path=root / "scenes" / "s0.jpg",
            boxes=np.array(
                [[10.1, 20.3, 50.7, 70.9], [0.0, 0.0, 33.3, 1e-3], [1e4 / 3, 7.25, 1e4 / 3 + 0.1, 9.0]], np.float32
            ),
            landmarks=lm,
            ignore=np.array([False, True, False]),
            attributes={"blur": np.array([0, 2, 1]), "invalid": np.array([0, 1, 0])},
        ),
        ImageAnnotation(
            path=root / "scenes" / "s1.jpg", boxes=np.zeros((0, 4)), landmarks=np.zeros((0, 5, 2)), ignore=np.zeros(0)
        ),
        ImageAnnotation(
            path=root / "scenes" / "sub" / "s2.jpg",
            boxes=rng.uniform(0, 1000, (4, 2)).repeat(2, axis=1)[:, [0, 2, 1, 3]] + np.array([0, 0, 17.77, 23.1]),
            landmarks=rng.uniform(0, 1000, (4, 5, 2)),
            ignore=np.zeros(4, bool),
        ),
    ]


def test_write_wider_and_sidefile_round_trip_exactly(tmp_path):
    records = _scene_records(tmp_path)
    gt, side = tmp_path / "out" / "scene_bbx_gt.txt", tmp_path / "out" / "scene_landmarks.txt"
    write_wider(gt, records, tmp_path)
    write_landmark_sidefile(side, records, tmp_path)
    assert not list(gt.parent.glob("*.tmp"))  # the temporary file was renamed away
    back = read_wider(gt, tmp_path, landmarks_path=side)
    assert [r.path for r in back] == [r.path for r in records]
    for orig, new in zip(records, back):
        assert _same(new.boxes, orig.boxes), (orig.boxes, new.boxes)
        assert _same(new.landmarks, orig.landmarks)
        assert _same(new.ignore, orig.ignore)
        for key, value in orig.attributes.items():
            np.testing.assert_array_equal(new.attributes[key], value)
    # Without the side file the same boxes come back with no landmarks.
    plain = read_wider(gt, tmp_path)
    assert plain[0].landmarks.shape == (3, 0, 2) and _same(plain[2].boxes, records[2].boxes)
    # The zero-face record is written the official way (count 1 + the all-zero line).
    assert "scenes/s1.jpg\n1\n0 0 0 0 0 0 0 0 0 0\n" in gt.read_text()
    # The side file is one line per face with finite points: 2 + 0 + 4.
    body = [ln for ln in side.read_text().splitlines() if not ln.startswith("#")]
    assert len(body) == 6 and body[0].split()[:2] == ["scenes/s0.jpg", "0"] and len(body[0].split()) == 12


def test_write_wider_rejects_paths_outside_root_or_with_spaces(tmp_path):
    rec = ImageAnnotation(
        path=tmp_path / "a b.jpg", boxes=np.zeros((0, 4)), landmarks=np.zeros((0, 0, 2)), ignore=np.zeros(0)
    )
    with pytest.raises(ValueError, match="whitespace"):
        write_wider(tmp_path / "gt.txt", [rec], tmp_path)
    with pytest.raises(ValueError, match="not under images_root"):
        write_wider(tmp_path / "gt.txt", [rec], tmp_path / "elsewhere")
    assert not (tmp_path / "gt.txt").exists()


SIDE_GT = "a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\nb.jpg\n1\n0 0 0 0 0 0 0 0 0 0\n"


@pytest.mark.parametrize(
    ("side", "line", "fragment"),
    [
        ("# header\na.jpg 0 1 2 3 4\nzzz.jpg 0 1 2 3 4\n", 3, "not in the box file"),
        ("a.jpg 2 1 2 3 4\n", 1, "face index 2 out of range"),
        ("a.jpg 0 1 2 3 4\n\na.jpg 0 5 6 7 8\n", 3, "already given on line 1"),
        ("a.jpg 0 1 2 3 4\na.jpg 1 1 2\n", 2, "1 points on this line but 2"),
        ("a.jpg 0 1 2 3\n", 1, "expected 'image_relpath face_index"),
        ("a.jpg 0 1 2 3 q\n", 1, "'q' is not a number"),
        ("b.jpg 0 1 2 3 4\n", 1, "out of range: 'b.jpg' has 0 faces"),
    ],
)
def test_landmark_sidefile_errors(tmp_path, side, line, fragment):
    gt = _write(tmp_path / "gt.txt", SIDE_GT)
    sf = _write(tmp_path / "lm.txt", side)
    with pytest.raises(AnnotationError) as info:
        read_wider(gt, tmp_path, landmarks_path=sf)
    assert str(info.value).startswith(f"{sf}:{line}: ") and fragment in str(info.value)


def test_landmark_sidefile_missing_faces_are_nan(tmp_path):
    gt = _write(tmp_path / "gt.txt", SIDE_GT)
    sf = _write(tmp_path / "lm.txt", "a.jpg 1 1.5 2.5 3.5 4.5\n")
    a, b = read_wider(gt, tmp_path, landmarks_path=sf)
    assert a.landmarks.shape == (2, 2, 2) and np.isnan(a.landmarks[0]).all()
    np.testing.assert_array_equal(a.landmarks[1], [[1.5, 2.5], [3.5, 4.5]])
    assert b.landmarks.shape == (0, 2, 2)


# --------------------------------------------------------------------------------------------
# CNN_FacePoint
# --------------------------------------------------------------------------------------------


def test_read_cnn_facepoint_crlf_backslash_and_box_order(tmp_path):
    text = (
        "lfw_5590\\Aaron_Eckhart_0001.jpg 84 161 92 169 106.25 107.75 146.75 112.25 125.25 142.75 "
        "105.25 157.75 139.75 161.75\n"
        "net_7876\\img_1.jpg 10 60 20 90 20 30 50 31 35 50 22 70 48 71\n"
    )
    f = _write(tmp_path / "trainImageList.txt", text, newline="\r\n")
    recs = read_cnn_facepoint(f)
    assert len(recs) == 2 and all(r.num_faces == 1 for r in recs)
    assert recs[0].path == tmp_path / "lfw_5590" / "Aaron_Eckhart_0001.jpg"  # default root: list's folder
    # left, RIGHT, top, BOTTOM -> (left, top, right, bottom)
    np.testing.assert_array_equal(recs[0].boxes, [[84, 92, 161, 169]])
    np.testing.assert_array_equal(recs[1].boxes, [[10, 20, 60, 90]])
    np.testing.assert_array_equal(
        recs[0].landmarks[0], [[106.25, 107.75], [146.75, 112.25], [125.25, 142.75], [105.25, 157.75], [139.75, 161.75]]
    )
    assert recs[0].landmarks.dtype == np.float32 and recs[0].landmarks.shape == (1, 5, 2)
    assert read_cnn_facepoint(f, tmp_path / "x")[1].path == tmp_path / "x" / "net_7876" / "img_1.jpg"


def test_read_cnn_facepoint_malformed_line(tmp_path):
    good = "a\\b.jpg 1 2 3 4 " + " ".join(["1"] * 10)
    f = _write(tmp_path / "l.txt", f"{good}\n{good}\na\\c.jpg 1 2 3\n", newline="\r\n")
    with pytest.raises(AnnotationError, match=r"l\.txt:3: .*15 values"):
        read_cnn_facepoint(f)


# --------------------------------------------------------------------------------------------
# FDDB
# --------------------------------------------------------------------------------------------


def test_ellipse_to_box_hand_computed():
    e = np.array(
        [
            [40.0, 20.0, 0.0, 100.0, 200.0],  # major axis horizontal
            [40.0, 20.0, math.pi / 2, 100.0, 200.0],  # major axis vertical (upright face)
            [2.0, 1.0, math.pi / 4, 0.0, 0.0],  # half extents sqrt(4/2 + 1/2) = sqrt(2.5)
        ]
    )
    boxes = ellipses_to_boxes(e)
    np.testing.assert_allclose(boxes[0], [60, 180, 140, 220], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [80, 160, 120, 240], atol=1e-4)
    r = math.sqrt(2.5)
    np.testing.assert_allclose(boxes[2], [-r, -r, r, r], atol=1e-6)


FDDB_FOLD = """\
2002/08/11/big/img_591
1
40.0 20.0 1.5707963267948966 100.0 200.0  1
2002/08/26/big/img_265
2
40.0 20.0 0.0 100.0 200.0  1
10 10 0 50 50 1
"""


def test_read_fddb_file_and_folder(tmp_path):
    folds = tmp_path / "FDDB-folds"
    _write(folds / "FDDB-fold-02-ellipseList.txt", "2003/01/01/big/img_9\n1\n5 5 0 20 20 1\n")
    f1 = _write(folds / "FDDB-fold-01-ellipseList.txt", FDDB_FOLD)
    _write(folds / "FDDB-fold-01.txt", "2002/08/11/big/img_591\n")  # not an ellipse list: skipped
    one = read_fddb(f1, tmp_path / "pics")
    assert [r.num_faces for r in one] == [1, 2]
    assert one[0].path == tmp_path / "pics" / "2002/08/11/big/img_591.jpg"
    np.testing.assert_allclose(one[0].boxes, [[80, 160, 120, 240]], atol=1e-4)
    np.testing.assert_allclose(one[1].boxes, [[60, 180, 140, 220], [40, 40, 60, 60]], atol=1e-4)
    assert one[1].attributes["ellipses"].shape == (2, 5) and one[1].attributes["ellipses"].dtype == np.float32
    np.testing.assert_allclose(one[1].attributes["ellipses"][1], [10, 10, 0, 50, 50])
    both = read_fddb(folds)  # folder: folds in sorted order, default root originalPics
    assert [r.path.name for r in both] == ["img_591.jpg", "img_265.jpg", "img_9.jpg"]
    assert both[0].path.parent.parent.parent.parent.parent == tmp_path / "originalPics"


def test_read_fddb_malformed(tmp_path):
    f = _write(tmp_path / "FDDB-fold-01-ellipseList.txt", "a\n2\n1 1 0 5 5 1\n1 1 0 5 1\n")
    with pytest.raises(AnnotationError, match=r"FDDB-fold-01-ellipseList\.txt:4: .*6 values"):
        read_fddb(f)
    f2 = _write(tmp_path / "x-ellipseList.txt", "a\n3\n1 1 0 5 5 1\n")
    with pytest.raises(AnnotationError, match=r":2: .*announces 3 faces"):
        read_fddb(f2)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(AnnotationError, match="no FDDB-fold"):
        read_fddb(tmp_path / "empty_dir")


# --------------------------------------------------------------------------------------------
# dlib XML
# --------------------------------------------------------------------------------------------

DLIB_XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset>
<images>
  <image file='a.jpg' width='500' height='375'>
    <box top='90' left='194' width='37' height='36'>
      <part name='00' x='195' y='100'/>
      <part name='01' x='196' y='110'/>
      <part name='02' x='197' y='120'/>
    </box>
    <box top='10' left='20' width='30' height='40' ignore='1'/>
  </image>
  <image file='sub/b.jpg'>
    <box top='1' left='2' width='3' height='4'/>
  </image>
  <image file='c.jpg'/>
</images>
</dataset>
"""


def test_read_dlib_xml(tmp_path):
    f = _write(tmp_path / "training.xml", DLIB_XML)
    a, b, c = read_dlib_xml(f)
    assert a.path == tmp_path / "a.jpg" and (a.width, a.height) == (500, 375)
    np.testing.assert_array_equal(a.boxes, [[194, 90, 231, 126], [20, 10, 50, 50]])  # x2 = left + width
    np.testing.assert_array_equal(a.ignore, [False, True])
    assert a.landmarks.shape == (2, 3, 2)
    np.testing.assert_array_equal(a.landmarks[0], [[195, 100], [196, 110], [197, 120]])
    assert np.isnan(a.landmarks[1]).all()  # a box without parts in an image whose boxes have them
    assert b.landmarks.shape == (1, 0, 2) and (b.width, b.height) == (0, 0)
    assert c.num_faces == 0 and c.boxes.shape == (0, 4)


def test_read_dlib_xml_errors(tmp_path):
    box = "<box top='1' left='x' width='2' height='2'/>"
    f = _write(tmp_path / "bad.xml", f"<dataset><images><image file='a.jpg'>{box}</image></images></dataset>")
    with pytest.raises(AnnotationError, match=r"bad\.xml: image 'a\.jpg' box #1: attribute left='x' is not a number"):
        read_dlib_xml(f)
    g = _write(tmp_path / "broken.xml", "<dataset>\n<images>\n<image file='a.jpg'>\n</dataset>\n")
    with pytest.raises(AnnotationError, match=r"broken\.xml:4: XML parse error"):
        read_dlib_xml(g)


# --------------------------------------------------------------------------------------------
# PASCAL VOC (face_mask)
# --------------------------------------------------------------------------------------------


def _voc(filename: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{1 if n == 'hard' else 0}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><folder>images</folder><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_read_voc_clips_past_edge_and_keeps_names(tmp_path):
    ann = tmp_path / "annotations"
    _write(ann / "m1.xml", _voc(
        "m1.jpg", 400, 267, [("with_mask", (381, 14, 401, 34)), ("without_mask", (5, 6, 20, 268))]
    ))
    _write(ann / "m0.xml", _voc(
        "m0.jpg", 100, 80, [("mask_weared_incorrect", (1, 2, 30, 40)), ("hard", (50, 50, 60, 60))]
    ))
    _write(ann / "m2.xml", _voc("m2.jpg", 50, 50, []))
    recs = read_voc_dir(ann)
    assert [r.path for r in recs] == [tmp_path / "images" / f"m{i}.jpg" for i in range(3)]  # sorted, default images/
    m0, m1, m2 = recs
    np.testing.assert_array_equal(m1.boxes, [[381, 14, 400, 34], [5, 6, 20, 267]])  # clipped to the image
    assert (m1.width, m1.height) == (400, 267)
    assert list(m1.attributes["names"]) == ["with_mask", "without_mask"]
    assert list(m0.attributes["names"]) == ["mask_weared_incorrect", "hard"]
    np.testing.assert_array_equal(m0.ignore, [False, True])  # <difficult>1
    assert m2.num_faces == 0 and m2.attributes["names"].shape == (0,)
    single = read_voc_xml(ann / "m1.xml", tmp_path / "elsewhere")
    assert single.path == tmp_path / "elsewhere" / "m1.jpg" and _same(single.boxes, m1.boxes)
    via = read_annotations(ann, "voc", tmp_path / "imgs")
    assert len(via) == 3 and via[0].path == tmp_path / "imgs" / "m0.jpg"


def test_read_voc_errors(tmp_path):
    size = "<size><width>10</width><height>10</height></size>"
    f = _write(tmp_path / "a" / "x.xml", f"<annotation>{size}<object><name>with_mask</name></object></annotation>")
    with pytest.raises(AnnotationError, match=r"x\.xml: object #1 \(with_mask\): no <bndbox>"):
        read_voc_xml(f)
    text = _voc("y.jpg", 10, 10, [("with_mask", (1, 2, 3, 4))]).replace("<ymin>2<", "<ymin>two<")
    g = _write(tmp_path / "a" / "y.xml", text)
    with pytest.raises(AnnotationError, match=r"y\.xml: .*'two' is not a number"):
        read_voc_xml(g)


# --------------------------------------------------------------------------------------------
# 68-point CSV
# --------------------------------------------------------------------------------------------


def test_read_68pt_csv_tight_box(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.uniform(10, 90, (2, 68, 2)).round(1)
    header = "," + ",".join(str(i) for i in range(136))
    rows = [f"face_{k}.jpg," + ",".join(f"{v:g}" for v in pts[k].reshape(-1)) for k in range(2)]
    (tmp_path / "training").mkdir()
    f = _write(tmp_path / "training_frames_keypoints.csv", "\n".join([header, *rows]) + "\n")
    recs = read_68pt_csv(f)
    assert [r.path for r in recs] == [tmp_path / "training" / "face_0.jpg", tmp_path / "training" / "face_1.jpg"]
    for r, p in zip(recs, pts):
        assert r.landmarks.shape == (1, 68, 2)
        np.testing.assert_allclose(r.landmarks[0], p, rtol=1e-6)
        np.testing.assert_allclose(r.boxes[0], [p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], rtol=1e-6)
    bad = _write(tmp_path / "bad.csv", "\n".join([header, rows[0], rows[1].rsplit(",", 1)[0]]) + "\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:3: expected name \+ 136 coordinates, got 135"):
        read_68pt_csv(bad)


def test_landmarks_68_to_5():
    p = np.zeros((2, 68, 2), np.float32)
    p[:, 36:42] = np.arange(6)[None, :, None] + np.array([[10.0], [20.0]])[:, :, None]  # mean 12.5 / 22.5
    p[:, 42:48] = 100.0
    p[:, 30] = (50, 60)
    p[:, 48] = (30, 80)
    p[:, 54] = (70, 81)
    five = landmarks_68_to_5(p)
    assert five.shape == (2, 5, 2) and five.dtype == np.float32
    np.testing.assert_allclose(five[0], [[12.5, 12.5], [100, 100], [50, 60], [30, 80], [70, 81]])
    np.testing.assert_allclose(five[1, 0], [22.5, 22.5])
    with pytest.raises(ValueError, match="68, 2"):
        landmarks_68_to_5(np.zeros((1, 5, 2)))


# --------------------------------------------------------------------------------------------
# the project's list format, dispatch, split
# --------------------------------------------------------------------------------------------


def test_read_box_list_merges_by_image(tmp_path):
    text = """\
# own data: path x1 y1 x2 y2 x y x y
b.jpg 1 2 3 4 1.5 2.5 2.5 3.5

a.jpg 10 20 30 40 11 21 12 22
b.jpg 5 6 7 8 5.5 6.5 6 7
/abs/c.jpg 0 0 1 1 0 0 1 1
"""
    recs = read_box_list(_write(tmp_path / "own.txt", text))
    assert [r.path for r in recs] == [tmp_path / "b.jpg", tmp_path / "a.jpg", Path("/abs/c.jpg")]  # first-seen order
    b = recs[0]
    np.testing.assert_array_equal(b.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(b.landmarks, [[[1.5, 2.5], [2.5, 3.5]], [[5.5, 6.5], [6, 7]]])
    assert b.ignore.tolist() == [False, False]
    no_points = read_box_list(_write(tmp_path / "n.txt", "x.jpg 1 2 3 4\n"), tmp_path / "r")
    assert no_points[0].landmarks.shape == (1, 0, 2) and no_points[0].path == tmp_path / "r" / "x.jpg"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a.jpg 1 2 3 4 5 6\n# c\nb.jpg 1 2 3 4\n", 3, "0 landmarks on this line but 1 on line 1"),
        ("a.jpg 1 2 3 4\n\na.jpg 1 2 3\n", 3, "expected 'path x1 y1 x2 y2 [x y]*K', got 4"),
        ("a.jpg 1 2 3 4\na.jpg 1 2 3 4 5\n", 2, "got 6"),
        ("a.jpg 1 2 3 4\na.jpg 1 2 3 four\n", 2, "'four' is not a number"),
        ("a.jpg 5 2 3 4\n", 1, "x2 < x1"),
    ],
)
def test_read_box_list_malformed(tmp_path, text, line, fragment):
    f = _write(tmp_path / "own.txt", text)
    with pytest.raises(AnnotationError) as info:
        read_box_list(f)
    assert str(info.value).startswith(f"{f}:{line}: ") and fragment in str(info.value)


def test_read_annotations_dispatch(tmp_path):
    f = _write(tmp_path / "own.txt", "a.jpg 1 2 3 4\n")
    assert read_annotations(f, "list")[0].num_faces == 1
    g = _write(tmp_path / "gt.txt", WIDER_TEXT)
    assert len(read_annotations(g, "wider", tmp_path)) == 5
    with pytest.raises(AnnotationError) as info:
        read_annotations(f, "kitti")
    msg = str(info.value)
    assert "unknown annotation format 'kitti'" in msg and all(name in msg for name in ANNOTATION_FORMATS)


def test_split_by_name_sorts_file_names_as_strings():
    names = ["3.jpg", "10.jpg", "1.jpg", "2.jpg", "b.jpg", "a.jpg", "20.jpg", "9.jpg", "11.jpg", "c.jpg"]
    recs = [
        ImageAnnotation(path=Path("d") / n, boxes=np.zeros((0, 4)), landmarks=np.zeros((0, 0, 2)), ignore=np.zeros(0))
        for n in names
    ]
    train = [r.path.name for r in split_by_name(recs, "train")]
    val = [r.path.name for r in split_by_name(recs, "val")]
    assert train == ["1.jpg", "10.jpg", "11.jpg", "2.jpg", "20.jpg", "3.jpg", "9.jpg", "a.jpg"]
    assert val == ["b.jpg", "c.jpg"]
    assert len(split_by_name(recs[:7], "train")) == 5  # floor(0.8 * 7)
    with pytest.raises(ValueError):
        split_by_name(recs, "test")


# --------------------------------------------------------------------------------------------
# the real files (skipped when data_root() lacks them)
# --------------------------------------------------------------------------------------------

DATA = data_root()


def _need(rel: str) -> Path:
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"real data not available: {p} is missing (set MTCNN_DATA to the shared data folder)")
    return p


def _jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF header, without decoding the image."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
        assert data[:2] == b"\xff\xd8", f"{path} is not a JPEG"
        i = 2
        while True:
            while i + 9 > len(data):
                more = f.read(1 << 16)
                assert more, f"{path}: no SOF marker"
                data += more
            assert data[i] == 0xFF, f"{path}: bad JPEG marker"
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]


def _totals(recs):
    faces = sum(r.num_faces for r in recs)
    return len(recs), faces, sum(r.num_faces == 0 for r in recs), sum(int(r.ignore.sum()) for r in recs)


def test_real_wider_train_counts_and_speed():
    f = _need("wider_face/wider_face_split/wider_face_train_bbx_gt.txt")
    t0 = time.perf_counter()
    recs = read_wider(f)
    elapsed = time.perf_counter() - t0
    images, faces, empty, ignored = _totals(recs)
    # 159,424 face lines = 159,420 faces + 4 zero-face images written as count 1 + the dummy line.
    assert (images, faces, empty) == (12_880, 159_420, 4)
    assert faces + empty == 159_424
    assert ignored == 2_426  # 2,399 invalid + 27 zero-size (counted independently with awk)
    assert sum(int((r.attributes["invalid"] == 1).sum()) for r in recs) == 2_399
    assert elapsed < 2.0, f"WIDER train took {elapsed:.2f} s"


def test_real_wider_val_matches_official_mat():
    f = _need("wider_face/wider_face_split/wider_face_val_bbx_gt.txt")
    recs = read_wider(f)
    images, faces, empty, ignored = _totals(recs)
    assert (images, faces, empty, ignored) == (3_226, 39_704, 4, 592)
    assert faces + empty == 39_708
    mat_path = _need("wider_face/eval_tools/ground_truth/wider_face_val.mat")
    scipy_io = pytest.importorskip("scipy.io")
    mat = scipy_io.loadmat(str(mat_path))
    by_stem = {r.path.stem: r for r in recs}
    n = 0
    for e in range(len(mat["event_list"])):
        for i in range(len(mat["file_list"][e][0])):
            stem = str(mat["file_list"][e][0][i][0][0])
            xywh = mat["face_bbx_list"][e][0][i][0].astype(np.float64)
            rec = by_stem[stem]
            if (xywh == 0).all():  # the .mat's zero-face marker, too
                assert rec.num_faces == 0
                continue
            expect = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            np.testing.assert_array_equal(rec.boxes, expect.astype(np.float32), err_msg=stem)
            invalid = mat["invalid_label_list"][e][0][i][0].reshape(-1)
            np.testing.assert_array_equal(rec.attributes["invalid"], invalid, err_msg=stem)
            n += 1
    assert n == 3_226 - 4


def test_real_wider_val_round_trips_through_writer(tmp_path):
    f = _need("wider_face/wider_face_split/wider_face_val_bbx_gt.txt")
    recs = read_wider(f, tmp_path)
    out = tmp_path / "val_bbx_gt.txt"
    write_wider(out, recs, tmp_path)
    back = read_wider(out, tmp_path)
    assert len(back) == len(recs)
    for a, b in zip(recs, back):
        assert a.path == b.path and _same(a.boxes, b.boxes) and _same(a.ignore, b.ignore)
        for key in WIDER_ATTRIBUTES:
            assert _same(a.attributes[key], b.attributes[key])


@pytest.mark.parametrize(
    ("name", "count", "lfw"), [("trainImageList.txt", 10_000, 4_151), ("testImageList.txt", 3_466, 1_439)]
)
def test_real_cnn_facepoint(name, count, lfw):
    recs = read_cnn_facepoint(_need(f"cnn_facepoint/{name}"))
    assert len(recs) == count and all(r.num_faces == 1 for r in recs)
    assert sum(r.path.parent.name == "lfw_5590" for r in recs) == lfw
    assert sum(r.path.parent.name == "net_7876" for r in recs) == count - lfw
    boxes = np.concatenate([r.boxes for r in recs])
    pts = np.concatenate([r.landmarks for r in recs])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # README: "Every point lies inside its box and image."
    x, y = pts[..., 0], pts[..., 1]
    b = boxes[:, None, :]
    assert ((x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])).all()
    sizes = np.array([_jpeg_size(r.path) for r in recs], np.float32)  # also proves every image exists
    assert ((x >= 0) & (y >= 0) & (x < sizes[:, None, 0]) & (y < sizes[:, None, 1])).all()
    assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= sizes)).all()
    # Eyes above the mouth, left eye left of the right eye: the point order is the project's.
    assert (pts[:, 0, 0] < pts[:, 1, 0]).mean() > 0.99 and (pts[:, :2, 1].mean(1) < pts[:, 3:, 1].mean(1)).mean() > 0.99


def test_real_face_mask_voc():
    ann = _need("face_mask/annotations")
    recs = read_voc_dir(ann)
    assert (len(recs), sum(r.num_faces for r in recs)) == (853, 4_072)
    assert max(r.num_faces for r in recs) == 115
    names, counts = np.unique(np.concatenate([r.attributes["names"] for r in recs]), return_counts=True)
    expected = {"mask_weared_incorrect": 123, "with_mask": 3_232, "without_mask": 717}
    assert dict(zip(names.tolist(), counts.tolist())) == expected
    sizes = np.array([[r.width, r.height] for r in recs])
    assert (sizes > 0).all()
    for r in recs:
        lo, hi = r.boxes[:, :2], r.boxes[:, 2:]
        assert ((lo >= 0) & (hi <= [r.width, r.height]) & (hi > lo)).all()
    # The 12 raw boxes that end one pixel past the edge now end exactly on it.
    by_stem = {r.path.stem: r for r in recs}
    past = 0
    for xml in sorted(ann.glob("*.xml")):
        root = ET.parse(xml).getroot()
        w = int(root.findtext("size/width"))
        for j, obj in enumerate(root.iter("object")):
            if int(obj.findtext("bndbox/xmax")) > w:
                past += 1
                assert by_stem[xml.stem].boxes[j, 2] == w
    assert past == 12
    assert len(split_by_name(recs, "train")) == 682 and len(split_by_name(recs, "val")) == 171
    first = recs[0]
    assert first.path.is_file() and _jpeg_size(first.path) == (first.width, first.height)


def test_real_fddb():
    recs = read_fddb(_need("fddb/FDDB-folds"))
    assert (len(recs), sum(r.num_faces for r in recs)) == (2_845, 5_171)
    assert all(r.path.suffix == ".jpg" for r in recs)
    assert recs[0].path.as_posix().endswith("originalPics/2002/08/11/big/img_591.jpg")
    e = np.concatenate([r.attributes["ellipses"] for r in recs])
    b = np.concatenate([r.boxes for r in recs])
    assert int((e[:, 0] < e[:, 1]).sum()) == 1  # "major" < "minor" once in the real file
    np.testing.assert_allclose((b[:, :2] + b[:, 2:]) / 2, e[:, 3:5], atol=1e-3)  # centred on the ellipse
    # The box is at least as big as the ellipse's axes along x/y and at most the major axis.
    half = (b[:, 2:] - b[:, :2]) / 2
    lo, hi = e[:, :2].min(axis=1, keepdims=True), e[:, :2].max(axis=1, keepdims=True)
    assert (half >= lo - 1e-3).all() and (half <= hi + 1e-3).all()


@pytest.mark.parametrize(("stem", "images", "boxes", "moved"), [("training", 4, 18, 2), ("testing", 5, 25, 0)])
def test_real_dlib_faces(stem, images, boxes, moved):
    plain = read_dlib_xml(_need(f"dlib_faces/{stem}.xml"))
    marked = read_dlib_xml(_need(f"dlib_faces/{stem}_with_face_landmarks.xml"))
    assert (len(plain), sum(r.num_faces for r in plain)) == (images, boxes)
    assert all(r.landmarks.shape == (r.num_faces, 0, 2) and r.path.is_file() and r.width > 0 for r in plain)
    assert sum(r.num_faces for r in marked) == boxes
    # The landmark files are not a strict superset: in training, 2 boxes of 2008_002079.jpg
    # were moved (by 1 and 6 px) when the points were added.
    assert [p.path for p in plain] == [m.path for m in marked]
    shift = np.concatenate([np.abs(p.boxes - m.boxes).max(axis=1) for p, m in zip(plain, marked)])
    assert int((shift > 0).sum()) == moved and shift.max() <= 6
    for m in marked:
        assert m.landmarks.shape == (m.num_faces, 68, 2) and np.isfinite(m.landmarks).all() and not m.ignore.any()
        five = landmarks_68_to_5(m.landmarks)
        assert (five[:, 0, 0] < five[:, 1, 0]).all()  # iBUG 36-41 is the image-left eye
        x, y = five[..., 0], five[..., 1]
        b = m.boxes[:, None, :]
        assert ((x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])).all()


@pytest.mark.parametrize(("split", "rows", "outside"), [("training", 3_462, 6), ("test", 770, 0)])
def test_real_udacity68(split, rows, outside):
    recs = read_68pt_csv(_need(f"udacity68/{split}_frames_keypoints.csv"))
    assert len(recs) == rows and all(r.landmarks.shape == (1, 68, 2) for r in recs)
    assert all(r.path.parent.name == split for r in recs)
    sizes = np.array([_jpeg_size(r.path) for r in recs], np.float32)
    pts = np.concatenate([r.landmarks for r in recs])
    ok = (pts[..., 0] >= 0) & (pts[..., 1] >= 0) & (pts[..., 0] < sizes[:, None, 0]) & (pts[..., 1] < sizes[:, None, 1])
    assert int((~ok.all(axis=1)).sum()) == outside  # README: 6 training rows have points slightly outside
    boxes = np.concatenate([r.boxes for r in recs])
    np.testing.assert_array_equal(boxes[:, :2], pts.min(axis=1))
    np.testing.assert_array_equal(boxes[:, 2:], pts.max(axis=1))
