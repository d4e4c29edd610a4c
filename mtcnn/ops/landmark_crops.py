"""Geometry and batched crops of the landmark cascade (SPEC §7).

Coordinates are continuous pixels: pixel ``i`` spans ``[i, i+1)`` (the convention of
:func:`mtcnn.ops.crops.crop_resize`), boxes are ``(x1, y1, x2, y2)`` with width ``x2 - x1``. A net
sees a crop box resampled to its input size and predicts points as fractions of that box (0..1
on each axis); :func:`from_crop` and :func:`to_crop` convert between the two frames.

Two crop paths: inference cuts axis-aligned boxes out of many images of any size with
:func:`~mtcnn.ops.crops.crop_resize` (area-averaged, one call per cascade level); training cuts
rotated, mirrored, jittered crops out of a stack of equal-sized face canvases with
:func:`affine_crops`, one ``grid_sample`` over the whole batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mtcnn.ops.crops import MipChain, hwc_array

# ITU-R BT.601 luma, in 1/256 steps so the conversion is exact integer arithmetic.
_GREY_WEIGHTS = (77, 150, 29)


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` RGB uint8 -> ``[1, H, W]`` grey uint8 (0.299 R + 0.587 G + 0.114 B, rounded).

    A CPU image goes through OpenCV's SIMD conversion (same weights; ~20× faster than tensor
    arithmetic on a 250×250 face photo); other devices use the same weights in integer steps.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] RGB image, got shape {tuple(image.shape)}")
    if image.device.type == "cpu" and image.dtype == torch.uint8:
        return torch.from_numpy(cv2.cvtColor(hwc_array(image), cv2.COLOR_RGB2GRAY))[None]
    return luma_integer(image)


def luma_integer(image: torch.Tensor) -> torch.Tensor:
    """:func:`to_grey` in integer tensor arithmetic (any device)."""
    wr, wg, wb = _GREY_WEIGHTS
    rgb = image.to(torch.int32)
    grey = (wr * rgb[0] + wg * rgb[1] + wb * rgb[2] + 128) >> 8
    return grey.clamp_(0, 255).to(torch.uint8)[None]


def region_boxes(boxes: torch.Tensor, region: tuple[float, float, float, float]) -> torch.Tensor:
    """Level-1 crop boxes ``[N, 4]``: ``region`` = (left, right, top, bottom) as fractions of each face box."""
    left, right, top, bottom = region
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.stack(
        [boxes[:, 0] + left * w, boxes[:, 1] + top * h, boxes[:, 0] + right * w, boxes[:, 1] + bottom * h], dim=1
    )


def square_grid_box(crop_boxes: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """The taller box whose ``W×W`` resampling has the ``H×W`` crop of ``crop_boxes`` as its top rows.

    Lets one square crop call serve nets of 39×39 and 39 wide × 31 high inputs: row ``i`` of the
    square crop samples the same line as row ``i`` of the ``H×W`` crop.
    """
    h, w = input_hw
    if h > w:
        raise ValueError(f"input {h}x{w}: only crops at most as high as wide are supported")
    out = crop_boxes.clone()
    out[:, 3] = crop_boxes[:, 1] + (crop_boxes[:, 3] - crop_boxes[:, 1]) * (w / h)
    return out


def patch_boxes(centres: torch.Tensor, boxes: torch.Tensor, half_size: float) -> torch.Tensor:
    """Patch boxes ``[N, 4]`` centred on ``centres [N, 2]``, half-sides ``half_size`` × the face box's width / height."""
    hw = half_size * (boxes[:, 2] - boxes[:, 0])
    hh = half_size * (boxes[:, 3] - boxes[:, 1])
    return torch.stack([centres[:, 0] - hw, centres[:, 1] - hh, centres[:, 0] + hw, centres[:, 1] + hh], dim=1)


def from_crop(uv: torch.Tensor, crop_boxes: torch.Tensor) -> torch.Tensor:
    """Points ``[N, K, 2]`` given as fractions of ``crop_boxes [N, 4]`` -> image coordinates."""
    origin = crop_boxes[:, None, 0:2]
    size = crop_boxes[:, None, 2:4] - origin
    return origin + uv * size


