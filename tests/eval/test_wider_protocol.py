"""The official WIDER FACE evaluation protocol (mtcnn.eval.detection.evaluate_wider).

The first group runs on a hand-made ground truth and pins the official code's conventions; the
second group needs the real ``wider_*_val.mat`` files (no WIDER images) and skips without them.
"""

import numpy as np
import pytest

from mtcnn.config import data_root
from mtcnn.eval.detection import (
    WIDER_SETTINGS,
    WiderGroundTruth,
    evaluate_wider,
    evaluate_wider_curves,
    load_wider_ground_truth,
    wider_predictions_from_list,
)


def _toy_gt(boxes_xywh, keep_all, keep_easy=None):
    """One event with images 'a', 'b', ... ; keep lists per image (0-based)."""
    names = [chr(ord("a") + i) for i in range(len(boxes_xywh))]
    boxes = [np.asarray(b, float).reshape(-1, 4) for b in boxes_xywh]
    keep_easy = keep_all if keep_easy is None else keep_easy
    keep = {
        "easy": [[np.asarray(k, np.int64) for k in keep_easy]],
        "medium": [[np.asarray(k, np.int64) for k in keep_all]],
        "hard": [[np.asarray(k, np.int64) for k in keep_all]],
    }
    return WiderGroundTruth(events=["0--Toy"], images=[names], boxes=[boxes], keep=keep)


def _pred(**images):
    return {"0--Toy": {k: np.asarray(v, float).reshape(-1, 5) for k, v in images.items()}}


# ------------------------------------------------------------------ protocol semantics (no data)


def test_hand_computed_ap_with_score_normalisation():
    gt = _toy_gt([[[0, 0, 10, 10], [50, 0, 10, 10]]], [[0, 1]])
    # scores .9 (TP), .5 (FP), .1 (TP) normalise to 1.0, 0.5, 0.0 (min .1, max .9)
    pred = _pred(a=[[0, 0, 10, 10, 0.9], [200, 200, 210, 210, 0.5], [50, 0, 60, 10, 0.1]])
    curves = evaluate_wider_curves(pred, gt)
    c = curves["hard"]
    # thresholds 0.999 .. 0.5 see only the first detection (P=1, R=.5); 0.5 .. 0.001 two (P=.5,
    # R=.5); 0.0 all three (P=2/3, R=1). AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    assert c.ap == pytest.approx(5 / 6, abs=1e-12)
    assert c.thresholds[0] == pytest.approx(0.999) and c.thresholds[-1] == 0.0
    assert c.precision[-1] == pytest.approx(2 / 3) and c.recall[-1] == 1.0
    assert c.num_faces == 2
    # the input is not modified (the official norm_score works in place)
    assert pred["0--Toy"]["a"][0, 4] == 0.9


def test_plus_one_iou_convention():
    gt = _toy_gt([[[0, 0, 10, 10]]], [[0]])
    # our-convention IoU = 10*4.6 / 100 = 0.46 < 0.5, but with +1 pixels: 11*5.6 / 121 = 0.509
    pred = _pred(a=[[0, 0, 10, 4.6, 0.9]])
    assert evaluate_wider(pred, gt)["hard"] == pytest.approx(1.0)
    pred = _pred(a=[[0, 0, 10, 3.0, 0.9]])  # +1 IoU = 11*4/121 = 0.36
    assert evaluate_wider(pred, gt)["hard"] == 0.0


