"""Training curves from a run's ``metrics.jsonl``, for every task.

Left: the training losses (solid) and their validation counterparts (dashed). Right: the
validation quality measures, recall / FPR / accuracy for the MTCNN task, NME / failure rate
for landmark regression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# train key -> validation key it is compared with (MTCNN task; landmark tasks log "loss" only).
_VAL_LOSS_KEY = {"loss": "loss", "cls": "loss_cls", "box": "loss_box", "landmark": "loss_landmark"}
_COLOURS = {"cls": "tab:blue", "box": "tab:orange", "landmark": "tab:green", "loss": "black"}
# (val key, style, colour, label) per task kind.
_QUALITY = {
    "detection": [("recall", "o-", "tab:green", "recall of pos (p >= {t:g})"),
                  ("fpr", "o-", "tab:red", "FPR on neg (p >= {t:g})"),
                  ("accuracy", "s--", "tab:blue", "accuracy pos+neg (p > 0.5)")],
    "landmarks": [("nme", "o-", "tab:green", "NME (inter-ocular)"),
                  ("failure_rate", "s--", "tab:red", "failure rate (NME > {t:g})")],
}


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def _plot_losses(ax, records: list[dict[str, Any]]) -> None:
    epochs = [r["epoch"] for r in records]
    keys = [k for k in records[-1]["train"] if k != "accuracy"]
    for key in keys:
        colour = _COLOURS.get(key)
        label = f"train {key}" + (" (OHEM)" if key == "cls" else "")
        ax.plot(epochs, [r["train"].get(key, np.nan) for r in records], "-", color=colour, label=label)
        vals = [(r["val"] or {}).get(_VAL_LOSS_KEY.get(key, key)) for r in records]
        if any(v is not None for v in vals):
            ax.plot(epochs, [np.nan if v is None else v for v in vals], "--", color=colour, label=f"val {key}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per task, unweighted; total weighted)")
    ax.set_title("losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _plot_quality(ax, records: list[dict[str, Any]]) -> None:
    with_val = [r for r in records if r.get("val")]
    if not with_val:
        ax.set_title("validation: none recorded")
        return
    last = with_val[-1]["val"]
    kind = "detection" if "recall" in last else "landmarks"
    t = last.get("threshold", 0.0)
    ve = [r["epoch"] for r in with_val]
    for key, style, colour, label in _QUALITY[kind]:
        if key in last:
            ax.plot(ve, [r["val"].get(key, np.nan) for r in with_val], style, color=colour, label=label.format(t=t))
    if kind == "detection":
        ax.set_title(f"validation: recall {last['recall']:.3f}, FPR {last['fpr']:.3f} at epoch {ve[-1]}")
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.set_title(f"validation: NME {last.get('nme', float('nan')):.4f} at epoch {ve[-1]}")
    ax.set_ylabel("rate")
    ax.legend(fontsize=8, loc="center right")


def plot_training_curves(metrics_jsonl: str | os.PathLike, png_path: str | os.PathLike, dpi: int = 90) -> Path:
    """Plot a run's losses and validation measures against the epoch into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_jsonl)
    if not records:
        raise ValueError(f"{metrics_jsonl}: no epochs recorded")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_losses(ax1, records)
    _plot_quality(ax2, records)
    ax2.set_xlabel("epoch")
    ax2.grid(alpha=0.3)
    net = records[-1].get("net", "?")
    fig.suptitle(f"{net}: {records[-1].get('settings', '')}", fontsize=9)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=dpi)
    plt.close(fig)
    return png_path


__all__ = ["plot_training_curves", "read_metrics"]
