"""The FDDB discrete and continuous ROC protocol (see :mod:`mtcnn.eval.detection`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.eval.detection import DEFAULT_FP_POINTS, _jsonable, _split_detections


# --------------------------------------------------------------------------------------------
# FDDB protocol
# --------------------------------------------------------------------------------------------


def default_fddb_dir() -> Path:
    from mtcnn.config import data_root

    return Path(data_root()) / "fddb" / "FDDB-folds"


def read_fddb_ellipses(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse one ``FDDB-fold-NN-ellipseList.txt``: ``{image path without .jpg: [M, 5]}``.

    Each row is ``major_radius, minor_radius, angle (radians), center_x, center_y``.
    """
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    out: dict[str, np.ndarray] = {}
    pos = 0
    while pos < len(lines):
        name = lines[pos]
        n = int(lines[pos + 1])
        rows = [[float(v) for v in lines[pos + 2 + r].split()[:5]] for r in range(n)]
        out[name] = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        pos += 2 + n
    return out


def load_fddb_folds(
    fddb_dir: str | os.PathLike | None = None, folds: Iterable[int] = range(1, 11)
) -> dict[str, np.ndarray]:
    """All ellipse annotations of the given folds (default all ten), in fold order."""
    d = Path(fddb_dir) if fddb_dir is not None else default_fddb_dir()
    out: dict[str, np.ndarray] = {}
    for k in folds:
        f = d / f"FDDB-fold-{int(k):02d}-ellipseList.txt"
        if not f.is_file():
            raise FileNotFoundError(f"FDDB ellipse list not found: {f}")
        out.update(read_fddb_ellipses(f))
    return out


