"""Landmark regression through the one training loop: losses against closed forms, a grey
net registered in a test, training, curves, checkpoints and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtcnn.config import ConfigError, from_dict
from mtcnn.config.train import LandmarkTrainConfig, TrainConfig
from mtcnn.losses import adaptive_wing, landmark_regression_loss, wing
from mtcnn.nets import NetSpec, register_net
from mtcnn.nets import registry
from mtcnn.training import Task, plot_training_curves, read_metrics, task_for, train
from mtcnn.training.landmark_task import LandmarkTask, normaliser, to_spec_input
from mtcnn.weights import load_net
from test_train import make_sample_file


class GreyPoints(nn.Module):
    def __init__(self, points: int = 5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.PReLU(8), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.Flatten(), nn.Linear(8 * 7 * 7, 32), nn.Dropout(0.1), nn.PReLU(32))
        self.landmark = nn.Linear(32, 2 * points)

    def forward(self, x):
        return self.landmark(self.body(x))


@pytest.fixture
def grey_net(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return register_net(NetSpec("grey15", GreyPoints, (15, 15), channels="grey", heads=("landmark",), num_landmarks=5))


@pytest.fixture(scope="module")
def files15(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmk15")
    counts = {"pos": 0, "part": 0, "neg": 0, "landmark": 96}
    return (make_sample_file(d / "train.h5", 15, counts, seed=5, kinds=("landmark",)),
            make_sample_file(d / "val.h5", 15, {**counts, "landmark": 40}, seed=6, kinds=("landmark",)))


def config(files, out, **over) -> LandmarkTrainConfig:
    data = {"net": "grey15", "out": str(out), "seed": 3, "device": "cpu", "threads": 1, "epochs": 3,
            "steps_per_epoch": 6, "batch_size": 16, "optim": {"name": "adam", "lr": 0.003, "lr_boundaries": [2]},
            "data": {"train": [str(files[0])], "val": [str(files[1])], "num_workers": 0},
            "val": {"num_images": 4}, "log": {"tensorboard": False, "progress": False, "every_steps": 2}}
    for key, value in over.items():
        node = data
        *path, last = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return from_dict(LandmarkTrainConfig, data)


def test_losses_match_closed_forms():
    e = torch.tensor([0.0, 1.0, 5.0, 10.0, 30.0])
    assert torch.allclose(wing(e, 10.0, 2.0)[:4], 10 * torch.log1p(e[:4] / 2))
    assert wing(torch.tensor([30.0]), 10.0, 2.0).item() == pytest.approx(30 - (10 - 10 * math.log(6)))
    # Both wings are continuous where their pieces meet.
    for f, at in ((lambda x: wing(x, 10.0, 2.0), 10.0), (lambda x: adaptive_wing(x), 0.5)):
        lo, hi = f(torch.tensor([at - 1e-4], dtype=torch.float64)), f(torch.tensor([at + 1e-4], dtype=torch.float64))
        assert abs(float(hi - lo)) < 1e-2
    pred, target = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    assert landmark_regression_loss(pred, target, "l1").item() == 10.0
    assert landmark_regression_loss(pred, target, "l2").item() == 30.0
    # Point weights scale each point's (x, y) sum; scale multiplies the errors first.
    w = torch.tensor([2.0, 0.0])
    assert landmark_regression_loss(pred, target, "l1", w).item() == 6.0
    assert landmark_regression_loss(pred, target, "l2", None, 0.5).item() == 7.5
    with pytest.raises(ValueError, match="unknown landmark loss"):
        landmark_regression_loss(pred, target, "huber")


def test_grey_conversion_and_normaliser():
    spec = NetSpec("g", GreyPoints, (15, 15), channels="grey", heads=("landmark",), mean=0.0, scale=1 / 255)
    pixels = torch.tensor([10.0, 200.0, 90.0]).view(1, 3, 1, 1)
    grey = to_spec_input((pixels - 127.5) / 128, spec)
    expected = (0.299 * 10 + 0.587 * 200 + 0.114 * 90) / 255
    assert grey.shape == (1, 1, 1, 1) and grey.item() == pytest.approx(expected, rel=1e-6)
    five = torch.tensor([[[0.2, 0.3], [0.6, 0.3], [0.4, 0.5], [0.3, 0.7], [0.5, 0.7]]])
    assert normaliser(five).item() == pytest.approx(0.4)
    three = torch.tensor([[[0.0, 0.0], [0.4, 0.1], [0.2, 0.9]]])
    assert normaliser(three).item() == pytest.approx(math.sqrt(0.4 * 0.9))


def test_task_is_chosen_by_config_type(grey_net, files15, tmp_path):
    lt = task_for(config(files15, tmp_path).resolved())
    mt = task_for(TrainConfig().resolved())
    assert isinstance(lt, LandmarkTask) and isinstance(lt, Task) and isinstance(mt, Task)
    assert mt.spec.name == "pnet" and lt.spec.name == "grey15"


@pytest.mark.parametrize("over,message", [({"net": "pnet", "data.flip": False}, None),
                                          ({"data.flip": True, "net": "grey68"}, "data.flip"),
                                          ({"loss.point_weights": [1, 2]}, "point_weights")])
def test_config_checks(grey_net, files15, tmp_path, over, message):
    register_net(NetSpec("grey68", lambda: GreyPoints(68), (15, 15), channels="grey", heads=("landmark",),
                         num_landmarks=68))
    cfg = config(files15, tmp_path, **over)
    if message is None:
        LandmarkTask(cfg)  # P-Net has a landmark head: allowed
        return
    with pytest.raises(ConfigError, match=message):
        LandmarkTask(cfg)


@pytest.mark.parametrize("kind", ["wing", "adaptive_wing", "l1", "l2"])
def test_training_reduces_error_and_writes_everything(grey_net, files15, tmp_path, kind):
    out = tmp_path / kind
    final = train(config(files15, out, **{"loss.kind": kind, "log.tensorboard": kind == "wing",
                                          "loss.point_weights": [1, 1, 0.5, 1, 1]}))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val"]["nme"] < records[0]["val"]["nme"]
    assert records[-1]["train"]["point_error"] < records[0]["train"]["point_error"]
    assert 0 <= records[-1]["val"]["failure_rate"] <= 1 and records[-1]["val"]["n_samples"] == 40
    assert f"{kind} loss on 5 points" in records[-1]["settings"]
    model = load_net(torch.load(final, weights_only=True), "grey15", str(final))
    assert isinstance(model, GreyPoints)
    assert plot_training_curves(out / "metrics.jsonl", out / "curves.png").stat().st_size > 10_000
    if kind == "wing":
        assert list((out / "tb").glob("events.out.tfevents.*"))


def test_resume_continues_exactly(grey_net, files15, tmp_path):
    straight = train(config(files15, tmp_path / "a"))
    config_b = config(files15, tmp_path / "b", epochs=2)
    train(config_b)
    resumed = train(config(files15, tmp_path / "b"), resume=True)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["train"] for r in ra] == [r["train"] for r in rb]


def test_wrong_point_count_is_refused(monkeypatch, files15, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_net(NetSpec("grey15", lambda: GreyPoints(3), (15, 15), channels="grey", heads=("landmark",),
                         num_landmarks=3))
    from mtcnn.errors import DataError

    with pytest.raises(DataError, match="samples have 5 points, grey15 predicts 3"):
        train(config(files15, tmp_path / "c"))
    assert not np.any([p.name == "last.pt" for p in (tmp_path / "c").glob("*")]) if (tmp_path / "c").exists() else True
