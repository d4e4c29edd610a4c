"""Landmark metrics: normalised point errors, NME, failure rate and CED curves.

Points are ``[N, K, 2]`` (x, y) arrays; the 5-point order is left eye, right eye, nose, left mouth
corner, right mouth corner (SPEC §11); 68-point sets use the iBUG order (36-41 left eye, 42-47
right eye).

The normalised error of point k of sample i is ``‖pred[i,k] − gt[i,k]‖₂ / d_i`` with ``d_i`` one of:

* ``"inter-ocular"``: distance between the eye centres of the ground truth (5 points: points 0
  and 1; 68 points: mean of 36-41 against mean of 42-47);
* ``"outer-eye-corners"``: 68 points only, the distance between the outer eye corners 36 and 45
  (the 300-W "inter-ocular" normaliser, used for the 68-point NME);
* ``"box-width"``: the face box width ``x2 − x1`` (boxes ``[N, 4]``; Sun et al.'s metric, SPEC §7);
* ``"box-diagonal"``: the face box diagonal;
* an explicit array ``[N]`` of per-sample normalisers.

A sample's error is the mean of its K normalised point errors; it "fails" when that mean
exceeds the failure threshold (0.10 by default). The CED curve gives, for thresholds x from 0 to
0.3, the fraction of samples whose error is ≤ x; its AUC up to 0.1 and 0.3 is normalised by the
range so that a perfect predictor scores 1.

Error by head pose (:func:`pose_breakdown`, the one function every landmark evaluator uses for its
``pose`` report section and per-model pose CED plot): the samples are binned by the |roll| of the
ground-truth eye line (<10, 10-20, 20-30, >=30 degrees) and by the |yaw proxy| (<0.1, 0.1-0.2,
0.2-0.3, >=0.3), the nose tip's offset from the mid-eye point along the eye line in inter-ocular
distances (:func:`pose_proxies`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NORMALISERS = ("inter-ocular", "outer-eye-corners", "box-width", "box-diagonal")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    fn = getattr(np, "trapezoid", None) or getattr(np, "trapz")
    return float(fn(y, x))


def _as_points(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] % 2 == 0:  # interleaved [N, 2K]
        arr = arr.reshape(arr.shape[0], -1, 2)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise ValueError(f"{name} must be [N, K, 2] (or interleaved [N, 2K]); got {np.shape(a)}")
    return arr


def inter_ocular_distance(gt: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, per sample [N] (5 or 68 points)."""
    gt = _as_points(gt, "gt")
    k = gt.shape[1]
    if k == 5:
        left, right = gt[:, 0], gt[:, 1]
    elif k == 68:
        left, right = gt[:, 36:42].mean(axis=1), gt[:, 42:48].mean(axis=1)
    else:
        raise ValueError(f"inter-ocular normaliser defined for 5 or 68 points, not {k}")
    return np.linalg.norm(right - left, axis=1)


