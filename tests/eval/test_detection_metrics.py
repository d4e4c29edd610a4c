"""Generic detection metrics (matching, VOC AP, recall at N FP), FDDB ROC and the plots."""

import json
import math

import cv2
import numpy as np
import pytest

from mtcnn.config import data_root
from mtcnn.eval.detection import (
    ap_at_ious,
    box_iou,
    ellipse_bounding_boxes,
    ellipse_box_overlap,
    evaluate_detections,
    evaluate_fddb,
    load_fddb_folds,
    match_detections,
    voc_ap,
)
from mtcnn.eval.plots import plot_ced, plot_pr_curves, plot_roc


def _gt_box(x, y, s=10.0):
    return [x, y, x + s, y + s]


# ------------------------------------------------------------------ IoU and matching


def test_box_iou_uses_no_plus_one_convention():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 8]], float)
    # 50 / 150 ; identical ; disjoint ; zero-width box
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 1.0, 0.0, 0.0]])


def test_duplicate_detection_is_one_tp_and_one_fp():
    gt = np.array([_gt_box(0, 0)])
    det = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], float)
    res = match_detections(det, np.array([0.6, 0.9]), gt)
    # the higher-scored duplicate (index 1) takes the face, the other is a FP
    assert res.tp.tolist() == [False, True]
    assert res.fp.tolist() == [True, False]
    assert res.gt_index.tolist() == [-1, 0]


def test_each_detection_takes_the_best_unmatched_face():
    gt = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], float)
    # det A overlaps face 0 with IoU .667 and face 1 with .25; det B overlaps face 0 (.43) face 1 (.82)
    det = np.array([[0, 0, 12, 10], [5, 0, 16, 10]], float)
    res = match_detections(det, np.array([0.9, 0.8]), gt)
    assert res.tp.all() and res.gt_index.tolist() == [0, 1]


def test_ignored_face_absorbs_detections_without_tp_or_fp():
    gt = np.array([_gt_box(0, 0), _gt_box(50, 50)])
    ignore = np.array([False, True])
    det = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [51, 50, 61, 60], [100, 100, 110, 110]], float)
    res = match_detections(det, np.array([0.9, 0.8, 0.7, 0.6]), gt, ignore)
    assert res.tp.tolist() == [True, False, False, False]
    assert res.ignored.tolist() == [False, True, True, False]
    assert res.fp.tolist() == [False, False, False, True]

    rep = evaluate_detections([(det, np.array([0.9, 0.8, 0.7, 0.6]))], [(gt, ignore)])
    assert rep.num_gt == 1 and rep.num_ignored == 2 and rep.num_detections == 4
    # the curve only holds the two counted detections: TP then FP
    np.testing.assert_allclose(rep.precision, [1.0, 0.5])
    np.testing.assert_allclose(rep.recall, [1.0, 1.0])
    assert rep.ap == pytest.approx(1.0)


def test_iou_threshold_is_inclusive_and_parametrised():
    gt = np.array([[0, 0, 10, 10]], float)
    det = np.array([[0, 0, 10, 5]], float)  # IoU exactly 0.5
    assert match_detections(det, [1.0], gt, iou_threshold=0.5).tp[0]
    assert match_detections(det, [1.0], gt, iou_threshold=0.51).fp[0]
    aps = ap_at_ious([(det, [1.0])], [gt], (0.5, 0.75))
    assert aps == {0.5: pytest.approx(1.0), 0.75: 0.0}


# ------------------------------------------------------------------ AP, hand-computed


