"""Mixed-ratio minibatches from a sample file, with online augmentation (SPEC §4, §11).

Every batch holds a fixed number of samples of each kind, concatenated in the order pos, part,
neg, landmark (``composition_for("rnet", 384)`` = 64 / 64 / 192 / 64). Each kind is sampled
independently:

* per epoch ``e`` and kind, the kind's rows are shuffled with a permutation seeded from
  ``(seed, e, kind, cycle)``; when a kind runs out within the epoch a new cycle starts with a
  fresh permutation (no repeats within a cycle). The permutation does not depend on the rank.
* distributed sharding: rank ``r`` of ``world_size`` takes ``perm[r::world_size]`` of every
  cycle (cut to ``N // world_size`` rows so every rank has the same count), so ranks see
  disjoint rows within a cycle and together cover all of them (up to ``world_size - 1``).
* augmentation randomness is seeded from ``(seed, epoch, rank, step)``, so a batch is a pure
  function of ``(seed, epoch, step, rank, world_size)``: the worker count cannot change it and
  :meth:`MixedBatchLoader.load_state_dict` resumes the identical sequence.

The index plan of an epoch is made in the main process; batches are fetched (and augmented)
either in the main process or by ``torch.utils.data.DataLoader`` workers over a map-style
dataset of batch numbers, each worker opening its own HDF5 handle.

Online augmentation (vectorised on the batch, per sample):

* horizontal flip of pos, part and landmark samples with ``p = 0.5`` each. Flipping mirrors the
  pixels, the landmarks (``x -> 1 - x``, swap LE<->RE and LM<->RM) and the box offsets:
  ``(dx1, dy1, dx2, dy2) -> (-dx2, dy1, -dx1, dy2)`` (the reference code left the box targets
  unmirrored, AITTSMD#81 / #299). Negatives are never flipped (nothing to gain).
* colour jitter on every sample (all kinds), on grey levels 0..255 before normalisation:
  ``y = clamp(c * (x - m) + m + delta)`` then ``y = clamp(g + s * (y - g))`` where the contrast
  factor ``c ~ U[0.5, 1.5]`` pivots on the sample's mean grey level ``m``; the brightness
  ``delta ~ U[-0.2, 0.2]`` is additive in units of the normalised input ``(x - 127.5) / 128``
  (as [A]: +-25.6 grey levels, +-0.1 on a 0..1 scale); the saturation factor
  ``s ~ U[0.5, 1.5]`` blends with the per-pixel grey ``g = 0.299 R + 0.587 G + 0.114 B``.
  Hue jitter is not applied. ``color_jitter=False`` turns it off (``flip=False`` likewise).
* photo degradations users' photos have and the training sets lack (off unless asked, in
  :class:`ColorJitter`): with ``grayscale_prob`` a sample becomes grey (old scans, infrared
  cameras), with ``blur_prob`` it is blurred by a binomial [1, 2, 1] / 4 kernel in x and y
  (repeated ``round(S / 24)`` times, at least once, so the blur is alike in face-relative terms
  at 12, 24 and 48 px), as out-of-focus and upscaled small faces are; with ``mask_prob`` a
  positive or part sample gets a synthetic face mask over its lower face
  (:func:`paint_face_masks`, placed by the sample's box offsets, painted before the colour
  jitter so it is lit with the face; its draws come from a side generator, so configs without
  masks get the same batches as before).
* more of the conditions users' photos have (all off unless asked, in :class:`ColorJitter`;
  each op draws from its own side generator, so turning one on or off changes no other draw
  and configs without them get the same batches as before). Per sample, with its probability:

  - ``occlusion_prob``: a rectangle of 10-35 % of the crop's area (aspect 1:3 to 3:1) in one
    flat random colour or uniform noise (hands, cups, hair, other people), painted with the
    mask, before the colour jitter. Positive, part and negative samples anywhere; landmark
    samples only where the rectangle, grown by ``max(1, S / 24)`` px, covers none of their
    points (the first of 64 drawn placements that does not; about 80 % of typical landmark
    crops get one, mostly over the forehead, the chin or a cheek; none fits: not occluded), so
    every target stays visible while the landmark head learns faces with things in front.
  - ``motion_blur_prob``: the mean of the sample along a line of 3-7 px at 24 px (scaled by
    ``S / 24``) at a random angle (:func:`motion_blur`; camera shake, moving people).
  - ``noise_prob``: Gaussian sensor noise, ``sigma`` 2-12 grey levels per pixel, the same in
    the three channels (luminance noise) or, for half of the noisy samples that are not grey,
    independent per channel (:func:`sensor_noise`; low light, small sensors).
  - ``tone_prob``: low contrast and gamma, ``y = p + c * (255 * (x / 255) ** gamma - p)`` with
    ``c ~ U[0.3, 1.0]``, ``gamma`` log-uniform in ``[0.5, 2.0]`` and the pivot ``p ~ U[64, 192]``
    (:func:`tone_curve`; haze, faded scans, flat or dark camera curves).
  - ``resample_prob``: shrunk by a factor ``f ~ U[2, 4]`` (to ``round(S / f)`` px, pixel-area
    averaging as ``cv2.INTER_AREA``) and enlarged back bilinearly as ``cv2.INTER_LINEAR``
    (:func:`resample_down_up`; small, soft faces).
  - ``jpeg_prob``: JPEG-compressed at quality 10-60 (:func:`jpeg_compress`; web and messenger
    photos, at the sample's resolution).

  Order: mask and occlusion (the scene), colour jitter (light), greyscale, blur and motion
  blur (optics), noise (sensor), tone (camera curve), resampling (small faces), JPEG (storage).

Oversampling (off unless asked): ``oversample=[(pattern, factor), ...]`` draws every row whose
source image path matches the shell-style ``pattern`` ``factor`` times per cycle of its kind
instead of once (the largest factor when several patterns match), e.g.
``[("*/face_mask/*", 4)]`` to give a source that supplies 3 % of the positives four times its
share. The epoch length does not change: the other rows are drawn correspondingly less often.

Output batch: ``images`` float32 [B,3,S,S] = (pixel - 127.5) / 128 in RGB order, ``label``
int64 [B], ``bbox`` float32 [B,4], ``landmark`` float32 [B,10].
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mtcnn.data.h5 import KINDS, TRAIN_FIELDS, SampleReader
from mtcnn.data.readers import open_sample_file
from mtcnn.errors import DataError
from mtcnn.ops.coding import decode_boxes, flip_box_offsets, flip_landmarks
from mtcnn.structures import Label

NETS = ("pnet", "rnet", "onet")
_KIND_IDS = {k: i for i, k in enumerate(KINDS)}


class OversampleError(DataError, ValueError):
    """An ``oversample`` pattern matches no source image of the kinds a batch draws."""


def composition_for(net: str, batch_size: int = 384) -> dict[str, int]:
    """Samples of each kind per batch: pos : part : neg : landmark = 1 : 1 : 3 : 1 (SPEC §11).

    ``composition_for("pnet", 384)`` -> ``{"pos": 64, "part": 64, "neg": 192, "landmark": 64}``;
    other batch sizes round ``batch_size / 6`` for pos, part and landmark and give the rest to
    neg.
    """
    if net.lower() not in NETS:
        raise ValueError(f"unknown net {net!r}; expected one of {', '.join(NETS)}")
    if batch_size < 6:
        raise ValueError(f"batch_size must be at least 6 to hold every kind, got {batch_size}")
    one = int(round(batch_size / 6))
    return {"pos": one, "part": one, "neg": batch_size - 3 * one, "landmark": one}


@dataclass(frozen=True)
class ColorJitter:
    """Colour jitter ranges; see the module docstring for the exact operations."""

    brightness: float = 0.2  # additive, in units of the normalised input (pixel - 127.5) / 128
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    mask_prob: float = 0.0
    occlusion_prob: float = 0.0
    occlusion_area: tuple[float, float] = (0.10, 0.35)  # fraction of the crop's area
    motion_blur_prob: float = 0.0
    motion_blur_length: tuple[float, float] = (3.0, 7.0)  # px at 24 px, scaled by S / 24
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (2.0, 12.0)  # grey levels
    noise_colour_share: float = 0.5  # of the noisy samples that are not grey: noise per channel
    tone_prob: float = 0.0
    tone_contrast: tuple[float, float] = (0.3, 1.0)
    tone_gamma: tuple[float, float] = (0.5, 2.0)  # drawn log-uniform
    tone_pivot: tuple[float, float] = (64.0, 192.0)  # grey level the contrast pivots on
    resample_prob: float = 0.0
    resample_factor: tuple[float, float] = (2.0, 4.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (10, 60)

    @classmethod
    def from_config(cls, data: Any) -> ColorJitter:
        """The probabilities of a config's data section (``data.grayscale_prob`` ...); the ranges
        keep their defaults."""
        return cls(**{name: float(getattr(data, name)) for name in DEGRADATION_PROBS})


# The per-sample probabilities of :class:`ColorJitter` (the training config's ``data`` keys).
DEGRADATION_PROBS = ("grayscale_prob", "blur_prob", "mask_prob", "occlusion_prob", "motion_blur_prob", "noise_prob",
                     "tone_prob", "resample_prob", "jpeg_prob")


# Synthetic face-mask colours (RGB grey levels): surgical white and blue, black, grey, teal.
MASK_COLOURS = torch.tensor([[236.0, 238.0, 240.0], [150.0, 196.0, 226.0], [34.0, 35.0, 40.0],
                             [150.0, 152.0, 155.0], [110.0, 190.0, 180.0]])  # fmt: skip


def paint_face_masks(x: torch.Tensor, faces: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Paint a synthetic face mask over the lower face of each sample.

    ``x`` float [B, 3, S, S] grey levels; ``faces`` [B, 4] the face box in crop pixels (x1, y1,
    x2, y2; pixel centres at i + 0.5); ``u`` [B, 6] uniform draws. The mask spans the face box
    from 48-60 % of its height (the nose) to 92-104 % (the chin), 80-96 % of its width, with a
    flat top and a rounded bottom (``|dx| <= half_width * sqrt(1 - t^4)``, ``t`` the fraction
    of the mask's height), one of :data:`MASK_COLOURS` scaled by 0.85-1.15 and darkened by up
    to 15 % towards the chin. Returns a new tensor; pixels outside the masks are unchanged.
    """
    size = x.shape[-1]
    centres = torch.arange(size, dtype=x.dtype) + 0.5
    width = (faces[:, 2] - faces[:, 0]).clamp(min=1e-3)
    height = (faces[:, 3] - faces[:, 1]).clamp(min=1e-3)
    top = 0.48 + 0.12 * u[:, 0]
    bottom = 0.92 + 0.12 * u[:, 1]
    half_width = 0.40 + 0.08 * u[:, 2]
    centre_x = (faces[:, 0] + faces[:, 2]) / 2 + 0.04 * (u[:, 3] - 0.5) * width
    colour_index = (u[:, 4] * len(MASK_COLOURS)).long().clamp(max=len(MASK_COLOURS) - 1)
    colour = (MASK_COLOURS[colour_index] * (0.85 + 0.30 * u[:, 5:6])).clamp(0.0, 255.0)
    v = (centres[None, :] - faces[:, 1:2]) / height[:, None]  # [B, S] fraction of the face height
    t = (v - top[:, None]) / (bottom - top)[:, None]  # [B, S] fraction of the mask height
    reach = half_width[:, None] * torch.sqrt((1.0 - t.pow(4)).clamp(min=0.0))  # [B, S]
    dx = (centres[None, :] - centre_x[:, None]) / width[:, None]  # [B, S]
    inside = (t[:, :, None] >= 0) & (t[:, :, None] <= 1) & (dx.abs()[:, None, :] <= reach[:, :, None])  # [B, S, S]
    shade = colour[:, :, None, None] * (1.0 - 0.15 * t.clamp(0.0, 1.0))[:, None, :, None]  # [B, 3, S, 1]
    return torch.where(inside[:, None], shade.expand_as(x), x)


