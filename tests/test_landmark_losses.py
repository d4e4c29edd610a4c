"""The landmark-regression losses the zoo trains with (mtcnn.losses), against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mtcnn.losses import landmark_regression_loss

PRED = torch.tensor([[0.1, -0.2]])  # one sample, one point: errors 0.1 and 0.2
ZERO = torch.zeros(1, 2)


def test_l1_and_l2():
    assert float(landmark_regression_loss(PRED, ZERO, "l1")) == pytest.approx(0.3)
    assert float(landmark_regression_loss(PRED, ZERO, "l2")) == pytest.approx(0.01 + 0.04)
    # scale multiplies the errors first: pixels of a 64 px window whose frame spans 2
    assert float(landmark_regression_loss(PRED, ZERO, "l1", scale=32.0)) == pytest.approx(9.6)


def test_wing_with_the_seed_default():
    # 0.5 ln(1 + 0.1/2) + 0.5 ln(1 + 0.2/2)
    assert float(landmark_regression_loss(PRED, ZERO, "wing", w=0.5, epsilon=2.0)) == pytest.approx(0.0720501720)
    # beyond w: |x| - C with C = w - w ln(1 + w/eps) = 0.5 - 0.5 ln 1.25
    big = torch.tensor([[1.0, 0.0]])
    assert float(landmark_regression_loss(big, ZERO, "wing", w=0.5, epsilon=2.0)) == pytest.approx(0.6115717757)


def test_adaptive_wing():
    kw = dict(alpha=2.1, omega=14.0, epsilon=1.0, theta=0.5)
    # 14 ln(1 + 0.1^2.1) + 14 ln(1 + 0.2^2.1)
    assert float(landmark_regression_loss(PRED, ZERO, "adaptive_wing", **kw)) == pytest.approx(0.5795791375)
    # beyond theta: A|x| - C, A = 11.1214216480, C = 2.6254757375
    big = torch.tensor([[2.0, 0.0]])
    assert float(landmark_regression_loss(big, ZERO, "adaptive_wing", **kw)) == pytest.approx(19.6173675585)


def test_point_weights_and_mean_over_samples():
    pred = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.zeros(2, 4)
    # sample 0: point 0 error 1 (weight 2), point 1 error 2 (weight 1) -> 4; sample 1: 0 -> mean 2
    loss = landmark_regression_loss(pred, target, "l1", point_weights=torch.tensor([2.0, 1.0]))
    assert float(loss) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown landmark loss"):
        landmark_regression_loss(pred, target, "huber")
