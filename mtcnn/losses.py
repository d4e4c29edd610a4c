"""MTCNN multi-task losses (SPEC §3) with online hard example mining on classification.

Which labels feed which loss is defined once, in :mod:`mtcnn.structures` (classification_mask,
box_mask, landmark_mask). A loss with no valid sample in the minibatch is exactly zero (still
attached to the graph), never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mtcnn.config.train import DEFAULT_LOSS_WEIGHTS
from mtcnn.structures import box_mask, classification_mask, landmark_mask


@dataclass(frozen=True)
class TaskWeights:
    cls: float = 1.0
    box: float = 0.5
    landmark: float = 0.5


# SPEC §3 / [P]: P-Net and R-Net 1 : 0.5 : 0.5, O-Net 1 : 0.5 : 1 (the config's defaults).
DEFAULT_TASK_WEIGHTS = {net: TaskWeights(*w) for net, w in DEFAULT_LOSS_WEIGHTS.items()}


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    # Multiplying by the mask keeps the graph connected when the mask is empty (zero gradient).
    return (per_sample * mask).sum() / count.clamp(min=1)


def classification_loss_ohem(logits: torch.Tensor, labels: torch.Tensor, keep_ratio: float = 0.7) -> torch.Tensor:
    """Cross-entropy over positives and negatives, averaged over the hardest ``⌊keep_ratio·n⌋``.

    ``logits [B,2]``, ``labels [B]`` (Label values). ``keep_ratio = 1`` disables mining.
    """
    valid = classification_mask(labels)
    target = (labels == 1).long()
    per_sample = F.cross_entropy(logits.float(), target, reduction="none")
    n_valid = int(valid.sum())
    keep = int(n_valid * keep_ratio)  # floor, as [A]
    if keep == 0:
        return per_sample.sum() * 0.0
    # Invalid samples get -inf so they are never among the top-k.
    candidates = torch.where(valid, per_sample, torch.full_like(per_sample, float("-inf")))
    hardest, _ = torch.topk(candidates, keep)
    return hardest.mean()


def box_loss(pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over positives and part faces of the summed squared offset error (4 values)."""
    per_sample = ((pred.float() - target) ** 2).sum(dim=1)
    return _masked_mean(per_sample, box_mask(labels))


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, kind: str = "l2",
                  pixels: float = 1.0) -> torch.Tensor:
    """Mean over landmark samples of the summed per-coordinate loss (10 values).

    ``kind`` ``l2`` (SPEC §3: squared error of the crop-normalised coordinates), ``l1``, or
    ``wing`` on errors in pixels of the ``pixels``-wide input (its widths are pixel units).
    """
    per_sample = landmark_regression_per_sample(pred, target, kind, scale=pixels if kind == "wing" else 1.0)
    return _masked_mean(per_sample, landmark_mask(labels))


def flatten_head(output: torch.Tensor) -> torch.Tensor:
    """P-Net heads on 12×12 inputs are ``[B,C,1,1]``; R/O-Net heads are ``[B,C]``."""
    return output.reshape(output.shape[0], -1)


def mtcnn_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    weights: TaskWeights,
    keep_ratio: float = 0.7,
    landmark_kind: str = "l2",
    input_pixels: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the three task losses; also returns each part (detached) for logging.

    ``landmark_kind`` / ``input_pixels``: see :func:`landmark_loss`."""
    logits, boxes, marks = (flatten_head(o) for o in outputs)
    labels = batch["label"]
    parts = {
        "cls": classification_loss_ohem(logits, labels, keep_ratio),
        "box": box_loss(boxes, batch["bbox"], labels),
        "landmark": landmark_loss(marks, batch["landmark"], labels, landmark_kind, input_pixels),
    }
    total = weights.cls * parts["cls"] + weights.box * parts["box"] + weights.landmark * parts["landmark"]
    return total, {k: v.detach() for k, v in parts.items()}


# ------------------------------------------------------------------------------------------
# landmark regression (any number of points)
# ------------------------------------------------------------------------------------------


def wing(error: torch.Tensor, w: float = 10.0, epsilon: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al. 2018) of absolute errors: ``w ln(1 + |x|/eps)`` below ``w``,
    ``|x| - C`` above, with ``C = w - w ln(1 + w/eps)`` so the two pieces meet."""
    x = error.abs()
    c = w - w * math.log1p(w / epsilon)
    return torch.where(x < w, w * torch.log1p(x / epsilon), x - c)


def adaptive_wing(error: torch.Tensor, alpha: float = 2.1, omega: float = 14.0, epsilon: float = 1.0,
                  theta: float = 0.5) -> torch.Tensor:
    """Adaptive wing loss (Wang et al. 2019) applied to coordinate errors.

    The paper's exponent is ``alpha - y`` with ``y`` a heatmap value; for coordinates the target
    intensity is taken as 0, giving ``omega ln(1 + (|x|/eps)^alpha)`` below ``theta`` (smooth,
    quadratic-like at 0 since alpha > 2) and the linear continuation ``A|x| - C`` above.
    """
    x = error.abs()
    r = theta / epsilon
    a = omega * (1.0 / (1.0 + r**alpha)) * alpha * r ** (alpha - 1.0) / epsilon
    c = theta * a - omega * math.log1p(r**alpha)
    return torch.where(x < theta, omega * torch.log1p((x / epsilon) ** alpha), a * x - c)


def landmark_regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "wing",
                             point_weights: torch.Tensor | None = None, scale: float = 1.0,
                             **params: float) -> torch.Tensor:
    """Mean over samples of the point-weighted sum of per-coordinate losses.

    ``pred`` / ``target`` ``[B, 2K]`` (x, y interleaved); ``point_weights`` ``[K]`` (None: 1);
    errors are multiplied by ``scale`` first (e.g. the crop side, for pixel-unit wing widths).
    ``kind``: ``l1``, ``l2`` (squared error), ``wing``, ``adaptive_wing`` (``params`` go to it).
    """
    per_sample = landmark_regression_per_sample(pred, target, kind, point_weights, scale, **params)
    return per_sample.mean() if per_sample.shape[0] else per_sample.sum() * 0.0


def landmark_regression_per_sample(pred: torch.Tensor, target: torch.Tensor, kind: str = "wing",
                                   point_weights: torch.Tensor | None = None, scale: float = 1.0,
                                   **params: float) -> torch.Tensor:
    """``[B]``: each sample's point-weighted sum of per-coordinate losses (see
    :func:`landmark_regression_loss`). A NaN target coordinate (a point the annotation lacks)
    adds nothing: the loss is masked per point."""
    target = target.float()
    known = ~torch.isnan(target)
    error = torch.where(known, pred.float() - torch.nan_to_num(target), torch.zeros((), device=target.device)) * scale
    if kind == "l1":
        per = error.abs()
    elif kind == "l2":
        per = error**2
    elif kind == "wing":
        per = wing(error, **params)
    elif kind == "adaptive_wing":
        per = adaptive_wing(error, **params)
    else:
        raise ValueError(f"unknown landmark loss {kind!r}: choose l1, l2, wing or adaptive_wing")
    per_point = per.reshape(per.shape[0], -1, 2).sum(dim=2)  # [B, K]
    if point_weights is not None:
        per_point = per_point * point_weights.to(per_point)
    return per_point.sum(dim=1)