def test_ignored_faces_duplicates_and_images_without_faces():
    # image a: face 0 counted in every setting, face 1 only in medium/hard (ignored in easy)
    # image b: no face at all
    gt = _toy_gt([[[0, 0, 10, 10], [100, 0, 10, 10]], np.zeros((0, 4))], [[0, 1], []], keep_easy=[[0], []])
    pred = _pred(
        a=[
            [0, 0, 10, 10, 0.9],  # face 0
            [100, 0, 110, 10, 0.8],  # face 1: TP in medium/hard, dropped (neither TP nor FP) in easy
            [1, 0, 11, 10, 0.7],  # duplicate of face 0: FP
        ],
        b=[[0, 0, 50, 50, 0.95]],  # image without faces: never a FP (the official `continue`)
    )
    curves = evaluate_wider_curves(pred, gt)
    easy, hard = curves["easy"], curves["hard"]
    assert easy.num_faces == 1 and hard.num_faces == 2
    # easy: TP (.9) then FP (.7): P = [1, 1/2], R = [1, 1]  -> AP 1
    assert easy.ap == pytest.approx(1.0)
    assert easy.precision[-1] == pytest.approx(0.5)
    # hard: TP, TP, FP: AP 1, final precision 2/3
    assert hard.ap == pytest.approx(1.0)
    assert hard.precision[-1] == pytest.approx(2 / 3)


def test_unsorted_constant_and_missing_predictions():
    gt = _toy_gt([[[0, 0, 10, 10], [50, 0, 10, 10]], [[0, 0, 20, 20]]], [[0, 1], [0]])
    rows = [[0, 0, 10, 10, 0.3], [200, 200, 210, 210, 0.6], [50, 0, 60, 10, 0.8]]
    sorted_rows = sorted(rows, key=lambda r: -r[4])
    a1 = evaluate_wider(_pred(a=rows), gt)
    a2 = evaluate_wider(_pred(a=sorted_rows), gt)
    assert a1 == a2
    # image 'b' missing: its face still counts (recall at most 2/3)
    assert a1["hard"] < 2 / 3 + 1e-9
    # every score identical: the official code divides by zero; here every score becomes 1.0
    const = evaluate_wider(_pred(a=[[0, 0, 10, 10, 0.5], [50, 0, 60, 10, 0.5]], b=[[0, 0, 20, 20, 0.5]]), gt)
    assert const == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0}, abs=1e-12)


def test_predictions_from_paths():
    items = [
        ("/data/WIDER_val/images/0--Parade/0_Parade_marchingband_1_465.jpg", np.array([[1, 2, 11, 22]]), np.array([0.7])),
        ("0--Parade/0_Parade_Parade_0_628.jpg", np.zeros((0, 4)), np.zeros(0)),
        ("x/12--Group/12_Group_Group_12_Group_Group_12_10.jpg", np.array([[0, 0, 5, 5], [1, 1, 3, 3]]), np.array([0.2, 0.1])),
    ]
    pred = wider_predictions_from_list(items)
    assert sorted(pred) == ["0--Parade", "12--Group"]
    np.testing.assert_allclose(pred["0--Parade"]["0_Parade_marchingband_1_465"], [[1, 2, 11, 22, 0.7]])
    assert pred["0--Parade"]["0_Parade_Parade_0_628"].shape == (0, 5)
    assert pred["12--Group"]["12_Group_Group_12_Group_Group_12_10"].shape == (2, 5)
    with pytest.raises(ValueError):
        wider_predictions_from_list([items[0], items[0]])


# ------------------------------------------------------------------ real ground truth


@pytest.fixture(scope="module")
def wider_gt():
    gt_dir = data_root() / "wider_face" / "eval_tools" / "ground_truth"
    if not (gt_dir / "wider_face_val.mat").is_file():
        pytest.skip(f"WIDER FACE evaluation .mat files not found in {gt_dir} (set MTCNN_DATA)")
    return load_wider_ground_truth(gt_dir)


def _perfect(gt, rng, skip=None):
    """One detection per distinct face box (our convention), distinct random scores.

    Returns the prediction and, per setting, the counted faces no detection can recall under the
    official code: boxes with negative width/height (zero +1 IoU even with themselves) and later
    copies of a duplicated box (every detection goes to the first copy).
    """
    pred, lost = {}, {s: 0 for s in WIDER_SETTINGS}
    for e, i, event, name in gt.iter_images():
        xyxy = gt.boxes_xyxy(e, i)
        wh = gt.boxes[e][i][:, 2:]
        _, first = np.unique(gt.boxes[e][i], axis=0, return_index=True)
        usable = np.zeros(len(xyxy), bool)
        usable[first] = True
        usable &= (wh >= 0).all(axis=1)
        for s in WIDER_SETTINGS:
            lost[s] += int((~usable[gt.keep[s][e][i]]).sum())
        if skip is not None:
            usable &= ~skip(e, i)
        b = xyxy[usable]
        pred.setdefault(event, {})[name] = np.concatenate([b, rng.random((len(b), 1))], axis=1)
    return pred, lost


