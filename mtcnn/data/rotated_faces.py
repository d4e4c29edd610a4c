"""Training samples of the rotation-calibrating cascade (:mod:`mtcnn.nets.pcn`), cut fresh for every
batch: faces turned by a random angle, with that angle as the label.

A sample file holds upright crops only, and turning a stored crop by anything but a quarter turn
would leave empty corners the net could learn to read. So faces are kept in memory as RGB
*canvases* with context (:class:`FaceCanvases`: a square of ``1 + 2·margin`` times the face's
larger side around its centre, resampled to ``S×S`` once, as :mod:`mtcnn.data.facepoints` does for
the landmark cascade), and every batch cuts its windows out of them with one batched
:func:`~mtcnn.ops.landmark_crops.affine_crops` call, turned about the face's centre by the drawn
angle: the window then shows the face turned with its real surroundings.

For a face of box ``b`` (its upright box, WIDER-style, ``w × h``) turned by ``θ`` degrees
(counter-clockwise as shown, the convention of :mod:`mtcnn.rotation`) about the box centre, the
turned face's box in the turned image is ``b`` itself, upright-sized and centred on the same point:
a window drawn around that centre (shifted and scaled at random) gets the IoU label of the MTCNN
rules against ``b`` (positive ≥ 0.65, part face ≥ 0.4, below that ignored: negatives come from
elsewhere) and the box offsets that move it onto ``b``. The face's angle in the window is ``θ``:
turning the window by ``-θ`` makes the face upright. Half the faces are mirrored (a mirrored face
at ``θ`` is at ``-θ``).

Negatives are the ``neg`` samples of ordinary sample files at the net's input size (for stage 1
P-Net's, for later stages the hard negatives mined for R- and O-Net), turned by a random quarter
turn and mirrored at random (exact pixel permutations: a non-face has no angle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtcnn.atomic import atomic_path
from mtcnn.data.annotations import ImageAnnotation
from mtcnn.errors import DataError
from mtcnn.io import ImageReadError, read_image_rgb
from mtcnn.ops.boxes import paired_iou
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.landmark_crops import affine_crops
from mtcnn.rotation import turn_crops
from mtcnn.structures import Label

PIXEL_MEAN, PIXEL_SCALE = 127.5, 0.0078125
#: IoU rules of the MTCNN samples (SPEC §1): positives, part faces.
POS_IOU, PART_IOU = 0.65, 0.4
#: ``label`` of a window between the part-face and the negative rule: no loss at all.
IGNORE = -3


@dataclass(frozen=True)
class FaceCanvases:
    """Faces in memory: canvases uint8 ``[N, 3, S, S]`` (RGB), each face's upright box ``[N, 4]`` in
    canvas pixels (float32), and the image each came from."""

    canvases: torch.Tensor
    boxes: torch.Tensor
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.canvases.shape[0])

    @property
    def size(self) -> int:
        return int(self.canvases.shape[-1])

    @staticmethod
    def concat(sets: Sequence["FaceCanvases"]) -> "FaceCanvases":
        sets = [s for s in sets if len(s)]
        if not sets:
            raise DataError("no faces to train on")
        if len(sets) == 1:
            return sets[0]
        return FaceCanvases(torch.cat([s.canvases for s in sets]), torch.cat([s.boxes for s in sets]),
                            tuple(p for s in sets for p in s.paths))


def face_canvases(records: Sequence[ImageAnnotation], size: int = 96, margin: float = 0.5, min_face: float = 20.0,
                  name: str = "faces", progress: bool = True, chunk: int = 64) -> FaceCanvases:
    """Every face of ``records`` at least ``min_face`` pixels on its shorter side, not ignored, as
    one ``size×size`` canvas: the square of side ``(1 + 2·margin)·max(w, h)`` around the box centre
    (area-resampled; outside the photo reads 0, as in the detector's crops)."""
    canvases, boxes, paths = [], [], []
    todo = [r for r in records if r.num_faces]
    done = 0
    for start in range(0, len(todo), chunk):
        images, regions, index, face_boxes = [], [], [], []
        for r in todo[start : start + chunk]:
            b = np.asarray(r.boxes, np.float32).reshape(-1, 4)
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            keep = (np.minimum(w, h) >= min_face) & ~np.asarray(r.ignore, bool)
            if not keep.any():
                continue
            try:
                image = torch.from_numpy(np.ascontiguousarray(read_image_rgb(r.path))).permute(2, 0, 1)
            except ImageReadError as e:
                print(f"error: {e} (left out)", file=sys.stderr)
                continue
            images.append(image)
            for j in np.flatnonzero(keep):
                face_boxes.append(b[j])
                index.append(len(images) - 1)
                paths.append(str(r.path))
        if not face_boxes:
            continue
        fb = torch.from_numpy(np.stack(face_boxes))
        centre = (fb[:, :2] + fb[:, 2:]) / 2
        half = torch.maximum(fb[:, 2] - fb[:, 0], fb[:, 3] - fb[:, 1])[:, None] * (0.5 + margin)
        region = torch.cat([centre - half, centre + half], dim=1)
        crops = crop_resize(images, region, torch.tensor(index), size)
        canvases.append(crops.round().clamp(0, 255).to(torch.uint8).contiguous())
        scale = size / (2 * half)
        boxes.append(((fb.reshape(-1, 2, 2) - region[:, None, :2]) * scale[:, None]).reshape(-1, 4))
        done = min(start + chunk, len(todo))
        if progress:
            print(f"\rfaces of {done}/{len(todo)} images from {name}", end="", file=sys.stderr, flush=True)
    if progress and todo:
        print(file=sys.stderr)
    if not canvases:
        return FaceCanvases(torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros((0, 4)), ())
    return FaceCanvases(torch.cat(canvases), torch.cat(boxes).float(), tuple(paths))


def cached_face_canvases(records: Sequence[ImageAnnotation], key: Mapping[str, Any], cache_dir: str | os.PathLike | None,
                         name: str, **kw) -> FaceCanvases:
    """:func:`face_canvases`, read from / written to ``cache_dir`` (``pcn_faces_<name>_<hash>.npz``;
    ``key`` names what the records came from)."""
    if cache_dir is None:
        return face_canvases(records, name=name, **kw)
    digest = hashlib.sha256()
    digest.update(json.dumps({**key, **{k: v for k, v in kw.items() if k != "progress"}}, sort_keys=True, default=str).encode())
    for r in records:
        digest.update(str(r.path).encode())
        digest.update(np.ascontiguousarray(r.boxes, np.float32).tobytes())
        digest.update(np.asarray(r.ignore, bool).tobytes())
    path = Path(cache_dir) / f"pcn_faces_{name}_{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return FaceCanvases(torch.from_numpy(z["canvases"]), torch.from_numpy(z["boxes"]), tuple(str(p) for p in z["paths"]))
    data = face_canvases(records, name=name, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, canvases=data.canvases.numpy(), boxes=data.boxes.numpy(), paths=np.array(data.paths, dtype=str))
    return data


@dataclass
class WindowJitter:
    """How windows are drawn around a face: centre shift up to ``shift`` of the face's larger side on
    each axis, side ``max(w, h)`` times a log-uniform factor in ``[1/scale, scale]``."""

    shift: float = 0.2
    scale: float = 1.25


def sample_face_windows(data: FaceCanvases, index: torch.Tensor, size: int, angle_range: float, g: torch.Generator,
                        jitter: WindowJitter = WindowJitter(), mirror: bool = True) -> dict[str, torch.Tensor]:
    """Windows of faces ``index`` turned by angles uniform in ``[-angle_range, angle_range)``.

    Returns ``images`` float ``[B, 3, size, size]`` normalised as the nets take them, ``label``
    (:class:`~mtcnn.structures.Label` POS / PART, or :data:`IGNORE`), ``bbox`` ``[B, 4]`` the offsets
    from the window to the face's box (MTCNN encoding, in the window's frame), ``angle`` ``[B]``
    degrees (the face's angle in the window), and ``window`` / ``iou`` / ``mirrored`` for tests."""
    n = int(index.numel())
    boxes = data.boxes[index]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    theta = (torch.rand(n, generator=g) * 2 - 1) * angle_range
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * jitter.shift * side[:, None]
    factor = torch.exp((torch.rand(n, generator=g) * 2 - 1) * math.log(jitter.scale))
    flipped = (torch.rand(n, generator=g) < 0.5) if mirror else torch.zeros(n, dtype=torch.bool)
    # The window, axis-aligned in the turned image (whose pixels around the face are the canvas's
    # turned about the face centre): centre + shift, side · factor.
    wc = centre + shift
    half = (side * factor / 2)[:, None]
    window = torch.cat([wc - half, wc + half], dim=1)
    iou = paired_iou(window, boxes)
    label = torch.full((n,), IGNORE, dtype=torch.int64)
    label[iou >= PART_IOU] = int(Label.PART)
    label[iou >= POS_IOU] = int(Label.POS)
    wside = 2 * half
    bbox = (boxes - window) / wside
    # A point p of the turned image lies at c + R(-θ)(p - c) of the canvas, R(-θ) = [[cos, -sin], [sin, cos]]
    # in image axes (rows down), the inverse of rotation.rotation_matrix's turn.
    rad = torch.deg2rad(theta)
    cos, sin = torch.cos(rad), torch.sin(rad)
    inv = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [n, 2, 2]
    origin = centre + (inv @ (window[:, :2] - centre)[..., None])[..., 0]
    axes = torch.stack([inv[:, :, 0] * wside, inv[:, :, 1] * wside], dim=1)  # rows: the window's x and y axes
    # Mirror: read the window right to left; the face's angle and the box's x offsets change sign.
    origin = torch.where(flipped[:, None], origin + axes[:, 0], origin)
    axes = axes.clone()
    axes[:, 0] = torch.where(flipped[:, None], -axes[:, 0], axes[:, 0])
    bbox = torch.where(flipped[:, None], torch.stack([-bbox[:, 2], bbox[:, 1], -bbox[:, 0], bbox[:, 3]], 1), bbox)
    theta = torch.where(flipped, -theta, theta)
    crops = affine_crops(data.canvases[index], origin, axes, (size, size))
    return {
        "images": ((crops - PIXEL_MEAN) * PIXEL_SCALE).contiguous(memory_format=torch.channels_last),
        "label": label, "bbox": bbox.float(), "angle": theta.float(), "window": window, "iou": iou, "mirrored": flipped,
    }  # fmt: skip


def turn_negatives(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each ``[B, C, S, S]`` image turned by a random quarter turn and mirrored at random (exact)."""
    n = images.shape[0]
    turns = torch.randint(0, 4, (n,), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5
    return turn_crops(torch.where(mirror[:, None, None, None], images.flip(3), images), turns)


def load_negatives(files: Sequence[str | os.PathLike], size: int, limit: int | None, seed: int) -> torch.Tensor:
    """The ``neg`` crops ``uint8 [N, 3, size, size]`` of sample files (at most ``limit``, a seeded
    random choice when there are more)."""
    from mtcnn.data.h5 import SampleFileError, SampleReader

    parts = []
    for f in files:
        try:
            reader = SampleReader(f, expected_size=size)
        except (FileNotFoundError, SampleFileError) as e:
            raise DataError(f"negatives: {e}") from None
        try:
            count = reader.counts()["neg"]
            rows = np.arange(count)
            if limit is not None and count > limit:
                rows = np.sort(np.random.default_rng([seed, len(parts)]).choice(count, limit, replace=False))
            parts.append(torch.from_numpy(reader.get("neg", rows, ("images",))["images"]).permute(0, 3, 1, 2).contiguous())
        finally:
            reader.close()
    if not parts:
        raise DataError("negatives: no sample files given")
    out = torch.cat(parts)
    if limit is not None and out.shape[0] > limit:
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(out.shape[0], limit, replace=False)))
        out = out[keep]
    return out


def generator(seed: int, *parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


class RotatedBatchLoader:
    """One epoch of batches of ``faces_per_batch`` turned face windows and ``negatives_per_batch``
    negatives; a pure function of (seed, epoch, step, rank), resumable from (epoch, step)."""

    def __init__(self, faces: FaceCanvases, negatives: torch.Tensor, size: int, angle_range: float,
                 faces_per_batch: int, negatives_per_batch: int, steps: int, seed: int, jitter: WindowJitter,
                 rank: int = 0, world: int = 1):
        self.faces, self.negatives, self.size, self.angle_range = faces, negatives, size, angle_range
        self.faces_per_batch, self.negatives_per_batch = faces_per_batch, negatives_per_batch
        self.steps, self.seed, self.jitter, self.rank, self.world = steps, seed, jitter, rank, world
        self.epoch, self.step = 0, 0

    def batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        g = generator(self.seed, epoch, step, self.rank)
        face_index = torch.randint(0, len(self.faces), (self.faces_per_batch,), generator=g)
        out = sample_face_windows(self.faces, face_index, self.size, self.angle_range, g, self.jitter)
        neg_index = torch.randint(0, self.negatives.shape[0], (self.negatives_per_batch,), generator=g)
        negs = turn_negatives(self.negatives[neg_index].float(), g)
        negs = ((negs - PIXEL_MEAN) * PIXEL_SCALE).contiguous(memory_format=torch.channels_last)
        k = self.negatives_per_batch
        return {
            "images": torch.cat([out["images"], negs]).contiguous(memory_format=torch.channels_last),
            "label": torch.cat([out["label"], torch.full((k,), int(Label.NEG), dtype=torch.int64)]),
            "bbox": torch.cat([out["bbox"], torch.zeros((k, 4))]),
            "angle": torch.cat([out["angle"], torch.full((k,), float("nan"))]),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.step < self.steps:
            step = self.step
            self.step += 1
            yield self.batch(self.epoch, step)
        self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not {"epoch", "step"} <= set(state):
            raise ValueError("loader state needs 'epoch' and 'step'")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
