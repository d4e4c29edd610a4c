"""A stage threshold chosen on validation samples, so that no source of faces is left behind.

A single threshold on a stage's face probability trades recall against false positives, and the
faces of a rare source (masked faces in crowds are 3 % of O-Net's validation positives) can sit
well below the common ones: their recall at the paper's 0.7 can collapse while the aggregate
still looks fine. :func:`calibrate_threshold` picks the highest threshold at which *every*
source keeps at least ``min_recall`` of its positives, from the stage's own validation HDF5
(the mined samples of the validation splits; each sample records the image it came from).

A source is the folder its image lies in, named with its parent (``val/images`` of the scenes,
``face_mask/images``, ``webfaces/Caltech_WebFaces``, ``cnn_facepoint/lfw_5590`` and ``net_7876``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtcnn.data.h5 import SampleFileError, is_complete


@dataclass(frozen=True)
class SourceRecall:
    source: str
    positives: int
    recall_at_threshold: float
    recall_at_reference: float


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold, every source's recall at it and at ``reference``, and the false
    positive rate on the validation negatives at both."""

    threshold: float
    reference: float
    min_recall: float
    sources: list[SourceRecall]
    negatives: int
    fpr_at_threshold: float
    fpr_at_reference: float

    def lines(self) -> list[str]:
        out = [f"threshold {self.threshold:.3f} (every source keeps >= {self.min_recall:.0%} of its validation positives); "
               f"at {self.reference:g}: see the right column"]
        for s in self.sources:
            out.append(f"  {s.source:<40} {s.positives:>7,} positives: recall {s.recall_at_threshold:.4f} (at {self.reference:g}: {s.recall_at_reference:.4f})")
        out.append(f"  {'negatives':<40} {self.negatives:>7,}: false-positive rate {self.fpr_at_threshold:.4f} (at {self.reference:g}: {self.fpr_at_reference:.4f})")
        return out


@torch.inference_mode()
def face_probabilities(net: nn.Module, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """The stage net's face probability for uint8 ``[N, H, W, 3]`` RGB crops."""
    from mtcnn.stages import normalise, prepare_for_inference

    prepared = prepare_for_inference(net, "cpu")
    out = []
    for start in range(0, len(images), batch):
        pixels = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).permute(0, 3, 1, 2).float()
        logits = prepared(normalise(pixels), with_landmarks=False)[0]
        out.append(torch.softmax(logits, dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _source_folders(h5, group: str) -> np.ndarray:
    paths = [Path(s.decode() if isinstance(s, bytes) else str(s)) for s in h5["sources"][:]]
    names = [f"{p.parent.parent.name}/{p.parent.name}" for p in paths]
    return np.asarray(names, dtype=object)[h5[f"{group}/source"][:]]


def calibrate_threshold(net: nn.Module, val_h5: str | Path, min_recall: float = 0.95, reference: float = 0.7,
                        min_source_positives: int = 200) -> Calibration:
    """The highest threshold (at most ``reference``) at which every source with at least
    ``min_source_positives`` validation positives keeps ``min_recall`` of them."""
    if not 0.0 < min_recall < 1.0:
        raise ValueError(f"min_recall must be in (0, 1), got {min_recall}")
    import h5py

    if not is_complete(val_h5):
        raise SampleFileError(f"{val_h5}: missing or not marked complete; finish the mining run that writes it")
    with h5py.File(val_h5, "r") as h5:
        pos = face_probabilities(net, h5["pos/images"])
        neg = face_probabilities(net, h5["neg/images"])
        folders = _source_folders(h5, "pos")
    by_source = {name: pos[folders == name] for name in sorted(set(folders))}
    by_source = {name: scores for name, scores in by_source.items() if len(scores) >= min_source_positives}
    # Each source's score that a (1 - min_recall) share of its positives fall below.
    threshold = min([reference] + [float(np.quantile(s, 1.0 - min_recall, method="lower")) for s in by_source.values()])
    recalls = [SourceRecall(name, len(s), float((s >= threshold).mean()), float((s >= reference).mean()))
               for name, s in by_source.items()]
    return Calibration(threshold=threshold, reference=reference, min_recall=min_recall, sources=recalls, negatives=len(neg),
                       fpr_at_threshold=float((neg >= threshold).mean()) if len(neg) else 0.0,
                       fpr_at_reference=float((neg >= reference).mean()) if len(neg) else 0.0)
