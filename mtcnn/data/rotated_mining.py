"""Hard negatives for the rotation-calibrating cascade, mined with its own earlier stages.

For stage 2 (``pcn2``) the photos of the configured sources are turned by random angles (each
``angles_per_photo`` times, uniform in ±180°, seeded by the seed and the photo's position), stage 1
runs on the turned photo, and every window it keeps that overlaps no annotated face (IoU < 0.3
with each turned face box, ignored faces included: never a negative over a face) becomes a
negative, cut as stage 2 will see it: the window's square turned upright by stage 1's flip. For
stage 3 (``pcn3``) stages 1 and 2 run and the crops are turned by stage 2's quarter turn. At most
``per_photo`` of the highest-scoring such windows are kept per turned photo.

The negatives go to an ordinary sample file (``neg`` kind only) written with
:class:`~mtcnn.data.h5.SampleWriter`, committed photo by photo, so a killed run resumes where it
stopped; ``negatives.train`` of ``train_pcn2.yaml`` / ``train_pcn3.yaml`` then lists it beside the
upright cascade's mined negatives.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtcnn.config import bounded
from mtcnn.config.data import SourceConfig
from mtcnn.data.h5 import SampleWriter
from mtcnn.errors import DataError
from mtcnn.io import ImageReadError, read_image_rgb
from mtcnn.ops.boxes import box_iou, square_boxes
from mtcnn.ops.crops import crop_resize
from mtcnn.rotation import rotate_face_boxes, rotate_image, turn_crops
from mtcnn.rotation_pcn import PCNSettings, load_pcn, propose, quarter_turns, refine

NEG_IOU = 0.3


@dataclass
class PCNMiningConfig:
    """``mine_pcn*.yaml``: negatives for ``stage`` from ``sources`` with the nets in ``pcn``."""

    stage: str = "pcn2"
    pcn: str = "{runs}/pcn"
    sources: list[SourceConfig] = field(default_factory=list)
    out: str = "{gen}/pcn_samples/pcn2_neg_train.h5"
    angles_per_photo: int = bounded(2, 1, 64)
    per_photo: int = bounded(30, 1, None, help="at most this many negatives per turned photo, the highest-scoring")
    min_face_size: float = bounded(20.0, 1.0, None)
    factor: float = bounded(0.709, 0.1, 0.95)
    thresholds: tuple[float, float, float] = (0.6, 0.6, 0.7)
    seed: int = 0
    threads: int = bounded(1, 1, 256)


def _negatives_of(image: np.ndarray, faces: np.ndarray, angle: float, nets: dict, stage: str, settings: PCNSettings,
                  cfg: PCNMiningConfig) -> np.ndarray:
    """uint8 ``[n, S, S, 3]`` negatives of one photo turned by ``angle``."""
    turned, matrix = rotate_image(image, angle)
    tensor = torch.from_numpy(np.ascontiguousarray(turned)).permute(2, 0, 1)
    cands, angles = propose(nets, [tensor], settings, cfg.min_face_size, cfg.factor)
    if stage == "pcn3":
        cands, angles = refine(nets, "pcn2", [tensor], cands, angles, settings, {})
    size = 24 if stage == "pcn2" else 48
    if len(cands) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    boxes = cands.boxes
    if len(faces):
        gt = torch.from_numpy(rotate_face_boxes(faces, matrix, angle)).float()
        far = box_iou(boxes, gt).amax(dim=1) < NEG_IOU
    else:
        far = torch.ones(len(cands), dtype=torch.bool)
    idx = torch.nonzero(far, as_tuple=True)[0]
    idx = idx[torch.argsort(cands.scores[idx], descending=True, stable=True)][: cfg.per_photo]
    if idx.numel() == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    squares = square_boxes(boxes[idx]).trunc()
    crops = crop_resize([tensor], squares, torch.zeros(idx.numel(), dtype=torch.long), size)
    crops = turn_crops(crops.round().clamp(0, 255).to(torch.uint8).contiguous(), quarter_turns(angles[idx]))
    return crops.permute(0, 2, 3, 1).contiguous().numpy()


@torch.inference_mode()
def mine_pcn_negatives(cfg: PCNMiningConfig, progress: bool = True) -> dict:
    """Write ``cfg.out`` (resuming a stopped run); returns counts and the rate."""
    from mtcnn.config.paths import resolve_path
    from mtcnn.data.generate import load_source

    if cfg.stage not in ("pcn2", "pcn3"):
        raise DataError(f"stage must be pcn2 or pcn3 (the stage the negatives are for), got {cfg.stage!r}")
    torch.set_num_threads(cfg.threads)
    nets = load_pcn(resolve_path(cfg.pcn))
    settings = PCNSettings(thresholds=tuple(cfg.thresholds))
    records = [r for src in cfg.sources for r in load_source(src)]
    if not records:
        raise DataError("no source photos to mine (check sources)")
    size = 24 if cfg.stage == "pcn2" else 48
    out = resolve_path(cfg.out)
    if out.exists():
        print(f"{out} is complete already (delete it to mine again)", file=sys.stderr)
        return {"file": str(out), "photos": len(records), "negatives_this_run": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"stage": cfg.stage, "generator": "mtcnn.data.rotated_mining", "seed": cfg.seed, "iou_neg": NEG_IOU,
             "config": repr(cfg)}
    writer = SampleWriter(out, size, attrs=attrs, resume=True)
    done, fresh, count, t0 = len(writer.done_items), 0, 0, time.perf_counter()
    for item, record in enumerate(records):
        if item in writer.done_items:
            continue
        try:
            image = read_image_rgb(record.path)
        except ImageReadError as e:
            print(f"error: {e} (left out)", file=sys.stderr)
            continue
        faces = np.asarray(record.boxes, np.float64).reshape(-1, 4)
        angles = np.random.default_rng([cfg.seed, item]).uniform(-180.0, 180.0, cfg.angles_per_photo)
        for angle in angles:
            negs = _negatives_of(image, faces, float(angle), nets, cfg.stage, settings, cfg)
            if len(negs):
                writer.add("neg", negs, source=str(record.path))
                count += len(negs)
        writer.commit(item)
        done, fresh = done + 1, fresh + 1
        if progress and done % 20 == 0:
            rate = fresh / max(time.perf_counter() - t0, 1e-9)
            print(f"\r{out.name}: {done}/{len(records)} photos, {count} negatives, {rate:.1f} photos/s", end="",
                  file=sys.stderr, flush=True)
    path = writer.close()
    if progress:
        print(file=sys.stderr)
    return {"file": str(path), "photos": len(records), "negatives_this_run": count}
