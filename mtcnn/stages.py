"""The three cascade stages over batched tensors.

These functions are the one implementation of the MTCNN stages: the detector calls them, and so
does hard-example mining, which needs each stage's raw candidates. Each stage takes the images as
a list of ``[3, H, W]`` RGB tensors, uint8 (preferred: the CPU resizes uint8 several times
faster) or float holding 0..255 values, sizes may differ, and returns :class:`Candidates` with
calibrated, *unsquared* boxes; the next stage squares its input itself. R-Net and O-Net accept a
shared ``mip_cache`` dict so both read crops from the same per-image mip chains.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.nets.registry import get_net_spec
from mtcnn.ops.boxes import batched_nms, square_boxes
from mtcnn.nets.cascade import CASCADE_NETS, PATCH_SIZE, STANDARDISE_EPS, nets_of_level
from mtcnn.ops.coding import decode_boxes, decode_landmarks, unflatten_landmarks
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.inference import CheckedNet, one_dnn_net, speed_up_layers
from mtcnn.ops.lanes import lane_safe_batch, lanes_available, run_in_lanes
from mtcnn.ops.landmark_crops import crop_resize_atlas, from_crop, patch_boxes, region_boxes, square_grid_box, to_grey
from mtcnn.ops.pyramid import PNET_CELL, PNET_STRIDE, cell_level_map, pack_pyramid

# The cascade's nets share one input normalisation; the registry holds it (SPEC §2/§11).
PIXEL_MEAN = get_net_spec("pnet").mean
PIXEL_SCALE = get_net_spec("pnet").scale
if any((get_net_spec(n).mean, get_net_spec(n).scale) != (PIXEL_MEAN, PIXEL_SCALE) for n in ("rnet", "onet")):
    raise ImportError("the stages need P-, R- and O-Net to share one input normalisation")
if (PNET_CELL, PNET_STRIDE) != (get_net_spec("pnet").crop_size, get_net_spec("pnet").stride):
    raise ImportError("mtcnn.ops.pyramid's P-Net cell and stride differ from the registered pnet")
RNET_SIZE = get_net_spec("rnet").crop_size
ONET_SIZE = get_net_spec("onet").crop_size


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Raw 0..255 values -> the nets' input range, (x - mean) * scale, in channels-last layout.

    Channels-last is what oneDNN and cuDNN run fastest for these narrow convolutions (4-5× on a
    CPU versus NCHW for O-Net); the nets are converted to it by :func:`prepare_for_inference`.
    """
    return ((pixels - PIXEL_MEAN) * PIXEL_SCALE).contiguous(memory_format=torch.channels_last)


def prepare_for_inference(net: nn.Module, device: torch.device | str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of ``net`` on ``device`` in eval mode and channels-last layout (see
    :func:`normalise`), with layers swapped for identical faster ones
    (:func:`mtcnn.ops.inference.speed_up_layers`) and, on a CPU, run in oneDNN's blocked layout
    (:class:`mtcnn.ops.inference.OneDnnNet`), in ``dtype`` (float32, or bfloat16 for a crop net
    on a CPU); ``net`` itself is left as it was."""
    on_cpu = torch.device(device).type == "cpu"
    if dtype != torch.float32 and not on_cpu:
        raise ValueError(f"{dtype} inference is implemented for the CPU (oneDNN); on {device} use float32")
    prepared = speed_up_layers(copy.deepcopy(net).to(device=device, memory_format=torch.channels_last).eval())
    return one_dnn_net(prepared, dtype) if on_cpu else prepared


@dataclass(frozen=True)
class Candidates:
    """Face candidates of a batch of images.

    boxes [N,4] float (x1,y1,x2,y2), scores [N], image_index [N] long, landmarks [N,5,2]
    (zeros before O-Net).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    image_index: torch.Tensor
    landmarks: torch.Tensor

    @classmethod
    def empty(cls, device: torch.device | str) -> "Candidates":
        return cls(
            torch.zeros((0, 4), device=device),
            torch.zeros((0,), device=device),
            torch.zeros((0,), dtype=torch.long, device=device),
            torch.zeros((0, 5, 2), device=device),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: torch.Tensor) -> "Candidates":
        return Candidates(self.boxes[index], self.scores[index], self.image_index[index], self.landmarks[index])


def top_per_group(scores: torch.Tensor, groups: torch.Tensor, limit: int | None) -> torch.Tensor | None:
    """Indices (ascending) of the ``limit`` highest-scoring entries of each group (ties by
    index), or None when no group has more than ``limit``: the caller then keeps everything, in
    its order. Bounds the work after a stage when its net fires on most of a photo."""
    if limit is None or scores.numel() <= limit or int(torch.bincount(groups).max()) <= limit:
        return None
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(groups[by_score], stable=True)]
    sizes = torch.bincount(groups[order])
    first = torch.cumsum(sizes, 0) - sizes
    place = torch.arange(order.numel(), device=order.device) - torch.repeat_interleave(first, sizes)
    return order[place < limit].sort().values


