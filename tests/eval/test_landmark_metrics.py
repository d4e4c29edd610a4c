"""Landmark metrics: normalised errors, NME, failure rate, CED and its AUC."""

import json

import numpy as np
import pytest

from mtcnn.eval.landmarks import (
    ced_auc,
    ced_curve,
    evaluate_landmarks,
    inter_ocular_distance,
    landmark_errors,
)

GT5 = np.array(
    [
        # sample 0: eyes 40 px apart
        [[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]],
        # sample 1: eyes 20 px apart
        [[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]],
    ],
    dtype=float,
)


def test_two_sample_nme_by_hand():
    pred = GT5.copy()
    pred[0, 0] += [3, 4]  # 5 px off, / 40 = 0.125
    pred[0, 2] += [0, 2]  # 2 px off, / 40 = 0.05
    pred[1, 4] += [-1, 0]  # 1 px off, / 20 = 0.05
    err = landmark_errors(pred, GT5, "inter-ocular")
    expected = np.array([[0.125, 0, 0.05, 0, 0], [0, 0, 0, 0, 0.05]])
    np.testing.assert_allclose(err, expected)

    rep = evaluate_landmarks(pred, GT5, "inter-ocular")
    np.testing.assert_allclose(rep.per_point_nme, [0.0625, 0, 0.025, 0, 0.025])
    # overall NME = (0.125 + 0.05 + 0.05) / 10
    assert rep.nme == pytest.approx(0.0225)
    # sample errors 0.035 and 0.01: neither fails at 0.10, but point 0 of sample 0 does
    np.testing.assert_allclose(rep.sample_errors, [0.035, 0.01])
    assert rep.failure_rate == 0.0
    np.testing.assert_allclose(rep.per_point_failure_rate, [0.5, 0, 0, 0, 0])


def test_box_width_normaliser_and_interleaved_input():
    pred = GT5.copy()
    pred[1, 1] += [6, 8]  # 10 px
    boxes = np.array([[20, 30, 120, 130], [0, 0, 50, 60]], float)  # widths 100 and 50
    err = landmark_errors(pred.reshape(2, 10), GT5.reshape(2, 10), "box-width", boxes=boxes)
    assert err[1, 1] == pytest.approx(0.2) and err.sum() == pytest.approx(0.2)
    # explicit normaliser array
    err2 = landmark_errors(pred, GT5, np.array([1.0, 10.0]))
    assert err2[1, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        landmark_errors(pred, GT5, "box-width")  # boxes missing


def test_68_point_inter_ocular_uses_eye_centres():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (3, 68, 2))
    # left eye ring centred at (30, 50), right eye ring centred at (70, 53)
    ring = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1) * 5
    gt[:, 36:42] = ring + [30, 50]
    gt[:, 42:48] = ring + [70, 53]
    d = inter_ocular_distance(gt)
    np.testing.assert_allclose(d, np.hypot(40, 3))
    pred = gt.copy()
    pred[:, 30] += [0, np.hypot(40, 3) * 0.2]
    err = landmark_errors(pred, gt, "inter-ocular")
    np.testing.assert_allclose(err[:, 30], 0.2)
    with pytest.raises(ValueError):
        inter_ocular_distance(gt[:, :20])


def test_failure_rate_and_ced():
    n = 200
    gt = np.tile(GT5[:1], (n, 1, 1))  # inter-ocular 40
    target = np.linspace(0.0, 0.4, n)  # per-sample error: every point displaced by target * 40
    pred = gt + (target * 40)[:, None, None] * np.array([1.0, 0.0])
    rep = evaluate_landmarks(pred, gt)
    np.testing.assert_allclose(rep.sample_errors, target, atol=1e-12)
    assert rep.failure_rate == pytest.approx(np.mean(target > 0.10))
    np.testing.assert_allclose(rep.per_point_failure_rate, np.mean(target > 0.10))
    x, y = rep.ced_x, rep.ced_y
    assert x[0] == 0.0 and x[-1] == pytest.approx(0.3)
    assert np.all(np.diff(y) >= 0)
    # y(x) = fraction of samples with error <= x
    for xv in (0.05, 0.1, 0.2):
        i = int(np.argmin(np.abs(x - xv)))
        assert y[i] == pytest.approx(np.mean(target <= x[i]))
    # errors are uniform on [0, 0.4]: CED ~ x / 0.4 so AUC@0.1 ~ 0.125, AUC@0.3 ~ 0.375
    assert rep.auc_0_1 == pytest.approx(0.125, abs=0.01)
    assert rep.auc_0_3 == pytest.approx(0.375, abs=0.01)
    json.dumps(rep.to_dict())


def test_ced_ends_at_one_and_perfect_auc():
    x, y = ced_curve(np.array([0.0, 0.01, 0.02]))
    assert y[-1] == 1.0 and np.all(np.diff(y) >= 0)
    assert ced_auc(x, y, 0.3) == pytest.approx(1 - 0.02 / 0.3 * 0.5, abs=0.01)
    rep = evaluate_landmarks(GT5, GT5)
    assert rep.nme == 0.0 and rep.failure_rate == 0.0
    assert rep.auc_0_1 == pytest.approx(1.0) and rep.auc_0_3 == pytest.approx(1.0)
    assert rep.ced_y[-1] == 1.0
