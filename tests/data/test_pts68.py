"""iBUG 68-point .pts folders (the 300-W training sets), the 68 -> 5 reduction, WebFaces' partial
5 points, and source configs that load them (``points: five``, ``split_rule: hashed``)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from mtcnn.config.data import SourceConfig
from mtcnn.config.paths import resolve_path, w300_root
from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    five_point_record,
    landmarks_68_to_5,
    read_annotations,
    read_pts,
    read_pts68_dir,
    split_by_hash,
)
from mtcnn.data.generate import GenerationError, load_source

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _points(seed: int = 0) -> np.ndarray:
    """68 distinct 1-based points; the first is (1, 1), the top-left pixel's centre in 300-W."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(2, 200, (68, 2)), 3)
    p[0] = (1, 1)
    return p


def _pts_text(points: np.ndarray, header: bool = True) -> str:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    return f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}" if header else body + "\n"


def _face(folder: Path, stem: str, points: np.ndarray, header: bool = True, image: bytes | None = b"",
          suffix: str = ".png") -> Path:
    """A .pts file and its image: by default bytes of its own (another photo); ``image=None``: none."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is not None:
        (folder / f"{stem}{suffix}").write_bytes(image or PNG_1x1 + stem.encode())
    pts = folder / f"{stem}.pts"
    pts.write_text(_pts_text(points, header))
    return pts


# ---------------------------------------------------------------------------------------------
# one .pts file
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False], ids=["with_header", "bare_lines"])
def test_pts_parses_to_0_based_points(tmp_path, header):
    p = _points()
    pts = _face(tmp_path, "face", p, header=header)
    got = read_pts(pts)
    assert got.shape == (68, 2) and got.dtype == np.float32
    np.testing.assert_array_equal(got[0], [0, 0])  # 1-based (1, 1) -> 0-based (0, 0)
    np.testing.assert_allclose(got, p - 1, atol=1e-4)


def test_hand_written_pts_file(tmp_path):
    lines = ["version: 1", "n_points: 68", "{", "1 1", "10.5 20.25"] + [f"{k + 3} {2 * k + 3}" for k in range(66)] + ["}"]
    f = tmp_path / "hand.pts"
    f.write_text("\r\n".join(lines))  # CRLF and no final line end
    got = read_pts(f)
    np.testing.assert_array_equal(got[:3], [[0, 0], [9.5, 19.25], [2, 2]])
    assert read_pts(f, n_points=None).shape == (68, 2)


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 30 + "1 x\n" + "1 2\n" * 37 + "}\n", 34, "point: 'x' is not a number"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 10 + "1 2 3\n" + "1 2\n" * 57 + "}\n", 14, r"expected a point 'x y' \(2 values\), got 3"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", 2, "n_points: 68 declared, 67 point lines given"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, 71, "no '}' closing the points"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68 + "}\n7 7\n", 73, "text after the closing"),
    ("version: 1\npoints: 68\n{\n" + "1 2\n" * 68 + "}\n", 2, "expected a header line"),
    ("version: 1\nn_points: many\n{\n" + "1 2\n" * 68 + "}\n", 2, "n_points: 'many' is not a point count"),
    ("version: 1\n{\n" + "1 2\n" * 68 + "}\n", 2, "header without 'n_points'"),
    ("1 2\n" * 67, 67, "67 points, expected 68"),
    ("1 2\n" * 40 + "1 nan\n" + "1 2\n" * 27, 41, "non-finite"),
])  # fmt: skip
def test_malformed_pts_is_one_line_naming_file_and_line(tmp_path, text, line, problem):
    f = tmp_path / "bad.pts"
    f.write_text(text)
    with pytest.raises(AnnotationError) as info:
        read_pts(f)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{f}:{line}: ")
    assert __import__("re").search(problem, msg), msg


def test_empty_pts_file(tmp_path):
    f = tmp_path / "empty.pts"
    f.write_text("\n\n")
    with pytest.raises(AnnotationError, match=r"empty\.pts: empty \.pts file"):
        read_pts(f)


# ---------------------------------------------------------------------------------------------
# a folder of images and .pts files
# ---------------------------------------------------------------------------------------------


def test_folder_reader_records_and_format_name(tmp_path):
    a, b = _points(1), _points(2)
    _face(tmp_path, "image_0002", b, header=False, suffix=".jpg")
    _face(tmp_path, "image_0001", a)
    records = read_annotations(tmp_path, "pts68")
    assert [r.path for r in records] == [tmp_path / "image_0001.png", tmp_path / "image_0002.jpg"]
    r = records[0]
    assert r.landmarks.shape == (1, 68, 2) and r.num_faces == 1 and not r.ignore.any()
    np.testing.assert_allclose(r.landmarks[0], a - 1, atol=1e-4)
    np.testing.assert_allclose(r.boxes[0], [*(a - 1).min(axis=0), *(a - 1).max(axis=0)], atol=1e-4)
    assert list(r.attributes["pts"]) == ["image_0001.pts"]
    # one .pts file alone, and images elsewhere
    assert read_pts68_dir(tmp_path / "image_0002.pts")[0].path == tmp_path / "image_0002.jpg"
    other = tmp_path / "imgs"
    other.mkdir()
    (other / "image_0001.png").write_bytes(PNG_1x1 + b"1")
    (other / "image_0002.png").write_bytes(PNG_1x1 + b"2")
    assert [r.path for r in read_pts68_dir(tmp_path, other)] == [other / "image_0001.png", other / "image_0002.png"]


def test_pts_without_image_is_an_error_or_skipped_with_one_counted_line(tmp_path, capsys):
    _face(tmp_path, "image_0001", _points(1))
    _face(tmp_path, "image_0046", _points(2), image=None)
    _face(tmp_path, "image_0050", _points(3), image=None)
    with pytest.raises(AnnotationError, match=r"image_0046\.pts: no image image_0046\.\* in .*missing_images: skip"):
        read_annotations(tmp_path, "pts68")
    records = read_annotations(tmp_path, "pts68", missing_images="skip")
    assert [r.path.name for r in records] == ["image_0001.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 3 .pts files have no image" in err[0] and "image_0046.pts" in err[0]
    with pytest.raises(AnnotationError, match="missing_images='maybe'"):
        read_pts68_dir(tmp_path, missing_images="maybe")
    with pytest.raises(AnnotationError, match="no option missing_images"):
        read_annotations(tmp_path, "list", missing_images="skip")


def test_copies_of_one_photo_become_one_record(tmp_path):
    photo = PNG_1x1 + b"photo 111"  # AFW: one byte-identical copy of the photo per face
    for k, pts in ((1, _points(1)), (2, _points(2)), (10, _points(3))):
        _face(tmp_path, f"111_{k}", pts, image=photo, suffix=".jpg")
    _face(tmp_path, "222_1", _points(4), image=PNG_1x1 + b"photo 222", suffix=".jpg")  # same size, other bytes
    _face(tmp_path, "333_1", _points(5), suffix=".jpg")  # Helen: different crops of one photo
    _face(tmp_path, "333_2", _points(6), suffix=".jpg")
    records = read_pts68_dir(tmp_path)
    assert [(r.path.name, r.num_faces) for r in records] == [("111_1.jpg", 3), ("222_1.jpg", 1), ("333_1.jpg", 1), ("333_2.jpg", 1)]
    assert list(records[0].attributes["pts"]) == ["111_1.pts", "111_2.pts", "111_10.pts"]  # numeric order
    np.testing.assert_allclose(records[0].landmarks[2], _points(3) - 1, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 68 -> 5 and partial 5 points
# ---------------------------------------------------------------------------------------------


def test_68_to_5_equals_hand_computed_means():
    p = np.zeros((1, 68, 2), np.float64)
    p[0, 36:42] = [[10, 20], [12, 18], [15, 18], [18, 20], [15, 22], [12, 22]]  # mean (13.6667, 20)
    p[0, 42:48] = [[40, 21], [43, 19], [46, 19], [49, 21], [46, 23], [43, 24]]  # mean (44.5, 21.1667)
    p[0, 30] = (30, 35)
    p[0, 48] = (20, 50)
    p[0, 54] = (41, 52)
    p[0, 31:36] = 999  # the other nose and mouth points play no part
    p[0, 49:54] = 999
    five = landmarks_68_to_5(p)
    np.testing.assert_allclose(five[0], [[82 / 6, 20], [267 / 6, 127 / 6], [30, 35], [20, 50], [41, 52]], rtol=1e-6)


def test_five_point_record():
    pts = np.tile(np.arange(68, dtype=np.float32)[:, None], (1, 2))[None]
    r = ImageAnnotation(Path("a.png"), [[0, 0, 67, 67]], pts, [False])
    five = five_point_record(r)
    np.testing.assert_array_equal(five.landmarks, landmarks_68_to_5(pts))
    assert five.path == r.path and five.boxes is not None
    assert five_point_record(five) is five
    empty = ImageAnnotation(Path("b.png"), np.zeros((0, 4)), np.zeros((0, 0, 2)), np.zeros(0, bool))
    assert five_point_record(empty).landmarks.shape == (0, 5, 2)
    with pytest.raises(ValueError, match="a.png: 4 points per face"):
        five_point_record(ImageAnnotation(Path("a.png"), [[0, 0, 1, 1]], np.zeros((1, 4, 2)), [False]))


def test_webfaces_partial_five_points(tmp_path):
    gt = tmp_path / "WebFaces_GroundThruth.txt"
    gt.write_text("pic00001.jpg 10 10 20 10 15 15 15 20\npic00001.jpg 40 40 60 41 50 50 50 60\n")
    plain = read_annotations(gt, "webfaces")
    five = read_annotations(gt, "webfaces", five_points=True)
    assert plain[0].num_landmarks == 0
    lm = five[0].landmarks
    assert lm.shape == (2, 5, 2)
    np.testing.assert_array_equal(lm[1, :3], [[40, 40], [60, 41], [50, 50]])
    assert np.isnan(lm[:, 3:]).all() and np.isfinite(lm[:, :3]).all()
    np.testing.assert_array_equal(five[0].boxes, plain[0].boxes)
    np.testing.assert_array_equal(five[0].attributes["points4"][0, 3], [15, 20])  # the mouth centre stays


# ---------------------------------------------------------------------------------------------
# source configs
# ---------------------------------------------------------------------------------------------


def test_w300_placeholder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTCNN_300W", str(tmp_path))
    assert w300_root() == tmp_path
    assert resolve_path("{w300}/lfpw/trainset") == tmp_path / "lfpw" / "trainset"
    monkeypatch.delenv("MTCNN_300W")
    assert w300_root() == Path(__file__).resolve().parents[3] / "300w"


def test_source_config_points_five_hashed_split_and_missing_images(tmp_path, monkeypatch):
    monkeypatch.setenv("MTCNN_300W", str(tmp_path))
    folder = tmp_path / "set"
    for k in range(40):
        _face(folder, f"image_{k:04d}", _points(k))
    _face(folder, "image_9999", _points(99), image=None)
    base = dict(name="set", format="pts68", path="{w300}/set", points="five", split_rule="hashed")
    with pytest.raises(GenerationError, match=r"source 'set': .*image_9999\.pts: no image"):
        load_source(SourceConfig(**base))
    with pytest.raises(GenerationError, match="not found.*MTCNN_300W"):
        load_source(SourceConfig(**{**base, "path": "{w300}/absent"}))
    everything = load_source(SourceConfig(**base, missing_images="skip"))
    val = load_source(SourceConfig(**base, missing_images="skip", split="val"))
    train = load_source(SourceConfig(**base, missing_images="skip", split="train"))
    assert len(everything) == 40 and all(r.landmarks.shape == (1, 5, 2) for r in everything)
    assert sorted(r.path.name for r in train + val) == sorted(r.path.name for r in everything)
    assert [r.path.name for r in val] == [r.path.name for r in split_by_hash(everything, "val")]
    assert all(zlib.crc32(r.path.name.encode()) >= 0.8 * 2**32 for r in val) and 0 < len(val) < 40
    as_is = load_source(SourceConfig(**{**base, "points": "as_is"}, missing_images="skip"))
    assert as_is[0].landmarks.shape == (1, 68, 2)
    with pytest.raises(GenerationError, match=r"points: five.*4 points per face"):
        gt = tmp_path / "list.txt"
        gt.write_text("a.jpg 0 0 10 10 1 1 2 2 3 3 4 4\n")
        load_source(SourceConfig(name="l", format="list", path=str(gt), points="five"))


def test_source_config_webfaces_five_points(tmp_path):
    gt = tmp_path / "WebFaces_GroundThruth.txt"
    gt.write_text("pic00001.jpg 10 10 20 10 15 15 15 20\n")
    recs = load_source(SourceConfig(name="webfaces", format="webfaces", path=str(gt), points="five"))
    assert recs[0].landmarks.shape == (1, 5, 2) and np.isnan(recs[0].landmarks[0, 3:]).all()
    assert load_source(SourceConfig(name="webfaces", format="webfaces", path=str(gt)))[0].num_landmarks == 0


# ---------------------------------------------------------------------------------------------
# the real 300-W training sets (skipped where they are absent)
# ---------------------------------------------------------------------------------------------

REAL_SETS = [("lfpw/trainset", 811, 805, 805), ("helen/trainset", 870, 870, 870), ("afw/afw", 337, 337, 185)]


@pytest.mark.parametrize(("folder", "pts_files", "faces", "images"), REAL_SETS)
def test_real_300w_training_sets(folder, pts_files, faces, images):
    from PIL import Image

    root = w300_root() / folder
    if not root.is_dir():
        pytest.skip(f"300-W training set not found at {root} (set MTCNN_300W; see the data README)")
    assert len(list(root.glob("*.pts"))) == pts_files
    records = read_pts68_dir(root, missing_images="skip")
    assert sum(r.num_faces for r in records) == faces and len(records) == images
    assert all(r.path.is_file() for r in records)
    at_edge = 0
    for r in records:
        with Image.open(r.path) as im:
            w, h = im.size
        p = r.landmarks.reshape(-1, 2)
        # 300-W clamps points to the image in 1-based pixels, [1, W] x [1, H]: 0-based they lie in
        # [0, W - 1] x [0, H - 1], some exactly on that edge (a 0-based file would reach W).
        assert (p >= 0).all() and (p[:, 0] <= w - 1 + 1e-3).all() and (p[:, 1] <= h - 1 + 1e-3).all(), r.path
        at_edge += int(((np.abs(p[:, 0] - (w - 1)) < 1e-3) | (np.abs(p[:, 1] - (h - 1)) < 1e-3)).sum())
    if folder != "afw/afw":
        assert at_edge > 0
    five = np.concatenate([five_point_record(r).landmarks for r in records])
    assert (five[:, 0, 0] < five[:, 1, 0]).mean() > 0.99  # iBUG 36-41 is the image-left eye


def test_boxes_from_points_frame_point_only_faces_like_cnn_facepoint(tmp_path):
    from mtcnn.data.webfaces import PointsToBox, boxes_from_five_points, points5_to_points4

    folder = tmp_path / "set"
    for k in range(3):
        _face(folder, f"image_{k:04d}", _points(k))
    src = dict(name="set", format="pts68", path=str(folder), points="five")
    extent = load_source(SourceConfig(**src))
    framed = load_source(SourceConfig(**src, boxes="from_points"))
    for a, b in zip(extent, framed):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_allclose(b.boxes, PointsToBox()(points5_to_points4(b.landmarks)), rtol=1e-6)
    with pytest.raises(GenerationError, match=r"boxes: from_points.*need the 5-point layout, got 68"):
        load_source(SourceConfig(**{**src, "points": "as_is"}, boxes="from_points"))
    # faces without all five points keep their box
    partial = ImageAnnotation(Path("p.jpg"), [[0, 0, 9, 9], [0, 0, 50, 50]],
                              [[[1, 1], [5, 1], [3, 3], [np.nan, np.nan], [np.nan, np.nan]], FACE5], [False, False])
    out = boxes_from_five_points(partial)
    np.testing.assert_array_equal(out.boxes[0], [0, 0, 9, 9])
    assert not np.allclose(out.boxes[1], [0, 0, 50, 50])


FACE5 = [[20, 20], [40, 20], [30, 30], [22, 40], [38, 40]]


def test_point_offsets_move_the_points_before_their_boxes_are_derived(tmp_path):
    from mtcnn.data.point_definitions import shift_points
    from mtcnn.data.webfaces import PointsToBox, points5_to_points4

    folder = tmp_path / "set"
    for k in range(3):
        _face(folder, f"image_{k:04d}", _points(k))
    offsets = [[0.0, -0.03], [0.0, -0.03], [0.0, 0.02], [0.01, -0.01], [-0.01, -0.01]]
    src = dict(name="set", format="pts68", path=str(folder), points="five", boxes="from_points")
    plain = load_source(SourceConfig(**src))
    moved = load_source(SourceConfig(**src, point_offsets=offsets))
    for a, b in zip(plain, moved):
        np.testing.assert_allclose(b.landmarks, shift_points(a.landmarks, offsets), atol=1e-4)
        assert not np.allclose(a.landmarks, b.landmarks)
        np.testing.assert_allclose(b.boxes, PointsToBox()(points5_to_points4(b.landmarks)), rtol=1e-6)
