"""Box operations on tensors.

Every function takes boxes as float tensors ``[N, 4]`` in ``(x1, y1, x2, y2)`` format, 0-based,
with width ``x2 - x1`` (no +1 pixel anywhere), and returns results on the input's device. Empty
inputs give empty outputs of the right dtype and device.
"""

from __future__ import annotations

import math

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


# Exact greedy NMS in bounded memory (see batched_nms). Boxes are filed in a grid: by group, by
# size class (the longer side's power of two, [2^c, 2^(c+1))), by a horizontal strip of the
# class (2^c high, filed by the box's top edge) and by the left edge quantised to _X_BITS. A box
# that may overlap a query box beyond the threshold is then in a few strips of a few classes, in
# one run of left edges per strip: a range of one sorted key.
_X_BITS = 24
_X_TOP = (1 << _X_BITS) - 1
_SIZE_CLASSES = 24  # classes more than 2^24 below the boxes' extent merge into the smallest
_BAND_STRIPS = 8  # a window over more strips of a class is read as one band of whole strips
_SLACK = 1e-3  # every window is widened by this fraction: overlaps computed in float32 are inexact
NMS_BLOCK_SIZE = 4096
NMS_SMALL = 256  # up to this many boxes batched_nms compares every pair (a 256 × 256 matrix)
NMS_MAX_PAIRS = 1 << 20


