"""The landmark zoo's task in the shared training loop: a few steps on 32 faces overfit them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mtcnn.data.face_crops import FaceCrops
from mtcnn.data.keypoint_aug import AugmentSettings
from mtcnn.landmark_models import plain_windows, run_net
from mtcnn.training.keypoint_task import KeypointDataSection, KeypointTask, KeypointTrainConfig, load_crops
from mtcnn.training.loop import Trainer


def _config(tmp_path, net: str, steps: int, batch: int, lr: float, **loss) -> KeypointTrainConfig:
    cfg = KeypointTrainConfig(net=net, out=str(tmp_path / net), epochs=steps // 20, steps_per_epoch=20, batch_size=batch,
                              device="cpu")
    cfg.data = dataclasses.replace(cfg.data, rotation_deg=0.0, scale=0.0, shift=0.0, flip_prob=0.0)
    cfg.optim = dataclasses.replace(cfg.optim, lr=lr, lr_boundaries=[])
    cfg.loss = dataclasses.replace(cfg.loss, **loss)
    cfg.val = dataclasses.replace(cfg.val, enabled=False)
    return cfg


def _dot_faces(n: int = 32, size: int = 80) -> FaceCrops:
    """Synthetic faces: 5 bright dots (the points) on dark noise, crops of context 1.6."""
    g = torch.Generator().manual_seed(0)
    points = torch.rand(n, 5, 2, generator=g) * 1.4 - 0.7
    images = torch.randint(0, 40, (n, 3, size, size), generator=g, dtype=torch.uint8)
    pix = ((points / 1.6 + 1) * size / 2).long()
    for i in range(n):
        for j, (x, y) in enumerate(pix[i].tolist()):
            images[i, j % 3, y - 1 : y + 2, x - 1 : x + 2] = 255
    return FaceCrops(images, points, np.zeros((n, 4), np.float32), ["synthetic"] * n, 1.6)


def _error(model, spec, crops) -> float:
    model.eval()
    pred = run_net(model, spec, plain_windows(crops, spec.input_size[0]))
    return float((pred - crops.points).norm(dim=2).mean() / 2)  # fraction of the window side


def test_the_shared_loop_trains_the_zoo_task(tmp_path):
    torch.manual_seed(0)
    crops = _dot_faces()
    task = KeypointTask(_config(tmp_path, "mobilenet_l1", 40, 32, 5e-3, kind="l2", coordinate_scale=1.0), train=crops)
    trainer = Trainer(task.cfg, task)
    untrained = _error(task.build_model(), task.spec, crops)
    final = trainer.fit()
    assert final.name == "mobilenet_l1.pt" and final.exists()
    after = _error(trainer.model, task.spec, crops)
    assert after < 0.6 * untrained, (untrained, after)


@pytest.mark.data
@pytest.mark.slow
def test_mobilenet_overfits_32_real_faces(tmp_path, shared_data):
    """120 steps on 32 CNN_FacePoint faces: their error falls well below the mean shape's and below
    the error on 32 other faces (memorised, not learnt)."""
    torch.manual_seed(0)
    cfg = _config(tmp_path, "mobilenet_l1", 120, 16, 1e-3, kind="l2", coordinate_scale=1.0)
    cfg.data = dataclasses.replace(cfg.data, dataset="cnn_facepoint", root=str(shared_data), cache_dir=None, expand=0.0)
    spec = KeypointTask(cfg).spec
    faces = load_crops(cfg.data, spec, "train", 64)
    seen, unseen = faces.subset(range(32)), faces.subset(range(32, 64))
    task = KeypointTask(cfg, train=seen)
    trainer = Trainer(task.cfg, task)
    trainer.fit()
    mean_shape = float((seen.points - seen.points.mean(dim=0)).norm(dim=2).mean() / 2)
    on_seen, on_unseen = _error(trainer.model, spec, seen), _error(trainer.model, spec, unseen)
    assert on_seen < 0.8 * mean_shape and on_seen < 0.7 * on_unseen, (mean_shape, on_seen, on_unseen)


def test_augment_settings_come_from_the_config():
    d = KeypointDataSection(rotation_deg=30, rotation_prob=0.25, scale=0.2, shift=0.1, flip_prob=0.5)
    assert d.augment() == AugmentSettings(30, 0.25, 0.2, 0.1, 0.5)