def ellipse_bounding_boxes(ellipses: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding boxes ``[M, 4]`` (our convention) of FDDB ellipses ``[M, 5]``."""
    e = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    ra, rb, th, cx, cy = e.T
    ex = np.sqrt((ra * np.cos(th)) ** 2 + (rb * np.sin(th)) ** 2)
    ey = np.sqrt((ra * np.sin(th)) ** 2 + (rb * np.cos(th)) ** 2)
    return np.stack([cx - ex, cy - ey, cx + ex, cy + ey], axis=1)


def _pixel_span(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices [a, b) whose centres (p + 0.5) lie in [lo, hi)."""
    a = np.ceil(lo - 0.5).astype(np.int64)
    b = np.ceil(hi - 0.5).astype(np.int64)
    return a, np.maximum(b, a)


def ellipse_box_overlap(
    ellipses: np.ndarray,
    boxes: np.ndarray,
    image_size: tuple[int, int] | None = None,
    supersample: int = 1,
) -> np.ndarray:
    """IoU ``[M, K]`` of FDDB ellipse regions and rectangles, measured on a pixel grid.

    Ellipses ``[M, 5]`` (major radius, minor radius, angle in radians, centre x, centre y) and
    boxes ``[K, 4]`` are read in the same continuous frame (our convention; the FDDB numbers are
    used as they are, no half-pixel shift). A pixel (grid cell of side ``1 / supersample``)
    belongs to a region when its centre does. With ``image_size = (height, width)`` both regions are
    clipped to the image, as the official tool (which draws them on the image) does. The
    ellipse's pixels are counted once on its own bounding grid; the intersection with every box
    then comes from an integral image, so the cost is one small raster per ellipse.
    """
    e = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    f = float(max(1, int(supersample)))
    m, k = e.shape[0], b.shape[0]
    out = np.zeros((m, k), dtype=np.float64)
    if m == 0 or k == 0:
        return out
    lim_w = lim_h = None
    if image_size is not None:
        lim_h, lim_w = int(round(image_size[0] * f)), int(round(image_size[1] * f))

    bx0, bx1 = _pixel_span(b[:, 0] * f, b[:, 2] * f)
    by0, by1 = _pixel_span(b[:, 1] * f, b[:, 3] * f)
    if lim_w is not None:
        bx0, bx1 = np.clip(bx0, 0, lim_w), np.clip(bx1, 0, lim_w)
        by0, by1 = np.clip(by0, 0, lim_h), np.clip(by1, 0, lim_h)
    box_area = (bx1 - bx0).astype(np.float64) * (by1 - by0).astype(np.float64)

    bbs = ellipse_bounding_boxes(e) * f
    for j in range(m):
        ra, rb, th, cx, cy = e[j]
        ra, rb, cx, cy = max(ra * f, 1e-12), max(rb * f, 1e-12), cx * f, cy * f
        c0, r0 = int(math.floor(bbs[j, 0])), int(math.floor(bbs[j, 1]))
        c1, r1 = int(math.ceil(bbs[j, 2])), int(math.ceil(bbs[j, 3]))
        if lim_w is not None:
            c0, c1 = max(c0, 0), min(c1, lim_w)
            r0, r1 = max(r0, 0), min(r1, lim_h)
        if c1 <= c0 or r1 <= r0:
            ell_area = 0.0
            inter = np.zeros(k)
        else:
            xs = np.arange(c0, c1, dtype=np.float64) + 0.5 - cx
            ys = np.arange(r0, r1, dtype=np.float64) + 0.5 - cy
            ct, st = math.cos(th), math.sin(th)
            u = (xs[None, :] * ct + ys[:, None] * st) / ra
            v = (-xs[None, :] * st + ys[:, None] * ct) / rb
            mask = (u * u + v * v) <= 1.0
            ell_area = float(mask.sum())
            integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
            integral[1:, 1:] = mask.cumsum(0).cumsum(1)
            w, h = c1 - c0, r1 - r0
            ca, cb = np.clip(bx0 - c0, 0, w), np.clip(bx1 - c0, 0, w)
            ra_, rb_ = np.clip(by0 - r0, 0, h), np.clip(by1 - r0, 0, h)
            inter = (integral[rb_, cb] - integral[ra_, cb] - integral[rb_, ca] + integral[ra_, ca]).astype(np.float64)
        union = ell_area + box_area - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            out[j] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


@dataclass
class FDDBReport:
    """FDDB discrete and continuous ROC (one point per distinct detection score).

    thresholds: descending; fp[i] = false positives (detections with score ≥ thresholds[i] that
    are not a discrete match) summed over images; tp_discrete / tp_continuous the matched counts
    (overlap > 0.5) / summed overlaps; num_faces the annotated faces of all images.
    """

    thresholds: np.ndarray
    fp: np.ndarray
    tp_discrete: np.ndarray
    tp_continuous: np.ndarray
    num_faces: int

    @property
    def tpr_discrete(self) -> np.ndarray:
        return self.tp_discrete / self.num_faces if self.num_faces else np.zeros_like(self.tp_discrete, dtype=float)

    @property
    def tpr_continuous(self) -> np.ndarray:
        return self.tp_continuous / self.num_faces if self.num_faces else np.zeros_like(self.tp_continuous, dtype=float)

    def discrete_roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positives, TPR) of the discrete score."""
        return self.fp.astype(np.float64), np.asarray(self.tpr_discrete, dtype=np.float64)

    def continuous_roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positives, TPR) of the continuous score."""
        return self.fp.astype(np.float64), np.asarray(self.tpr_continuous, dtype=np.float64)

    def tpr_at_fp(self, max_false_positives: int = 2000, continuous: bool = False) -> float:
        """Highest TPR over the ROC points with at most ``max_false_positives`` false positives."""
        tpr = self.tpr_continuous if continuous else self.tpr_discrete
        ok = self.fp <= max_false_positives
        return float(np.max(tpr[ok])) if ok.any() else 0.0

    def to_dict(self, curves: bool = True, fp_points: Iterable[int] = DEFAULT_FP_POINTS) -> dict:
        out: dict[str, Any] = {
            "num_faces": int(self.num_faces),
            "tpr_at_fp_discrete": {str(n): self.tpr_at_fp(n) for n in fp_points},
            "tpr_at_fp_continuous": {str(n): self.tpr_at_fp(n, continuous=True) for n in fp_points},
        }
        if curves:
            out.update(
                thresholds=self.thresholds, fp=self.fp, tpr_discrete=self.tpr_discrete,
                tpr_continuous=self.tpr_continuous,
            )
        return _jsonable(out)


