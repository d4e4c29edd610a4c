"""Evaluation plots: precision-recall, ROC (TPR against false positives) and CED curves (also by
head pose: :func:`plot_pose_ced`).

Each function draws on a private ``matplotlib.figure.Figure`` attached to the Agg canvas (chosen
inside the function; pyplot and the global backend are never touched, so importing this module
or plotting from a worker thread has no side effects), labels both axes, puts the metric of every
curve in its legend entry, draws a grid, writes the run settings (min face, factor, thresholds,
weights hash, ...) under the title, and saves a PNG atomically (temporary file in the target
folder, then ``os.replace``). Each returns the written path.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "/".join(_format_value(x) for x in v)
    if isinstance(v, np.ndarray):
        return _format_value(v.tolist())
    return str(v)


def format_settings(settings: Mapping[str, Any] | None, width: int = 100) -> str:
    """``{"min_face": 20, "factor": 0.709}`` -> ``"min_face=20, factor=0.709"`` (wrapped)."""
    if not settings:
        return ""
    text = ", ".join(f"{k}={_format_value(v)}" for k, v in settings.items())
    return "\n".join(textwrap.wrap(text, width=width))


def _new_figure(figsize=(7.5, 6.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _decorate(fig, ax, title: str, settings: Mapping[str, Any] | None, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", linestyle="--", alpha=0.5)
    subtitle = format_settings(settings)
    fig.suptitle(title, fontsize=12, y=0.985)
    if subtitle:
        ax.set_title(subtitle, fontsize=8)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))


def _save_atomic(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.png", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _pr_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    from mtcnn.eval.detection import voc_ap

    r = np.asarray(recall, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(p)
    return voc_ap(r[ok], p[ok]) if ok.any() else 0.0


def plot_pr_curves(
    curves: Mapping[str, tuple],
    title: str,
    settings: Mapping[str, Any] | None,
    path: str | os.PathLike,
) -> Path:
    """Precision against recall, one line per label.

    ``curves[label] = (recall, precision)`` or ``(recall, precision, ap)``; without ``ap`` the VOC
    all-point AP of the given points is computed. Legend entries read ``"label (AP=0.853)"``.
    """
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        recall, precision = np.asarray(curve[0], float), np.asarray(curve[1], float)
        ap = float(curve[2]) if len(curve) > 2 and curve[2] is not None else _pr_ap(recall, precision)
        ok = np.isfinite(recall) & np.isfinite(precision)
        ax.plot(recall[ok], precision[ok], linewidth=1.6, label=f"{label} (AP={ap:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    _decorate(fig, ax, title, settings, "Recall", "Precision")
    return _save_atomic(fig, path)


def _roc_auc(fp: np.ndarray, tpr: np.ndarray, fp_max: float) -> float:
    """Area under the step curve TPR(FP) on [0, fp_max], divided by fp_max (in [0, 1])."""
    fp = np.asarray(fp, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fp.size == 0 or fp_max <= 0:
        return 0.0
    order = np.argsort(fp, kind="stable")
    fp, tpr = fp[order], np.maximum.accumulate(tpr[order])
    xs = np.concatenate([fp[fp < fp_max], [fp_max]])
    # best TPR reached with at most x false positives, held until the next point
    ys = np.concatenate([tpr[fp < fp_max], [0.0]])
    widths = np.diff(xs)
    return float(np.sum(widths * ys[:-1]) / fp_max)


def plot_roc(
    curves: Mapping[str, tuple],
    title: str,
    settings: Mapping[str, Any] | None,
    path: str | os.PathLike,
    fp_max: float = 2000,
) -> Path:
    """True-positive rate against the number of false positives (FDDB-style ROC).

    ``curves[label] = (false_positives, tpr)``. The x axis spans 0..``fp_max``; legend entries
    show the normalised area under the curve on that range and the TPR at ``fp_max`` FP.
    """
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        fp, tpr = np.asarray(curve[0], float), np.asarray(curve[1], float)
        auc = _roc_auc(fp, tpr, fp_max)
        ok = fp <= fp_max
        at = float(np.max(tpr[ok])) if ok.any() else 0.0
        order = np.argsort(fp, kind="stable")
        ax.step(fp[order], tpr[order], where="post", linewidth=1.6,
                label=f"{label} (AUC={auc:.3f}, TPR@{int(fp_max)}FP={at:.3f})")
    ax.set_xlim(0.0, fp_max)
    ax.set_ylim(0.0, 1.02)
    _decorate(fig, ax, title, settings, "False positives", "True positive rate")
    return _save_atomic(fig, path)


def plot_ced(
    curves: Mapping[str, tuple],
    title: str,
    settings: Mapping[str, Any] | None,
    path: str | os.PathLike,
    x_max: float | None = None,
) -> Path:
    """Cumulative error distribution: fraction of samples with normalised error ≤ x.

    ``curves[label] = (x, y)``; legend entries show the AUC up to ``x_max`` (default: the largest
    x of all curves) normalised to [0, 1].
    """
    from mtcnn.eval.landmarks import ced_auc

    if x_max is None:
        xs = [float(np.max(np.asarray(c[0], float))) for c in curves.values() if np.size(c[0])]
        x_max = max(xs) if xs else 0.3
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        x, y = np.asarray(curve[0], float), np.asarray(curve[1], float)
        auc = ced_auc(x, y, x_max)
        ax.plot(x, y, linewidth=1.6, label=f"{label} (AUC@{x_max:g}={auc:.3f})")
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(0.0, 1.02)
    _decorate(fig, ax, title, settings, "Normalised error", "Fraction of samples")
    return _save_atomic(fig, path)


def plot_pose_ced(
    pose: Any,
    title: str,
    settings: Mapping[str, Any] | None,
    path: str | os.PathLike,
    x_max: float = 0.3,
) -> Path:
    """One model's CED by head pose: two panels, one curve per |roll| bin and per |yaw proxy| bin.

    ``pose``: a :class:`mtcnn.eval.landmarks.PoseReport` (:func:`mtcnn.eval.landmarks.pose_breakdown`);
    legend entries give each bin's face count, NME and AUC up to ``x_max``; empty bins are left out.
    """
    from mtcnn.eval.landmarks import ced_auc

    fig = _new_figure(figsize=(12.0, 5.5))
    panels = (("roll", "|roll| of the eye line"), ("yaw", "|yaw proxy| (nose offset / inter-ocular)"))
    curves = pose.curves()
    for k, (key, name) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, k)
        for label, (x, y) in curves[key].items():
            x, y = np.asarray(x, float), np.asarray(y, float)
            ax.plot(x, y, linewidth=1.6, label=f"{label} (AUC@{x_max:g}={ced_auc(x, y, x_max):.3f})")
        ax.set_xlim(0.0, x_max)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel(f"Normalised error ({pose.normaliser})")
        ax.set_ylabel("Fraction of samples")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="major", linestyle="--", alpha=0.5)
        if curves[key]:
            ax.legend(loc="lower right", fontsize=7)
    subtitle = format_settings(settings, width=160)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save_atomic(fig, path)
