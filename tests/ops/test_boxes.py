import itertools
import random

import pytest
import torch

from mtcnn.ops.boxes import batched_nms, box_area, box_iou, clip_boxes, nms, paired_iou, square_boxes


def oracle_overlap(a, b, mode):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    denom = area_a + area_b - inter if mode == "union" else min(area_a, area_b)
    return inter / denom if denom > 0 else 0.0


def oracle_nms(boxes, scores, groups, threshold, mode):
    """Plain-Python greedy NMS: highest score first (ties by index), suppress overlap > threshold."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(groups[k] != groups[i] or oracle_overlap(boxes[k], boxes[i], mode) <= threshold for k in keep):
            keep.append(i)
    return keep


def random_boxes(n, seed, max_coord=200.0, max_size=60.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * max_coord
    wh = torch.rand(n, 2, generator=g) * max_size + 1
    # Quantise to quarter pixels so coincident edges (and exact ties) really happen.
    boxes = torch.cat([xy, xy + wh], 1)
    return (boxes * 4).round() / 4, torch.rand(n, generator=g)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_matches_python_oracle(threshold, seed, mode):
    boxes, scores = random_boxes(150, seed)
    keep = nms(boxes, scores, threshold, mode)
    expected = oracle_nms(boxes.tolist(), scores.tolist(), [0] * len(boxes), threshold, mode)
    assert keep.tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_matches_oracle_per_group(seed):
    boxes, scores = random_boxes(200, seed, max_coord=80)
    groups = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(seed))
    keep = batched_nms(boxes, scores, groups, 0.5)
    expected = oracle_nms(boxes.tolist(), scores.tolist(), groups.tolist(), 0.5, "union")
    assert sorted(keep.tolist()) == sorted(expected)
    # Kept indices come out by decreasing score.
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_batched_nms_groups_with_large_coordinates_stay_exact():
    # Far-apart images of a big batch must not bleed into each other or lose precision.
    a = torch.tensor([[10000.0, 10000.0, 10010.0, 10010.0], [10000.0, 10000.0, 10010.0, 10005.0]])
    boxes = torch.cat([a, a])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([0, 0, 999, 999])
    # IoU of the pair is exactly 0.5: at threshold 0.5 both stay, just under it one goes.
    assert sorted(batched_nms(boxes, scores, groups, 0.5).tolist()) == [0, 1, 2, 3]
    assert sorted(batched_nms(boxes, scores, groups, 0.4999).tolist()) == [0, 2]


def test_pair_exactly_at_threshold_keeps_both():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU = 50/100 = 0.5 exactly
    scores = torch.tensor([0.9, 0.8])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]
    # "min" overlap of the same pair is 1.0: suppressed at any threshold below 1.
    assert nms(boxes, scores, 0.99, "min").tolist() == [0]


def test_empty_inputs():
    empty = torch.zeros((0, 4))
    keep = nms(empty, torch.zeros(0), 0.5)
    assert keep.dtype == torch.long and keep.shape == (0,)
    assert box_iou(empty, torch.ones(3, 4)).shape == (0, 3)
    assert square_boxes(empty).shape == (0, 4)
    assert clip_boxes(empty, 10, 10).shape == (0, 4)


def test_iou_matches_oracle_and_handles_degenerate_boxes():
    boxes, _ = random_boxes(30, 3)
    boxes[0] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # zero area
    for mode in ("union", "min"):
        got = box_iou(boxes, boxes, mode)
        for i, j in itertools.product(range(30), repeat=2):
            assert got[i, j].item() == pytest.approx(oracle_overlap(boxes[i].tolist(), boxes[j].tolist(), mode), abs=1e-6)
        assert torch.allclose(paired_iou(boxes, boxes.flip(0), mode), got[torch.arange(30), torch.arange(29, -1, -1)])
    assert not torch.isnan(box_iou(boxes[:1], boxes[:1])).any()


def test_square_keeps_centre_and_takes_longer_side():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 7.0, 3.0]])
    sq = square_boxes(boxes)
    assert sq.tolist() == [[0.0, 20.0, 40.0, 60.0], [0.0, -2.0, 7.0, 5.0]]
    assert torch.allclose((sq[:, :2] + sq[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)


def test_clip_and_area():
    boxes = torch.tensor([[-5.0, -5.0, 20.0, 30.0]])
    assert clip_boxes(boxes, 10, 25).tolist() == [[0.0, 0.0, 10.0, 25.0]]
    assert box_area(torch.tensor([[0.0, 0.0, 4.0, 3.0], [5.0, 5.0, 1.0, 1.0]])).tolist() == [12.0, 0.0]


def test_nms_long_suppression_chain_is_greedy_not_one_shot():
    # A row of boxes each overlapping its neighbour: greedy keeps every other one. A one-shot
    # "suppressed by any higher box" rule would keep only the first.
    xs = torch.arange(0, 20, 2.0)  # neighbours IoU 0.5, every other one IoU 0.2
    boxes = torch.stack([xs, torch.zeros_like(xs), xs + 6, torch.full_like(xs, 6)], 1)
    scores = torch.linspace(1, 0.1, len(xs))
    expected = oracle_nms(boxes.tolist(), scores.tolist(), [0] * len(xs), 0.3, "union")
    assert nms(boxes, scores, 0.3).tolist() == expected == list(range(0, len(xs), 2))


def test_random_many_boxes_dense_cluster():
    random.seed(0)
    boxes, scores = random_boxes(600, 42, max_coord=30, max_size=20)
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == oracle_nms(boxes.tolist(), scores.tolist(), [0] * 600, 0.5, "union")