def test_hand_computed_two_image_ap():
    # image 1: faces A, B; image 2: face C  -> 3 faces
    gt = [np.array([_gt_box(0, 0), _gt_box(100, 0)]), np.array([_gt_box(0, 0)])]
    dets = [
        # score .9 hits A (TP), score .8 hits nothing (FP)
        (np.array([[0, 0, 10, 10], [300, 300, 310, 310]], float), np.array([0.9, 0.8])),
        # score .7 hits C (TP)
        (np.array([[1, 1, 11, 11]], float), np.array([0.7])),
    ]
    rep = evaluate_detections(dets, gt)
    # sorted list: TP, FP, TP
    np.testing.assert_allclose(rep.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(rep.recall, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(rep.scores, [0.9, 0.8, 0.7])
    assert rep.tp.tolist() == [1, 1, 2] and rep.fp.tolist() == [0, 1, 1]
    # VOC all-point: envelope over recall = [1, 1, 2/3, 2/3, 0] at mrec = [0, 1/3, 1/3, 2/3, 1]
    # AP = (1/3 - 0) * 1 + (2/3 - 1/3) * 2/3 + (1 - 2/3) * 0 = 1/3 + 2/9 = 5/9
    assert rep.ap == pytest.approx(5 / 9, abs=1e-12)
    assert rep.num_gt == 3 and rep.num_detections == 3
    # recall with at most 0 FP is 1/3, with at most 1 FP it is 2/3
    assert rep.recall_at(0) == pytest.approx(1 / 3)
    assert rep.recall_at(1) == pytest.approx(2 / 3)
    assert rep.recall_at_fp[10] == pytest.approx(2 / 3)
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["ap"] == pytest.approx(5 / 9) and d["recall_at_fp"]["10"] == pytest.approx(2 / 3)


def test_recall_at_fp_counts_false_positives():
    gt = [np.array([_gt_box(20 * i, 0) for i in range(4)])]
    boxes, scores = [], []
    # ranking: TP, FP, FP, TP, FP, TP  (faces 0, 1, 2 found)
    kinds = ["tp", "fp", "fp", "tp", "fp", "tp"]
    face = 0
    for r, kind in enumerate(kinds):
        if kind == "tp":
            boxes.append(_gt_box(20 * face, 0))
            face += 1
        else:
            boxes.append(_gt_box(500 + 30 * r, 500))
        scores.append(1.0 - 0.1 * r)
    rep = evaluate_detections([(np.array(boxes), np.array(scores))], gt, fp_points=(0, 1, 2, 3, 100))
    assert rep.recall_at_fp == {0: 0.25, 1: 0.25, 2: 0.5, 3: 0.75, 100: 0.75}


def test_empty_detections_give_zero_ap():
    gt = [np.array([_gt_box(0, 0)]), np.array([_gt_box(5, 5)])]
    rep = evaluate_detections([np.zeros((0, 5)), (np.zeros((0, 4)), np.zeros(0))], gt)
    assert rep.ap == 0.0 and rep.num_gt == 2 and rep.precision.size == 0
    assert all(v == 0.0 for v in rep.recall_at_fp.values())
    json.dumps(rep.to_dict(), allow_nan=False)


def test_no_ground_truth_has_no_nan():
    dets = [np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.4]])]
    rep = evaluate_detections(dets, [np.zeros((0, 4))])
    assert rep.num_gt == 0 and rep.ap == 0.0
    assert rep.fp.tolist() == [1, 2]
    assert np.all(np.isfinite(rep.precision)) and np.all(np.isfinite(rep.recall))
    np.testing.assert_array_equal(rep.precision, [0.0, 0.0])
    json.dumps(rep.to_dict(), allow_nan=False)


def test_voc_ap_matches_sentinel_definition():
    # perfect ranking reaching full recall
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    # precision envelope: a later higher precision lifts an earlier dip
    assert voc_ap(np.array([0.25, 0.5, 0.75]), np.array([1.0, 0.5, 0.75])) == pytest.approx(
        0.25 * 1.0 + 0.25 * 0.75 + 0.25 * 0.75
    )


def test_worse_boxes_lower_ap_at_strict_iou_only():
    rng = np.random.default_rng(0)
    gt = [np.array([_gt_box(40 * i, 0, 30) for i in range(10)])]
    shifted = gt[0] + np.array([4, 0, 4, 0])  # IoU = 26*30 / (34*30) = 0.765
    dets = [(shifted, rng.random(10))]
    aps = ap_at_ious(dets, gt, (0.5, 0.7, 0.8))
    assert aps[0.5] == pytest.approx(1.0) and aps[0.7] == pytest.approx(1.0) and aps[0.8] == 0.0


# ------------------------------------------------------------------ FDDB


def test_fddb_rasterised_ellipse_vs_its_box_is_pi_over_4():
    ellipses = np.array(
        [
            [40.0, 25.0, 0.0, 100.0, 80.0],  # axis-aligned
            [60.0, 45.0, math.pi / 2, 300.0, 200.0],  # upright face (the FDDB case)
            [33.3, 21.7, 0.0, 450.5, 90.25],  # non-integer geometry
        ]
    )
    boxes = ellipse_bounding_boxes(ellipses)
    np.testing.assert_allclose(boxes[1], [255, 140, 345, 260])
    ov = ellipse_box_overlap(ellipses, boxes, supersample=2)
    diag = np.diag(ov)
    np.testing.assert_allclose(diag, math.pi / 4, rtol=0.01)
    assert np.all(ov[~np.eye(3, dtype=bool)] == 0.0)
    # a box that holds the rotated ellipse: IoU = ellipse area / box area = pi*a*b / box area
    rot = np.array([[50.0, 30.0, 0.7, 200.0, 300.0]])
    big = np.array([[100.0, 200.0, 300.0, 400.0]])
    assert ellipse_box_overlap(rot, big)[0, 0] == pytest.approx(math.pi * 50 * 30 / 200**2, rel=0.01)
    # clipping to the image: the half of the ellipse outside is not counted (area ratio still pi/4)
    half = ellipse_box_overlap(np.array([[40.0, 40.0, 0.0, 0.0, 50.0]]), np.array([[-40, 10, 40, 90]]), image_size=(100, 100))
    assert half[0, 0] == pytest.approx(math.pi / 4, rel=0.02)


