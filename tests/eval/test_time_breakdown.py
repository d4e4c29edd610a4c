"""time_breakdown: it times the real code path without changing it, counts the windows each stage
scored (checked against the stages run directly), and always puts the wrapped functions back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtcnn.detector as detector_module
import mtcnn.stages as stages
from mtcnn.eval.time_breakdown import time_breakdown


@pytest.fixture(scope="module")
def detector():
    from mtcnn.detector import MTCNN
    from mtcnn.nets import build_net

    torch.manual_seed(0)
    nets = {k: build_net(k) for k in ("pnet", "rnet", "onet")}
    # Random nets with low thresholds: every stage gets windows to score.
    return MTCNN(nets=nets, device="cpu", thresholds=(0.3, 0.3, 0.3), min_face_size=40)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def _wrapped_functions():
    return [stages._paint_canvas, stages.crop_candidates, stages._forward_chunks,
            detector_module.run_pnet, detector_module.run_rnet, detector_module.run_onet]  # fmt: skip


def test_counts_the_windows_each_stage_scored(detector, image):
    tensors = detector._to_tensors([image])
    cfg = detector.config
    after_p = stages.run_pnet(detector.pnet, tensors, min_face_size=cfg.min_face_size, factor=cfg.factor,
                              threshold=cfg.thresholds[0], nms_scale=cfg.nms_pnet_scale, nms_image=cfg.nms_pnet)  # fmt: skip
    after_r = stages.run_rnet(detector.rnet, tensors, after_p, threshold=cfg.thresholds[1], nms=cfg.nms_rnet)
    assert len(after_p) > 0 and len(after_r) > 0, "the fixture must reach O-Net"

    result = time_breakdown(detector, [image], repeats=2, warmup=1)

    assert result.windows == {"R-Net": len(after_p), "O-Net": len(after_r)}
    assert result.calls == 2
    expected = [f"{s} {p}" for s, ps in (("P-Net", ("canvases", "forward", "rest")), ("R-Net", ("crops", "forward", "rest")),
                                         ("O-Net", ("crops", "forward", "rest"))) for p in ps] + ["outside stages"]  # fmt: skip
    assert list(result.parts) == expected
    for name in ("P-Net canvases", "P-Net forward", "R-Net crops", "R-Net forward", "O-Net crops", "O-Net forward"):
        assert result.parts[name] > 0, name
    # Named parts are inside the total: no part is counted twice.
    named = sum(v for k, v in result.parts.items() if not k.endswith("rest") and k != "outside stages")
    assert named < result.total_ms
    table = result.format_table()
    assert table.splitlines()[0] == "| part | ms | share |" and "**total**" in table.splitlines()[-1]


def test_detections_unchanged_and_everything_restored(detector, image):
    before_functions, before_pnet = _wrapped_functions(), detector.pnet
    reference = detector.detect(image)[0]
    time_breakdown(detector, [image], repeats=1, warmup=0)
    assert _wrapped_functions() == before_functions and detector.pnet is before_pnet
    again = detector.detect(image)[0]
    assert torch.equal(reference.boxes, again.boxes) and torch.equal(reference.scores, again.scores)


def test_restores_after_an_exception(detector, image, monkeypatch):
    before_functions, before_pnet = _wrapped_functions(), detector.pnet

    def broken_rnet(*args, **kwargs):
        raise RuntimeError("R-Net failed")

    monkeypatch.setattr(detector, "rnet", broken_rnet)
    with pytest.raises(RuntimeError, match="R-Net failed"):
        time_breakdown(detector, [image], repeats=1, warmup=0)
    assert _wrapped_functions() == before_functions and detector.pnet is before_pnet


def test_rejects_bad_counts(detector, image):
    with pytest.raises(ValueError, match="repeats=0"):
        time_breakdown(detector, [image], repeats=0)