def test_wider_perfect_detections(wider_gt):
    gt = wider_gt
    assert gt.num_images() == 3226
    assert (gt.num_faces("easy"), gt.num_faces("medium"), gt.num_faces("hard")) == (7211, 13319, 31958)
    pred, lost = _perfect(gt, np.random.default_rng(0))
    aps = evaluate_wider(pred, gt)
    # easy and medium: every counted face is recallable -> AP exactly 1.
    assert lost["easy"] == 0 and lost["medium"] == 0
    assert aps["easy"] == pytest.approx(1.0, abs=1e-12)
    assert aps["medium"] == pytest.approx(1.0, abs=1e-12)
    # hard: the official code cannot recall 2 of its 31,958 faces (a duplicated box in
    # 21_Festival_Festival_21_604 and a box of width -2 in 39_Ice_Skating_iceskiing_39_583), so
    # perfect detections score 1 - 2/31958 (precision stays 1, AP = final recall).
    assert lost["hard"] == 2
    assert aps["hard"] == pytest.approx(1.0 - 2 / 31958, abs=1e-12)
    # all-equal scores give the same APs (the official code would return NaN here)
    for ev in pred.values():
        for arr in ev.values():
            arr[:, 4] = 1.0
    assert evaluate_wider(pred, gt) == pytest.approx(aps, abs=1e-12)


def test_wider_dropping_hard_only_faces_lowers_hard_only(wider_gt):
    gt = wider_gt
    base, _ = _perfect(gt, np.random.default_rng(1))

    def hard_only(e, i):
        m = gt.boxes[e][i].shape[0]
        in_hard = np.zeros(m, bool)
        in_hard[gt.keep["hard"][e][i]] = True
        in_medium = np.zeros(m, bool)
        in_medium[gt.keep["medium"][e][i]] = True
        return in_hard & ~in_medium

    dropped, _ = _perfect(gt, np.random.default_rng(1), skip=hard_only)
    a0, a1 = evaluate_wider(base, gt), evaluate_wider(dropped, gt)
    assert a1["easy"] == pytest.approx(a0["easy"], abs=1e-12)
    assert a1["medium"] == pytest.approx(a0["medium"], abs=1e-12)
    n_hard_only = gt.num_faces("hard") - gt.num_faces("medium")
    assert a1["hard"] < a0["hard"] - 0.5 * n_hard_only / gt.num_faces("hard")


def test_wider_jitter_lowers_ap_monotonically(wider_gt):
    gt = wider_gt
    rng = np.random.default_rng(2)
    noise, scores = {}, {}
    for e, i, event, name in gt.iter_images():
        m = gt.boxes[e][i].shape[0]
        noise[event, name] = rng.standard_normal((m, 4))
        scores[event, name] = rng.random(m)
    results = []
    for sigma in (0.0, 0.05, 0.1, 0.2):
        pred = {}
        for e, i, event, name in gt.iter_images():
            b = gt.boxes_xyxy(e, i)
            size = np.maximum(b[:, 2:] - b[:, :2], 1.0)
            jb = b + sigma * noise[event, name] * np.tile(size, 2)
            pred.setdefault(event, {})[name] = np.concatenate([jb, scores[event, name][:, None]], axis=1)
        results.append(evaluate_wider(pred, gt))
    for s in WIDER_SETTINGS:
        aps = [r[s] for r in results]
        # small jitter may keep every large (easy) face above IoU 0.5, so perfect >= sigma 0.05;
        # from there on every step loses faces
        assert aps[0] >= aps[1] > aps[2] > aps[3], (s, aps)
        assert aps[0] > 0.99 and aps[-1] < 0.8 * aps[0]