def test_fddb_perfect_detections_tpr_one_at_zero_fp():
    ellipses = [
        np.array([[40.0, 25.0, math.pi / 2, 100.0, 80.0], [30.0, 20.0, 1.4, 200.0, 90.0]]),
        np.array([[50.0, 35.0, -1.5, 120.0, 150.0]]),
        np.zeros((0, 5)),
    ]
    dets = []
    rng = np.random.default_rng(3)
    for e in ellipses:
        b = ellipse_bounding_boxes(e)
        dets.append((b, rng.uniform(0.5, 1.0, len(b))))
    # image 3 has no face: one false positive with the lowest score
    dets[2] = (np.array([[0.0, 0.0, 30.0, 30.0]]), np.array([0.1]))
    rep = evaluate_fddb(dets, ellipses)
    assert rep.num_faces == 3
    assert rep.tpr_at_fp(0) == pytest.approx(1.0)
    assert rep.fp[-1] == 1 and rep.tp_discrete[-1] == 3
    # continuous TPR is the mean overlap of the matched pairs (~pi/4 for bounding boxes)
    assert rep.tpr_at_fp(0, continuous=True) == pytest.approx(math.pi / 4, rel=0.03)
    np.testing.assert_array_equal(rep.thresholds, np.sort(rep.thresholds)[::-1])
    json.dumps(rep.to_dict(), allow_nan=False)


def test_fddb_assignment_is_one_to_one_and_counts_misses():
    e = np.array([[40.0, 25.0, math.pi / 2, 100.0, 80.0]])
    b = ellipse_bounding_boxes(e)[0]
    # two detections on one face: only one can be matched, the other is a FP
    dets = [(np.array([b, b + 2]), np.array([0.9, 0.8])), (np.array([[0, 0, 5, 5.0]]), np.array([0.7]))]
    ells = [e, np.array([[20.0, 15.0, 1.5, 300.0, 300.0]])]
    rep = evaluate_fddb(dets, ells)
    assert rep.num_faces == 2
    np.testing.assert_allclose(rep.thresholds, [0.9, 0.8, 0.7])
    assert rep.tp_discrete.tolist() == [1, 1, 1]
    assert rep.fp.tolist() == [0, 1, 2]
    assert rep.tpr_at_fp(2000) == pytest.approx(0.5)
    assert rep.tpr_at_fp(0) == pytest.approx(0.5)


def test_fddb_real_folds_perfect_boxes():
    folds = data_root() / "fddb" / "FDDB-folds"
    if not (folds / "FDDB-fold-01-ellipseList.txt").is_file():
        pytest.skip(f"FDDB annotations not found under {folds} (set MTCNN_DATA)")
    ells = load_fddb_folds(folds, folds=(1, 2))
    rng = np.random.default_rng(0)
    dets = {n: (ellipse_bounding_boxes(v), rng.random(len(v))) for n, v in ells.items()}
    rep = evaluate_fddb(dets, ells)
    assert rep.num_faces == sum(len(v) for v in ells.values())
    assert rep.tpr_at_fp(0) == pytest.approx(1.0)
    assert rep.fp.max() == 0


# ------------------------------------------------------------------ plots


def _check_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    img = cv2.imread(str(path))
    assert img is not None and img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 1.0  # not a blank canvas
    assert not list(path.parent.glob(".*tmp*"))  # no temporary left behind


def test_plots_write_valid_pngs(tmp_path):
    settings = {"min_face": 20, "factor": 0.709, "thresholds": (0.6, 0.7, 0.7), "weights": "3fa9c2d1"}
    rec = np.linspace(0, 0.9, 50)
    p1 = plot_pr_curves(
        {"easy": (rec, 1 - 0.3 * rec), "hard": (rec * 0.7, 1 - 0.5 * rec, 0.42)},
        "WIDER val", settings, tmp_path / "pr" / "wider.png",
    )
    fp = np.arange(0, 2500, 50)
    p2 = plot_roc({"discrete": (fp, 1 - np.exp(-fp / 300)), "continuous": (fp, 0.7 * (1 - np.exp(-fp / 300)))},
                  "FDDB", settings, tmp_path / "roc.png")
    x = np.linspace(0, 0.3, 301)
    p3 = plot_ced({"O-Net": (x, np.clip(x / 0.1, 0, 1))}, "CNN_FacePoint test", settings, tmp_path / "ced.png")
    for p in (p1, p2, p3):
        _check_png(p)
    assert p1 == tmp_path / "pr" / "wider.png"
    # overwriting an existing file works (atomic replace)
    plot_roc({"d": (fp, fp / 2500)}, "again", {}, p2)
    _check_png(p2)