def _fddb_image_stats(ov: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct score (ascending) of one image: [U, 3] (tp_cont, tp_disc, fp)."""
    from scipy.optimize import linear_sum_assignment

    uniq = np.unique(scores)
    stats = np.zeros((uniq.shape[0], 3), dtype=np.float64)
    for u, st in enumerate(uniq):
        valid = scores >= st
        n_valid = int(valid.sum())
        tpc, tpd = 0.0, 0
        if ov.shape[0] > 0 and n_valid > 0:
            sub = ov[:, valid]
            if sub.any():
                r, c = linear_sum_assignment(sub, maximize=True)
                s = sub[r, c]
                s = s[s > 0]
                tpc = float(s.sum())
                tpd = int((s > 0.5).sum())
        stats[u] = (tpc, tpd, n_valid - tpd)
    return uniq, stats


def evaluate_fddb(
    detections: Sequence[Any] | Mapping[str, Any],
    ellipses: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | Mapping[str, tuple[int, int]] | None = None,
    supersample: int = 1,
) -> FDDBReport:
    """FDDB evaluation (Jain & Learned-Miller 2010) of rectangle detections.

    detections: per image ``[K,5]`` (x1,y1,x2,y2,score) or ``(boxes, scores)``; ellipses: per
    image ``[M,5]`` (see :func:`read_fddb_ellipses`). Both may be sequences in the same order or
    mappings keyed by image name (the ellipses' keys define the image set; missing detections
    mean none). ``image_sizes`` (height, width) optionally clips regions to the image.

    As in the official ``evaluate``: for each image and each distinct detection score ``t`` the
    detections with score ≥ t are matched to the faces by a maximum-weight bipartite assignment
    on the overlap (IoU) matrix (``scipy.optimize.linear_sum_assignment``); a matched pair with
    overlap > 0.5 is a discrete true positive, every matched pair adds its overlap to the
    continuous true positives, and false positives = detections kept − discrete true positives
    (for both curves). Per-image results are summed at every distinct score of the whole set
    (an image contributes its result for the lowest of its scores ≥ t, or nothing).
    """
    if isinstance(ellipses, Mapping):
        names = list(ellipses.keys())
        ell_list = [ellipses[n] for n in names]
        if isinstance(detections, Mapping):
            det_list = [detections.get(n, np.zeros((0, 5))) for n in names]
        else:
            det_list = list(detections)
        if isinstance(image_sizes, Mapping):
            size_list = [image_sizes.get(n) for n in names]
        else:
            size_list = list(image_sizes) if image_sizes is not None else [None] * len(names)
    else:
        ell_list = list(ellipses)
        det_list = list(detections)
        size_list = list(image_sizes) if image_sizes is not None else [None] * len(ell_list)
    if len(det_list) != len(ell_list) or len(size_list) != len(ell_list):
        raise ValueError(f"{len(det_list)} detection entries / {len(size_list)} sizes for {len(ell_list)} images")

    num_faces = 0
    ev_thr, ev_delta = [], []
    for det_item, ell, size in zip(det_list, ell_list, size_list):
        e = np.asarray(ell, dtype=np.float64).reshape(-1, 5)
        num_faces += e.shape[0]
        boxes, scores = _split_detections(det_item)
        if scores.shape[0] == 0:
            continue
        ov = ellipse_box_overlap(e, boxes, image_size=size, supersample=supersample)
        uniq, stats = _fddb_image_stats(ov, scores)
        nxt = np.vstack([stats[1:], np.zeros((1, 3))])
        ev_thr.append(uniq)
        ev_delta.append(stats - nxt)

    if not ev_thr:
        z = np.zeros(0)
        return FDDBReport(z, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), z, num_faces)
    thr = np.concatenate(ev_thr)
    delta = np.vstack(ev_delta)
    uniq, inv = np.unique(thr, return_inverse=True)  # ascending
    summed = np.zeros((uniq.shape[0], 3))
    np.add.at(summed, inv, delta)
    cum = np.cumsum(summed[::-1], axis=0)  # descending thresholds
    return FDDBReport(
        thresholds=uniq[::-1].copy(),
        fp=np.rint(cum[:, 2]).astype(np.int64),
        tp_discrete=np.rint(cum[:, 1]).astype(np.int64),
        tp_continuous=cum[:, 0].copy(),
        num_faces=num_faces,
    )
