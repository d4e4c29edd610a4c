"""The comparison table's figures against hand-counted cases."""

import numpy as np

from mtcnn.data.annotations import ImageAnnotation
from mtcnn.eval.model_table import detection_rows, markdown_table


def _record(boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageAnnotation("x.jpg", boxes, np.zeros((len(boxes), 0, 2), np.float32), np.zeros(len(boxes), bool))


def _dets(boxes, scores):
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


def test_small_and_large_face_recall_are_counted_apart():
    # One 10 px face (found) and two 40 px faces (one found): small recall 1, large 1/2.
    records = [_record([[0, 0, 10, 10], [50, 50, 90, 90], [100, 0, 140, 40]])]
    dets = [_dets([[0, 0, 10, 10], [51, 50, 91, 90], [300, 300, 340, 340]], [0.9, 0.8, 0.7])]
    row = detection_rows("face_mask val", records, dets)
    assert row["recall < 20 px"] == 1.0 and row["faces < 20 px"] == 1
    assert row["recall >= 20 px"] == 0.5 and row["faces >= 20 px"] == 2
    assert row["faces"] == 3 and 0 < row["AP at IoU 0.5"] < 1


def test_dlib_counts_matches_at_iou_03_and_nonface_counts_every_detection():
    # IoU of the shifted box with the face: 60/140 = 0.43 (a hit at 0.3, not at 0.5).
    records = [_record([[0, 0, 10, 10]])]
    row = detection_rows("dlib_faces", records, [_dets([[4, 0, 14, 10], [50, 50, 60, 60]], [0.9, 0.8])])
    assert row == {"recall at IoU 0.3": 1.0, "false positives": 1, "faces": 1}
    empty = [_record([]), _record([])]
    row = detection_rows("nonface_scenes val", empty, [_dets([[0, 0, 5, 5]] * 3, [0.9] * 3), _dets([], [])])
    assert row == {"false positives per image": 1.5, "images": 2}


def test_markdown_table_has_one_column_per_model():
    results = {
        "ours": {"rows": {"dlib_faces": {"recall at IoU 0.3": 1.0, "false positives": 0}}},
        "original": {"rows": {"dlib_faces": {"recall at IoU 0.3": 0.9, "false positives": 2}}},
    }
    lines = markdown_table(results).splitlines()
    assert lines[0] == "| set | figure | ours | original |"
    assert lines[2] == "| dlib_faces | recall at IoU 0.3 | 1.000 | 0.900 |" and lines[3] == "| dlib_faces | false positives | 0 | 2 |"