class _NmsGrid:
    """The grid of boxes ``[N, 4]`` already sorted by rank, and the window of each query box.

    ``key[i]`` orders box i by (group, class, strip, left edge); ``cells`` are the sorted
    (group, class, strip) cells that hold a box, and the key's high bits are the cell's position
    in ``cells``. For the union overlap with threshold t > 0 the windows use IoU > t ⇒ the
    overlap of the x-extents exceeds t times each box's width (and likewise y), so the two
    boxes' sides are within a factor 1/t and a suppressor's left edge lies in
    ``(q.x1 - (1-t)·max width, q.x2 - t·min width)`` of its class; otherwise a window is every
    position where the boxes overlap at all.
    """

    def __init__(self, boxes: torch.Tensor, group: torch.Tensor, valid: torch.Tensor, threshold: float, mode: OverlapMode):
        device = boxes.device
        b = boxes.double()
        self.b = b
        self.group = group
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        vb = b[valid]
        self.xmin, self.ymin = float(vb[:, 0].min()), float(vb[:, 1].min())
        x_extent = max(float(vb[:, 2].max()) - self.xmin, 1e-300)
        y_extent = max(float(vb[:, 3].max()) - self.ymin, 1e-300)
        self.x_scale = (_X_TOP - 1) / x_extent
        top_class = math.frexp(max(x_extent, y_extent))[1]
        self.num_classes = _SIZE_CLASSES + 1
        low_class = top_class - _SIZE_CLASSES
        size_class = torch.frexp(torch.maximum(w, h))[1].long() - 1
        cls = torch.where(valid, size_class.clamp(low_class, top_class) - low_class, 0)
        self.cls = cls
        nc = self.num_classes
        vc, vw, vh = cls[valid], w[valid], h[valid]
        zeros = torch.zeros(nc, dtype=torch.float64, device=device)
        huge = torch.full((nc,), math.inf, dtype=torch.float64, device=device)
        self.present = torch.zeros(nc, dtype=torch.bool, device=device).index_fill_(0, vc, True)
        self.max_w = zeros.scatter_reduce(0, vc, vw, "amax")
        self.max_h = zeros.scatter_reduce(0, vc, vh, "amax")
        self.min_w = torch.where(self.present, huge.scatter_reduce(0, vc, vw, "amin"), 0.0)
        self.min_h = torch.where(self.present, huge.scatter_reduce(0, vc, vh, "amin"), 0.0)
        # strip height of class c: 2^c, its shortest possible longer side
        exponent = torch.arange(nc, device=device) + low_class
        self.strip_h = torch.ldexp(torch.ones(nc, dtype=torch.float64, device=device), exponent)
        strip = self._strip(b[:, 1], cls)
        self.num_strips = int(strip[valid].max()) + 1
        cell = self._cell(group, cls, strip)
        self.cells, cell_pos = torch.unique(cell[valid], return_inverse=True)
        self.key = torch.full((b.shape[0],), -1, dtype=torch.long, device=device)
        self.key[valid] = (cell_pos << _X_BITS) | self._xq(b[valid, 0])
        t = threshold if mode == "union" and threshold > 0 else 0.0
        # a suppressor's left (top) edge lies in (q.x1 - lead·max w, q.x2 - trail·min w)
        self.lead, self.trail = 1.0 - t + _SLACK, t - _SLACK
        least = t * (1 - _SLACK)  # smallest overlap that float32 rounding may push above t
        self.reach = math.ceil(-math.log2(least)) if least > 0 else nc  # classes apart

    def _strip(self, y: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return torch.floor((y - self.ymin) / self.strip_h[cls]).long()

    def _cell(self, group: torch.Tensor, cls: torch.Tensor, strip: torch.Tensor) -> torch.Tensor:
        return (group * self.num_classes + cls) * self.num_strips + strip

    def _xq(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor((x - self.xmin) * self.x_scale).clamp(0, _X_TOP).long()

    def windows(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Key ranges ``[lo, hi]`` (inclusive) that hold every box that may overlap box ``q[k]``
        beyond the threshold: returns (k's box index per range, lo, hi)."""
        device = q.device
        span = min(self.reach, self.num_classes)
        offsets = torch.arange(-span, span + 1, device=device)
        qq = q.repeat_interleave(offsets.numel())
        cls = self.cls[q].repeat_interleave(offsets.numel()) + offsets.repeat(q.numel())
        ok = (cls >= 0) & (cls < self.num_classes)
        ok[ok.clone()] = self.present[cls[ok]]
        qq, cls = qq[ok], cls[ok]
        bq = self.b[qq]
        s0 = self._strip(bq[:, 1] - self.lead * self.max_h[cls], cls).clamp(min=0)
        s1 = self._strip(bq[:, 3] - self.trail * self.min_h[cls], cls).clamp(max=self.num_strips - 1)
        x_lo = self._xq(bq[:, 0] - self.lead * self.max_w[cls]) - 1
        x_hi = self._xq(bq[:, 2] - self.trail * self.min_w[cls]) + 1
        count = (s1 - s0 + 1).clamp(min=0)
        band = count > _BAND_STRIPS
        count = torch.where(band, 1, count)
        r = torch.repeat_interleave(torch.arange(qq.numel(), device=device), count)
        first = s0[r] + torch.arange(r.numel(), device=device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        last = torch.where(band[r], s1[r], first)
        base = self._cell(self.group[qq[r]], cls[r], 0)
        c0 = torch.searchsorted(self.cells, base + first)
        c1 = torch.searchsorted(self.cells, base + last, right=True) - 1
        hit = c1 >= c0
        r, c0, c1, band = r[hit], c0[hit], c1[hit], band[r[hit]]
        lo = (c0 << _X_BITS) | torch.where(band, 0, x_lo[r].clamp(min=0))
        hi = (c1 << _X_BITS) | torch.where(band, _X_TOP, x_hi[r].clamp(max=_X_TOP))
        return qq[r], lo, hi


def _ranges(start: torch.Tensor, count: torch.Tensor, max_pairs: int):
    """Positions ``start[k] .. start[k] + count[k] - 1`` of every range k, as (k, position)
    chunks of at most ``2 · max_pairs`` pairs."""
    device = start.device
    owner = torch.arange(start.numel(), device=device)
    if start.numel() and int(count.max()) > max_pairs:  # cut long ranges into pieces
        pieces = (count + max_pairs - 1) // max_pairs
        owner = torch.repeat_interleave(owner, pieces)
        k = torch.arange(owner.numel(), device=device) - torch.repeat_interleave(torch.cumsum(pieces, 0) - pieces, pieces)
        start = start[owner] + k * max_pairs
        count = (count[owner] - k * max_pairs).clamp(max=max_pairs)
    begin = torch.cumsum(count, 0) - count
    _, sizes = torch.unique_consecutive(begin // max_pairs, return_counts=True)
    for s, c, o in zip(start.split(sizes.tolist()), count.split(sizes.tolist()), owner.split(sizes.tolist())):
        r = torch.repeat_interleave(torch.arange(c.numel(), device=device), c)
        if r.numel():
            yield o[r], s[r] + torch.arange(r.numel(), device=device) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)


class _Table:
    """Boxes sorted by grid key, to find those in a query box's key ranges."""

    def __init__(self, keys: torch.Tensor, index: torch.Tensor):
        self.keys, order = torch.sort(keys)
        self.index = index[order]

    def merged(self, other: "_Table") -> "_Table":
        """This table and ``other`` in one (a merge: no sort of the whole)."""
        table = object.__new__(_Table)
        slot = torch.searchsorted(self.keys, other.keys) + torch.arange(other.keys.numel(), device=other.keys.device)
        mine = torch.ones(self.keys.numel() + other.keys.numel(), dtype=torch.bool, device=self.keys.device)
        mine[slot] = False
        table.keys, table.index = torch.empty_like(mine, dtype=torch.long), torch.empty_like(mine, dtype=torch.long)
        table.keys[slot], table.index[slot] = other.keys, other.index
        table.keys[mine], table.index[mine] = self.keys, self.index
        return table

    def counts(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.searchsorted(self.keys, lo)
        return start, (torch.searchsorted(self.keys, hi, right=True) - start).clamp(min=0)

    def overlaps(self, owner, lo, hi, boxes, threshold, mode, max_pairs, counted=None):
        """Pairs (table box i, box owner[k] of range k) whose overlap exceeds ``threshold``,
        ``max_pairs`` candidates at a time (``counted``: this table's :meth:`counts` of the ranges)."""
        start, count = self.counts(lo, hi) if counted is None else counted
        for k, pos in _ranges(start, count, max_pairs):
            i, j = self.index[pos], owner[k]
            over = paired_iou(boxes[i], boxes[j], mode) > threshold
            yield i[over], j[over]


def _greedy_within(alive: torch.Tensor, suppressor: torch.Tensor, victim: torch.Tensor) -> torch.Tensor:
    """Greedy NMS of one block whose boxes are ranked by position: ``alive`` [M] (not
    suppressed from outside), edges ``suppressor < victim`` (overlap above the threshold).

    Each round keeps the undecided boxes that no undecided box suppresses (greedy keeps them
    whatever happens later) and drops their victims; rounds end when no edge is left. A
    vectorised round per link of the longest chain of alternating decisions (a few on photos).
    """
    keep = alive.clone()
    undecided = alive.clone()
    live = undecided[suppressor] & undecided[victim]
    suppressor, victim = suppressor[live], victim[live]
    while suppressor.numel():
        threatened = torch.zeros_like(undecided)
        threatened[victim] = True
        winners = undecided & ~threatened
        lost = torch.zeros_like(undecided)
        lost[victim[winners[suppressor]]] = True
        keep &= ~lost
        undecided &= ~(winners | lost)
        live = undecided[suppressor] & undecided[victim]
        suppressor, victim = suppressor[live], victim[live]
    return keep


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor | None,
    threshold: float,
    mode: OverlapMode = "union",
    *,
    block_size: int = NMS_BLOCK_SIZE,
    max_pairs: int = NMS_MAX_PAIRS,
) -> torch.Tensor:
    """Greedy non-maximum suppression run independently within each group, in one call.

    Returns the indices of kept boxes sorted by decreasing score. A box is suppressed by a kept
    box of higher score in the same group whose overlap with it is strictly greater than
    ``threshold`` (a pair exactly at the threshold keeps both). Ties in score are broken by index.
    Boxes of zero area or with a non-finite coordinate overlap nothing (they are always kept).

    Exact greedy NMS in memory linear in N: no N×N matrix, and no list of all overlapping pairs
    (it grows with the square of N where boxes pile up: one tensor of 3.8 GB for a P-Net flood
    of 214k windows). Boxes are taken in rank order in blocks of ``block_size``: a block's boxes
    that a box kept so far overlaps beyond the threshold are suppressed, and the rest settle among
    themselves (:func:`_greedy_within`), with at most ``max_pairs`` candidate pairs per step (a
    pile of near-identical boxes is settled in smaller steps). Candidate pairs come from a grid
    (:class:`_NmsGrid`), ``max_pairs`` at a time. Kept boxes overlap each other by at most the
    threshold, so under the union overlap each box meets few of them, and time grows about
    linearly with the boxes (the 214k windows: about 0.6 s of one CPU thread;
    ``benchmarks/bench_nms.py``). Up to :data:`NMS_SMALL` boxes every pair is compared at once
    instead (the grid's set-up costs more there); the kept set is the same.
    """
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if mode not in ("union", "min"):
        raise ValueError(f"overlap mode must be 'union' or 'min', got {mode!r}")
    by_score = torch.argsort(scores, descending=True, stable=True)
    if groups is None:
        group = torch.zeros(n, dtype=torch.long, device=device)
    else:
        group = torch.unique(groups[by_score], return_inverse=True)[1]
    if threshold < 0:  # every pair of a group overlaps beyond it: the best box of each group
        first = torch.full((n,), n, dtype=torch.long, device=device).scatter_reduce(
            0, group, torch.arange(n, device=device), "amin")
        return by_score[first[first < n].sort().values]
    b = boxes[by_score]
    finite = torch.isfinite(b).all(dim=1)
    valid = finite & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if not threshold == threshold or not bool(valid.any()):  # NaN threshold: nothing exceeds it
        return by_score
    if n <= min(NMS_SMALL, block_size):
        # Few boxes (R- and O-Net's NMS on a photo): every pair at once costs less than the grid's
        # set-up. The same pairs and the same greedy rounds, so the same boxes are kept.
        over = (box_iou(b, b, mode) > threshold) & (group[:, None] == group[None, :]) & valid[:, None] & valid[None, :]
        suppressor, victim = torch.nonzero(torch.triu(over, diagonal=1), as_tuple=True)
        return by_score[~valid | _greedy_within(valid, suppressor, victim)]
    grid = _NmsGrid(b, group, valid, threshold, mode)
    keep = ~valid  # boxes that overlap nothing are kept; the others once they win below
    kept = _Table(grid.key[:0], torch.arange(0, device=device))
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        owner, lo, hi = grid.windows(start + torch.nonzero(valid[start:stop], as_tuple=True)[0])
        todo = valid[start:stop].clone()  # block boxes not yet settled
        while bool(todo.any()):
            # Boxes that a kept box overlaps beyond the threshold are suppressed.
            ranges = todo[owner - start]
            for _, j in kept.overlaps(owner[ranges], lo[ranges], hi[ranges], b, threshold, mode, max_pairs):
                todo[j - start] = False
            # The rest settle among themselves: at a time, the best of them whose candidate pairs
            # are at most max_pairs, or a single box (boxes piled on one spot).
            rest = start + torch.nonzero(todo, as_tuple=True)[0]
            if rest.numel() == 0:
                break
            now = rest
            while True:
                mine = torch.zeros_like(todo)
                mine[now - start] = True
                ranges = mine[owner - start]
                table = _Table(grid.key[now], now)
                counted = table.counts(lo[ranges], hi[ranges])
                if now.numel() == 1 or int(counted[1].sum()) <= max_pairs:
                    break
                now = now[: now.numel() // 2]
            sups, victims = [], []
            for i, j in table.overlaps(owner[ranges], lo[ranges], hi[ranges], b, threshold, mode, max_pairs, counted):
                ahead = i < j
                sups.append(i[ahead] - start)
                victims.append(j[ahead] - start)
            alive = mine.clone()
            if sups:
                alive = _greedy_within(alive, torch.cat(sups), torch.cat(victims))
            won = start + torch.nonzero(alive, as_tuple=True)[0]
            keep[won] = True
            todo &= ~mine
            kept = kept.merged(_Table(grid.key[won], won))
    return by_score[keep]


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
