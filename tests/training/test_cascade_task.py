"""Cascade training: targets land on the pixels they name (jitter, rotation, mirror included),
batches are a pure function of (seed, epoch, step), and an interrupted run resumes exactly."""

import math
import os
from pathlib import Path

import pytest
import torch

from mtcnn.config import from_dict
from mtcnn.data.facepoints import FacePointSet
from mtcnn.training import train
from mtcnn.training.cascade_run import train_net, trainer_config
from mtcnn.training.cascade_task import CascadeTask, CascadeTrainConfig, CropLoader, CropSampler, PIXEL_MEAN, PIXEL_SCALE


def _blob_faces(n: int = 24, size: int = 96, seed: int = 0, blob_point: int | None = 0) -> FacePointSet:
    """Faces whose canvases are dark except a bright spot at one annotated point (None: at all five)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[24.0, 24.0, 72.0, 72.0]]).repeat(n, 1)
    template = torch.tensor([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.78], [0.65, 0.78]])
    points = 24 + 48 * (template[None] + (torch.rand(n, 5, 2, generator=g) - 0.5) * 0.08)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    spots = points if blob_point is None else points[:, blob_point : blob_point + 1]
    blob = sum(
        torch.exp(-((xx[None] - p[:, 0, None, None]) ** 2 + (yy[None] - p[:, 1, None, None]) ** 2) / 4.0) for p in spots.unbind(1)
    )
    canvases = (20 + 230 * blob).round().to(torch.uint8)
    return FacePointSet(canvases, boxes, points, tuple(f"f{i}" for i in range(n)), torch.zeros(n, 2), torch.ones(n))


def _cfg(**kw) -> CascadeTrainConfig:
    return from_dict(CascadeTrainConfig, {"level1": {"rotate": 20.0, "translate": 0.05, "scale": 0.05}, **kw})


def _peak(crop: torch.Tensor, central: bool = False) -> torch.Tensor:
    """Intensity-weighted centre of the brightest spot (``central``: of the crop's middle 60 %,
    where a patch's own point lies), as fractions of the crop (x, y)."""
    img = (crop / PIXEL_SCALE + PIXEL_MEAN - 20).clamp(min=0)
    h, w = img.shape
    search = img.clone()
    if central:
        mask = torch.zeros_like(img)
        mask[int(0.2 * h) : int(0.8 * h) + 1, int(0.2 * w) : int(0.8 * w) + 1] = 1
        search = search * mask
    r, c = divmod(int(search.argmax()), w)
    near = torch.zeros_like(img)
    near[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3] = 1  # only the brightest spot, not a neighbour's edge
    img = img * near
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([(img * xs).sum() / img.sum(), (img * ys).sum() / img.sum()])


@pytest.mark.parametrize("name,blob_point", [("F1", 0), ("EN1", 2), ("NM1", 3), ("LE21", 0), ("RE22", 1), ("LM31", 3)])
def test_targets_point_at_the_spot_under_jitter_rotation_and_mirror(name, blob_point):
    sampler = CropSampler(name, _cfg())
    # A patch of a mirrored face shows the other side's point: give patches a spot on every point.
    data = _blob_faces(blob_point=blob_point if sampler.spec.level == 1 else None)
    batch = sampler.sample(data, torch.arange(len(data)), torch.Generator().manual_seed(7))
    assert batch["flipped"].any() and not batch["flipped"].all()
    spec = sampler.spec
    targets = batch["targets"].reshape(len(data), -1, 2)
    for i in range(len(data)):
        # The spot sits on `blob_point`; once mirrored it is the other side's point.
        shown = (1, 0, 2, 4, 3)[blob_point] if batch["flipped"][i] else blob_point
        k = spec.points.index(shown) if spec.level == 1 else 0
        h, w = spec.input_hw
        tolerance = 1.2 / min(h, w)
        assert torch.allclose(_peak(batch["images"][i, 0], spec.level > 1), targets[i, k], atol=tolerance), (i, name)


def test_patch_shift_stays_within_its_bound():
    data = _blob_faces()
    for level, name, shift, half in ((2, "LE21", 0.05, 0.16), (3, "LE31", 0.02, 0.12)):
        batch = CropSampler(name, _cfg(flip=False)).sample(data, torch.arange(len(data)), torch.Generator().manual_seed(level))
        offset = (batch["targets"] - 0.5) * 2 * half  # fraction of the box
        assert offset.abs().max() <= shift + 1e-5
        assert offset.abs().max() > 0.5 * shift


def test_loader_is_a_pure_function_of_epoch_and_step():
    data = _blob_faces(n=20)
    sampler = CropSampler("F1", _cfg())
    first = CropLoader(sampler, data, batch_size=8, steps=3, seed=1)
    batches = [b["images"] for b in first]
    again = CropLoader(sampler, data, batch_size=8, steps=3, seed=1)
    again.load_state_dict({"epoch": 0, "step": 1})
    torch.testing.assert_close(torch.cat([b["images"] for b in again]), torch.cat(batches[1:]))
    next_epoch = [b["images"] for b in first]  # epoch 1: new order and jitter
    assert not torch.equal(next_epoch[0], batches[0])


class _HardStop(Exception):
    pass


def _raise_hard_stop(code):
    raise _HardStop(code)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch):
    """Through the shared loop: a run stopped after its first epoch and resumed ends with the
    weights of an uninterrupted run."""
    data = _blob_faces(n=32)
    held = _blob_faces(n=8, seed=1)
    schedule = {"epochs": 3, "batch_size": 16, "lr": 0.003}
    whole = train_net("LE21", _cfg(patch_schedule=schedule, out=str(tmp_path / "a")), data, held)
    stopped = trainer_config("LE21", _cfg(patch_schedule=schedule, out=str(tmp_path / "b")))
    stopped.debug.stop_after_steps = 2  # one epoch = 2 steps of 16; the loop then exits hard
    monkeypatch.setattr(os, "_exit", _raise_hard_stop)
    with pytest.raises(_HardStop):
        train(stopped, task=CascadeTask("LE21", _cfg(patch_schedule=schedule), data, held))
    monkeypatch.undo()
    resumed = train_net("LE21", _cfg(patch_schedule=schedule, out=str(tmp_path / "b")), data, held)
    a = torch.load(whole, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key])
    assert a["net"] == "sun_le21" and math.isfinite(a["meta"]["val"]["error"])
    assert len((tmp_path / "b" / "LE21" / "metrics.jsonl").read_text().splitlines()) == 3
    # A finished net is not trained again.
    assert train_net("LE21", _cfg(patch_schedule=schedule, out=str(tmp_path / "a")), data, held) == whole