def normaliser_values(
    gt: np.ndarray, normaliser: str | np.ndarray, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Per-sample normalising distance [N] (see the module docstring for the choices)."""
    gt = _as_points(gt, "gt")
    n = gt.shape[0]
    if isinstance(normaliser, str):
        if normaliser in ("inter-ocular", "interocular", "inter_ocular"):
            d = inter_ocular_distance(gt)
        elif normaliser in ("outer-eye-corners", "outer_eye_corners"):
            if gt.shape[1] != 68:
                raise ValueError(f"the outer-eye-corners normaliser needs 68 points, not {gt.shape[1]}")
            d = np.linalg.norm(gt[:, 45] - gt[:, 36], axis=1)
        elif normaliser in ("box-width", "box", "box_width"):
            if boxes is None:
                raise ValueError("the box-width normaliser needs boxes [N, 4]")
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            d = b[:, 2] - b[:, 0]
        elif normaliser in ("box-diagonal", "box_diagonal", "diagonal"):
            if boxes is None:
                raise ValueError("the box-diagonal normaliser needs boxes [N, 4]")
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            d = np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        else:
            raise ValueError(f"unknown normaliser {normaliser!r}; choose one of {NORMALISERS} or pass an array")
    else:
        d = np.asarray(normaliser, dtype=np.float64).reshape(-1)
    if d.shape[0] != n:
        raise ValueError(f"{d.shape[0]} normalisers for {n} samples")
    if not np.all(d > 0):
        bad = np.nonzero(~(d > 0))[0][:5].tolist()
        raise ValueError(f"normalising distance must be > 0; samples {bad} are not")
    return d


def landmark_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    normaliser: str | np.ndarray = "inter-ocular",
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Per-point normalised errors ``[N, K]``: ``‖pred − gt‖₂ / d`` per sample."""
    p = _as_points(pred, "pred")
    g = _as_points(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ")
    d = normaliser_values(g, normaliser, boxes)
    return np.linalg.norm(p - g, axis=2) / d[:, None]


@dataclass
class LandmarkReport:
    """Summary of normalised landmark errors (see :func:`evaluate_landmarks`).

    errors: [N, K] normalised per-point errors; per_point_nme [K]; nme = mean over all N·K;
    failure_rate = fraction of samples whose mean error > failure_threshold; per_point_failure_rate
    [K] = fraction of samples where that point's error > failure_threshold; ced_x / ced_y the CED
    curve on the per-sample mean error; auc_0_1 / auc_0_3 its area up to 0.1 / 0.3 divided by
    0.1 / 0.3 (in [0, 1]).
    """

    normaliser: str
    errors: np.ndarray
    per_point_nme: np.ndarray
    nme: float
    failure_threshold: float
    failure_rate: float
    per_point_failure_rate: np.ndarray
    ced_x: np.ndarray
    ced_y: np.ndarray
    auc_0_1: float
    auc_0_3: float

    @property
    def num_samples(self) -> int:
        return int(self.errors.shape[0])

    @property
    def sample_errors(self) -> np.ndarray:
        """Per-sample mean normalised error [N]."""
        return self.errors.mean(axis=1) if self.errors.size else np.zeros(self.errors.shape[0])

    def to_dict(self, curves: bool = True) -> dict:
        out: dict[str, Any] = {
            "normaliser": self.normaliser,
            "num_samples": self.num_samples,
            "nme": float(self.nme),
            "per_point_nme": [float(v) for v in self.per_point_nme],
            "failure_threshold": float(self.failure_threshold),
            "failure_rate": float(self.failure_rate),
            "per_point_failure_rate": [float(v) for v in self.per_point_failure_rate],
            "auc_0_1": float(self.auc_0_1),
            "auc_0_3": float(self.auc_0_3),
        }
        if curves:
            out["ced_x"] = [float(v) for v in self.ced_x]
            out["ced_y"] = [float(v) for v in self.ced_y]
        return out


def ced_curve(sample_errors: np.ndarray, x_max: float = 0.3, steps: int = 301) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: x = thresholds 0..x_max, y = fraction of samples with error ≤ x."""
    e = np.sort(np.asarray(sample_errors, dtype=np.float64).reshape(-1))
    x = np.linspace(0.0, x_max, steps)
    if e.size == 0:
        return x, np.zeros_like(x)
    y = np.searchsorted(e, x, side="right") / e.size
    return x, y


def ced_auc(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under a CED curve from 0 to ``x_max`` divided by ``x_max`` (1 for a perfect predictor)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = x <= x_max + 1e-12
    xs, ys = x[keep], y[keep]
    if xs.size < 2:
        return 0.0
    return _trapezoid(ys, xs) / x_max


def evaluate_landmarks(
    pred: np.ndarray,
    gt: np.ndarray,
    normaliser: str | np.ndarray = "inter-ocular",
    boxes: np.ndarray | None = None,
    failure_threshold: float = 0.10,
    ced_max: float = 0.3,
    ced_steps: int = 301,
) -> LandmarkReport:
    """Errors, NME, failure rates and CED/AUC of predicted landmarks against ground truth."""
    errors = landmark_errors(pred, gt, normaliser, boxes)
    n, k = errors.shape
    sample = errors.mean(axis=1) if n else np.zeros(0)
    per_point = errors.mean(axis=0) if n else np.zeros(k)
    x, y = ced_curve(sample, ced_max, ced_steps)
    return LandmarkReport(
        normaliser=normaliser if isinstance(normaliser, str) else "custom",
        errors=errors,
        per_point_nme=per_point,
        nme=float(errors.mean()) if errors.size else 0.0,
        failure_threshold=float(failure_threshold),
        failure_rate=float((sample > failure_threshold).mean()) if n else 0.0,
        per_point_failure_rate=(errors > failure_threshold).mean(axis=0) if n else np.zeros(k),
        ced_x=x,
        ced_y=y,
        auc_0_1=ced_auc(x, y, 0.1) if ced_max >= 0.1 else float("nan"),
        auc_0_3=ced_auc(x, y, 0.3) if ced_max >= 0.3 - 1e-12 else float("nan"),
    )


# --------------------------------------------------------------------------------------------
# error by head pose (roll and a yaw proxy measured on the ground truth)
# --------------------------------------------------------------------------------------------

#: Lower edges of the |roll| bins, degrees: <10, 10-20, 20-30, >=30.
ROLL_EDGES = (0.0, 10.0, 20.0, 30.0)
#: Lower edges of the |yaw proxy| bins, inter-ocular distances: <0.1, 0.1-0.2, 0.2-0.3, >=0.3.
YAW_EDGES = (0.0, 0.1, 0.2, 0.3)


def pose_proxies(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roll [N] (degrees) and yaw proxy [N] of each face, from its ground-truth points.

    Eye centres and nose tip: points 0, 1, 2 of the 5-point order; for 68 points the means of
    36-41 and 42-47 and point 30. ``roll = atan2(dy, dx)`` of the eye line from the image-left eye
    to the image-right one (y down: positive when the image-right eye is lower, a clockwise tilt
    on screen). ``yaw proxy = (nose_x - mid-eye_x) / inter-ocular distance`` after rotating the
    face by -roll about the mid-eye point, i.e. the nose's offset along the eye line: 0 for a
    frontal face, positive when the nose is to the image's right of the eyes' midpoint (the face
    turned towards the image's right), about ±0.5 near profile. Faces whose eyes or nose are
    missing (NaN) or whose eyes coincide get NaN for both.
    """
    g = _as_points(gt, "gt")
    k = g.shape[1]
    if k == 5:
        left, right, nose = g[:, 0], g[:, 1], g[:, 2]
    elif k == 68:
        left, right, nose = g[:, 36:42].mean(axis=1), g[:, 42:48].mean(axis=1), g[:, 30]
    else:
        raise ValueError(f"pose proxies are defined for 5 or 68 points, not {k}")
    d = right - left
    iod = np.hypot(d[:, 0], d[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        roll = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
        offset = nose - (left + right) / 2
        yaw = (offset * d).sum(axis=1) / (iod * iod)
    bad = ~(np.isfinite(roll) & np.isfinite(yaw) & (iod > 0))
    roll[bad] = np.nan
    yaw[bad] = np.nan
    return roll, yaw


def _bin_labels(edges: Sequence[float], unit: str) -> list[str]:
    if len(edges) == 1:
        return [f">={edges[0]:g}{unit}"]
    labels = [f"<{edges[1]:g}{unit}"]
    labels += [f"{lo:g}-{hi:g}{unit}" for lo, hi in zip(edges[1:-1], edges[2:])]
    return labels + [f">={edges[-1]:g}{unit}"]


@dataclass
class PoseBin:
    """The samples whose |pose value| lies in [low, high): their count, NME (mean of the samples'
    mean normalised errors), failure rate, CED and its AUC up to 0.1."""

    label: str
    low: float
    high: float
    count: int
    nme: float
    failure_rate: float
    auc_0_1: float
    ced_x: np.ndarray
    ced_y: np.ndarray

    def to_dict(self) -> dict:
        def value(v: float) -> float | None:  # an empty bin has no figures (null, not NaN, in JSON)
            return None if not self.count or math.isnan(v) else float(v)

        return {"bin": self.label, "low": self.low, "high": None if math.isinf(self.high) else self.high,
                "faces": self.count, "nme": value(self.nme), "failure_rate": value(self.failure_rate),
                "auc_0_1": value(self.auc_0_1)}


@dataclass
class PoseReport:
    """Landmark error by |roll| and by |yaw proxy| bins (:func:`pose_breakdown`)."""

    normaliser: str
    failure_threshold: float
    roll: list[PoseBin]
    yaw: list[PoseBin]
    unknown: int  # samples whose pose cannot be measured (missing eyes or nose)

    def to_dict(self) -> dict:
        """The ``pose`` section of a report (no curves)."""
        return {
            "definition": "roll = angle of the ground-truth eye line (degrees); yaw proxy = (nose_x - mid-eye_x) / "
                          "inter-ocular distance after removing the roll; bins on the absolute values",
            "normaliser": self.normaliser,
            "failure_threshold": self.failure_threshold,
            "roll_degrees": [b.to_dict() for b in self.roll],
            "yaw_proxy": [b.to_dict() for b in self.yaw],
            "faces_without_pose": self.unknown,
        }  # fmt: skip

    def curves(self) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``{"roll": {label: (x, y)}, "yaw": {...}}`` for the non-empty bins, labels with counts."""
        return {name: {f"{b.label} (n={b.count}, NME {b.nme:.4f})": (b.ced_x, b.ced_y) for b in bins if b.count}
                for name, bins in (("roll", self.roll), ("yaw", self.yaw))}

    def table(self) -> str:
        """Two short lines for a log: NME (faces) per roll bin and per yaw bin."""
        def line(name: str, bins: list[PoseBin]) -> str:
            return f"{name}: " + "  ".join(f"{b.label} {b.nme:.4f} ({b.count})" if b.count else f"{b.label} - (0)" for b in bins)
        return line("NME by |roll|", self.roll) + "\n" + line("NME by |yaw proxy|", self.yaw)


def _pose_bins(values: np.ndarray, edges: Sequence[float], unit: str, sample: np.ndarray, failure_threshold: float,
               ced_max: float, ced_steps: int) -> list[PoseBin]:
    bins = []
    uppers = list(edges[1:]) + [math.inf]
    for label, low, high in zip(_bin_labels(edges, unit), edges, uppers):
        member = (values >= low) & (values < high)
        e = sample[member]
        x, y = ced_curve(e, ced_max, ced_steps)
        bins.append(PoseBin(
            label=label, low=float(low), high=float(high), count=int(member.sum()),
            nme=float(e.mean()) if e.size else float("nan"),
            failure_rate=float((e > failure_threshold).mean()) if e.size else float("nan"),
            auc_0_1=ced_auc(x, y, 0.1) if e.size and ced_max >= 0.1 else float("nan"),
            ced_x=x, ced_y=y,
        ))  # fmt: skip
    return bins


def pose_breakdown(
    sample_errors: np.ndarray,
    gt: np.ndarray,
    normaliser: str = "inter-ocular",
    failure_threshold: float = 0.10,
    roll_edges: Sequence[float] = ROLL_EDGES,
    yaw_edges: Sequence[float] = YAW_EDGES,
    ced_max: float = 0.3,
    ced_steps: int = 301,
) -> PoseReport:
    """Per-sample errors [N] grouped by the head pose of the ground truth ``gt`` [N, 5 or 68, 2].

    The one place every landmark evaluator bins its errors by pose: |roll| bins <10, 10-20, 20-30,
    >=30 degrees and |yaw proxy| bins <0.1, 0.1-0.2, 0.2-0.3, >=0.3 (defaults; each bin holds its
    lower edge), with the proxies of :func:`pose_proxies`. ``normaliser`` only names how the
    errors were normalised, for the report.
    """
    sample = np.asarray(sample_errors, np.float64).reshape(-1)
    roll, yaw = pose_proxies(gt)
    if roll.shape[0] != sample.shape[0]:
        raise ValueError(f"{sample.shape[0]} sample errors for {roll.shape[0]} ground-truth faces")
    for name, edges in (("roll_edges", roll_edges), ("yaw_edges", yaw_edges)):
        if len(edges) < 1 or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"{name} must start at 0 and increase, got {tuple(edges)}")
    return PoseReport(
        normaliser=normaliser,
        failure_threshold=float(failure_threshold),
        roll=_pose_bins(np.abs(roll), roll_edges, " deg", sample, failure_threshold, ced_max, ced_steps),
        yaw=_pose_bins(np.abs(yaw), yaw_edges, "", sample, failure_threshold, ced_max, ced_steps),
        unknown=int(np.isnan(roll).sum()),
    )


def pose_markdown(reports: Mapping[str, PoseReport]) -> str:
    """A markdown table, one row per model: NME (faces) in each |roll| and |yaw proxy| bin."""
    if not reports:
        return ""
    first = next(iter(reports.values()))
    head = ["model"] + [f"roll {b.label}" for b in first.roll] + [f"yaw {b.label}" for b in first.yaw]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rep in reports.items():
        cells = [f"{b.nme:.4f} ({b.count})" if b.count else "- (0)" for b in (*rep.roll, *rep.yaw)]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