def _side_generator(generator: torch.Generator | None, salt: int) -> torch.Generator:
    """A generator seeded from ``generator``'s seed and ``salt``: draws from it leave the main
    stream, and so every batch of a config that does not use them, unchanged."""
    seed = generator.initial_seed() if generator is not None else torch.initial_seed()
    return torch.Generator().manual_seed(_seed_int(seed, salt))


_MASK_SALT = 0x6D61736B
_OCCLUSION_SALT, _MOTION_SALT, _NOISE_SALT, _TONE_SALT, _RESAMPLE_SALT, _JPEG_SALT = (
    0x6F63636C, 0x6D6F7469, 0x6E6F6973, 0x746F6E65, 0x72657361, 0x6A706567)
_OCCLUSION_TRIES = 64


def binomial_blur(x: torch.Tensor, repeats: int = 1) -> torch.Tensor:
    """[B, C, H, W] float blurred by the separable [1, 2, 1] / 4 kernel, edges replicated.

    Shifted-slice sums only (no convolution kernel), so the result is bit-identical whatever the
    thread count, like the rest of the augmentation.
    """
    for _ in range(repeats):
        p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        h = (p[..., :, :-2] + 2.0 * p[..., :, 1:-1] + p[..., :, 2:]) * 0.25
        x = (h[..., :-2, :] + 2.0 * h[..., 1:-1, :] + h[..., 2:, :]) * 0.25
    return x


