"""Validation of the MTCNN multi-task nets over sample files (metrics: see
:mod:`mtcnn.training.mtcnn_task`): deterministic order, no augmentation, sums all-reduced
under DDP; and a picture of some predictions for TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mtcnn.data.h5 import KINDS, TRAIN_FIELDS, SampleReader
from mtcnn.data.readers import normalise_images
from mtcnn.losses import TaskWeights, flatten_head
from mtcnn.training.distributed import DistInfo


_VAL_KEYS = ("n_pos", "n_neg", "n_part", "n_landmark", "correct", "tp", "fp", "box_abs", "n_box",
             "point_dist", "n_points", "nme", "ce", "box_sq", "lmk_sq")


class Validator:
    """Deterministic validation over a sample file (see the module docstring for the metrics)."""

    def __init__(self, reader: SampleReader, threshold: float, batch_size: int = 2048,
                 max_per_kind: int | None = None, rank: int = 0, world_size: int = 1):
        self.reader = reader
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        counts = reader.counts()
        self.rows = {k: np.arange(min(counts[k], max_per_kind or counts[k]), dtype=np.int64)[rank::world_size]
                     for k in KINDS}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, weights: TaskWeights | None = None,
                 amp: bool = False, info: DistInfo | None = None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(_VAL_KEYS), dtype=torch.float64, device=device)
        acc = dict(zip(_VAL_KEYS, range(len(_VAL_KEYS))))
        t = self.threshold
        try:
            for kind in KINDS:
                rows = self.rows[kind]
                for start in range(0, rows.size, self.batch_size):
                    data = self.reader.get(kind, rows[start:start + self.batch_size], TRAIN_FIELDS)
                    x = normalise_images(data["images"]).to(device)
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                        cls, box, lmk = model(x)
                    cls, box, lmk = (flatten_head(o).float() for o in (cls, box, lmk))
                    prob = torch.softmax(cls, dim=1)[:, 1]
                    n = float(x.shape[0])
                    if kind in ("pos", "neg"):
                        is_pos = kind == "pos"
                        target = torch.full((x.shape[0],), int(is_pos), dtype=torch.long, device=device)
                        sums[acc["ce"]] += F.cross_entropy(cls, target, reduction="sum").double()
                        sums[acc["correct"]] += ((prob > 0.5) == is_pos).sum()
                        sums[acc["tp" if is_pos else "fp"]] += (prob >= t).sum()
                        sums[acc["n_pos" if is_pos else "n_neg"]] += n
                    if kind in ("pos", "part"):
                        target = torch.from_numpy(data["bbox"]).to(device)
                        sums[acc["box_abs"]] += (box - target).abs().sum().double()
                        sums[acc["box_sq"]] += ((box - target) ** 2).sum().double()
                        sums[acc["n_box"]] += n
                    if kind == "part":
                        sums[acc["n_part"]] += n
                    if kind == "landmark":
                        target = torch.from_numpy(data["landmark"]).to(device)
                        # Points an annotation lacks (NaN) count nowhere.
                        known = ~torch.isnan(target.reshape(-1, 5, 2)).any(dim=2)  # [B,5]
                        diff = torch.nan_to_num(lmk - target)
                        sums[acc["lmk_sq"]] += (diff**2).sum().double()
                        dists = diff.reshape(-1, 5, 2).norm(dim=2) * known  # [B,5]
                        gt = target.reshape(-1, 5, 2)
                        iod = (gt[:, 0] - gt[:, 1]).norm(dim=1).clamp(min=1e-6)
                        sums[acc["point_dist"]] += dists.sum().double()
                        sums[acc["n_points"]] += known.sum()
                        sums[acc["nme"]] += (dists.sum(dim=1) / known.sum(dim=1).clamp(min=1) / iod).sum().double()
                        sums[acc["n_landmark"]] += n
        finally:
            model.train(was_training)
        if info is not None and info.enabled:
            dist.all_reduce(sums)
        s = dict(zip(_VAL_KEYS, sums.cpu().tolist()))
        return summarise_validation(s, t, weights)


def summarise_validation(s: Mapping[str, float], threshold: float, weights: TaskWeights | None = None) -> dict[str, float]:
    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    n_cls = s["n_pos"] + s["n_neg"]
    out = {
        "threshold": threshold,
        "accuracy": div(s["correct"], n_cls),
        "recall": div(s["tp"], s["n_pos"]),
        "fpr": div(s["fp"], s["n_neg"]),
        "box_mae": div(s["box_abs"], 4 * s["n_box"]),
        "landmark_error": div(s["point_dist"], s.get("n_points", 5 * s["n_landmark"])),
        "landmark_nme": div(s["nme"], s["n_landmark"]),
        "loss_cls": div(s["ce"], n_cls),
        "loss_box": div(s["box_sq"], s["n_box"]),
        "loss_landmark": div(s["lmk_sq"], s["n_landmark"]),
    }
    if weights is not None:
        parts = [(weights.cls, out["loss_cls"]), (weights.box, out["loss_box"]), (weights.landmark, out["loss_landmark"])]
        out["loss"] = float(sum(w * v for w, v in parts if not math.isnan(v)))
    for k in ("n_pos", "n_neg", "n_part", "n_landmark"):
        out[k] = int(s[k])
    return out


@torch.no_grad()
def validation_image(model: nn.Module, reader: SampleReader, count: int, device: torch.device,
                     threshold: float = 0.5, cell: int = 96, columns: int = 8) -> np.ndarray | None:
    """A grid (uint8 H×W×3 RGB) of the first validation pos and landmark crops, upscaled to
    ``cell`` px, with ground truth in green (box from the offsets, landmarks) and the
    prediction in red (box, landmarks) or grey when the face probability is below ``threshold``."""
    import cv2

    counts = reader.counts()
    n_lmk = min(counts["landmark"], (count + 1) // 2)
    n_pos = min(counts["pos"], count - n_lmk)
    picks = [("pos", n_pos), ("landmark", n_lmk)]
    tiles = []
    was_training = model.training
    model.eval()
    try:
        for kind, n in picks:
            if n <= 0:
                continue
            data = reader.get(kind, np.arange(n), TRAIN_FIELDS)
            cls, box, lmk = model(normalise_images(data["images"]).to(device))
            prob = torch.softmax(flatten_head(cls).float(), 1)[:, 1].cpu().numpy()
            box = flatten_head(box).float().cpu().numpy()
            lmk = flatten_head(lmk).float().cpu().numpy()
            for i in range(n):
                img = cv2.resize(data["images"][i], (cell, cell), interpolation=cv2.INTER_NEAREST)
                img = np.ascontiguousarray(img)
                pred_colour = (255, 40, 40) if prob[i] >= threshold else (150, 150, 150)
                if kind == "pos":
                    for offs, colour in ((data["bbox"][i], (40, 220, 40)), (box[i], pred_colour)):
                        x1, y1, x2, y2 = (np.asarray(offs) + np.array([0, 0, 1, 1])) * (cell - 1)
                        cv2.rectangle(img, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), colour, 1)
                else:
                    for pts, colour in ((data["landmark"][i], (40, 220, 40)), (lmk[i], pred_colour)):
                        for x, y in np.asarray(pts).reshape(5, 2) * cell:
                            cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1)
                cv2.putText(img, f"{prob[i]:.2f}", (2, cell - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
                tiles.append(img)
    finally:
        model.train(was_training)
    if not tiles:
        return None
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = tile
    return grid
