"""Training crops from annotated images: P-Net pos/part/neg (SPEC §1) and landmark samples.

Everything here is numpy / OpenCV on one image at a time and vectorised over the candidate
crops of that image: candidates are drawn in one go, their IoU matrix against the faces is
one broadcast, and only the kept crops are cut out and resized (one ``cv2.resize`` each).
Randomness comes only from the ``numpy.random.Generator`` passed in, so a caller that seeds
one generator per source image (``default_rng([seed, item_id])``) gets the same samples
whatever the worker count or processing order.

Conventions (SPEC §11): boxes ``(x1, y1, x2, y2)`` float, 0-based, width = ``x2 - x1`` with no
+1 anywhere (IoU included). Crops are integer squares ``(x1, y1, x1 + s, y1 + s)``. Box
offsets are ``(gt - crop) / s`` per coordinate, float32. Landmarks are normalised to the crop,
``((x - x1) / s, (y - y1) / s)``, interleaved ``x1, y1, ..., x5, y5`` in the order LE, RE, N,
LM, RM (image left).

Resizing: ``cv2.INTER_AREA`` when a crop shrinks (pixel-area averaging, the closest OpenCV
match to the detector's antialiased bilinear pyramid), ``cv2.INTER_LINEAR`` when it grows
(landmark crops smaller than 24/48 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mtcnn.config.data import LandmarkAugConfig, PNetSamplingConfig, WiderBoxConfig
from mtcnn.ops.np_boxes import box_iou, encode_boxes, flip_landmarks, paired_iou

__all__ = [
    "SampleBatch",
    "crop_resize",
    "eligible_faces",
    "landmark_samples",
    "pnet_samples",
    "tight_to_wider",
]



@dataclass
class SampleBatch:
    """Samples of one kind from one image (rows aligned).

    images uint8 [n,S,S,3] RGB; bbox float32 [n,4] offsets (zeros for neg / landmark);
    landmark float32 [n,10] (zeros unless landmark); box float32 [n,4] crop box in the source.
    """

    images: np.ndarray
    bbox: np.ndarray
    landmark: np.ndarray
    box: np.ndarray

    @staticmethod
    def empty(size: int) -> "SampleBatch":
        return SampleBatch(
            np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 4), np.float32),
            np.zeros((0, 10), np.float32), np.zeros((0, 4), np.float32),
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ------------------------------------------------------------------------------------------
# box helpers (the numpy box library is mtcnn.ops.np_boxes)
# ------------------------------------------------------------------------------------------


def tight_to_wider(boxes: np.ndarray, cfg: WiderBoxConfig) -> np.ndarray:
    """Map tight CNN_FacePoint boxes ``[N,4]`` to WIDER-style boxes (see :class:`WiderBoxConfig`)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2
    half = cfg.widen * w / 2
    out = np.stack([cx - half, b[:, 1] - cfg.top * h, cx + half, b[:, 3] + cfg.bottom * h], axis=1)
    return out.astype(np.float32)


def crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut integer boxes ``[N,4]`` (inside the image) and resize each to ``size x size``."""
    boxes = np.asarray(boxes).astype(np.int64).reshape(-1, 4)
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        patch = image[y1:y2, x1:x2]
        interp = cv2.INTER_AREA if (x2 - x1) > size or (y2 - y1) > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


def _squares(x1: np.ndarray, y1: np.ndarray, side: np.ndarray) -> np.ndarray:
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float64)


def _inside(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)


def _shift_bounds(extent: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds of U_int(-frac*extent, frac*extent) as numpy's randint truncates them."""
    lo = np.trunc(-frac * extent).astype(np.int64)
    hi = np.trunc(frac * extent).astype(np.int64)
    return lo, np.maximum(hi, lo + 1)


