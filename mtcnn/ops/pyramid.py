"""Image pyramid scales and the packing of every level of every image onto shared canvases.

P-Net is fully convolutional, so instead of one forward pass per (image, scale) the levels are
packed side by side onto a few canvases and each canvas goes through P-Net once. Each level sits
at an even offset, so the stride-2 output grid of the canvas lines up with every level's own
grid, and its slot is padded to even size by repeating its last row/column. A canvas output cell
then belongs to at most one level, and the map from cells to (level, local cell) is a lookup
table built once per packing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PNET_CELL = 12
PNET_STRIDE = 2


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales ``s0 · factor^k`` with ``s0 = 12 / min_face_size`` while ``min(H, W) · s ≥ 12``."""
    if not 0 < factor < 1:
        raise ValueError(f"pyramid factor must be in (0, 1), got {factor}")
    scale = PNET_CELL / float(min_face_size)
    shortest = min(height, width)
    scales = []
    # A small epsilon keeps a level whose size rounds to exactly 12 px (float error).
    while shortest * scale >= PNET_CELL - 1e-9:
        scales.append(scale)
        scale *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Resized size of a level (ceil, as the original MATLAB code)."""
    return max(PNET_CELL, math.ceil(height * scale - 1e-9)), max(PNET_CELL, math.ceil(width * scale - 1e-9))


def pnet_output_size(height: int, width: int) -> tuple[int, int]:
    """P-Net output map size for an input of ``height × width`` (conv3, ceil pool 2, conv3, conv3)."""
    def one(n: int) -> int:
        return math.ceil((n - 2) / 2) - 4

    return one(height), one(width)


@dataclass(frozen=True)
class Level:
    image_index: int
    scale_x: float  # actual level width / image width (exact for the ceil-rounded size)
    scale_y: float
    height: int
    width: int
    canvas: int
    y0: int
    x0: int


@dataclass
class Packing:
    levels: list[Level]
    canvas_sizes: list[tuple[int, int]]


def _even(n: int) -> int:
    return n + (n & 1)


def pack_pyramid(
    image_sizes: list[tuple[int, int]],
    min_face_size: float,
    factor: float,
    max_canvas_pixels: int = 6_000_000,
    solo_pixels: int | None = None,
) -> Packing:
    """Place every pyramid level of every image on canvases with a shelf packer.

    Levels are sorted tallest first and laid left to right on shelves; a canvas is closed when
    adding a shelf would exceed ``max_canvas_pixels`` (memory bound per P-Net pass). Levels of at
    least ``solo_pixels`` get a canvas of their own, exactly their size: on a CPU one call per
    large level costs nothing extra, while packing wastes ~18% of the area; on a GPU one launch
    for everything matters more (``solo_pixels=None``).
    """
    items = []
    for index, (h, w) in enumerate(image_sizes):
        for s in pyramid_scales(h, w, min_face_size, factor):
            lh, lw = level_size(h, w, s)
            items.append((index, lh, lw, lw / w, lh / h))
    items.sort(key=lambda t: (-t[1], -t[2], t[0]))
    alone = [solo_pixels is not None and lh * lw >= solo_pixels for _, lh, lw, _, _ in items]
    solo = [t for t, a in zip(items, alone) if a]
    items = [t for t, a in zip(items, alone) if not a]
    solo_levels = [Level(index, sx, sy, lh, lw, k, 0, 0) for k, (index, lh, lw, sx, sy) in enumerate(solo)]
    solo_sizes = [(_even(lh), _even(lw)) for _, lh, lw, _, _ in solo]
    if not items:
        return Packing(solo_levels, solo_sizes)
    packed = _pack_shelves(items, max_canvas_pixels)
    offset = len(solo_sizes)
    shifted = [Level(lv.image_index, lv.scale_x, lv.scale_y, lv.height, lv.width, lv.canvas + offset, lv.y0, lv.x0) for lv in packed.levels]
    return Packing(solo_levels + shifted, solo_sizes + packed.canvas_sizes)


def _pack_shelves(items: list[tuple], max_canvas_pixels: int) -> Packing:
    total_area = sum(_even(t[1]) * _even(t[2]) for t in items)
    widest = max(_even(t[2]) for t in items)
    # P-Net's cost is the canvas area, so try a range of widths and keep the tightest packing.
    side = math.sqrt(min(total_area, max_canvas_pixels))
    widths = {widest} | {_even(max(widest, int(side * f))) for f in (0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)}
    best = None
    for width in sorted(widths):
        packing = _shelf_pack(items, width, max_canvas_pixels)
        area = sum(h * w for h, w in packing.canvas_sizes)
        if best is None or area < best[0]:
            best = (area, packing)
    return best[1]


def _shelf_pack(items: list[tuple], canvas_width: int, max_canvas_pixels: int) -> Packing:
    levels: list[Level] = []
    canvas_sizes: list[tuple[int, int]] = []
    canvas = 0
    shelf_y = shelf_h = cursor_x = 0
    for index, lh, lw, sx, sy in items:
        slot_h, slot_w = _even(lh), _even(lw)
        if cursor_x + slot_w > canvas_width:
            shelf_y += shelf_h
            shelf_h = cursor_x = 0
        if shelf_h == 0 and shelf_y > 0 and (shelf_y + slot_h) * canvas_width > max_canvas_pixels:
            canvas_sizes.append((shelf_y, canvas_width))
            canvas += 1
            shelf_y = 0
        levels.append(Level(index, sx, sy, lh, lw, canvas, shelf_y, cursor_x))
        cursor_x += slot_w
        shelf_h = max(shelf_h, slot_h)
    canvas_sizes.append((shelf_y + shelf_h, canvas_width))
    return Packing(levels, canvas_sizes)


def cell_level_map(packing: Packing, canvas: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[h, w]`` long map of P-Net output cells of one canvas to level ids (-1: no level)."""
    height, width = packing.canvas_sizes[canvas]
    out_h, out_w = pnet_output_size(height, width)
    table = torch.full((max(out_h, 0), max(out_w, 0)), -1, dtype=torch.long)
    for level_id, lv in enumerate(packing.levels):
        if lv.canvas != canvas:
            continue
        nh, nw = pnet_output_size(_even(lv.height), _even(lv.width))
        cy, cx = lv.y0 // PNET_STRIDE, lv.x0 // PNET_STRIDE
        table[cy : cy + nh, cx : cx + nw] = level_id
    return table.to(device)