@torch.inference_mode()
def run_pnet(
    pnet: nn.Module,
    images: list[torch.Tensor],
    *,
    min_face_size: float = 20.0,
    factor: float = 0.709,
    threshold: float = 0.6,
    nms_scale: float = 0.5,
    nms_image: float = 0.7,
    max_canvas_pixels: int = 6_000_000,
    solo_pixels: int | None | str = "auto",
    max_windows: int | None = None,
    lanes: bool = False,
) -> Candidates:
    """Proposal stage: the pyramid levels of all images on a few canvases, one P-Net pass each
    (on a GPU all levels share packed canvases; on a CPU large levels get a canvas each).

    Cells with face probability ≥ ``threshold`` become boxes (SPEC §11: cell (i, j) of a level
    with scale s is ``(2j/s, 2i/s, (2j+12)/s, (2i+12)/s)``), NMS runs per level (``nms_scale``)
    and then per image (``nms_image``), and boxes are calibrated by the regression offsets.
    ``solo_pixels`` (see :func:`pack_pyramid`): "auto" runs levels of ≥ 16k pixels alone on a
    CPU and packs everything on a GPU. ``max_windows``: at most this many windows per level (of
    each image) enter NMS, the highest-scoring; None: all. ``lanes``: on a CPU at 2 intra-op
    threads, the canvases run in two lanes (:mod:`mtcnn.ops.lanes`), the same results.
    """
    return _proposals(pnet, images, min_face_size=min_face_size, factor=factor, threshold=threshold, nms_scale=nms_scale,
                      nms_image=nms_image, max_canvas_pixels=max_canvas_pixels, solo_pixels=solo_pixels,
                      max_windows=max_windows, lanes=lanes)[0]


@torch.inference_mode()
def run_proposals_with_head(net: nn.Module, images: list[torch.Tensor], **settings) -> tuple[Candidates, torch.Tensor]:
    """:func:`run_pnet` for a 12×12 fully convolutional net whose forward returns a third head
    beside the face logits and box offsets (the rotation-calibrating ``pcn1``'s flip logits):
    the candidates and that head's values ``[N, C]`` at each kept window."""
    return _proposals(net, images, extra_head=True, **settings)


