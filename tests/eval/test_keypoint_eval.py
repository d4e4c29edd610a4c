"""68-point NME normaliser, best/worst ordering and mosaics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtcnn.data.face_crops import FaceCrops
from mtcnn.eval.keypoints import GT_COLOUR, best_and_worst, face_mosaic, report_5, report_68, write_png
from mtcnn.eval.landmarks import landmark_errors


def test_68_point_nme_uses_outer_eye_corners():
    gt = np.zeros((1, 68, 2))
    gt[0, 36] = [10, 50]
    gt[0, 45] = [90, 50]  # outer corners 80 px apart
    gt[0, 39], gt[0, 42] = [40, 50], [60, 50]
    pred = gt.copy()
    pred[0, 0] += [8, 0]  # one point 8 px off: 0.1 of the normaliser
    rep = report_68(pred, gt)
    assert rep.nme == pytest.approx(0.1 / 68)
    assert rep.errors[0, 0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="68 points"):
        landmark_errors(pred[:, :5], gt[:, :5], "outer-eye-corners")


def test_5_point_report_by_box_width():
    gt = np.array([[[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]]], float)
    pred = gt + [[4, 3]]  # every point 5 px off
    reps = report_5(pred, gt, np.array([[0, 0, 100, 100]]))
    assert reps["box_width"].nme == pytest.approx(0.05)
    assert reps["inter_ocular"].nme == pytest.approx(5 / 40)


def test_best_and_worst():
    best, worst = best_and_worst(np.array([0.3, 0.1, 0.2, 0.05]), 2)
    assert best.tolist() == [3, 1] and worst.tolist() == [0, 2]


def test_mosaic_draws_ground_truth_at_the_points(tmp_path):
    pts = torch.tensor([[[0.0, 0.0], [0.5, 0.5]]])
    crops = FaceCrops(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), pts, np.zeros((1, 4), np.float32), ["a"], 1.6)
    mosaic = face_mosaic(crops, np.full((1, 2, 2), np.nan), [0, 0], cell=40, columns=2)
    assert mosaic.shape == (40, 80, 3)
    assert tuple(mosaic[20, 20]) == GT_COLOUR and tuple(mosaic[30, 70]) == GT_COLOUR
    out = write_png(tmp_path / "m.png", mosaic)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_five_point_row_columns():
    from mtcnn.eval.keypoints import FIVE_POINT_HEADER, five_point_row

    gt = np.array([[[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]]] * 2, float)
    pred = gt.copy()
    pred[0, 2] += [6, 8]  # sample 0's nose 10 px off = 0.1 of the box width
    row = five_point_row("x", report_5(pred, gt, np.array([[0, 0, 100, 100]] * 2)))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(FIVE_POINT_HEADER.splitlines()[0].strip("|").split("|"))
    assert cells[1] == "0.0100" and cells[4] == "0.0500"  # mean over 10 point errors; nose mean
    assert cells[8] == "10.0 % (50.0 %)" and cells[9] == "0.00 %"
