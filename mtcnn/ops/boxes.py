"""Box operations on tensors.

Every function takes boxes as float tensors ``[N, 4]`` in ``(x1, y1, x2, y2)`` format, 0-based,
with width ``x2 - x1`` (no +1 pixel anywhere), and returns results on the input's device. Empty
inputs give empty outputs of the right dtype and device.
"""

from __future__ import annotations

import torch

from mtcnn.ops.conventions import OverlapMode


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``[N]``; degenerate (inverted) boxes have area 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _overlap_from(inter: torch.Tensor, area_a: torch.Tensor, area_b: torch.Tensor, mode: OverlapMode) -> torch.Tensor:
    if mode == "union":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = torch.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap mode must be 'union' or 'min', got {mode!r}")
    # Two empty boxes overlap by 0, not NaN.
    return torch.where(denom > 0, inter / denom.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def box_iou(a: torch.Tensor, b: torch.Tensor, mode: OverlapMode = "union") -> torch.Tensor:
    """Pairwise overlap ``[N, M]`` of ``a [N,4]`` and ``b [M,4]``.

    ``mode="union"`` is intersection over union; ``mode="min"`` is intersection over the smaller
    area (MTCNN's "Min" NMS after O-Net).
    """
    inter = _intersection(a[:, None, :], b[None, :, :])
    return _overlap_from(inter, box_area(a)[:, None], box_area(b)[None, :], mode)


def paired_iou(a: torch.Tensor, b: torch.Tensor, mode: OverlapMode = "union") -> torch.Tensor:
    """Overlap of row i of ``a`` with row i of ``b``: ``[N]``."""
    return _overlap_from(_intersection(a, b), box_area(a), box_area(b), mode)


def _x_overlapping_pairs(boxes: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs (i, j), i != j, of the same group whose x-extents overlap, each pair once.

    A sweep over boxes sorted by (group, x1): box p pairs with the later boxes whose x1 lies before
    its x2. Cost O(N log N + pairs), without the N×N matrix a dense NMS needs.
    """
    n = boxes.shape[0]
    x1 = boxes[:, 0].double()
    x2 = boxes[:, 2].double()
    base = x1.min()
    # Groups are laid side by side on the x axis with a gap wider than any box, in float64 so
    # coordinates keep full precision (the float32 offset trick shifts coordinates by ~1 px).
    span = (torch.maximum(x2.max(), x1.max()) - base).abs() * 2 + 1
    g = groups.double() * span
    lo = g + (x1 - base)
    hi = g + (x2 - base)
    order = torch.argsort(lo, stable=True)
    lo_sorted = lo[order]
    end = torch.searchsorted(lo_sorted, hi[order], side="left")
    start = torch.arange(1, n + 1, device=boxes.device)
    counts = (end - start).clamp(min=0)
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty, empty
    first = torch.repeat_interleave(torch.arange(n, device=boxes.device), counts)
    run_start = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, device=boxes.device) - torch.repeat_interleave(run_start, counts)
    second = first + 1 + within
    return order[first], order[second]


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor | None,
    threshold: float,
    mode: OverlapMode = "union",
) -> torch.Tensor:
    """Greedy non-maximum suppression run independently within each group, in one call.

    Returns the indices of kept boxes sorted by decreasing score. A box is suppressed by a kept
    box of higher score in the same group whose overlap with it is strictly greater than
    ``threshold`` (a pair exactly at the threshold keeps both). Ties in score are broken by index.

    The greedy result is computed without a Python loop over boxes: the overlapping pairs are
    found by a sorted sweep, then ``keep[j] = not any(keep[i] for suppressors i of j)`` is iterated
    to its fixed point, which equals the greedy order's result (the highest-ranked box is final
    after one step, and each box is final once all boxes ranked above it are).
    """
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if groups is None:
        groups = torch.zeros(n, dtype=torch.long, device=device)
    rank = torch.empty(n, dtype=torch.long, device=device)
    by_score = torch.argsort(scores, descending=True, stable=True)
    rank[by_score] = torch.arange(n, device=device)

    i, j = _x_overlapping_pairs(boxes, groups)
    if i.numel():
        overlap = paired_iou(boxes[i], boxes[j], mode)
        hit = overlap > threshold
        i, j = i[hit], j[hit]
    if i.numel() == 0:
        return by_score
    i_first = rank[i] < rank[j]
    suppressor = torch.where(i_first, i, j)
    victim = torch.where(i_first, j, i)

    keep = torch.ones(n, dtype=torch.bool, device=device)
    for _ in range(n):
        suppressed = torch.zeros(n, dtype=torch.bool, device=device)
        suppressed[victim[keep[suppressor]]] = True
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return by_score[keep[by_score]]


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: OverlapMode = "union") -> torch.Tensor:
    """Greedy NMS over all boxes; see :func:`batched_nms`."""
    return batched_nms(boxes, scores, None, threshold, mode)


def square_boxes(boxes: torch.Tensor, expand: float = 0.0) -> torch.Tensor:
    """Squares with side max(w, h) · (1 + expand) around each box's centre (MTCNN's ``rerec``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx = boxes[:, 0] + w * 0.5
    cy = boxes[:, 1] + h * 0.5
    half = side * 0.5 * (1.0 + expand)
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)


def clip_boxes(boxes: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor) -> torch.Tensor:
    """Clamp boxes to the image ``[0, width] × [0, height]``; sizes may be per-box tensors ``[N]``."""
    w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(boxes[:, 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[:, 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[:, 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[:, 3].clamp(min=0), h)
    return torch.stack([x1, y1, x2, y2], dim=1)