def motion_blur(x: torch.Tensor, length: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] float, each sample averaged along a line ``length`` [N] px long at ``angle``
    [N] radians (0: along x, pi / 2: along y), centred on each pixel, edges replicated.

    A sample's line is sampled at ``K = ceil(length) + 1`` evenly spaced points (at most 1 px
    apart) with bilinear interpolation: one ``grid_sample`` per point for all the samples of
    that ``K`` at once, summed in a fixed order, so a sample's result depends on its own length
    and angle only and is bit-identical whatever the thread count. A length of 0 keeps the
    sample. Empty input gives an empty output.
    """
    n, _, h, w = x.shape
    out = x.clone()
    if n == 0:
        return out
    xs = (torch.arange(w, dtype=x.dtype) * 2 + 1) / w - 1  # pixel centres, normalised (align_corners=False)
    ys = (torch.arange(h, dtype=x.dtype) * 2 + 1) / h - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # [H, W, 2] as (x, y)
    step = torch.stack([length * torch.cos(angle) * (2 / w), length * torch.sin(angle) * (2 / h)], -1)  # [N, 2]
    points = length.ceil().long() + 1
    for taps in torch.unique(points).tolist():
        idx = (points == taps).nonzero().squeeze(1)
        if taps == 1:
            continue  # length 0: the sample itself
        sub, sub_step = x[idx], step[idx][:, None, None, :]
        acc = torch.zeros_like(sub)
        for k in range(taps):
            grid = base + (k / (taps - 1) - 0.5) * sub_step
            acc += F.grid_sample(sub, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[idx] = acc.div_(taps)
    return out


def sensor_noise(x: torch.Tensor, sigma: torch.Tensor, per_channel: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + sigma * N(0, 1)`` clamped to 0..255: ``x`` float [N, C, H, W] grey levels, ``sigma``
    [N] grey levels, ``per_channel`` bool [N]: independent noise in every channel, otherwise one
    draw per pixel for all channels (luminance noise, a grey sample stays grey)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    noise = torch.where(per_channel[:, None, None, None], noise, noise[:, :1].expand_as(noise))
    return noise.mul_(sigma[:, None, None, None]).add_(x).clamp_(0.0, 255.0)


def tone_curve(x: torch.Tensor, contrast: torch.Tensor, gamma: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """``p + c * (255 * (x / 255) ** gamma - p)`` clamped to 0..255: gamma, then the contrast
    scaled by ``c`` towards the grey level ``p``. ``x`` float [N, C, H, W] grey levels;
    ``contrast``, ``gamma``, ``pivot`` [N]."""
    c, g, p = (v[:, None, None, None] for v in (contrast, gamma, pivot))
    y = x.div(255.0).clamp_(min=0.0).pow_(g).mul_(255.0)
    return y.sub_(p).mul_(c).add_(p).clamp_(0.0, 255.0)


@functools.lru_cache(maxsize=256)
def _area_taps(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights [dst, T] of pixel-area averaging from ``src`` to ``dst <= src``
    pixels: output ``i`` covers ``[i, i + 1) * src / dst``, each source pixel weighted by its
    overlap (``cv2.INTER_AREA`` when shrinking); unused taps have weight 0."""
    scale = src / dst
    rows = []
    for i in range(dst):
        start, end = i * scale, (i + 1) * scale
        first, last = math.floor(start), min(src, math.ceil(end - 1e-9))
        rows.append([(j, (min(end, j + 1) - max(start, j)) / scale) for j in range(first, last)])
    taps = max(len(r) for r in rows)
    index = torch.tensor([[j for j, _ in r] + [0] * (taps - len(r)) for r in rows], dtype=torch.long)
    weight = torch.tensor([[w for _, w in r] + [0.0] * (taps - len(r)) for r in rows], dtype=torch.float32)
    return index, weight


