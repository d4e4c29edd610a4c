"""Batched geometric augmentation of in-memory face crops (:class:`mtcnn.data.face_crops.FaceCrops`).

A net's input window is an affine image of the reference frame: output coordinates ``o`` in
``[-1, 1]²`` (the window's outer edges) come from reference coordinates

    r = centre + half · (s · R(θ) · F · o + t)

with ``centre`` / ``half`` the window (the reference box itself: 0 and 1; level 2 of the
MobileNet-V2 cascade: ``nose ± 2·|nose − left eye|``), ``s`` a scale, ``R(θ)`` a rotation, ``F``
an optional mirror ``diag(−1, 1)`` and ``t`` a shift. One ``affine_grid`` + ``grid_sample`` call
warps the whole batch; the points follow through the inverse map, and a mirrored face has its
points renumbered by the left/right permutation (:func:`flip_permutation`), so that "left eye"
stays the image-left eye.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: 5 points: left eye, right eye, nose, left mouth corner, right mouth corner
FLIP_5 = (1, 0, 2, 4, 3)


def _flip_68() -> tuple[int, ...]:
    perm = list(range(68))
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0-16 (8 is the chin)
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils (27-30 bridge and 33 tip stay)
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip (51, 57 stay)
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip (62, 66 stay)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: iBUG 68 points: index j of a mirrored face takes the point that was perm[j]
FLIP_68 = _flip_68()


def flip_permutation(num_landmarks: int) -> tuple[int, ...]:
    """The left/right renumbering of a mirrored face with 5 or 68 points."""
    if num_landmarks == 5:
        return FLIP_5
    if num_landmarks == 68:
        return FLIP_68
    raise ValueError(f"no mirror permutation known for {num_landmarks} points (5 or 68)")


@dataclass(frozen=True)
class AugmentSettings:
    """Random window changes per sample; all zero = the plain window."""

    rotation_deg: float = 0.0  # θ uniform in ±rotation_deg ...
    rotation_prob: float = 1.0  # ... for this fraction of the samples (the rest: θ = 0)
    scale: float = 0.0  # s uniform in 1 ± scale
    shift: float = 0.0  # t uniform in ±shift (window half-sides) per axis
    flip_prob: float = 0.0


def sample_affines(n: int, aug: AugmentSettings, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A [n,2,2] = s·R·F, t [n,2], flipped [n] bool)`` drawn with ``generator``."""
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    theta = (2 * u[:, 0] - 1) * math.radians(aug.rotation_deg) * (u[:, 1] < aug.rotation_prob)
    s = 1 + (2 * u[:, 2] - 1) * aug.scale
    t = (2 * u[:, 3:5] - 1) * aug.shift
    flipped = u[:, 5] < aug.flip_prob
    c, si = torch.cos(theta), torch.sin(theta)
    a = torch.stack([torch.stack([c, -si], -1), torch.stack([si, c], -1)], -2) * s[:, None, None]
    a[:, :, 0] *= torch.where(flipped, -1.0, 1.0)[:, None].to(a)
    return a, t, flipped


def warp(
    images: torch.Tensor, points: torch.Tensor, context: float, out_size: int, a: torch.Tensor, t: torch.Tensor,
    flipped: torch.Tensor | None = None, centre: torch.Tensor | None = None, half: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp stored crops ``[B,C,S,S]`` (covering ``[-context, context]²`` of the reference frame) to
    ``out_size``² windows and their points ``[B,K,2]`` (reference frame) to window coordinates.

    Returns float images (0..255, zero outside the stored crop) and float32 points ``[B,K,2]``.
    """
    b = images.shape[0]
    a = a.to(torch.float64)
    t = t.to(torch.float64)
    centre = torch.zeros(b, 2, dtype=torch.float64) if centre is None else centre.to(torch.float64)
    half = torch.ones(b, dtype=torch.float64) if half is None else half.to(torch.float64).reshape(b)
    full_a = a * half[:, None, None]  # r = centre + half·t + full_a · o
    offset = centre + half[:, None] * t
    theta = torch.cat([full_a, offset[:, :, None]], dim=2) / context
    grid = F.affine_grid(theta.float(), [b, images.shape[1], out_size, out_size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rel = points.to(torch.float64) - offset[:, None, :]
    o = torch.linalg.solve(full_a[:, None], rel[..., None])[..., 0]
    if flipped is not None and bool(flipped.any()):
        perm = torch.tensor(flip_permutation(points.shape[1]))
        o = torch.where(flipped[:, None, None], o[:, perm], o)
    return out, o.float()


def window_to_reference(pred: torch.Tensor, centre: torch.Tensor | None = None, half: torch.Tensor | None = None) -> torch.Tensor:
    """Plain (unaugmented) window coordinates ``[B,K,2]`` back to the reference frame."""
    if centre is None:
        return pred
    return centre[:, None, :] + half.reshape(-1, 1, 1) * pred


def normalise(images: torch.Tensor, mean: float, scale: float, channels: int) -> torch.Tensor:
    """Float 0..255 crops → a net's input: ``(pixel − mean)·scale`` on its channels (grey = luma)."""
    if channels == 1 and images.shape[1] == 3:
        w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images * w).sum(dim=1, keepdim=True)
    elif channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images - mean) * scale


class KeypointBatchLoader:
    """Shuffled, augmented minibatches of in-memory crops for :class:`mtcnn.training.loop.Trainer`.

    Each epoch's order and each step's augmentation are drawn from generators seeded by
    ``(seed, epoch)`` and ``(seed, epoch, step)``, so a resumed run sees the same batches and the
    global RNG is never touched. Under DDP each rank takes every ``world_size``-th sample of the
    shuffled order. Batches: ``images`` (the net's normalised input) and ``landmark`` ``[B, 2K]``
    window coordinates interleaved x, y.
    """

    def __init__(self, crops, spec, batch_size: int, steps_per_epoch: int, aug: AugmentSettings, seed: int = 0,
                 rank: int = 0, world_size: int = 1, windows: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.crops, self.spec, self.aug = crops, spec, aug
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.windows = windows  # (centre [N,2], half [N]) per sample; None = the reference box
        self.epoch, self.step = 0, 0

    def _generator(self, *key: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([self.seed, *key]).generate_state(1, np.uint64)[0] >> 1))
        return g

    def _order(self) -> torch.Tensor:
        n = len(self.crops)
        need = self.steps_per_epoch * self.batch_size * self.world_size
        reps = -(-need // n)
        g = self._generator(self.epoch, 1 << 20)
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:need]
        return order[self.rank :: self.world_size]

    def batch(self, index: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        a, t, flipped = sample_affines(len(index), self.aug, generator)
        centre = half = None
        if self.windows is not None:
            centre, half = self.windows[0][index], self.windows[1][index]
        images, pts = warp(self.crops.images[index], self.crops.points[index], self.crops.context,
                           self.spec.input_size[0], a, t, flipped, centre, half)
        x = normalise(images, self.spec.mean, self.spec.scale, self.spec.in_channels)
        return {"images": x, "landmark": pts.reshape(len(index), -1)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._order()
        while self.step < self.steps_per_epoch:
            idx = order[self.step * self.batch_size : (self.step + 1) * self.batch_size]
            batch = self.batch(idx, self._generator(self.epoch, self.step))
            self.step += 1
            yield batch
        self.epoch, self.step = self.epoch + 1, 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("world_size", self.world_size)) != self.world_size:
            raise ValueError(f"loader state is for {state['world_size']} ranks, this run has {self.world_size}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
