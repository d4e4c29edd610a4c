"""Faces at any angle in one pass: the rotation-calibrating cascade (``MTCNN(rotation="pcn")``).

The three stages of :mod:`mtcnn.nets.pcn` run as the upright cascade does (pyramid and
proposals, then crops of the kept windows, NMS per image after each stage), and each calibrates
the faces' angle one step:

1. ``pcn1`` on the pyramid: windows at any angle; its flip head says up (angle 0) or upside
   down (angle 180).
2. ``pcn2`` on 24×24 crops turned by that angle (an exact pixel permutation, ``torch.rot90``):
   the face is now within ±90°; its head picks -90°, 0° or +90°, added to the angle.
3. ``pcn3`` on 48×48 crops turned by the (quarter-turn) angle so far: the face is within ±45°;
   its regression adds the rest.

Each stage's box offsets are in the frame of the crop it saw; they are decoded there and the
box's corners turned back exactly (:func:`mtcnn.rotation.from_quarter_turn`), so a face's box in
the image is its upright box turned by the quarter-turn part of its angle (``w × h`` becomes
``h × w`` at ±90°). The five points come from the detector's own upright O-Net, run on a crop
turned upright by the face's whole angle (bilinear, from an area-resampled canvas of the face's
surroundings) and mapped back, so ``Detections.landmarks`` are in image coordinates and
:func:`mtcnn.align.norm_crop` cuts the face upright. ``Detections.angles``: degrees
counter-clockwise in (-180, 180], the convention of :mod:`mtcnn.rotation` (turning the image by
``-angle`` makes the face upright).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtcnn.nets.pcn import ANGLE_UNIT, PCN_NETS, TURN_ANGLES
from mtcnn.ops.boxes import batched_nms
from mtcnn.ops.coding import unflatten_landmarks
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.landmark_crops import affine_crops
from mtcnn.rotation import from_quarter_turn, turn_crops
from mtcnn.stages import Candidates, crop_candidates, normalise, prepare_for_inference, run_proposals_with_head
from mtcnn.structures import Detections

#: Where ``MTCNN(rotation="pcn")`` looks for the three nets when ``pcn`` is not given.
DEFAULT_PCN_WEIGHTS = Path(__file__).parent / "weights" / "pcn.pt"


@dataclass(frozen=True)
class PCNSettings:
    """The calibrating cascade's thresholds and NMS (its scores have their own scale)."""

    thresholds: tuple[float, float, float] = (0.6, 0.6, 0.7)
    nms_pnet_scale: float = 0.5
    nms_pnet: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7
    chunk: int = 256
    # Stage 1 sees 12 pixels and calls the flip wrong on about one window in five. A window whose
    # upside-down probability lies within this of 0.5 goes to stage 2 both ways up, and stage 2's
    # NMS keeps the way it scores higher (0: stage 1's call alone). 0.3 was chosen on face_mask
    # val turned (recall at 100 false positives +2-4.5 points; 0.5, every window both ways, adds
    # under 0.3 more): docs/deployment.md.
    flip_both: float = 0.3


