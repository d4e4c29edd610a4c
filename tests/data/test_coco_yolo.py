"""The labelling tools' formats: COCO JSON (boxes, named keypoints) and YOLO txt folders.

Files are written here from known boxes with the formats' own arithmetic (COCO ``[x, y, w, h]``
pixels, YOLO centre / size normalised to the image) and must read back to the same boxes. The
CVAT and Label Studio fixtures are small hand-written copies of what those tools export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtcnn.config.data import SourceConfig
from mtcnn.data.annotation_formats import FIVE_POINT_NAMES, read_coco, read_yolo
from mtcnn.data.annotations import AnnotationError, read_annotations
from mtcnn.data.generate import GenerationError, load_source
from mtcnn.io import write_image_rgb

# image name -> (width, height, boxes x1 y1 x2 y2)
BOXES = {
    "a.jpg": (64, 48, [[4.0, 6.0, 20.5, 30.0], [30.25, 2.0, 60.0, 40.75]]),
    "sub/b.png": (40, 80, [[0.0, 0.0, 40.0, 80.0]]),
    "c.jpg": (50, 50, [[10.0, 12.0, 11.5, 13.25]]),
}


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image_rgb(path, np.full((height, width, 3), 128, np.uint8))


def _coco_doc(boxes=BOXES, categories=({"id": 1, "name": "face"},), category_id=1) -> dict:
    doc = {"images": [], "annotations": [], "categories": list(categories)}
    for i, (name, (w, h, bs)) in enumerate(boxes.items(), start=1):
        doc["images"].append({"id": i, "file_name": name, "width": w, "height": h})
        for b in bs:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": category_id,
                                       "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": 0})
    return doc


def _write_json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _yolo_folder(root: Path, boxes=BOXES, cls: int = 0, names: list[str] | None = None) -> Path:
    for name, (w, h, bs) in boxes.items():
        _image(root / "images" / name, w, h)
        label = (root / "labels" / name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{cls} {(b[0] + b[2]) / 2 / w!r} {(b[1] + b[3]) / 2 / h!r} {(b[2] - b[0]) / w!r} {(b[3] - b[1]) / h!r}"
                 for b in bs]
        label.write_text("\n".join(lines) + "\n")
    if names is not None:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def _by_name(records):
    return {r.path.name: r for r in records}


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_coco_round_trip(tmp_path):
    ann = _write_json(tmp_path / "ann" / "instances.json", _coco_doc())
    records = read_annotations(ann, "coco", tmp_path / "photos")
    assert [r.path for r in records] == [tmp_path / "photos" / name for name in BOXES]
    for r, (w, h, boxes) in zip(records, BOXES.values()):
        np.testing.assert_array_equal(r.boxes, np.array(boxes, np.float32))
        assert (r.width, r.height) == (w, h) and r.landmarks.shape == (len(boxes), 0, 2)
        assert not r.ignore.any() and list(r.attributes["names"]) == ["face"] * len(boxes)
    # default images folder: the JSON file's own
    assert read_coco(ann)[0].path == tmp_path / "ann" / "a.jpg"


def test_yolo_round_trip(tmp_path):
    root = _yolo_folder(tmp_path / "ds")
    records = read_annotations(root, "yolo")
    assert [r.path for r in records] == sorted(root / "images" / name for name in BOXES)
    got = {r.path.relative_to(root / "images").as_posix(): r for r in records}
    for name, (w, h, boxes) in BOXES.items():
        r = got[name]
        assert (r.width, r.height) == (w, h)
        np.testing.assert_allclose(r.boxes, np.array(boxes, np.float32), atol=1e-4)
        assert list(r.attributes["names"]) == ["0"] * len(boxes)
    # the images folder itself (or a split inside it) also names the dataset
    assert len(read_yolo(root / "images")) == 3 and len(read_yolo(root / "images" / "sub")) == 1


def test_yolo_size_follows_exif_orientation(tmp_path):
    """Boxes are normalised to the photo as it is shown (and as training reads it): a JPEG stored
    sideways with EXIF orientation 6 is 30 wide and 60 high upright."""
    from PIL import Image

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 30)).save(root / "images" / "rot.jpg", exif=exif.tobytes())
    (root / "labels").mkdir()
    (root / "labels" / "rot.txt").write_text("0 0.5 0.5 1 1\n")
    (r,) = read_yolo(root)
    assert (r.width, r.height) == (30, 60)
    np.testing.assert_allclose(r.boxes, [[0, 0, 30, 60]])


# --------------------------------------------------------------------------------------------
# keypoints, classes, images without faces
# --------------------------------------------------------------------------------------------

THEIR_NAMES = ["chin", "eye_r_subject", "eye_l_subject", "nose_tip", "mouth_r_subject", "mouth_l_subject"]
# the subject's right eye is the image's left one: our left_eye
MAPPING = {"eye_r_subject": "left_eye", "eye_l_subject": "right_eye", "nose_tip": "nose",
           "mouth_r_subject": "left_mouth", "mouth_l_subject": "right_mouth"}


def _keypoint_doc():
    doc = _coco_doc({"a.jpg": BOXES["a.jpg"]}, categories=[{"id": 3, "name": "face", "keypoints": THEIR_NAMES}], category_id=3)
    #                         chin      eye_r_subj   eye_l_subj    nose       mouth_r     mouth_l (not labelled)
    doc["annotations"][0]["keypoints"] = [12, 29, 2, 8, 12, 2, 16, 12, 1, 12, 18, 2, 9, 24, 2, 0, 0, 0]
    return doc


def test_coco_keypoints_map_to_our_five_points(tmp_path):
    ann = _write_json(tmp_path / "kp.json", _keypoint_doc())
    (r,) = read_coco(ann, keypoints=MAPPING)
    assert r.landmarks.shape == (2, 5, 2)
    np.testing.assert_array_equal(r.landmarks[0, :4], [[8, 12], [16, 12], [12, 18], [9, 24]])
    assert np.isnan(r.landmarks[0, 4]).all()  # v = 0: not labelled
    assert np.isnan(r.landmarks[1]).all()  # a face without keypoints
    # without a mapping, names that are not ours give no points (no guessing) ...
    assert read_coco(ann)[0].landmarks.shape == (2, 0, 2)
    # ... and names that are ours map by name
    doc = _keypoint_doc()
    doc["categories"][0]["keypoints"] = ["chin", *FIVE_POINT_NAMES]
    (r,) = read_coco(_write_json(tmp_path / "ours.json", doc))
    np.testing.assert_array_equal(r.landmarks[0, :4], [[8, 12], [16, 12], [12, 18], [9, 24]])
    # a source config carries the mapping through to the reader
    src = SourceConfig(name="mine", format="coco", path=str(ann), keypoints=MAPPING)
    assert load_source(src)[0].landmarks.shape == (2, 5, 2)


@pytest.mark.parametrize("mapping,problem", [
    ({"eye_r_subject": "left_eyes"}, "'eye_r_subject' maps to 'left_eyes', which is not one of left_eye, right_eye"),
    ({"eye_r_subject": "nose", "nose_tip": "nose"}, "'eye_r_subject' and 'nose_tip' both map to 'nose'"),
    ({"leftEye": "left_eye"}, "none of 'leftEye' is a keypoint name of this file (its names: chin, eye_l_subject"),
])
def test_coco_keypoint_mapping_errors(tmp_path, mapping, problem):
    ann = _write_json(tmp_path / "kp.json", _keypoint_doc())
    with pytest.raises(AnnotationError) as info:
        read_coco(ann, keypoints=mapping)
    assert str(info.value) == f"{ann}: keypoints: {problem}" or str(info.value).startswith(f"{ann}: keypoints: {problem}")


def test_class_filter(tmp_path):
    cats = [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}]
    doc = _coco_doc({"a.jpg": BOXES["a.jpg"]}, categories=cats)
    doc["annotations"][1]["category_id"] = 2
    ann = _write_json(tmp_path / "c.json", doc)
    assert read_coco(ann)[0].num_faces == 2
    for classes in (["face"], [1], ["1"]):
        (r,) = read_coco(ann, classes=classes)
        np.testing.assert_array_equal(r.boxes, [BOXES["a.jpg"][2][0]])
    with pytest.raises(AnnotationError, match=r"classes: 'faces' is not a category of this file \(categories: face \(id 1\), person \(id 2\)\)"):
        read_coco(ann, classes=["faces"])

    root = _yolo_folder(tmp_path / "y", {"a.jpg": BOXES["a.jpg"]}, names=["face", "person"])
    label = root / "labels" / "a.txt"
    first, second = label.read_text().splitlines()
    label.write_text(f"{first}\n1{second[1:]}\n")
    assert list(read_yolo(root)[0].attributes["names"]) == ["face", "person"]
    for classes in (["face"], [0], ["0"]):
        (r,) = read_yolo(root, classes=classes)
        np.testing.assert_allclose(r.boxes, [BOXES["a.jpg"][2][0]], atol=1e-4)
    with pytest.raises(AnnotationError, match=r"classes: 'head' is not a class of this dataset \(classes in classes.txt: face \(0\), person \(1\)\)"):
        read_yolo(root, classes=["head"])
    # the names of Ultralytics' data.yaml work the same
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("path: .\nnames:\n  0: face\n  1: person\n")
    assert len(read_yolo(root, classes=["person"])[0].boxes) == 1


def test_images_without_faces_are_negatives_only_when_asked(tmp_path):
    doc = _coco_doc()
    doc["images"].append({"id": 99, "file_name": "empty.jpg", "width": 10, "height": 10})
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 3]  # c.jpg loses its face
    ann = _write_json(tmp_path / "n.json", doc)
    assert [r.path.name for r in read_coco(ann)] == ["a.jpg", "b.png"]
    records = read_coco(ann, unannotated="negatives")
    assert [r.path.name for r in records] == ["a.jpg", "b.png", "c.jpg", "empty.jpg"]
    assert records[2].num_faces == 0 and records[2].boxes.shape == (0, 4)

    root = _yolo_folder(tmp_path / "y")
    (root / "labels" / "c.txt").write_text("")  # an empty label file ...
    _image(root / "images" / "d.jpg", 8, 8)  # ... and an image without one
    assert sorted(r.path.name for r in read_yolo(root)) == ["a.jpg", "b.png"]
    negatives = _by_name(read_yolo(root, unannotated="negatives"))
    assert sorted(negatives) == ["a.jpg", "b.png", "c.jpg", "d.jpg"] and negatives["d.jpg"].num_faces == 0
    # a class filter that removes every box of an image makes it an image without faces
    assert read_yolo(root, classes=["1"]) == []
    # in a source entry, as in the sources: lists of configs
    src = SourceConfig(name="mine", format="yolo", path=str(root), unannotated="negatives")
    assert len(load_source(src)) == 4


# --------------------------------------------------------------------------------------------
# malformed files: one line naming the file, the entry and the problem
# --------------------------------------------------------------------------------------------


def _broken(change):
    doc = _coco_doc()
    change(doc)
    return doc


@pytest.mark.parametrize("doc,expected", [
    ([], "not a COCO file: the top level must be an object with 'images' and 'annotations'"),
    ({"images": []}, "not a COCO file: 'annotations' is missing"),
    (_broken(lambda d: d["annotations"][1].update(bbox=[1, 2, 3])), "annotations[1] (id 2): bbox must be [x, y, width, height] (4 numbers), got [1, 2, 3]"),
    (_broken(lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4])), "annotations[0] (id 1): bbox [1, 2, -3, 4] has a negative width or height"),
    (_broken(lambda d: d["annotations"][2].update(bbox=[1, "2", 3, 4])), "annotations[2] (id 3): bbox must be"),
    (_broken(lambda d: d["annotations"][3].update(image_id=7)), "annotations[3] (id 4): image_id 7 is not in 'images'"),
    (_broken(lambda d: d["annotations"][0].update(category_id=5)), "annotations[0] (id 1): category_id 5 is not in 'categories'"),
    (_broken(lambda d: d["images"][1].pop("file_name")), "images[1] (id 2): needs a 'file_name'"),
    (_broken(lambda d: d["images"][2].update(id=1)), "images[2] (id 1): id 1 is used twice"),
    (_broken(lambda d: d["images"][0].update(width=-5)), "images[0] (id 1): width=-5 is not a size in pixels"),
    (_broken(lambda d: d["categories"].append({"id": 1, "name": "again"})), "categories[1]: id 1 is used twice"),
])
def test_malformed_coco_is_one_line(tmp_path, doc, expected):
    ann = _write_json(tmp_path / "bad.json", doc)
    with pytest.raises(AnnotationError) as info:
        read_coco(ann)
    msg = str(info.value)
    assert msg.startswith(f"{ann}: ") and expected in msg and "\n" not in msg, msg


def test_coco_that_is_not_json_names_the_line(tmp_path):
    ann = tmp_path / "bad.json"
    ann.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(AnnotationError, match=rf"^{ann}:2: not valid JSON: Expecting value"):
        read_coco(ann)
    with pytest.raises(AnnotationError, match="file not found"):
        read_coco(tmp_path / "none.json")


def test_malformed_keypoints_name_the_annotation(tmp_path):
    doc = _keypoint_doc()
    doc["annotations"][0]["keypoints"] = doc["annotations"][0]["keypoints"][:-3]
    ann = _write_json(tmp_path / "kp.json", doc)
    with pytest.raises(AnnotationError) as info:
        read_coco(ann, keypoints=MAPPING)
    assert str(info.value) == (f"{ann}: annotations[0] (id 1): keypoints must be 18 numbers (x, y, v for each of "
                               "category 'face''s 6 names), got 15")


@pytest.mark.parametrize("line,expected", [
    ("0 0.5 0.5 0.2", "expected 'class cx cy w h' (5 values), got 4"),
    ("0 0.5 0.5 0.2 0.2 0.1 0.1", "got 7 (segment polygons and pose keypoints are not read: export boxes)"),
    ("face 0.5 0.5 0.2 0.2", "box: 'face' is not a number"),
    ("1.5 0.5 0.5 0.2 0.2", "class '1.5' is not a class index"),
    ("0 32 24 10 10", "cx cy w h must be normalised to 0..1 of the image (pixels given?)"),
    ("0 0.5 0.5 0 0.2", "box has no area"),
    ("3 0.5 0.5 0.2 0.2", "class 3 is not in classes.txt (2 classes: 0..1)"),
])
def test_malformed_yolo_names_file_and_line(tmp_path, line, expected):
    root = _yolo_folder(tmp_path / "y", names=["face", "person"])
    label = root / "labels" / "a.txt"
    label.write_text(label.read_text() + line + "\n")
    with pytest.raises(AnnotationError) as info:
        read_yolo(root)
    msg = str(info.value)
    assert msg.startswith(f"{label}:3: ") and expected in msg and "\n" not in msg, msg


def test_yolo_folder_problems(tmp_path):
    root = _yolo_folder(tmp_path / "y")
    (root / "labels" / "lost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match=r"lost.txt: label file without an image"):
        read_yolo(root)
    with pytest.raises(AnnotationError, match="no images folder"):
        read_yolo(tmp_path)
    with pytest.raises(AnnotationError, match="folder not found"):
        read_yolo(tmp_path / "nothing")


def test_options_only_where_a_format_has_them(tmp_path):
    lst = tmp_path / "own.txt"
    lst.write_text("a.jpg 1 2 3 4\n")
    with pytest.raises(AnnotationError, match=r"format 'list' has no option classes \(formats with options: coco, yolo"):
        read_annotations(lst, "list", classes=["face"])
    with pytest.raises(AnnotationError, match=r"format 'yolo' has no option keypoints \(it takes classes, unannotated\)"):
        read_annotations(tmp_path, "yolo", keypoints={"a": "nose"})
    src = SourceConfig(name="own", format="list", path=str(lst), unannotated="negatives")
    with pytest.raises(GenerationError, match=r"^source 'own': .*format 'list' has no option unannotated"):
        load_source(src)


# --------------------------------------------------------------------------------------------
# what the labelling tools export (hand-written copies of their layouts)
# --------------------------------------------------------------------------------------------

# CVAT "COCO 1.0" export: annotations/instances_default.json beside images/, ids from 1,
# licenses / info blocks, empty segmentation, per-box attributes.
CVAT_COCO = {
    "licenses": [{"name": "", "id": 0, "url": ""}],
    "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
    "categories": [{"id": 1, "name": "face", "supercategory": ""}, {"id": 2, "name": "hand", "supercategory": ""}],
    "images": [
        {"id": 1, "width": 64, "height": 48, "file_name": "frame_000000.jpg", "license": 0, "flickr_url": "",
         "coco_url": "", "date_captured": 0},
        {"id": 2, "width": 64, "height": 48, "file_name": "frame_000001.jpg", "license": 0, "flickr_url": "",
         "coco_url": "", "date_captured": 0},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [], "area": 396.0, "bbox": [10.5, 8.0, 18.0, 22.0],
         "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [], "area": 100.0, "bbox": [40.0, 30.0, 10.0, 10.0],
         "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [], "area": 50.0, "bbox": [50.0, 2.0, 20.0, 5.0],
         "iscrowd": 1, "attributes": {"occluded": True, "rotation": 0.0}},
    ],
}

# CVAT "COCO Keypoints 1.0": a skeleton category whose points the user named.
CVAT_KEYPOINTS = {
    "licenses": [{"name": "", "id": 0, "url": ""}],
    "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
    "categories": [{"id": 1, "name": "face", "supercategory": "",
                    "keypoints": ["eye left", "eye right", "nose", "mouth left", "mouth right"],
                    "skeleton": [[1, 2], [3, 4], [4, 5]]}],
    "images": [{"id": 1, "width": 64, "height": 48, "file_name": "frame_000000.jpg", "license": 0, "flickr_url": "",
                "coco_url": "", "date_captured": 0}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [], "area": 396.0,
                     "bbox": [10.5, 8.0, 18.0, 22.0], "iscrowd": 0, "attributes": {"occluded": False},
                     "keypoints": [15.0, 15.0, 2, 23.0, 15.0, 2, 19.0, 20.0, 2, 16.0, 25.0, 2, 22.0, 25.0, 1],
                     "num_keypoints": 5}],
}

# Label Studio "COCO" export: result.json beside images/, ids from 0, file names with the upload
# hash under images/, an "ignore" flag, and a photo nobody labelled.
LABEL_STUDIO_COCO = {
    "images": [
        {"width": 64, "height": 48, "id": 0, "file_name": "images/0a1b2c3d-group.jpg"},
        {"width": 64, "height": 48, "id": 1, "file_name": "images/9f8e7d6c-empty.jpg"},
        {"width": 64, "height": 48, "id": 2, "file_name": "/data/upload/3/5e6f7a8b-street.jpg"},
    ],
    "categories": [{"id": 0, "name": "Face"}, {"id": 1, "name": "Person"}],
    "annotations": [
        {"id": 0, "image_id": 0, "category_id": 0, "segmentation": [], "bbox": [4.8, 6.4, 16.0, 19.2], "ignore": 0,
         "iscrowd": 0, "area": 307.2},
        {"id": 1, "image_id": 0, "category_id": 0, "segmentation": [], "bbox": [30.0, 5.0, 12.5, 14.0], "ignore": 1,
         "iscrowd": 0, "area": 175.0},
        {"id": 2, "image_id": 0, "category_id": 1, "segmentation": [], "bbox": [0.0, 0.0, 64.0, 48.0], "ignore": 0,
         "iscrowd": 0, "area": 3072.0},
        {"id": 3, "image_id": 2, "category_id": 0, "segmentation": [], "bbox": [50.0, 30.0, 20.0, 30.0], "ignore": 0,
         "iscrowd": 0, "area": 600.0},
    ],
    "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
             "date_created": "2024-05-02 10:11:12.000000"},
}


def test_cvat_coco_export(tmp_path):
    export = tmp_path / "cvat_task"
    ann = _write_json(export / "annotations" / "instances_default.json", CVAT_COCO)
    _image(export / "images" / "frame_000000.jpg", 64, 48)
    records = read_coco(ann, classes=["face"])  # the images folder beside annotations/ is found
    assert [r.path for r in records] == [export / "images" / "frame_000000.jpg"]
    (r,) = records
    np.testing.assert_array_equal(r.boxes, [[10.5, 8.0, 28.5, 30.0], [50.0, 2.0, 64.0, 7.0]])  # clipped to the image
    assert r.ignore.tolist() == [False, True]  # iscrowd
    assert len(read_coco(ann)[0].boxes) == 3  # every category without a filter

    kp = _write_json(export / "annotations" / "person_keypoints_default.json", CVAT_KEYPOINTS)
    mapping = {"eye left": "left_eye", "eye right": "right_eye", "nose": "nose", "mouth left": "left_mouth",
               "mouth right": "right_mouth"}
    (r,) = read_annotations(kp, "coco", keypoints=mapping)
    np.testing.assert_array_equal(r.landmarks, [[[15, 15], [23, 15], [19, 20], [16, 25], [22, 25]]])


def test_label_studio_coco_export(tmp_path):
    export = tmp_path / "project-1-at-2024-05-02"
    ann = _write_json(export / "result.json", LABEL_STUDIO_COCO)
    records = read_coco(ann, classes=["Face"])
    # the empty photo is left out; the server's upload path is found by its file name
    assert [r.path for r in records] == [export / "images" / "0a1b2c3d-group.jpg", export / "5e6f7a8b-street.jpg"]
    np.testing.assert_allclose(records[0].boxes, [[4.8, 6.4, 20.8, 25.6], [30.0, 5.0, 42.5, 19.0]], rtol=1e-6)
    assert records[0].ignore.tolist() == [False, True]  # Label Studio's ignore flag
    np.testing.assert_array_equal(records[1].boxes, [[50, 30, 64, 48]])
    assert len(read_coco(ann, classes=["Face"], unannotated="negatives")) == 3


def test_evaluate_cli_reads_coco_and_yolo(tmp_path):
    """``tools/evaluate.py detection --format coco --images DIR`` and ``--format yolo``: detections equal
    to the boxes give AP 1."""
    from mtcnn.commands.evaluate import main

    ann = _write_json(tmp_path / "coco.json", _coco_doc())
    root = _yolo_folder(tmp_path / "y")
    dets = tmp_path / "dets.jsonl"
    with open(dets, "w") as f:
        for name, (w, h, boxes) in BOXES.items():
            faces = [{"box": b, "score": 0.9} for b in boxes]
            f.write(json.dumps({"image": name, "width": w, "height": h, "faces": faces}) + "\n")
    common = ["--detections", str(dets), "--no-progress"]
    assert main(["detection", "--format", "coco", "--annotations", str(ann), "--images", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "e1"), "--classes", "face", *common]) == 0
    assert json.loads((tmp_path / "e1" / "report.json").read_text())["ap50"] == 1.0
    assert main(["detection", "--format", "yolo", "--annotations", str(root), "--out", str(tmp_path / "e2"), *common]) == 0
    assert json.loads((tmp_path / "e2" / "report.json").read_text())["ap50"] == pytest.approx(1.0)