def area_shrink(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` [N, C, H, W] float shrunk to ``size`` = (h, w) <= (H, W) by pixel-area averaging,
    rows then columns (``cv2.INTER_AREA``, also for sizes that do not divide). Weighted sums of
    gathered rows and columns in a fixed order: bit-identical whatever the thread count."""
    for dim, dst in ((-2, size[0]), (-1, size[1])):
        index, weight = _area_taps(x.shape[dim], dst)
        shape = (-1, 1) if dim == -2 else (-1,)
        out = None
        for t in range(index.shape[1]):
            term = x.index_select(dim, index[:, t]) * weight[:, t].reshape(shape)
            out = term if out is None else out.add_(term)
        x = out
    return x


def resample_down_up(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` [N, C, H, W] shrunk to ``round(H / f) x round(W / f)`` px (``f`` =
    ``factor`` [N]; 1 px to the full size) and enlarged back to ``H x W``: a small face's soft
    crop. Shrinking averages pixel areas (:func:`area_shrink`, ``cv2.INTER_AREA``), enlarging is
    bilinear with half-pixel centres and clamped edges (``cv2.INTER_LINEAR``). One pair of calls
    per distinct shrunk size (at most a dozen at 48 px).
    """
    n, _, h, w = x.shape
    out = x.clone()
    if n == 0:
        return out
    dh = (h / factor).round().clamp(1, h).long()
    dw = (w / factor).round().clamp(1, w).long()
    for sh, sw in torch.unique(torch.stack([dh, dw], 1), dim=0).tolist():
        idx = ((dh == sh) & (dw == sw)).nonzero().squeeze(1)
        small = area_shrink(x[idx], (sh, sw))
        out[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def jpeg_compress(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Each RGB sample of ``x`` float [N, 3, H, W] grey levels rounded to uint8, JPEG-encoded by
    OpenCV at ``quality`` [N] (0-100; 4:2:0 chroma) and decoded; float grey levels back.

    A loop over the samples: libjpeg has no batched call, and the op is drawn for a few samples
    of a batch, each a small image that encodes and decodes quickly.
    """
    pixels = x.round().clamp_(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1).flip(-1).contiguous().numpy()  # BGR
    out = np.empty_like(pixels)
    for i, q in enumerate(quality.tolist()):
        ok, data = cv2.imencode(".jpg", pixels[i], [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {pixels.shape[1:]} sample")
        out[i] = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return torch.from_numpy(out).flip(-1).permute(0, 3, 1, 2).to(x.dtype).contiguous()


def occlude(x: torch.Tensor, rects: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, H, W] with the pixels of ``rects`` [N, 4] (integer x0, y0, x1, y1; ends
    exclusive) taken from ``fill`` ([N, C, H, W], or [N, C, 1, 1] for a flat colour)."""
    h, w = x.shape[-2:]
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= rects[:, 1:2]) & (ys < rects[:, 3:4])  # [N, H]
    in_x = (xs >= rects[:, 0:1]) & (xs < rects[:, 2:3])  # [N, W]
    inside = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # [N, 1, H, W]
    return torch.where(inside, fill.to(x.dtype), x)


def occlusion_rects(u: torch.Tensor, size: int, area: tuple[float, float] = (0.10, 0.35),
                    points: torch.Tensor | None = None, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Occluder rectangles in a ``size`` x ``size`` crop from uniform draws ``u`` [N, T, 4] (T
    tries per sample: area fraction, aspect, x, y).

    A try covers ``area`` of the crop (whole pixels: width ``round(sqrt(a * S^2 * r))``, height
    ``round(a * S^2 / width)``, each clamped to 1..S; aspect ``r`` = width / height log-uniform
    in [1/3, 3]) at a uniform position inside the crop. With ``points`` [N, P, 2] (crop pixels;
    NaN rows are ignored) a try that covers a point, the rectangle grown by ``margin`` px, is
    refused. Returns ``rects`` long [N, 4] (x0, y0, x1, y1; the first try not refused) and
    ``ok`` bool [N] (False: every try covered a point).
    """
    lo, hi = area
    a = (lo + (hi - lo) * u[..., 0]) * (size * size)
    aspect = torch.exp(math.log(1 / 3) + math.log(9) * u[..., 1])
    rw = torch.sqrt(a * aspect).round().clamp(1, size)
    rh = (a / rw).round().clamp(1, size)
    x0 = (u[..., 2] * (size - rw + 1)).floor().clamp(max=size - rw)
    y0 = (u[..., 3] * (size - rh + 1)).floor().clamp(max=size - rh)
    tries = torch.stack([x0, y0, x0 + rw, y0 + rh], -1)  # [N, T, 4]
    ok = torch.ones(tries.shape[:2], dtype=torch.bool)
    if points is not None:
        px, py = points[:, None, :, 0], points[:, None, :, 1]  # [N, 1, P]
        r = tries[..., None]  # [N, T, 4, 1]
        covered = ((px >= r[:, :, 0] - margin) & (px < r[:, :, 2] + margin)
                   & (py >= r[:, :, 1] - margin) & (py < r[:, :, 3] + margin))  # [N, T, P]
        ok = ~covered.any(-1)
    first = ok.to(torch.int8).argmax(1)  # the first try not refused (0 when all are)
    rects = tries[torch.arange(tries.shape[0]), first].long()
    return rects, ok.any(1)


def _oversampled_rows(reader: SampleReader, kind: str, rules: Sequence[tuple[str, int]]) -> tuple[np.ndarray | None, set[str]]:
    """Rows of ``kind`` as one cycle draws them under ``rules`` (each row repeated by the largest
    factor of the patterns its source image path matches, in row order; ``None`` when nothing
    is repeated) and the patterns that matched some row."""
    if not rules or reader.len(kind) == 0:
        return None, set()
    unique, inverse = np.unique(reader.row_sources(kind).astype(str), return_inverse=True)
    factor_of_path = np.ones(len(unique), np.int64)
    matched = set()
    for pattern, factor in rules:
        hit = np.fromiter((fnmatch.fnmatchcase(p, pattern) for p in unique), bool, len(unique))
        if hit.any():
            matched.add(pattern)
        factor_of_path[hit] = np.maximum(factor_of_path[hit], factor)
    repeats = factor_of_path[inverse.reshape(-1)]
    if np.all(repeats == 1):
        return None, matched
    return np.repeat(np.arange(len(repeats), dtype=np.int64), repeats), matched


def _seed_int(*keys: int) -> int:
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def augment_batch(
    images: torch.Tensor,
    label: torch.Tensor,
    bbox: torch.Tensor,
    landmark: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
    color_jitter: bool = True,
    flip_prob: float = 0.5,
    jitter: ColorJitter = ColorJitter(),
) -> dict[str, torch.Tensor]:
    """Augment and normalise one batch (vectorised; per-sample random draws).

    images uint8 [B,S,S,3] RGB; label [B]; bbox [B,4]; landmark [B,10]. Returns the loader's
    batch dict (images float32 [B,3,S,S] normalised). The random numbers are drawn from
    ``generator`` in a fixed order whatever the flags, so a batch depends only on its seed.
    """
    B = images.shape[0]
    label = label.to(torch.int64)
    bbox = bbox.to(torch.float32)
    landmark = landmark.to(torch.float32)
    u_flip = torch.rand(B, generator=generator)
    u_jit = torch.rand(B, 3, generator=generator)
    x = images.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)  # uint8 [B,3,S,S], ours
    if flip:
        flippable = (label == Label.POS) | (label == Label.PART) | (label == Label.LANDMARK)
        m = flippable & (u_flip < flip_prob)
        sel = m.nonzero().squeeze(1)
        x[sel] = x[sel].flip(-1)
        box_m = m & ((label == Label.POS) | (label == Label.PART))
        bbox = torch.where(box_m[:, None], flip_box_offsets(bbox), bbox)
        lmk_m = m & (label == Label.LANDMARK)
        landmark = torch.where(lmk_m[:, None], flip_landmarks(landmark), landmark)
    # Only separate elementwise ops below (no fused multiply-add, no float reductions), so the
    # result is bit-identical whatever the thread count: DataLoader workers run single-threaded.
    xf = x.to(torch.float32)
    if jitter.mask_prob > 0:
        # Before the colour jitter and degradations, so the mask is lit, greyed and blurred with the face.
        u_mask = torch.rand(B, 7, generator=_side_generator(generator, _MASK_SALT))
        has_face = (label == Label.POS) | (label == Label.PART)
        sel = (has_face & (u_mask[:, 0] < jitter.mask_prob)).nonzero().squeeze(1)
        if sel.numel():
            crop = torch.tensor([[0.0, 0.0, float(x.shape[-1]), float(x.shape[-1])]]).expand(sel.numel(), 4)
            xf[sel] = paint_face_masks(xf[sel], decode_boxes(crop, bbox[sel]), u_mask[sel, 1:])
    if jitter.occlusion_prob > 0:
        xf = _occlude_batch(xf, label, landmark, jitter, generator)
    if color_jitter:
        # Contrast pivot: the mean grey level. Sums of integer-valued float32 below 2**24 are
        # exact (255 * S * S is, for S <= 256), so the summation order cannot matter.
        sums = xf.sum(dim=(2, 3)).to(torch.float64)  # [B,3]
        grey_sum = 0.299 * sums[:, 0] + 0.587 * sums[:, 1] + 0.114 * sums[:, 2]
        mean = (grey_sum / (x.shape[-1] * x.shape[-2])).to(torch.float32)
        c_lo, c_hi = jitter.contrast
        s_lo, s_hi = jitter.saturation
        contrast = c_lo + (c_hi - c_lo) * u_jit[:, 0]
        delta = (2.0 * u_jit[:, 1] - 1.0) * (jitter.brightness * 128.0)  # grey levels
        saturation = s_lo + (s_hi - s_lo) * u_jit[:, 2]
        # contrast and brightness: c * (x - mean) + mean + delta = c * x + (mean * (1 - c) + delta)
        bias = mean * (1.0 - contrast) + delta
        xf.mul_(contrast[:, None, None, None]).add_(bias[:, None, None, None]).clamp_(0.0, 255.0)
        # saturation: grey + s * (x - grey) = s * x + (1 - s) * grey
        grey = xf[:, 0:1] * 0.299 + xf[:, 1:2] * 0.587 + xf[:, 2:3] * 0.114
        grey.mul_((1.0 - saturation)[:, None, None, None])
        xf.mul_(saturation[:, None, None, None]).add_(grey).clamp_(0.0, 255.0)
    xf = _degrade(xf, torch.rand(B, 2, generator=generator), jitter, generator)
    out = xf.sub_(127.5).mul_(1.0 / 128.0)  # == (x - 127.5) / 128 exactly (power of two)
    return {
        "images": out,
        "label": label,
        "bbox": bbox.contiguous(),
        "landmark": landmark.contiguous(),
    }


def _chosen(generator: torch.Generator | None, salt: int, prob: float, count: int,
            params: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """One op's draws from its side generator: the samples it is applied to (``u < prob``), the
    uniform draws of its parameters [count, params] (drawn for every sample, so a sample's
    parameters do not depend on which others are chosen) and the generator for any further draws."""
    side = _side_generator(generator, salt)
    u = torch.rand(count, 1 + params, generator=side)
    return (u[:, 0] < prob).nonzero().squeeze(1), u[:, 1:], side


def _occlude_batch(xf: torch.Tensor, label: torch.Tensor, landmark: torch.Tensor, jitter: ColorJitter,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Occluders (see the module docstring): a flat random colour or, for half of them, uniform
    noise; landmark samples' rectangles keep ``max(1, S / 24)`` px clear of their points."""
    size = xf.shape[-1]
    sel, u, side = _chosen(generator, _OCCLUSION_SALT, jitter.occlusion_prob, xf.shape[0], 4 + 4 * _OCCLUSION_TRIES)
    if not sel.numel():
        return xf
    points = landmark[sel].reshape(sel.numel(), -1, 2) * size
    points = torch.where((label[sel] == Label.LANDMARK)[:, None, None], points, torch.full_like(points, float("nan")))
    rects, ok = occlusion_rects(u[sel, 4:].reshape(-1, _OCCLUSION_TRIES, 4), size, jitter.occlusion_area, points,
                                margin=max(1.0, size / 24))
    sel, rects, u = sel[ok], rects[ok], u[sel[ok]]
    if not sel.numel():
        return xf
    noisy = (u[:, 0] < 0.5)[:, None, None, None]
    flat = (u[:, 1:4] * 255.0)[:, :, None, None]
    fill = torch.where(noisy, torch.rand(sel.numel(), 3, size, size, generator=side) * 255.0, flat)
    xf[sel] = occlude(xf[sel], rects, fill)
    return xf


def _degrade(xf: torch.Tensor, u: torch.Tensor, jitter: ColorJitter, generator: torch.Generator | None) -> torch.Tensor:
    """Random greyscale and blur of float [B, 3, S, S] grey levels (``u`` [B, 2] uniform draws of
    the main stream), then motion blur, noise, tone, resampling and JPEG (each from its own side
    generator, drawn only when its probability is positive)."""
    B, size = xf.shape[0], xf.shape[-1]
    grey = u[:, 0] < jitter.grayscale_prob
    grey_sel = grey.nonzero().squeeze(1)
    if grey_sel.numel():
        sub = xf[grey_sel]
        g = sub[:, 0:1] * 0.299 + sub[:, 1:2] * 0.587 + sub[:, 2:3] * 0.114
        xf[grey_sel] = g.expand_as(sub)
    blur_sel = (u[:, 1] < jitter.blur_prob).nonzero().squeeze(1)
    if blur_sel.numel():
        xf[blur_sel] = binomial_blur(xf[blur_sel], repeats=max(1, round(size / 24)))
    if jitter.motion_blur_prob > 0:
        sel, v, _ = _chosen(generator, _MOTION_SALT, jitter.motion_blur_prob, B, 2)
        if sel.numel():
            lo, hi = jitter.motion_blur_length
            length = (lo + (hi - lo) * v[sel, 0]) * (size / 24.0)
            xf[sel] = motion_blur(xf[sel], length, math.pi * v[sel, 1])
    if jitter.noise_prob > 0:
        sel, v, side = _chosen(generator, _NOISE_SALT, jitter.noise_prob, B, 2)
        if sel.numel():
            lo, hi = jitter.noise_sigma
            per_channel = (v[sel, 1] < jitter.noise_colour_share) & ~grey[sel]
            xf[sel] = sensor_noise(xf[sel], lo + (hi - lo) * v[sel, 0], per_channel, side)
    if jitter.tone_prob > 0:
        sel, v, _ = _chosen(generator, _TONE_SALT, jitter.tone_prob, B, 3)
        if sel.numel():
            (c_lo, c_hi), (g_lo, g_hi), (p_lo, p_hi) = jitter.tone_contrast, jitter.tone_gamma, jitter.tone_pivot
            contrast = c_lo + (c_hi - c_lo) * v[sel, 0]
            gamma = torch.exp(math.log(g_lo) + (math.log(g_hi) - math.log(g_lo)) * v[sel, 1])
            xf[sel] = tone_curve(xf[sel], contrast, gamma, p_lo + (p_hi - p_lo) * v[sel, 2])
    if jitter.resample_prob > 0:
        sel, v, _ = _chosen(generator, _RESAMPLE_SALT, jitter.resample_prob, B, 1)
        if sel.numel():
            lo, hi = jitter.resample_factor
            xf[sel] = resample_down_up(xf[sel], lo + (hi - lo) * v[sel, 0])
    if jitter.jpeg_prob > 0:
        sel, v, _ = _chosen(generator, _JPEG_SALT, jitter.jpeg_prob, B, 1)
        if sel.numel():
            lo, hi = jitter.jpeg_quality
            quality = (lo + (v[sel, 0] * (hi - lo + 1)).floor()).clamp(max=hi)
            xf[sel] = jpeg_compress(xf[sel], quality)
    return xf


class _PlanDataset(Dataset):
    """Map-style dataset: item ``i`` is the whole batch number ``i`` of a precomputed plan."""

    def __init__(self, reader: SampleReader, plan: dict[str, np.ndarray], seeds: np.ndarray,
                 flip: bool, color_jitter: bool, jitter: ColorJitter):
        self.reader = reader
        self.plan = plan  # kind -> int64 [steps, count]
        self.seeds = seeds  # int64 [steps]
        self.flip = flip
        self.color_jitter = color_jitter
        self.jitter = jitter

    def __len__(self) -> int:
        return int(self.seeds.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        parts = [self.reader.get(kind, rows[i], TRAIN_FIELDS) for kind, rows in self.plan.items()]
        cat = {name: np.concatenate([p[name] for p in parts]) for name in TRAIN_FIELDS}
        g = torch.Generator()
        g.manual_seed(int(self.seeds[i]))
        return augment_batch(
            torch.from_numpy(cat["images"]), torch.from_numpy(cat["label"]), torch.from_numpy(cat["bbox"]),
            torch.from_numpy(cat["landmark"]), g, flip=self.flip, color_jitter=self.color_jitter,
            jitter=self.jitter,
        )


class MixedBatchLoader:
    """Batches of a fixed per-kind composition from one sample file (see module docstring).

    ``for batch in loader`` yields the remaining batches of the current epoch, then moves to
    the next epoch; :meth:`state_dict` / :meth:`load_state_dict` capture ``(epoch, step)`` so
    a resumed run continues with the identical batch sequence. ``composition`` counts are per
    rank (each rank gets whole batches).
    """

    def __init__(
        self,
        reader_or_path: SampleReader | str | os.PathLike,
        composition: Mapping[str, int],
        steps_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        flip: bool = True,
        color_jitter: bool = True,
        num_workers: int = 0,
        *,
        expected_size: int | None = None,
        jitter: ColorJitter = ColorJitter(),
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        oversample: Sequence[tuple[str, int]] = (),
    ):
        self.reader = (reader_or_path if isinstance(reader_or_path, SampleReader)
                       else open_sample_file(reader_or_path, expected_size=expected_size))
        if expected_size is not None and self.reader.size != expected_size:
            raise ValueError(f"{self.reader.path} holds {self.reader.size}px samples, expected {expected_size}px")
        unknown = set(composition) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown sample kind(s) {sorted(unknown)} in composition; expected {', '.join(KINDS)}")
        self.composition = {k: int(composition.get(k, 0)) for k in KINDS}
        if any(c < 0 for c in self.composition.values()) or sum(self.composition.values()) == 0:
            raise ValueError(f"composition counts must be >= 0 with a positive total, got {dict(composition)}")
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        counts = self.reader.counts()
        for kind, c in self.composition.items():
            if c == 0:
                continue
            if counts[kind] == 0:
                raise ValueError(f"{self.reader.path}: kind {kind!r} has no samples but the batch needs {c} per step")
            if counts[kind] < world_size:
                raise ValueError(f"{self.reader.path}: kind {kind!r} has {counts[kind]} samples, "
                                 f"fewer than world_size={world_size}")
        self.counts = counts
        self.oversample = [(str(p), int(f)) for p, f in oversample]
        if any(f < 1 for _, f in self.oversample):
            raise ValueError(f"oversample factors must be >= 1, got {self.oversample}")
        # kind -> the rows one cycle draws (with repeats); None: every row once.
        self._cycle_rows: dict[str, np.ndarray | None] = {}
        matched: set[str] = set()
        for kind in KINDS:
            rows, hit = _oversampled_rows(self.reader, kind, self.oversample) if self.composition[kind] else (None, set())
            self._cycle_rows[kind] = rows
            matched |= hit
        missed = [p for p, _ in self.oversample if p not in matched]
        if missed:  # a typo would otherwise silently train without the oversampling asked for
            raise OversampleError(f"{self.reader.path}: oversample pattern(s) {', '.join(map(repr, missed))} match no "
                             f"source image of the kinds drawn ({', '.join(k for k, c in self.composition.items() if c)})")
        self.drawn = {k: counts[k] if rows is None else len(rows) for k, rows in self._cycle_rows.items()}
        self.steps_per_epoch = int(steps_per_epoch)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.flip = bool(flip)
        self.color_jitter = bool(color_jitter)
        self.jitter = jitter
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.batch_size = sum(self.composition.values())
        self.epoch = 0
        self.step = 0
        self._generation = 0  # bumped by set_epoch/load_state_dict: running iterators stop
        self._perm_cache: dict[tuple[int, int, int], np.ndarray] = {}

    # ------------------------------------------------------------------ plan
    def _shard(self, kind: str, epoch: int, cycle: int) -> np.ndarray:
        key = (_KIND_IDS[kind], epoch, cycle)
        shard = self._perm_cache.get(key)
        if shard is None:
            n = self.drawn[kind]
            rng = np.random.default_rng([self.seed, epoch, _KIND_IDS[kind], cycle])
            perm = rng.permutation(n)
            if self._cycle_rows[kind] is not None:
                perm = self._cycle_rows[kind][perm]
            shard = perm[self.rank::self.world_size][: n // self.world_size]
            if len(self._perm_cache) > 16:
                self._perm_cache.clear()
            self._perm_cache[key] = shard
        return shard

    def _rows(self, kind: str, epoch: int, start_step: int, stop_step: int) -> np.ndarray:
        """Rows of ``kind`` for steps [start_step, stop_step) of ``epoch``: int64 [steps, count]."""
        c = self.composition[kind]
        lo, hi = start_step * c, stop_step * c
        length = self.drawn[kind] // self.world_size
        pieces = []
        pos = lo
        while pos < hi:
            cycle, off = divmod(pos, length)
            take = min(hi - pos, length - off)
            pieces.append(self._shard(kind, epoch, cycle)[off:off + take])
            pos += take
        rows = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        return rows.astype(np.int64).reshape(stop_step - start_step, c)

    def _plan(self, epoch: int, start: int, stop: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        plan = {k: self._rows(k, epoch, start, stop) for k in KINDS if self.composition[k] > 0}
        seeds = np.array([_seed_int(self.seed, epoch, self.rank, s, 0xA06) for s in range(start, stop)], np.int64)
        return plan, seeds

    def batch_plan(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """Rows of each kind in batch ``step`` of ``epoch`` (in batch order)."""
        plan, _ = self._plan(epoch, step, step + 1)
        return {k: v[0] for k, v in plan.items()}

    def _dataset(self, epoch: int, start: int, stop: int) -> _PlanDataset:
        plan, seeds = self._plan(epoch, start, stop)
        return _PlanDataset(self.reader, plan, seeds, self.flip, self.color_jitter, self.jitter)

    def get_batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """Batch ``step`` of ``epoch``, fetched in this process (does not move the state)."""
        return self._dataset(epoch, step, step + 1)[0]

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = int(epoch), 0
        self._generation += 1

    def _normalise_state(self) -> None:
        if self.step >= self.steps_per_epoch:
            self.epoch += self.step // self.steps_per_epoch
            self.step %= self.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._normalise_state()
        epoch, start, generation = self.epoch, self.step, self._generation
        ds = self._dataset(epoch, start, self.steps_per_epoch)
        self.reader.load_meta()  # once here, shared copy-on-write by forked workers
        if self.num_workers > 0:
            self.reader.close()  # no HDF5 handle crosses a fork; workers open their own
            kwargs: dict[str, Any] = {}
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
            source = DataLoader(ds, batch_size=None, shuffle=False, num_workers=self.num_workers,
                                pin_memory=self.pin_memory, persistent_workers=False, **kwargs)
        else:
            source = (ds[i] for i in range(len(ds)))
        for batch in source:
            if self._generation != generation:  # load_state_dict/set_epoch was called meanwhile
                return
            self.step += 1
            yield batch
        if self._generation == generation and self.step >= self.steps_per_epoch:
            self.epoch += 1
            self.step = 0

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        self._normalise_state()
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            "composition": dict(self.composition),
            "counts": dict(self.counts),
            "oversample": [list(rule) for rule in self.oversample],
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore ``(epoch, step)``. With ``strict`` the seed, sharding, composition, epoch
        length and file counts must match (otherwise the sequence would silently differ)."""
        if strict:
            for key in ("seed", "world_size", "steps_per_epoch", "composition", "counts", "oversample"):
                if key in state and state[key] != self.state_dict()[key]:
                    raise ValueError(f"loader state mismatch for {key!r}: checkpoint has {state[key]!r}, "
                                     f"loader has {self.state_dict()[key]!r}")
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self._generation += 1
        self._normalise_state()


def benchmark_loader(
    path: str | os.PathLike,
    batches: int = 50,
    composition: Mapping[str, int] | None = None,
    num_workers: int = 0,
    *,
    flip: bool = True,
    color_jitter: bool = True,
    seed: int = 0,
) -> float:
    """Batches per second of :class:`MixedBatchLoader` over ``path`` (default composition:
    ``composition_for("pnet", 384)``), timed after the first batch (worker start-up excluded)."""
    if batches < 1:
        raise ValueError("batches must be >= 1")
    loader = MixedBatchLoader(Path(path), composition or composition_for("pnet", 384), steps_per_epoch=batches + 1,
                              seed=seed, flip=flip, color_jitter=color_jitter, num_workers=num_workers)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in it:
        n += 1
    return n / (time.perf_counter() - t0)


__all__ = [
    "ColorJitter",
    "MixedBatchLoader",
    "augment_batch",
    "benchmark_loader",
    "composition_for",
    "area_shrink",
    "binomial_blur",
    "jpeg_compress",
    "motion_blur",
    "occlude",
    "occlusion_rects",
    "resample_down_up",
    "sensor_noise",
    "tone_curve",
]