def to_crop(points: torch.Tensor, crop_boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`from_crop`."""
    origin = crop_boxes[:, None, 0:2]
    size = crop_boxes[:, None, 2:4] - origin
    return (points - origin) / size


def affine_crops(
    canvases: torch.Tensor, origin: torch.Tensor, axes: torch.Tensor, out_hw: tuple[int, int], supersample: int = 2
) -> torch.Tensor:
    """Cut one parallelogram per canvas and resample it to ``out_hw``; returns ``[B, 1, H, W]`` float 0..255.

    ``canvases [B, 1, S_h, S_w]`` (uint8 or float), ``origin [B, 2]`` and ``axes [B, 2, 2]``: the
    point at fractions ``(u, v)`` of the crop lies at ``origin + u·axes[:, 0] + v·axes[:, 1]`` on the
    canvas (an axis-aligned box has ``axes = diag(width, height)``; a rotation or mirror changes
    them). Each output pixel averages ``supersample²`` bilinear samples, a box filter against the
    aliasing of a plain bilinear downscale; outside the canvas reads 0, as in the detector.
    """
    height, width = out_hw
    sh, sw = height * supersample, width * supersample
    dtype = torch.float32
    v = (torch.arange(sh, dtype=dtype, device=canvases.device) + 0.5) / sh
    u = (torch.arange(sw, dtype=dtype, device=canvases.device) + 0.5) / sw
    axes = axes.to(dtype)
    # position[b, i, j] = origin[b] + u[j] * axes[b, 0] + v[i] * axes[b, 1]
    pos = (
        origin.to(dtype)[:, None, None, :]
        + u[None, None, :, None] * axes[:, None, None, 0, :]
        + v[None, :, None, None] * axes[:, None, None, 1, :]
    )
    scale = torch.tensor([2.0 / canvases.shape[3], 2.0 / canvases.shape[2]], dtype=dtype, device=canvases.device)
    grid = pos * scale - 1.0
    sampled = F.grid_sample(canvases.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(sampled, supersample) if supersample > 1 else sampled


def gather_windows(canvases: torch.Tensor, index: torch.Tensor, top_left: torch.Tensor, size: int) -> torch.Tensor:
    """``size×size`` integer windows ``[B, 1, size, size]`` of ``canvases[index]`` (``[N, H, W]``)
    at ``top_left [B, 2]`` (x, y); pixels outside the canvas read 0.

    Lets :func:`affine_crops` resample small patches without first copying whole canvases.
    """
    n, height, width = canvases.shape
    steps = torch.arange(size)
    ys = top_left[:, 1, None] + steps[None, :]  # [B, size]
    xs = top_left[:, 0, None] + steps[None, :]
    inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
    flat = index[:, None, None] * (height * width) + ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None, :]
    windows = canvases.reshape(-1)[flat] * inside
    return windows[:, None]


def crop_fractions(points: torch.Tensor, origin: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Where canvas points ``[B, K, 2]`` lie in the crops of :func:`affine_crops`, as ``(u, v)`` fractions."""
    rel = points - origin[:, None, :]
    # Solve rel = u·a0 + v·a1 per sample: the 2×2 matrix has a0, a1 as columns.
    matrix = axes.transpose(1, 2)
    return torch.linalg.solve(matrix[:, None], rel[..., None])[..., 0]


def crop_resize_atlas(
    images: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor, size: int, mip_cache: dict | None = None
) -> torch.Tensor:
    """:func:`~mtcnn.ops.crops.crop_resize` (same mip levels, sub-grids and zero padding, same
    result up to float rounding) with one ``grid_sample`` per (mip level, sub-grid, atlas chunk)
    instead of one per image.

    For each mip level, the part of each image that the level's boxes read (:func:`_regions`) is
    stacked into a zero-separated float *atlas* (:class:`LevelAtlas`): with faces a fraction of
    their photos, that copies several times fewer pixels than whole images would. Each sample's
    coordinates are clamped to half a pixel beyond its region, so at an image border it reads
    the zero gap exactly where ``crop_resize`` reads its zero padding, never a neighbour.
    """
    n = boxes.shape[0]
    channels = images[0].shape[0] if images else 1
    if n == 0:
        return torch.zeros((0, channels, size, size), dtype=torch.float32, device=boxes.device)
    # Every box lies in exactly one (level, sub-grid, chunk) group: each element gets written.
    out = torch.empty((n, channels, size, size), dtype=torch.float32, device=boxes.device)
    boxes = boxes.float()
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    level = torch.floor(torch.log2(side / size)).clamp(min=0).long()
    sub = torch.where(side / torch.pow(2.0, level.float()) > size, 2, 1)
    chains = mip_cache if mip_cache is not None else {}
    for m in torch.unique(level).tolist():
        on_level = torch.nonzero(level == m, as_tuple=True)[0]
        level_boxes, level_index = boxes[on_level] / (1 << m), image_index[on_level]
        members = torch.unique(level_index)
        for b in members.tolist():
            if b not in chains:
                chains[b] = MipChain(images[b])
        slot = torch.searchsorted(members, level_index)
        sources = [chains[b].level_source(m) for b in members.tolist()]
        atlas = LevelAtlas(sources, _regions(sources, level_boxes, slot), boxes.device)
        for first, end in atlas.chunks:
            pixels = atlas.chunk(first, end)
            in_chunk = (slot >= first) & (slot < end)
            for k in (1, 2):
                sel = torch.nonzero(in_chunk & (sub[on_level] == k), as_tuple=True)[0]
                if sel.numel() == n:  # one group holds every box, in order
                    return atlas.sample(pixels, level_boxes, slot, size, k)
                if sel.numel():
                    out[on_level[sel]] = atlas.sample(pixels, level_boxes[sel], slot[sel], size, k)
    return out


def _regions(sources: list, boxes: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Per source ``[S, 4]`` (x0, y0, x1, y1): integer pixel ranges holding every pixel that a
    bilinear sample inside any of its ``boxes`` (level coordinates) reads, within the source and
    at least one pixel wide (a box wholly outside then reads the zero gap beside that pixel)."""
    count = len(sources)
    lo = torch.full((count, 2), float("inf")).scatter_reduce(0, slot[:, None].expand(-1, 2).cpu(), boxes[:, :2].cpu(), "amin")
    hi = torch.full((count, 2), -float("inf")).scatter_reduce(0, slot[:, None].expand(-1, 2).cpu(), boxes[:, 2:].cpu(), "amax")
    # Samples lie strictly inside a box; their taps floor(x - 0.5) and floor(x - 0.5) + 1 stay
    # within [floor(x1) - 1, floor(x2) + 1].
    limit = torch.tensor([[s.shape[2], s.shape[1]] for s in sources])
    start = torch.minimum((lo.floor() - 1).clamp(min=0), limit - 1)
    end = torch.maximum(torch.minimum(hi.floor() + 2, limit.float()), start + 1)
    return torch.cat([start, end], 1).long()


ATLAS_ROWS = 8192
# A chunk's float tensor stays below glibc's largest mmap threshold (32 MiB), so after the first
# call the allocator hands back the same memory: a fresh 80 MB atlas per call spent more time in
# page faults than in copying (measured on a batch of photos; see docs/performance.md).
ATLAS_CHUNK_BYTES = 24 << 20


class LevelAtlas:
    """Regions of one mip level of several images stacked vertically into float ``[C, rows,
    width]`` chunks, a zero row above and below each region and zeros right of it (at least one
    column). Built per crop call: each cascade level reads different regions.

    Grid coordinates are normalised to the height of what ``grid_sample`` sees, so a chunk holds
    at most ``ATLAS_ROWS`` rows (float32 keeps coordinates exact to ~1e-3 px there) and about
    ``ATLAS_CHUNK_BYTES`` (a single larger region gets a chunk of its own). ``chunks``: ``(first
    slot, end slot)``, a slot being a source's position; :meth:`chunk` builds one chunk's tensor.
    """

    def __init__(self, sources: list, regions: torch.Tensor, device: torch.device) -> None:
        self.sources, self.regions, self.device = sources, regions, device
        sizes = regions[:, 2:] - regions[:, :2]
        self.heights = sizes[:, 1]
        self.channels, self.width = sources[0].shape[0], int(sizes[:, 0].max()) + 1
        self.chunks, self.tops = self._layout()
        # Per slot: region width, height, origin (x0, y0) in the level, and first row in its chunk.
        self.geometry = torch.cat([sizes, regions[:, :2], self.tops[:, None]], 1).to(device, torch.float32)

    def _layout(self) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """Chunks ``(first slot, end slot)`` and each slot's first row in its chunk, in one pass:
        a zero row, then each region followed by its zero row, until a chunk would pass the limit."""
        row_limit = min(ATLAS_ROWS, max(1, ATLAS_CHUNK_BYTES // (4 * self.channels * self.width)))
        chunks, tops, start, rows = [], [], 0, 1
        for i, h in enumerate(self.heights.tolist()):
            if i > start and rows + h + 1 > row_limit:
                chunks.append((start, i))
                start, rows = i, 1
            tops.append(rows)
            rows += h + 1
        chunks.append((start, len(self.sources)))
        return chunks, torch.tensor(tops, dtype=torch.long)

    def chunk(self, first: int, end: int) -> torch.Tensor:
        """Float ``[C, rows, width]`` holding the regions of slots ``first..end-1``."""
        tops = self.tops[first:end].tolist()
        rows = tops[-1] + int(self.heights[end - 1]) + 1
        atlas = torch.empty((self.channels, rows, self.width), device=self.device)
        # Only the gaps are zeroed, not the whole chunk (most of which the regions overwrite).
        atlas[:, self.tops[first:end] - 1] = 0
        atlas[:, -1] = 0
        # One small copy per image: through NumPy on the CPU, whose slicing costs a third of torch's.
        sources = self.sources[first:end]
        cpu = atlas.device.type == "cpu" and all(isinstance(s, np.ndarray) or s.device.type == "cpu" for s in sources)
        target = atlas.numpy() if cpu else atlas
        for s, (x0, y0, x1, y1), top in zip(sources, self.regions[first:end].tolist(), tops):
            region = (s.numpy() if cpu and isinstance(s, torch.Tensor) else s)[:, y0:y1, x0:x1]
            if not cpu and isinstance(region, np.ndarray):  # CPU images, boxes on another device
                region = torch.from_numpy(np.ascontiguousarray(region))
            target[:, top : top + y1 - y0, : x1 - x0] = region
            target[:, top : top + y1 - y0, x1 - x0 :] = 0
        return atlas

    def sample(self, atlas: torch.Tensor, boxes: torch.Tensor, slot: torch.Tensor, size: int, k: int) -> torch.Tensor:
        """``[N, C, size, size]`` crops of level-scaled ``boxes`` from a :meth:`chunk` holding their slots."""
        source = atlas[None]
        count, samples = boxes.shape[0], size * k
        # Sub-sample-major order (all first sub-samples of a row or column, then all second ones)
        # makes the k×k mean a sum of contiguous blocks (:func:`_mean_blocks`).
        order = torch.arange(size, device=boxes.device)[None, :] * k + torch.arange(k, device=boxes.device)[:, None]
        steps = (order.reshape(-1).float() + 0.5) / samples
        w, h, x0, y0, top = self.geometry[slot, :, None].unbind(1)
        xs = boxes[:, 0:1] - x0 + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
        ys = boxes[:, 1:2] - y0 + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
        xs = torch.minimum(xs.clamp(min=-0.5), w + 0.5)
        ys = torch.minimum(ys.clamp(min=-0.5), h + 0.5) + top
        # align_corners=False: -1 and +1 are the outer edges of the first and last pixels.
        # A planar grid (x plane, y plane) is built from two contiguous broadcast copies and
        # read by grid_sample's vectorised planar path: both faster than an interleaved one.
        grid = torch.empty((2, count, samples, samples), dtype=torch.float32, device=boxes.device)
        grid[0].copy_((xs * (2.0 / source.shape[3]) - 1.0)[:, None, :].expand(count, samples, samples))
        grid[1].copy_((ys * (2.0 / source.shape[2]) - 1.0)[:, :, None].expand(count, samples, samples))
        # One batch entry per box over the same (stride-0 expanded) atlas: grid_sample splits
        # its threads over the batch only, so a batch of one would run on a single core.
        sampled = F.grid_sample(source.expand(count, -1, -1, -1), grid.permute(1, 2, 3, 0), mode="bilinear",
                                padding_mode="zeros", align_corners=False)  # fmt: skip
        return _mean_blocks(sampled, size) if k > 1 else sampled


def _mean_blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of the 2×2 sub-samples of ``x [N, C, 2·size, 2·size]`` in sub-sample-major order
    (rows: every output row's first sub-sample, then every second one; columns alike): sums of
    contiguous blocks, ~1.6× faster than strided views of interleaved samples and ~6× faster
    than ``avg_pool2d`` (not vectorised for 2×2 windows on a CPU); equal up to float rounding."""
    blocks = x.view(x.shape[0], x.shape[1], 2, size, 2, size)
    rows = blocks[:, :, 0] + blocks[:, :, 1]  # [N, C, size, 2, size]
    return (rows[:, :, :, 0] + rows[:, :, :, 1]).mul_(0.25)