def load_pcn(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """The three nets, prepared for inference, from a bundle or a folder of ``pcn1.pt``,
    ``pcn2.pt``, ``pcn3.pt`` (what ``train_models/train_pcn.py`` writes per stage)."""
    from mtcnn.weights import WeightsError, load_stage_net

    path = Path(path) if path is not None else DEFAULT_PCN_WEIGHTS
    if not path.exists():
        raise WeightsError(f"{path}: no rotation-calibrating weights there (train them with train_models/train_pcn.py "
                           "and pass pcn=<folder with pcn1.pt, pcn2.pt, pcn3.pt>)")
    return {name: prepare_for_inference(load_stage_net(path, name), device) for name in PCN_NETS}


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Degrees into (-180, 180]."""
    return 180.0 - torch.remainder(180.0 - angle, 360.0)


def quarter_turns(angle: torch.Tensor) -> torch.Tensor:
    """The ``torch.rot90`` turns ``k`` (0-3) that make a face at ``angle`` (a multiple of 90) upright:
    a face found upright in an image turned by ``k`` is at ``-90·k``."""
    return torch.remainder(torch.round(-angle / 90.0), 4).long()


def boxes_from_turned(squares: torch.Tensor, offsets: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Boxes in the image from offsets ``[N, 4]`` predicted in crops of ``squares`` turned by
    ``turns``: decoded in the turned crop (a unit square), corners turned back, scaled to the square."""
    corners = torch.stack([offsets[:, 0:2], 1.0 + offsets[:, 2:4]], dim=1)  # [N, 2, 2] in the turned unit crop
    one = torch.ones_like(turns, dtype=offsets.dtype)
    back = from_quarter_turn(corners, turns, one, one)
    lo, hi = back.amin(dim=1), back.amax(dim=1)
    side = (squares[:, 2] - squares[:, 0])[:, None]
    return torch.cat([squares[:, :2] + lo * side, squares[:, :2] + hi * side], dim=1)


def _forward(net: nn.Module, x: torch.Tensor, chunk: int):
    outs = [net(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    return [torch.cat([o[k].reshape(o[k].shape[0], -1) for o in outs]) for k in range(3)]


def _stage(net, images, cands: Candidates, angles: torch.Tensor, size: int, threshold: float, chunk: int, mips: dict):
    """Crop the candidates' squares, turn them upright by the quarter-turn ``angles``, run ``net``:
    (kept indices, scores, boxes in the image, orientation outputs, the turns used)."""
    crops, squares = crop_candidates(images, cands, size, mips)
    turns = quarter_turns(angles)
    logits, reg, orient = _forward(net, turn_crops(crops, turns).contiguous(memory_format=torch.channels_last), chunk)
    scores = torch.softmax(logits.float(), dim=1)[:, 1]
    kept = torch.nonzero(scores >= threshold, as_tuple=True)[0]
    boxes = boxes_from_turned(squares[kept], reg[kept].float(), turns[kept])
    return kept, scores[kept], boxes, orient[kept].float()


def upright_landmarks(onet: nn.Module, images: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor,
                      angles: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """O-Net's five points ``[N, 5, 2]`` (image coordinates) for faces at ``angles``: O-Net sees
    each face's square turned upright. The square (side ``max(w, h)``, centred on the box) is read
    from a canvas of 1.5 times its side around it (area-resampled to 96 px, so a large face is not
    aliased) and turned by ``-angle`` there."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros((0, 5, 2), device=boxes.device)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    canvas_px, reach = 96, 1.5
    half = (side * reach / 2)[:, None]
    region = torch.cat([centre - half, centre + half], dim=1)
    canvases = crop_resize(images, region, image_index, canvas_px)
    scale = canvas_px / (2 * half)  # canvas pixels per image pixel, [N, 1]
    c = torch.full((n, 2), canvas_px / 2.0, device=boxes.device)
    s = side[:, None] * scale  # the face square's side on the canvas
    # The upright crop: a face at angle a is the upright face turned by a, which takes an offset
    # (dx, dy) of the face's own frame to (cos a·dx + sin a·dy, -sin a·dx + cos a·dy) in the image
    # (mtcnn.rotation.rotation_matrix): the crop's x and y axes lie along those images of (1, 0), (0, 1).
    rad = torch.deg2rad(angles.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    ax = torch.stack([cos, -sin], dim=1) * s  # the crop's x axis on the canvas
    ay = torch.stack([sin, cos], dim=1) * s
    origin = c - 0.5 * ax - 0.5 * ay
    crops = affine_crops(canvases, origin, torch.stack([ax, ay], dim=1), (48, 48))
    x = normalise(crops).contiguous(memory_format=torch.channels_last)
    marks = torch.cat([onet(x[i : i + chunk], with_landmarks=True)[2] for i in range(0, n, chunk)]).float()
    uv = unflatten_landmarks(marks)  # [N, 5, 2], fractions of the crop
    on_canvas = origin[:, None] + uv[..., 0:1] * ax[:, None] + uv[..., 1:2] * ay[:, None]
    return region[:, None, :2] + on_canvas / scale[:, None]


@torch.inference_mode()
def propose(nets: dict, tensors: list[torch.Tensor], settings: PCNSettings, min_face_size: float, factor: float,
            max_windows: int | None = None) -> tuple[Candidates, torch.Tensor]:
    """Stage 1: candidates at any angle and their angle so far (0 or 180, from the flip head)."""
    cands, flip = run_proposals_with_head(
        nets["pcn1"], tensors, min_face_size=min_face_size, factor=factor, threshold=settings.thresholds[0],
        nms_scale=settings.nms_pnet_scale, nms_image=settings.nms_pnet, max_windows=max_windows,
    )  # fmt: skip
    device = cands.boxes.device
    if len(cands) == 0:
        return cands, torch.zeros((0,), device=device)
    upside_down = torch.softmax(flip.float(), dim=1)[:, 1].to(device)
    angles = torch.where(upside_down > 0.5, 180.0, 0.0)
    unsure = torch.nonzero((upside_down - 0.5).abs() < settings.flip_both, as_tuple=True)[0]
    if unsure.numel() == 0:
        return cands, angles
    both = torch.cat([torch.arange(len(cands), device=device), unsure])
    angles = torch.cat([angles, 180.0 - angles[unsure]])
    return cands.select(both), angles


@torch.inference_mode()
def refine(nets: dict, stage: str, tensors: list[torch.Tensor], cands: Candidates, angles: torch.Tensor,
           settings: PCNSettings, mips: dict) -> tuple[Candidates, torch.Tensor]:
    """Stage 2 (``"pcn2"``) or 3 (``"pcn3"``) on the candidates of the stage before, turned upright by
    their quarter-turn ``angles``: the kept candidates (after NMS per image) and their new angles."""
    if len(cands) == 0:
        return cands, angles
    size, threshold, nms, mode = ((24, settings.thresholds[1], settings.nms_rnet, "union") if stage == "pcn2"
                                  else (48, settings.thresholds[2], settings.nms_onet, "min"))
    kept, scores, boxes, orient = _stage(nets[stage], tensors, cands, angles, size, threshold, settings.chunk, mips)
    image = cands.image_index[kept]
    if stage == "pcn2":
        step = torch.tensor(TURN_ANGLES, device=boxes.device)[orient.argmax(dim=1)]
    else:
        step = orient[:, 0].clamp(-1.0, 1.0) * ANGLE_UNIT
    angles = _wrap(angles[kept] + step)
    keep = batched_nms(boxes, scores, image, nms, mode)
    return Candidates(boxes[keep], scores[keep], image[keep], torch.zeros((keep.numel(), 5, 2), device=boxes.device)), angles[keep]


@torch.inference_mode()
def detect_pcn(detector, tensors: list[torch.Tensor]) -> list[Detections]:
    """:meth:`MTCNN.detect` with ``rotation="pcn"`` on ``[3,H,W]`` tensors: one
    :class:`~mtcnn.structures.Detections` per image, with ``angles``."""
    nets, settings, cfg = detector.pcn_nets, detector.pcn_settings, detector.config
    n = len(tensors)
    cands, angles = propose(nets, tensors, settings, cfg.min_face_size, cfg.factor, cfg.pnet_max_windows)
    mips: dict = {}
    for stage in ("pcn2", "pcn3"):
        cands, angles = refine(nets, stage, tensors, cands, angles, settings, mips)
    if len(cands) == 0:
        return [Detections.empty("cpu", 5, with_angles=True) for _ in range(n)]
    boxes, scores, image = cands.boxes, cands.scores, cands.image_index
    points = upright_landmarks(detector.pcn_onet, tensors, boxes, image, angles, settings.chunk)
    order = torch.argsort(image * 2 - scores, stable=True)
    counts = torch.bincount(image[order], minlength=n).tolist()
    parts = [t[order].float().cpu().split(counts) for t in (boxes, scores, points, angles)]
    return [Detections(b, s, p, a) for b, s, p, a in zip(*parts)]