def _proposals(
    pnet: nn.Module,
    images: list[torch.Tensor],
    *,
    min_face_size: float = 20.0,
    factor: float = 0.709,
    threshold: float = 0.6,
    nms_scale: float = 0.5,
    nms_image: float = 0.7,
    max_canvas_pixels: int = 6_000_000,
    solo_pixels: int | None | str = "auto",
    max_windows: int | None = None,
    lanes: bool = False,
    extra_head: bool = False,
) -> tuple[Candidates, torch.Tensor | None]:
    """:func:`run_pnet`; with ``extra_head`` also the third head's values at the kept windows."""
    device = images[0].device if images else torch.device("cpu")
    if solo_pixels == "auto":
        solo_pixels = 16_384 if device.type == "cpu" else None
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    packing = pack_pyramid(sizes, min_face_size, factor, max_canvas_pixels, solo_pixels)
    if not packing.levels:
        return Candidates.empty(device), (torch.zeros((0, 0), device=device) if extra_head else None)
    levels = packing.levels
    level_scale_x = torch.tensor([lv.scale_x for lv in levels], device=device)
    level_scale_y = torch.tensor([lv.scale_y for lv in levels], device=device)
    level_image = torch.tensor([lv.image_index for lv in levels], device=device)
    level_cell_x = torch.tensor([lv.x0 // PNET_STRIDE for lv in levels], device=device)
    level_cell_y = torch.tensor([lv.y0 // PNET_STRIDE for lv in levels], device=device)

    def scan(canvas_id: int, height: int, width: int):
        canvas = _paint_canvas(images, packing, canvas_id, height, width)
        if extra_head:
            logits, reg, extra = pnet(canvas)
        else:
            logits, reg, _ = pnet(canvas, with_landmarks=False)
        prob = torch.softmax(logits[0], dim=0)[1]
        cell_map = cell_level_map(packing, canvas_id, device)
        hit = (prob >= threshold) & (cell_map >= 0)
        ci, cj = torch.nonzero(hit, as_tuple=True)
        lvl = cell_map[ci, cj]
        # The extra head's values ride beside the box offsets (their last columns).
        values = torch.cat([reg[0], extra[0]]) if extra_head else reg[0]
        return lvl, ci - level_cell_y[lvl], cj - level_cell_x[lvl], prob[ci, cj], values[:, ci, cj].T

    scans = [functools.partial(scan, k, h, w) for k, (h, w) in enumerate(packing.canvas_sizes)]
    if lanes and lanes_available(device):
        # Canvases are independent: two lanes, split by pixels (results in canvas order). NMS
        # stays one call over all levels: per canvas it cost more than the lanes saved.
        found = run_in_lanes(scans, costs=[h * w for h, w in packing.canvas_sizes])
    else:
        found = [piece() for piece in scans]
    found_level, found_i, found_j, found_score, found_reg = zip(*found)
    lvl = torch.cat(found_level)
    if lvl.numel() == 0:
        width = found_reg[0].shape[1] - 4 if extra_head else 0
        return Candidates.empty(device), (torch.zeros((0, width), device=device) if extra_head else None)
    i = torch.cat(found_i).float()
    j = torch.cat(found_j).float()
    scores = torch.cat(found_score)
    reg = torch.cat(found_reg)
    sx, sy = level_scale_x[lvl], level_scale_y[lvl]
    boxes = torch.stack(
        [PNET_STRIDE * j / sx, PNET_STRIDE * i / sy, (PNET_STRIDE * j + PNET_CELL) / sx, (PNET_STRIDE * i + PNET_CELL) / sy],
        dim=1,
    )
    top = top_per_group(scores, lvl, max_windows)
    if top is not None:
        boxes, scores, reg, lvl = boxes[top], scores[top], reg[top], lvl[top]
    keep = batched_nms(boxes, scores, lvl, nms_scale)
    boxes, scores, reg, lvl = boxes[keep], scores[keep], reg[keep], lvl[keep]
    image_index = level_image[lvl]
    keep = batched_nms(boxes, scores, image_index, nms_image)
    boxes = decode_boxes(boxes[keep], reg[keep, :4])
    n = boxes.shape[0]
    extra = reg[keep, 4:] if extra_head else None
    return Candidates(boxes, scores[keep], image_index[keep], torch.zeros((n, 5, 2), device=device)), extra


def _resize_level(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize, normalised to the nets' range, float, channels-last; uint8 on
    the CPU takes torch's SIMD path (8× faster)."""
    if image.dtype == torch.uint8 and image.device.type == "cpu":
        source = image[None].contiguous(memory_format=torch.channels_last)
        level = F.interpolate(source, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        # uint8 -> normalised float in one pass: offset + scale·x is (x - mean)·scale exactly
        # here (x an integer, scale a power of two), and a 0-dim float offset makes it float.
        return torch.add(_NORM_OFFSET, level, alpha=PIXEL_SCALE) if _EXACT_NORM else (level.float() - PIXEL_MEAN) * PIXEL_SCALE
    level = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (level - PIXEL_MEAN) * PIXEL_SCALE


# (x - mean)·scale == x·scale - mean·scale bit for bit when scale is a power of two (both
# sides exact up to one rounding of the same value) and mean·scale is exact.
_EXACT_NORM = math.frexp(PIXEL_SCALE)[0] == 0.5 and float(torch.tensor(PIXEL_MEAN * PIXEL_SCALE)) == PIXEL_MEAN * PIXEL_SCALE
_NORM_OFFSET = torch.tensor(-PIXEL_MEAN * PIXEL_SCALE)


def _paint_canvas(images: list[torch.Tensor], packing, canvas_id: int, height: int, width: int) -> torch.Tensor:
    """Resize each level of this canvas into its slot, already normalised and channels-last;
    odd slots get their edge row/column repeated. Cells outside slots are never read back."""
    levels = [lv for lv in packing.levels if lv.canvas == canvas_id]
    if len(levels) == 1 and (levels[0].y0, levels[0].x0) == (0, 0):
        # A level alone on its canvas (every large level on a CPU): the canvas is the level with
        # its edge repeated to even size; no zero fill and no copy into a slot.
        lv = levels[0]
        level = _resize_level(images[lv.image_index], lv.height, lv.width)
        if (lv.height | lv.width) & 1:
            level = F.pad(level, (0, lv.width & 1, 0, lv.height & 1), mode="replicate")
        if tuple(level.shape[-2:]) == (height, width):
            return level.contiguous(memory_format=torch.channels_last)
    canvas = torch.zeros((1, 3, height, width), device=images[0].device).contiguous(memory_format=torch.channels_last)
    for lv in levels:
        level = _resize_level(images[lv.image_index], lv.height, lv.width)
        y0, x0, h, w = lv.y0, lv.x0, lv.height, lv.width
        canvas[:, :, y0 : y0 + h, x0 : x0 + w] = level
        if h & 1:
            canvas[:, :, y0 + h, x0 : x0 + w] = level[:, :, -1, :]
        if w & 1:
            canvas[:, :, y0 : y0 + h + (h & 1), x0 + w] = canvas[:, :, y0 : y0 + h + (h & 1), x0 + w - 1]
    return canvas


def _forward_chunks(net: nn.Module, inputs: torch.Tensor, chunk_size: int, with_landmarks: bool):
    logits, regs, marks = [], [], []
    for start in range(0, inputs.shape[0], chunk_size):
        lg, rg, lm = net(inputs[start : start + chunk_size], with_landmarks=with_landmarks)
        logits.append(lg)
        regs.append(rg)
        if with_landmarks:
            marks.append(lm)
    return torch.cat(logits), torch.cat(regs), (torch.cat(marks) if with_landmarks else None)


def crop_candidates(
    images: list[torch.Tensor], candidates: Candidates, size: int, mip_cache: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square each candidate and cut it out at ``size``²: returns (normalised crops, squared boxes).

    Squares are truncated to whole pixels first, as the original cascade does ("square -> fix",
    SPEC §6): the released weights were trained on pixel-aligned crops, and sub-pixel crops of
    the same boxes shift borderline scores (measured on dlib_faces: 2 extra detections).
    """
    squares = square_boxes(candidates.boxes).trunc()
    crops = crop_resize(images, squares, candidates.image_index, size, mip_cache)
    return normalise(crops), squares


def chunk_bounds(n: int, chunk_size: int, split_from: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of the forward passes over ``n`` crops: ``ceil(n / chunk_size)`` passes,
    rounded up to an even count when there is more than one (two lanes get equal shares), of
    sizes differing by at most one; ``split_from``: ``n`` of at least this many that fit one
    pass still get two. The sequential and the two-lane paths use the same passes: a crop's
    outputs can depend on the size of the batch it runs in (by ~1e-7)."""
    count = -(-n // max(1, chunk_size))
    count += count > 1 and count & 1
    if count == 1 and split_from is not None and n >= split_from:
        count = 2
    if count <= 1:
        return [(0, n)] if n else []
    edges = [n * k // count for k in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


# Below this many crops per pass two lanes gain less than they cost (a thread hand-off, a second crop call).
_LANE_MIN_CHUNK = 16


def _cat_outputs(parts: list, with_landmarks: bool):
    logits, regs, marks = zip(*parts)
    return torch.cat(logits), torch.cat(regs), (torch.cat(marks) if with_landmarks else None)


def _score_crops(net: nn.Module, images: list[torch.Tensor], candidates: Candidates, size: int, threshold: float,
                 chunk_size: int, mip_cache: dict | None, with_landmarks: bool, lanes: bool = False):
    """Crop, run ``net`` and keep the crops whose face probability is ≥ ``threshold``: returns
    (indices of the kept candidates, their squares, scores, box offsets, landmark outputs or None).
    ``lanes``: on a CPU at 2 intra-op threads the passes (:func:`chunk_bounds`) run in two
    lanes, each cutting its own crops (:mod:`mtcnn.ops.lanes`); the same results."""
    device = candidates.boxes.device
    # On a CPU a single pass of ≥ 2×16 crops is split in two, lanes or not (the same passes
    # either way); on a GPU a pass is cheap and lanes are off.
    bounds = chunk_bounds(len(candidates), chunk_size, 2 * _LANE_MIN_CHUNK if device.type == "cpu" else None)
    if lanes and len(bounds) >= 2 and lanes_available(device) and all(lane_safe_batch(e - b) for b, e in bounds):
        half = len(bounds) // 2

        def share(group: list[tuple[int, int]]):
            start, end = group[0][0], group[-1][1]
            crops, squares = crop_candidates(images, candidates.select(slice(start, end)), size, mip_cache)
            outs = [_forward_chunks(net, crops[b - start : e - start], e - b, with_landmarks) for b, e in group]
            return crops, squares, _cat_outputs(outs, with_landmarks)

        shares = run_in_lanes([functools.partial(share, bounds[:half]), functools.partial(share, bounds[half:])])
        crops = None
        squares = torch.cat([sq for _, sq, _ in shares])
        logits, reg, marks = _cat_outputs([out for _, _, out in shares], with_landmarks)
        crop_parts = [c for c, _, _ in shares]
    else:
        crops, squares = crop_candidates(images, candidates, size, mip_cache)
        outs = [_forward_chunks(net, crops[b:e], e - b, with_landmarks) for b, e in bounds]
        logits, reg, marks = _cat_outputs(outs, with_landmarks)
    scores = torch.softmax(logits, dim=1)[:, 1]
    if isinstance(net, CheckedNet):
        # Windows the reduced-precision net scores near the threshold are decided in float32.
        kept = torch.nonzero((scores - threshold).abs() < net.margin, as_tuple=True)[0]
        if kept.numel():
            if crops is None:
                crops = torch.cat(crop_parts)
            exact_chunk = max(1, int(chunk_size * net.exact_chunk_scale))
            lg, rg, lm = _forward_chunks(net.exact, crops[kept], exact_chunk, with_landmarks=with_landmarks)
            scores[kept], reg[kept] = torch.softmax(lg, dim=1)[:, 1], rg
            if with_landmarks:
                marks[kept] = lm
    passed = torch.nonzero(scores >= threshold, as_tuple=True)[0]
    return passed, squares[passed], scores[passed], reg[passed], (marks[passed] if with_landmarks else None)


def _limit(candidates: Candidates, max_candidates: int | None) -> Candidates:
    top = top_per_group(candidates.scores, candidates.image_index, max_candidates)
    return candidates if top is None else candidates.select(top)


@torch.inference_mode()
def run_rnet(
    rnet: nn.Module,
    images: list[torch.Tensor],
    candidates: Candidates,
    *,
    threshold: float = 0.7,
    nms: float = 0.7,
    chunk_size: int = 32,
    mip_cache: dict | None = None,
    max_candidates: int | None = None,
    lanes: bool = False,
) -> Candidates:
    """Refinement stage: score 24×24 crops, keep ≥ threshold, NMS per image, then calibrate.
    ``max_candidates``: at most this many candidates of each image are scored, the highest-scoring.
    ``lanes``: see :func:`_score_crops`."""
    candidates = _limit(candidates, max_candidates)
    if len(candidates) == 0:
        return candidates
    passed, squares, scores, reg, _ = _score_crops(rnet, images, candidates, RNET_SIZE, threshold, chunk_size,
                                                   mip_cache, with_landmarks=False, lanes=lanes)
    image_index = candidates.image_index[passed]
    keep = batched_nms(squares, scores, image_index, nms)
    boxes = decode_boxes(squares[keep], reg[keep])
    return Candidates(boxes, scores[keep], image_index[keep], candidates.landmarks[passed][keep])


@torch.inference_mode()
def run_onet(
    onet: nn.Module,
    images: list[torch.Tensor],
    candidates: Candidates,
    *,
    threshold: float = 0.7,
    nms: float = 0.7,
    nms_mode: str = "min",
    chunk_size: int = 32,
    mip_cache: dict | None = None,
    max_candidates: int | None = None,
    lanes: bool = False,
) -> Candidates:
    """Output stage: score 48×48 crops, decode landmarks in the square fed to O-Net, calibrate,
    then NMS per image (``nms_mode`` "min" as in the original). ``max_candidates`` as for
    :func:`run_rnet`."""
    candidates = _limit(candidates, max_candidates)
    if len(candidates) == 0:
        return candidates
    _, found = score_onet(onet, images, candidates, threshold=threshold, chunk_size=chunk_size, mip_cache=mip_cache,
                          lanes=lanes)
    keep = batched_nms(found.boxes, found.scores, found.image_index, nms, nms_mode)
    return found.select(keep)


@torch.inference_mode()
def refit_points(
    onet: nn.Module,
    images: list[torch.Tensor],
    candidates: Candidates,
    *,
    chunk_size: int = 32,
    mip_cache: dict | None = None,
    lanes: bool = False,
) -> Candidates:
    """``candidates`` with O-Net's points placed again, in a crop of each one's own (final) box;
    boxes and scores unchanged.

    O-Net's NMS keeps a face's highest-scoring crop, which is not always its best-framed one: an
    O-Net whose scores favour tight crops then gives every face the points of a crop it frames
    badly. The calibrated box frames the face the way O-Net's box targets do, so the points of
    its crop do not depend on which crop won (CNN_FacePoint test, docs/default_models.md)."""
    if len(candidates) == 0:
        return candidates
    _, again = score_onet(onet, images, candidates, threshold=-1.0, chunk_size=chunk_size, mip_cache=mip_cache, lanes=lanes)
    return Candidates(candidates.boxes, candidates.scores, candidates.image_index, again.landmarks)


@torch.inference_mode()
def score_onet(
    onet: nn.Module,
    images: list[torch.Tensor],
    candidates: Candidates,
    *,
    threshold: float = 0.7,
    chunk_size: int = 32,
    mip_cache: dict | None = None,
    lanes: bool = False,
) -> tuple[torch.Tensor, Candidates]:
    """O-Net on given boxes without NMS: ``(passed, found)``, the indices ``[M]`` of the
    candidates scoring ≥ ``threshold`` and their calibrated boxes, scores and landmarks, in the
    same order. :func:`run_onet` is this plus NMS; a tracker re-fits its faces with it and keeps
    each face's identity through ``passed``."""
    if len(candidates) == 0:
        return torch.zeros((0,), dtype=torch.long, device=candidates.boxes.device), candidates
    passed, squares, scores, reg, marks = _score_crops(onet, images, candidates, ONET_SIZE, threshold, chunk_size,
                                                       mip_cache, with_landmarks=True, lanes=lanes)
    landmarks = decode_landmarks(squares, unflatten_landmarks(marks))
    boxes = decode_boxes(squares, reg)
    return passed, Candidates(boxes, scores, candidates.image_index[passed], landmarks)


@dataclass(frozen=True)
class CascadePoints:
    """Five points ``[N, 5, 2]`` per face after each level of the Sun et al. cascade."""

    level1: torch.Tensor
    level2: torch.Tensor
    level3: torch.Tensor

    def level(self, k: int) -> torch.Tensor:
        return (self.level1, self.level2, self.level3)[k - 1]


# The cascade's nets standardise each crop (mean 0, deviation 1), which undoes any affine input
# map: they take raw 0..255 crops, with the deviation floor rescaled to raw grey levels, and
# skip a normalisation pass over every crop.
RAW_EPS = STANDARDISE_EPS / PIXEL_SCALE


def _run_in_chunks(net: nn.Module, inputs: torch.Tensor, chunk: int, precision: str = "float32") -> torch.Tensor:
    """``net(inputs)`` in chunks of ``chunk`` faces: small enough that each chunk's feature maps
    stay in a core's L2 cache (64 faces ran ~20 % faster than 256 on a 2 MiB-L2 CPU); float32
    out whatever the ``precision`` of the convolutions."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return torch.cat([net(inputs[s : s + chunk], RAW_EPS) for s in range(0, inputs.shape[0], chunk)]).float()


def _mean_per_point(found: torch.Tensor, point_of: list[int]) -> torch.Tensor:
    """Points ``[N, 5, 2]``: the mean of the estimates ``found [N, M, 2]`` of each point (``point_of[m]``)."""
    index = torch.tensor(point_of, device=found.device)
    total = torch.zeros((found.shape[0], 5, 2), device=found.device).index_add_(1, index, found)
    count = torch.bincount(index, minlength=5).clamp(min=1)
    return total / count[None, :, None]


def _level_one(cascade, grey: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor, mips: dict, chunk: int) -> torch.Tensor:
    """F1, EN1 and NM1 from one crop call; each point is the mean of the nets that predict it."""
    n = boxes.shape[0]
    specs = [CASCADE_NETS[name] for name in nets_of_level(1)]
    regions = [region_boxes(boxes, s.region) for s in specs]
    # EN1/NM1 (31 high) are the top rows of a 39×39 crop of a taller box: one crop size for all.
    grids = [square_grid_box(r, s.input_hw) for r, s in zip(regions, specs)]
    side = specs[0].input_hw[1]
    crops = crop_resize_atlas(grey, torch.cat(grids), image_index.repeat(len(specs)), side, mips)
    found = []
    for k, spec in enumerate(specs):
        inputs = crops[k * n : (k + 1) * n, :, : spec.input_hw[0]]
        uv = _run_in_chunks(cascade.level_one[spec.name], inputs, chunk, cascade.precision).reshape(n, -1, 2)
        found.append(from_crop(uv, regions[k]))
    return _mean_per_point(torch.cat(found, dim=1), [p for s in specs for p in s.points])


def _patch_level(cascade, level: int, grey, boxes, image_index, previous: torch.Tensor, mips: dict, chunk: int) -> torch.Tensor:
    """Ten patch nets of a level from one crop call; each point is the mean of its two nets."""
    n = boxes.shape[0]
    specs = [CASCADE_NETS[name] for name in nets_of_level(level)]
    patches = torch.stack([patch_boxes(previous[:, s.points[0]], boxes, s.half_size) for s in specs], dim=1)  # [N, G, 4]
    g = len(specs)
    crops = crop_resize_atlas(grey, patches.reshape(-1, 4), image_index.repeat_interleave(g), PATCH_SIZE, mips)
    uv = _run_in_chunks(cascade.fused[level], crops.reshape(n, g, PATCH_SIZE, PATCH_SIZE), chunk, cascade.precision)  # [N, G, 2]
    found = from_crop(uv.reshape(n * g, 1, 2), patches.reshape(-1, 4)).reshape(n, g, 2)
    return _mean_per_point(found, [s.points[0] for s in specs])


@torch.inference_mode()
def refine_landmarks(
    cascade,
    images: list[torch.Tensor],
    boxes: torch.Tensor,
    points: torch.Tensor | None = None,
    image_index: torch.Tensor | None = None,
    *,
    start_level: int = 1,
    chunk_size: int = 64,
    mip_cache: dict | None = None,
) -> CascadePoints:
    """The Sun et al. cascade on all faces of all images: level 1 from the face boxes, then levels 2 and 3.

    ``images``: ``[3, H, W]`` RGB uint8 tensors (as for the other stages); ``boxes [N, 4]`` in the
    cascade's convention (tight CNN_FacePoint-style boxes: adapt a detector's boxes with
    ``cascade.adapt_boxes``); ``image_index [N]`` (default: face i in image i); ``points
    [N, 5, 2]`` replace level 1 when ``start_level=2`` (e.g. O-Net's points refined by levels
    2 and 3) and are otherwise unused. ``cascade`` is a prepared
    :class:`~mtcnn.cascade.LandmarkCascade`. Each level is one batched crop call over every face
    (``mip_cache``, if given, holds the *grey* mip chains: not the colour one of R/O-Net), and
    nets run in chunks of ``chunk_size`` faces.
    """
    device = boxes.device
    n = boxes.shape[0]
    if image_index is None:
        image_index = torch.arange(n, device=device)
    if n == 0:
        empty = torch.zeros((0, 5, 2), device=device)
        return CascadePoints(empty, empty, empty)
    if start_level not in (1, 2):
        raise ValueError(f"start_level must be 1 or 2, not {start_level}")
    if start_level == 2 and points is None:
        raise ValueError("start_level=2 needs the points to refine")
    boxes = boxes.float()
    used = set(torch.unique(image_index).tolist())
    # Images without faces get a cheap placeholder: crop_resize never reads them.
    grey = [to_grey(im) if i in used else im[:1] for i, im in enumerate(images)]
    mips = {} if mip_cache is None else mip_cache
    first = _level_one(cascade, grey, boxes, image_index, mips, chunk_size) if start_level == 1 else points.float()
    second = _patch_level(cascade, 2, grey, boxes, image_index, first, mips, chunk_size)
    third = _patch_level(cascade, 3, grey, boxes, image_index, second, mips, chunk_size)
    return CascadePoints(first, second, third)