def _random_squares_around(
    boxes: np.ndarray, attempts: int, size_range: tuple[float, float], shift: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §1 pos/part law, ``attempts`` draws per box: integer squares ``[F*attempts, 4]``
    and the index of the box each one was drawn for.

    side ~ U_int[floor(a*min(w,h)), ceil(b*max(w,h))); centre shift dx ~ U_int(-shift*w, shift*w)
    (dy likewise); x1 = floor(max(0, cx + dx - side/2)).
    """
    n = len(boxes) * attempts
    owner = np.repeat(np.arange(len(boxes)), attempts)
    if n == 0:
        return np.zeros((0, 4)), owner
    b = boxes[owner].astype(np.float64)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    lo = np.floor(size_range[0] * np.minimum(w, h)).astype(np.int64)
    hi = np.ceil(size_range[1] * np.maximum(w, h)).astype(np.int64)
    lo = np.maximum(lo, 1)
    side = rng.integers(lo, np.maximum(hi, lo + 1))
    dx_lo, dx_hi = _shift_bounds(w, shift)
    dy_lo, dy_hi = _shift_bounds(h, shift)
    dx = rng.integers(dx_lo, dx_hi)
    dy = rng.integers(dy_lo, dy_hi)
    x1 = np.floor(np.maximum(0.0, b[:, 0] + w / 2 + dx - side / 2))
    y1 = np.floor(np.maximum(0.0, b[:, 1] + h / 2 + dy - side / 2))
    return _squares(x1, y1, side), owner


# ------------------------------------------------------------------------------------------
# P-Net detection samples
# ------------------------------------------------------------------------------------------


def _random_negatives(
    width: int, height: int, faces: np.ndarray, n: int, cfg: PNetSamplingConfig, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` squares of side U_int[min_size, min(W,H)/2) anywhere in the image with max
    IoU < neg_iou against every face; at most ``negative_rounds`` vectorised rounds of draws,
    so an image crowded with faces cannot loop forever."""
    hi = min(width, height) // 2
    lo = cfg.min_negative_size
    if n <= 0 or hi <= lo:
        return np.zeros((0, 4))
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(cfg.negative_rounds):
        k = 2 * (n - have) + 16
        side = rng.integers(lo, hi, size=k)
        x1 = rng.integers(0, width - side)
        y1 = rng.integers(0, height - side)
        cand = _squares(x1, y1, side)
        if len(faces):
            cand = cand[box_iou(cand, faces).max(axis=1) < cfg.neg_iou]
        kept.append(cand[: n - have])
        have += len(kept[-1])
        if have >= n:
            break
    return np.concatenate(kept)


def _near_negatives(
    width: int, height: int, faces: np.ndarray, targets: np.ndarray, per_face: int,
    cfg: PNetSamplingConfig, rng: np.random.Generator,
) -> np.ndarray:
    """``per_face`` attempts per target face: side U_int[min_size, min(W,H)/2), top-left at
    (x1 + dx, y1 + dy) with dx ~ U_int[max(-side, -x1), w); kept when inside the image and
    max IoU < neg_iou against every face."""
    hi = min(width, height) // 2
    lo = cfg.min_negative_size
    if per_face <= 0 or len(targets) == 0 or hi <= lo:
        return np.zeros((0, 4))
    t = np.repeat(targets.astype(np.float64), per_face, axis=0)
    side = rng.integers(lo, hi, size=len(t))
    x1 = np.floor(t[:, 0]).astype(np.int64)
    y1 = np.floor(t[:, 1]).astype(np.int64)
    w = np.maximum(np.floor(t[:, 2] - t[:, 0]).astype(np.int64), 1)
    h = np.maximum(np.floor(t[:, 3] - t[:, 1]).astype(np.int64), 1)
    dx_lo = np.maximum(-side, -x1)
    dy_lo = np.maximum(-side, -y1)
    dx = rng.integers(dx_lo, np.maximum(w, dx_lo + 1))
    dy = rng.integers(dy_lo, np.maximum(h, dy_lo + 1))
    cand = _squares(np.maximum(0, x1 + dx), np.maximum(0, y1 + dy), side)
    cand = cand[_inside(cand, width, height)]
    if len(faces) and len(cand):
        cand = cand[box_iou(cand, faces).max(axis=1) < cfg.neg_iou]
    return cand


def eligible_faces(boxes: np.ndarray, ignore: np.ndarray, width: int, height: int, min_face: float) -> np.ndarray:
    """Indices of faces that seed pos/part/near-negative crops: not ignored, max(w,h) >= min_face,
    and entirely inside the image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros(0, np.int64)
    big = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= min_face
    return np.flatnonzero(big & _inside(b, width, height) & ~np.asarray(ignore, bool))


def pnet_samples(
    image: np.ndarray,
    boxes: np.ndarray,
    ignore: np.ndarray,
    cfg: PNetSamplingConfig,
    rng: np.random.Generator,
    size: int = 12,
    negatives_per_image: int | None = None,
    near_negatives_per_face: int | None = None,
) -> dict[str, SampleBatch]:
    """P-Net pos / part / neg samples of one RGB image (SPEC §1, IoU without +1).

    * ``negatives_per_image`` random squares (default ``cfg``'s 50) with max IoU < neg_iou
      against ALL faces (ignored ones included: they must not become negatives);
    * per eligible face (:func:`eligible_faces`): ``near_negatives_per_face`` attempts near it
      (kept with max IoU < neg_iou against all faces) and ``pos_part_attempts_per_face``
      shifted squares labelled by IoU with THIS face: pos >= pos_iou, part >= part_iou.

    Returns ``{"pos", "part", "neg"}`` -> :class:`SampleBatch` (offsets only for pos/part).
    """
    height, width = image.shape[:2]
    faces = np.asarray(boxes, np.float64).reshape(-1, 4)
    n_neg = cfg.negatives_per_image if negatives_per_image is None else negatives_per_image
    n_near = cfg.near_negatives_per_face if near_negatives_per_face is None else near_negatives_per_face

    neg = _random_negatives(width, height, faces, n_neg, cfg, rng)
    targets = faces[eligible_faces(faces, ignore, width, height, cfg.min_face)]
    near = _near_negatives(width, height, faces, targets, n_near, cfg, rng)
    neg = np.concatenate([neg, near]) if len(near) else neg

    cand, owner = _random_squares_around(targets, cfg.pos_part_attempts_per_face, cfg.size_range, cfg.shift, rng)
    ok = _inside(cand, width, height)
    cand, owner = cand[ok], owner[ok]
    if len(cand):
        gt = targets[owner]
        # IoU of each candidate with its own face only (SPEC §1), one vectorised pairing.
        iou = paired_iou(cand, gt)
        pos_m = iou >= cfg.pos_iou
        part_m = (iou >= cfg.part_iou) & ~pos_m
    else:
        gt = np.zeros((0, 4))
        pos_m = part_m = np.zeros(0, bool)

    out = {}
    for kind, crops, gt_k in (("pos", cand[pos_m], gt[pos_m]), ("part", cand[part_m], gt[part_m]), ("neg", neg, None)):
        if len(crops) == 0:
            out[kind] = SampleBatch.empty(size)
            continue
        bbox = encode_boxes(crops, gt_k).astype(np.float32) if gt_k is not None else np.zeros((len(crops), 4), np.float32)
        out[kind] = SampleBatch(
            crop_resize(image, crops, size), bbox, np.zeros((len(crops), 10), np.float32), crops.astype(np.float32)
        )
    return out


# ------------------------------------------------------------------------------------------
# landmark samples
# ------------------------------------------------------------------------------------------


def _normalise_points(points: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Pixel points ``[5,2]`` -> ``[10]`` normalised to the square crop ``[4]``."""
    side = crop[2] - crop[0]
    return ((points - crop[None, :2]) / side).reshape(10).astype(np.float32)


def _rotated_crop(image: np.ndarray, crop: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the whole image by ``degrees`` (counter-clockwise, OpenCV's sign) about the crop
    centre and re-cut the same crop; returns the full-resolution crop and the rotated points.

    Only the crop is computed (one warpAffine whose output is the crop), which equals warping
    the whole image and cutting it; pixels from beyond the image edge are reflected.
    """
    x1, y1, x2, y2 = crop
    side = int(round(x2 - x1))
    centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)  # image -> rotated image
    pts = points @ m[:, :2].T + m[:, 2]
    shifted = m.copy()
    shifted[0, 2] -= x1
    shifted[1, 2] -= y1
    patch = cv2.warpAffine(image, shifted, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return patch, pts


def _resize_patch(patch: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def _landmark_crops(ref: np.ndarray, cfg: LandmarkAugConfig, rng: np.random.Generator, width: int,
                    height: int) -> np.ndarray | None:
    """The squares a face's landmark samples are cut from (see :func:`landmark_samples`); None
    when no crop was drawn at all."""
    rw, rh = ref[2] - ref[0], ref[3] - ref[1]
    crops = []
    if cfg.include_gt_crop:
        side = round(max(rw, rh))
        x1 = math.floor((ref[0] + ref[2]) / 2 - side / 2 + 0.5)
        y1 = math.floor((ref[1] + ref[3]) / 2 - side / 2 + 0.5)
        crops.append(np.array([[x1, y1, x1 + side, y1 + side]], np.float64))
    cand, _ = _random_squares_around(ref[None], cfg.crops_per_face, cfg.size_range, cfg.shift, rng)
    if len(cand):
        cand = cand[box_iou(cand, ref[None])[:, 0] > cfg.crop_iou]
        crops.append(cand)
    if not crops:
        return None
    crops = np.concatenate(crops)
    return crops[_inside(crops, width, height) & (crops[:, 2] > crops[:, 0])]


def landmark_samples(
    image: np.ndarray,
    box: np.ndarray,
    points: np.ndarray,
    cfg: LandmarkAugConfig,
    rng: np.random.Generator,
    size: int,
    wider_box: WiderBoxConfig | None = None,
) -> SampleBatch:
    """Landmark samples of one face (SPEC §1), label -2, landmarks normalised to the crop.

    ``box`` is the tight CNN_FacePoint box ``[4]`` and ``points`` the five points ``[5,2]``.
    The face is dropped (empty result) when its tight box's max side < ``cfg.min_face`` or it
    starts left of / above the image. The reference box is the tight box, or its WIDER-like
    mapping (``cfg.box_style``, default: so landmark crops are framed like the detector's
    boxes). Crops: the square of side max(w, h) about the reference box's centre
    (``include_gt_crop``) and ``crops_per_face`` random squares drawn like positives, kept with
    IoU > ``crop_iou``; crops must lie inside the image. For each crop: the crop itself; with
    ``flip_prob`` its mirror; with ``rotate_prob`` each, the crop rotated by +angle and by
    -angle about its centre (plus the mirror of each rotated crop if ``rotate_flip``). Samples
    with any coordinate outside the open interval (0, 1) are dropped. A missing point (NaN; the
    eyes must be there) stays NaN in every sample, for the loss to mask.
    """
    height, width = image.shape[:2]
    box = np.asarray(box, np.float64).reshape(4)
    points = np.asarray(points, np.float64).reshape(5, 2)
    empty = SampleBatch.empty(size)
    # A missing point (NaN, e.g. WebFaces' mouth corners) stays NaN in the samples, and the loss
    # masks it; the eyes must be there (they frame the face and normalise the error).
    if not np.isfinite(points[:2]).all() or not np.isfinite(box).all():
        return empty
    if max(box[2] - box[0], box[3] - box[1]) < cfg.min_face or box[0] < 0 or box[1] < 0:
        return empty
    ref = box if cfg.box_style == "tight" or wider_box is None else tight_to_wider(box[None], wider_box)[0].astype(np.float64)
    crops = _landmark_crops(ref, cfg, rng, width, height)
    if crops is None:
        return empty

    patches: list[np.ndarray] = []
    lmks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []

    def emit(patch: np.ndarray, lm: np.ndarray, crop: np.ndarray, mirror: bool) -> None:
        if mirror:
            patch = patch[:, ::-1]
            lm = flip_landmarks(lm[None])[0]
        patches.append(_resize_patch(np.ascontiguousarray(patch), size))
        lmks.append(lm)
        boxes.append(crop)

    for crop in crops:
        x1, y1, x2, y2 = crop.astype(np.int64).tolist()
        base = image[y1:y2, x1:x2]
        lm = _normalise_points(points, crop)
        # Draw every decision up front so the stream of random numbers per crop is fixed.
        u_flip, u_plus, u_minus = rng.random(3)
        # uniform: the angles are drawn in (0, rotate_degrees] (tilted faces of every degree, not
        # two fixed tilts); drawn only in that mode, so the fixed mode's stream is unchanged.
        magnitudes = rng.uniform(0.0, cfg.rotate_degrees, 2) if cfg.rotate_mode == "uniform" else (cfg.rotate_degrees,) * 2
        emit(base, lm, crop, False)
        if u_flip < cfg.flip_prob:
            emit(base, lm, crop, True)
        for u, sign, magnitude in ((u_plus, 1.0, magnitudes[0]), (u_minus, -1.0, magnitudes[1])):
            if cfg.rotate_degrees == 0 or u >= cfg.rotate_prob:
                continue
            patch, pts = _rotated_crop(image, crop, points, sign * magnitude)
            lm_r = _normalise_points(pts, crop)
            emit(patch, lm_r, crop, False)
            if cfg.rotate_flip:
                emit(patch, lm_r, crop, True)

    if not patches:
        return empty
    lm_all = np.stack(lmks).astype(np.float32)
    keep = (((lm_all > 0) & (lm_all < 1)) | np.isnan(lm_all)).all(axis=1)
    if not keep.any():
        return empty
    idx = np.flatnonzero(keep)
    return SampleBatch(
        np.stack([patches[i] for i in idx]),
        np.zeros((len(idx), 4), np.float32),
        lm_all[idx],
        np.stack([boxes[i] for i in idx]).astype(np.float32),
    )
