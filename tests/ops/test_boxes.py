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


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode,threshold", [("union", 0.5), ("union", 0.7), ("union", 0.0), ("min", 0.7)])
def test_small_inputs_keep_what_the_grid_keeps(seed, mode, threshold, monkeypatch):
    """Up to NMS_SMALL boxes every pair is compared at once; the grid path keeps the same boxes."""
    import mtcnn.ops.boxes as ops_boxes

    n = [3, 40, 120, 200, 256, 90][seed]
    boxes, scores = random_boxes(n, seed, max_coord=120)
    boxes[::17, 2] = boxes[::17, 0]  # some empty boxes: kept, overlapping nothing
    groups = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))
    small = batched_nms(boxes, scores, groups, threshold, mode)
    monkeypatch.setattr(ops_boxes, "NMS_SMALL", 0)
    grid = batched_nms(boxes, scores, groups, threshold, mode)
    assert small.tolist() == grid.tolist()
    assert small.tolist() == oracle_nms(boxes.tolist(), scores.tolist(), groups.tolist(), threshold, mode)


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


def pnet_like_flood(seed, width=120.0, height=90.0, sizes=(10.0, 12.66, 16.0), fire=0.3):
    """Windows of a P-Net that fires on most of a textured region: square windows on a stride-2
    grid of each pyramid level (stride and size grow together), scores quantised so that ties
    happen, and some windows repeated exactly. Returns boxes, scores, level. Corners are on an
    eighth-pixel grid, so float32 overlaps are exact enough to agree with the float64 oracle."""
    g = torch.Generator().manual_seed(seed)
    boxes, levels = [], []
    for level, size in enumerate(sizes):
        stride = size / 6
        xs = torch.arange(0, width - size, stride)
        ys = torch.arange(0, height - size, stride)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        x1, y1 = xx.reshape(-1), yy.reshape(-1)
        on = torch.rand(x1.numel(), generator=g) < fire
        b = torch.stack([x1, y1, x1 + size, y1 + size], 1)[on]
        boxes.append((b * 8).round() / 8)
        levels.append(torch.full((b.shape[0],), level))
    boxes, levels = torch.cat(boxes), torch.cat(levels)
    copies = torch.randint(0, boxes.shape[0], (boxes.shape[0] // 20,), generator=g)
    boxes, levels = torch.cat([boxes, boxes[copies]]), torch.cat([levels, levels[copies]])
    scores = (torch.rand(boxes.shape[0], generator=g) * 64).round() / 64
    return boxes, scores, levels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode,threshold", [("union", 0.5), ("union", 0.7), ("union", 0.0), ("min", 0.7), ("min", 0.3)])
def test_nms_matches_oracle_on_duplicates_ties_and_groups_in_small_blocks(seed, mode, threshold):
    # Small blocks and tiny pair chunks run every path: suppression from earlier blocks, chains
    # inside a block, long candidate runs cut into pieces.
    boxes, scores, levels = pnet_like_flood(seed, width=60.0, height=50.0)
    groups = levels if seed % 2 else None
    expected = oracle_nms(boxes.tolist(), scores.tolist(), (levels if seed % 2 else torch.zeros_like(levels)).tolist(),
                          threshold, mode)
    for block_size, max_pairs in ((4096, 1 << 20), (37, 50), (5, 13)):
        keep = batched_nms(boxes, scores, groups, threshold, mode, block_size=block_size, max_pairs=max_pairs)
        assert keep.tolist() == expected, (block_size, max_pairs)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode,threshold", [("union", 0.3), ("union", 0.05), ("min", 0.5), ("min", 0.0)])
def test_nms_matches_oracle_on_sizes_across_many_scales(seed, mode, threshold):
    # Sides from 0.1 to 400 px (many size classes; a big box meets small ones over many strips),
    # thin boxes, and boxes far apart.
    g = torch.Generator().manual_seed(100 + seed)
    n = 300
    side = 10 ** (torch.rand(n, 2, generator=g) * 3.6 - 1)
    side[: n // 10, 0] *= 20  # some long thin boxes
    xy = torch.rand(n, 2, generator=g) * 400
    boxes = (torch.cat([xy, xy + side], 1) * 8).round() / 8
    boxes[-5:] += 1e4
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, 2, (n,), generator=g)
    expected = oracle_nms(boxes.tolist(), scores.tolist(), groups.tolist(), threshold, mode)
    assert batched_nms(boxes, scores, groups, threshold, mode, block_size=64, max_pairs=500).tolist() == expected


def test_nms_single_box_degenerate_boxes_and_extreme_thresholds():
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert nms(one, torch.tensor([0.5]), 0.5).tolist() == [0]
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0], [5.0, 5.0, 4.0, 9.0],
                          [1.0, 1.0, 9.0, 9.0]])
    scores = torch.tensor([0.1, 0.9, 0.8, 0.7, 0.6])
    for mode in ("union", "min"):
        expected = oracle_nms(boxes.tolist(), scores.tolist(), [0] * 5, 0.5, mode)
        # zero-width and inverted boxes overlap nothing: always kept
        assert nms(boxes, scores, 0.5, mode).tolist() == expected == [1, 2, 3]
        assert nms(boxes, scores, 1.0, mode).tolist() == [1, 2, 3, 4, 0]  # nothing overlaps more than 1
        assert nms(boxes, scores, float("nan"), mode).tolist() == [1, 2, 3, 4, 0]
        # below 0 every pair overlaps "more": the best box of each group
        assert batched_nms(boxes, scores, torch.tensor([0, 1, 0, 1, 0]), -0.1, mode).tolist() == [1, 2]
    with pytest.raises(ValueError, match="overlap mode"):
        nms(boxes, scores, 0.5, "max")


