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
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        return torch.from_numpy(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY))[None]
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
    result up to float rounding) with one ``grid_sample`` per (mip level, sub-grid) group and
    atlas of up to ``ATLAS_ROWS`` rows instead of one per image.

    The group's images are stacked into a zero-separated *atlas*; each sample's coordinates are
    clamped to half a pixel beyond its own image, so it reads the zero gap exactly where
    ``crop_resize`` reads its zero padding, never a neighbour. With one or two faces per image
    (the cascade's usual load) this removes the per-image Python overhead. Atlases are capped in
    height because grid coordinates are normalised to it: float32 keeps them exact to ~1e-3 px.
    """
    from mtcnn.ops.crops import MipChain

    n = boxes.shape[0]
    channels = images[0].shape[0] if images else 1
    out = torch.zeros((n, channels, size, size), dtype=torch.float32, device=boxes.device)
    if n == 0:
        return out
    boxes = boxes.float()
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    level = torch.floor(torch.log2(side / size)).clamp(min=0).long()
    sub = torch.where(side / torch.pow(2.0, level.float()) > size, 2, 1)
    chains = mip_cache if mip_cache is not None else {}
    group = level * 4 + sub
    for key in torch.unique(group).tolist():
        m, k = divmod(key, 4)
        in_group = group == key
        members = torch.unique(image_index[in_group]).tolist()
        for b in members:
            if b not in chains:
                chains[b] = MipChain(images[b])
        for chunk in _atlas_chunks(members, [chains[b].level(m).shape[1] + 1 for b in members]):
            sel = torch.nonzero(in_group & torch.isin(image_index, torch.tensor(chunk, device=image_index.device)), as_tuple=True)[0]
            out[sel] = _atlas_sample(
                [chains[b].level(m) for b in chunk], chunk, boxes[sel] / (1 << m), image_index[sel], size, k
            )
    return out


ATLAS_ROWS = 8192


def _atlas_chunks(members: list[int], rows: list[int]) -> list[list[int]]:
    chunks, current, used = [], [], 0
    for b, r in zip(members, rows):
        if current and used + r > ATLAS_ROWS:
            chunks.append(current)
            current, used = [], 0
        current.append(b)
        used += r
    return chunks + [current]


def _atlas_sample(sources, members, boxes, image_index, size: int, k: int) -> torch.Tensor:
    channels = sources[0].shape[0]
    device = boxes.device
    heights = torch.tensor([s.shape[1] for s in sources])
    widths = torch.tensor([s.shape[2] for s in sources])
    tops = torch.cumsum(torch.cat([torch.ones(1, dtype=torch.long), heights[:-1] + 1]), 0)
    atlas = torch.zeros((channels, int(heights.sum()) + len(sources) + 1, int(widths.max()) + 1), device=device)
    for s, top in zip(sources, tops.tolist()):
        atlas[:, top : top + s.shape[1], : s.shape[2]] = s
    slot = torch.searchsorted(torch.tensor(members), image_index.cpu())
    samples = size * k
    steps = (torch.arange(samples, dtype=torch.float32, device=device) + 0.5) / samples
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    w, h, top = (v[slot].to(device, torch.float32)[:, None] for v in (widths, heights, tops))
    xs = torch.minimum(xs.clamp(min=-0.5), w + 0.5)
    ys = torch.minimum(ys.clamp(min=-0.5), h + 0.5) + top
    gx = xs * (2.0 / atlas.shape[2]) - 1.0
    gy = ys * (2.0 / atlas.shape[1]) - 1.0
    count = boxes.shape[0]
    grid = torch.stack([gx[:, None, :].expand(count, samples, samples), gy[:, :, None].expand(count, samples, samples)], -1)
    sampled = F.grid_sample(atlas[None], grid.reshape(1, count * samples, samples, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # fmt: skip
    sampled = sampled.reshape(channels, count, samples, samples).transpose(0, 1)
    return F.avg_pool2d(sampled, k) if k > 1 else sampled
