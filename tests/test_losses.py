import math

import pytest
import torch
import torch.nn.functional as F

from mtcnn.losses import DEFAULT_TASK_WEIGHTS, box_loss, classification_loss_ohem, landmark_loss, mtcnn_loss
from mtcnn.structures import Label


def test_no_valid_samples_gives_zero_not_nan():
    logits = torch.randn(4, 2, requires_grad=True)
    labels = torch.full((4,), int(Label.LANDMARK))
    loss = classification_loss_ohem(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
    only_neg = torch.zeros(4, dtype=torch.long)
    assert box_loss(torch.randn(4, 4), torch.randn(4, 4), only_neg).item() == 0.0
    assert landmark_loss(torch.randn(4, 10), torch.randn(4, 10), only_neg).item() == 0.0
    # One valid sample: floor(0.7 · 1) = 0 kept, still zero.
    assert classification_loss_ohem(torch.randn(1, 2), torch.ones(1, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("n,ratio", [(10, 0.7), (37, 0.7), (100, 0.5), (9, 1.0)])
def test_ohem_keeps_exactly_the_largest_floor_fraction(n, ratio):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(n + 5, 2, generator=g)
    labels = torch.cat([torch.randint(0, 2, (n,), generator=g), torch.full((5,), int(Label.PART))])
    per_sample = F.cross_entropy(logits[:n], labels[:n], reduction="none")
    keep = math.floor(ratio * n)
    expected = sorted(per_sample.tolist(), reverse=True)[:keep]
    assert classification_loss_ohem(logits, labels, ratio).item() == pytest.approx(sum(expected) / keep, rel=1e-6)


def test_each_loss_ignores_the_labels_it_must_ignore():
    labels = torch.tensor([Label.POS, Label.NEG, Label.PART, Label.LANDMARK])
    box_target = torch.zeros(4, 4)
    box_pred = torch.tensor([[1.0, 0, 0, 0], [100.0, 0, 0, 0], [0, 2.0, 0, 0], [100.0, 0, 0, 0]])
    # Only pos (1) and part (4) count: mean of 1 and 4.
    assert box_loss(box_pred, box_target, labels).item() == pytest.approx(2.5)
    marks = torch.zeros(4, 10)
    marks[:3] = 100.0
    marks[3, 0] = 3.0
    assert landmark_loss(marks, torch.zeros(4, 10), labels).item() == pytest.approx(9.0)
    # Part and landmark samples never reach classification, whatever their logits.
    logits = torch.tensor([[0.0, 5.0], [5.0, 0.0], [50.0, -50.0], [50.0, -50.0]])
    base = classification_loss_ohem(logits[:2], labels[:2], 1.0)
    assert classification_loss_ohem(logits, labels, 1.0).item() == pytest.approx(base.item())


def test_task_weights_and_parts():
    labels = torch.tensor([Label.POS, Label.NEG, Label.PART, Label.LANDMARK, Label.NEG])
    outputs = (torch.randn(5, 2, 1, 1), torch.randn(5, 4, 1, 1), torch.randn(5, 10, 1, 1))
    batch = {"label": labels, "bbox": torch.randn(5, 4), "landmark": torch.randn(5, 10)}
    w = DEFAULT_TASK_WEIGHTS["onet"]
    total, parts = mtcnn_loss(outputs, batch, w)
    assert (w.cls, w.box, w.landmark) == (1.0, 0.5, 1.0)
    assert total.item() == pytest.approx(parts["cls"].item() + 0.5 * parts["box"].item() + parts["landmark"].item(), rel=1e-6)
    assert DEFAULT_TASK_WEIGHTS["pnet"].landmark == 0.5


def test_landmark_loss_kinds_against_hand_values():
    labels = torch.tensor([Label.LANDMARK, Label.POS, Label.LANDMARK])
    target = torch.zeros(3, 10)
    pred = torch.zeros(3, 10)
    pred[0, 0], pred[0, 3] = 0.1, -0.2     # two coordinates off in the first landmark sample
    pred[1] = 9.0                           # a positive: never counted
    pred[2, 9] = 0.5
    # Mean over the two landmark samples of each sample's summed per-coordinate loss.
    assert landmark_loss(pred, target, labels, "l2").item() == pytest.approx((0.01 + 0.04 + 0.25) / 2)
    assert landmark_loss(pred, target, labels, "l1").item() == pytest.approx((0.1 + 0.2 + 0.5) / 2)
    # wing (w 10, eps 2) on pixel errors of a 48 px crop: 4.8, 9.6 and 24 px; the last is past w.
    c = 10 - 10 * math.log1p(10 / 2)
    per_px = [10 * math.log1p(4.8 / 2) + 10 * math.log1p(9.6 / 2), 24 - c]
    assert landmark_loss(pred, target, labels, "wing", pixels=48.0).item() == pytest.approx(sum(per_px) / 2, rel=1e-5)


def test_landmark_kind_reaches_the_training_loss():
    labels = torch.tensor([Label.LANDMARK, Label.NEG])
    marks = torch.zeros(2, 10)
    marks[0, 0] = 0.5
    outputs = (torch.zeros(2, 2), torch.zeros(2, 4), marks)
    batch = {"label": labels, "bbox": torch.zeros(2, 4), "landmark": torch.zeros(2, 10)}
    w = DEFAULT_TASK_WEIGHTS["onet"]
    _, l2 = mtcnn_loss(outputs, batch, w)
    _, l1 = mtcnn_loss(outputs, batch, w, landmark_kind="l1")
    assert (l2["landmark"].item(), l1["landmark"].item()) == (pytest.approx(0.25), pytest.approx(0.5))


def test_landmark_loss_masks_missing_points_per_point():
    from mtcnn.losses import landmark_regression_per_sample

    pred = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.2, 0.3, 0.5, 0.5, 0.6, float("nan"), float("nan"), float("nan"), float("nan")]])
    for kind, expect in (("l1", 0.1 + 0.1), ("l2", 0.01 + 0.01)):
        per = landmark_regression_per_sample(pred, target, kind)
        assert torch.isfinite(per).all() and abs(float(per[0]) - expect) < 1e-6
    per.sum().backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[0, 6:] == 0).all()