class _LargestTensor(torch.overrides.TorchFunctionMode):
    """Records the most elements of any tensor a torch function returns inside the block."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_flood_of_50k_windows_is_exact_and_never_materialises_the_pairs():
    # 50 copies of a P-Net-like flood, far apart and with their ranks interleaved (each block
    # mixes all copies): each copy must come out as the oracle's result for one copy, while no
    # tensor ever holds more than a few elements per box (a pairwise or candidate-pair tensor
    # would hold millions here).
    base, base_scores, levels = pnet_like_flood(7)
    m = base.shape[0]
    expected = oracle_nms(base.tolist(), base_scores.tolist(), levels.tolist(), 0.5, "union")
    copies = 50
    shift = torch.arange(copies, dtype=torch.float32).repeat_interleave(m)[:, None] * 1000.0
    boxes = base.repeat(copies, 1) + shift
    scores = base_scores.repeat(copies)
    groups = levels.repeat(copies) + 10 * torch.arange(copies).repeat_interleave(m)
    n = boxes.shape[0]
    assert n > 50_000
    probe = _LargestTensor()
    with probe:
        keep = batched_nms(boxes, scores, groups, 0.5, block_size=2048, max_pairs=1 << 14)
    assert sorted(keep.tolist()) == sorted(k + c * m for c in range(copies) for k in expected)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    assert probe.largest <= 4 * n  # the boxes themselves; the pairs would be ~100 per box


def test_a_pile_of_identical_boxes_settles_in_small_steps():
    # 20k copies of one box (and a few of another): every copy overlaps every other, so the pairs
    # of one block alone would be 8M; the block is settled a few boxes at a time instead.
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]]).repeat(20_000, 1)
    boxes[::1000] = torch.tensor([50.0, 50.0, 60.0, 60.0])
    scores = torch.rand(20_000, generator=torch.Generator().manual_seed(0))
    probe = _LargestTensor()
    with probe:
        keep = batched_nms(boxes, scores, None, 0.5, max_pairs=1 << 12)
    best = scores.clone()
    best[::1000] = -1
    other = torch.full_like(scores, -1.0)
    other[::1000] = scores[::1000]
    assert sorted(keep.tolist()) == sorted([int(best.argmax()), int(other.argmax())])
    assert probe.largest <= 4 * boxes.shape[0]
