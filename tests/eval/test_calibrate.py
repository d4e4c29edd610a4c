"""The calibrated threshold against an oracle: a net whose face probability is known per crop."""

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from mtcnn.eval.calibrate import calibrate_threshold


class BrightnessNet(nn.Module):
    """Face probability = the crop's mean pixel / 255 (logits log p, log(1 - p)), as a stage net."""

    def forward(self, x, with_landmarks=True):
        from mtcnn.stages import PIXEL_MEAN, PIXEL_SCALE

        p = (x / PIXEL_SCALE + PIXEL_MEAN).mean(dim=(1, 2, 3)).div(255).clamp(1e-6, 1 - 1e-6)
        logits = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
        return logits, torch.zeros(len(x), 4), None


def _write(path, groups):
    sources = [f"/d/{name}/images/{k}.jpg" for name in ("crowd", "web") for k in range(3)]
    with h5py.File(path, "w") as f:
        f.create_dataset("sources", data=np.array(sources, dtype="S"))
        for group, (levels, source_ids) in groups.items():
            f.create_dataset(f"{group}/images", data=np.stack([np.full((8, 8, 3), v, np.uint8) for v in levels]))
            f.create_dataset(f"{group}/source", data=np.asarray(source_ids, np.int32))


def test_threshold_keeps_the_share_of_the_weakest_source(tmp_path):
    # web faces score 0.9-0.99; crowd faces spread 0.1-1.0: 95 % of the crowd needs a low threshold.
    crowd = np.linspace(25, 255, 300).round()
    web = np.linspace(230, 252, 300).round()
    levels = np.concatenate([crowd, web])
    ids = [0] * 300 + [4] * 300
    negatives = np.array([10, 50, 150, 240])  # probabilities 0.04, 0.20, 0.59, 0.94
    _write(tmp_path / "val.h5", {"pos": (levels, ids), "neg": (negatives, [1, 2, 3, 4])})
    got = calibrate_threshold(BrightnessNet(), tmp_path / "val.h5", min_recall=0.95, reference=0.7, min_source_positives=100)
    scores = np.sort(crowd / 255)
    assert got.threshold == pytest.approx(np.quantile(scores, 0.05, method="lower"), abs=1e-4)
    by_name = {s.source: s for s in got.sources}
    assert set(by_name) == {"crowd/images", "web/images"}
    assert by_name["crowd/images"].recall_at_threshold >= 0.95 > by_name["crowd/images"].recall_at_reference
    assert by_name["web/images"].recall_at_threshold == by_name["web/images"].recall_at_reference == 1.0
    assert got.fpr_at_threshold == 0.75 and got.fpr_at_reference == 0.25
    # A source with too few positives does not drag the threshold down; none may raise it above the reference.
    few = calibrate_threshold(BrightnessNet(), tmp_path / "val.h5", min_source_positives=301)
    assert few.threshold == 0.7 and few.sources == []
    with pytest.raises(ValueError, match="min_recall"):
        calibrate_threshold(BrightnessNet(), tmp_path / "val.h5", min_recall=1.0)
