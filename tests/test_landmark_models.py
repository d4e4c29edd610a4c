"""Landmark models on whole images: windows, level-2 crops, the second pass, weights round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtcnn.landmark_models import KeypointModel, MobileNetCascade, load_landmark_model, save_landmark_weights
from mtcnn.nets import build_net
from mtcnn.weights import WeightsError


class ConstantPoints(nn.Module):
    """Ignores its input; always predicts the same window coordinates."""

    def __init__(self, points):
        super().__init__()
        self.register_buffer("points", torch.as_tensor(points, dtype=torch.float32).reshape(1, -1))

    def forward(self, x):
        return self.points.expand(x.shape[0], -1)


FIVE = [[-0.4, -0.3], [0.4, -0.3], [0.0, 0.1], [-0.3, 0.5], [0.3, 0.5]]


def test_level2_window_is_nose_plus_minus_twice_the_eye_distance():
    p = torch.tensor([FIVE])
    centre, half = MobileNetCascade.level2_windows(p)
    assert torch.allclose(centre, torch.tensor([[0.0, 0.1]]))
    assert torch.allclose(half, torch.tensor([2 * 0.4 * 2**0.5]))


def test_cascade_maps_both_levels_back_to_pixels():
    image = torch.zeros(3, 100, 120, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 10.0, 80.0, 90.0]])  # square: centre (50, 50), side 80
    cascade = MobileNetCascade(ConstantPoints(FIVE), ConstantPoints(np.zeros((5, 2))))
    p1, p2 = cascade.predict([image], boxes, torch.zeros(1, dtype=torch.long), return_levels=True)
    expected1 = 50 + 40 * torch.tensor(FIVE)
    assert torch.allclose(p1[0], expected1, atol=1e-4)
    # level 2 predicts the window centre for every point: the level-1 nose
    assert torch.allclose(p2[0], expected1[2].expand(5, 2), atol=1e-4)


def test_second_pass_recrops_around_the_points_extent():
    image = torch.zeros(3, 200, 200, dtype=torch.uint8)
    pts = np.array([[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0]], np.float32)
    model = KeypointModel(ConstantPoints(pts), "kp68_compact", passes=1)
    model.num_landmarks = 3
    box = torch.tensor([[50.0, 50.0, 150.0, 150.0]])
    one = model.predict([image], box, torch.zeros(1, dtype=torch.long))
    assert torch.allclose(one[0], torch.tensor([[75.0, 75.0], [125.0, 125.0], [100.0, 100.0]]))
    model.passes = 2  # second window: extent 50 px ×1.1 = 55 px around (100, 100)
    two = model.predict([image], box, torch.zeros(1, dtype=torch.long))
    assert torch.allclose(two[0], torch.tensor([[86.25, 86.25], [113.75, 113.75], [100.0, 100.0]]))


def test_landmark_weights_round_trip_in_float16(tmp_path):
    torch.manual_seed(0)
    l1, l2 = build_net("mobilenet_l1").eval(), build_net("mobilenet_l2").eval()
    path = tmp_path / "cascade.pt"
    save_landmark_weights(path, {"mobilenet_l1": l1, "mobilenet_l2": l2}, "mobilenet_cascade")
    assert path.stat().st_size < 1_200_000  # float16 on disk (float32: ≈ 1.95 MB)
    loaded = load_landmark_model(path)
    assert isinstance(loaded, MobileNetCascade)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    box = torch.tensor([[8.0, 8.0, 56.0, 56.0]])
    idx = torch.zeros(1, dtype=torch.long)
    want = MobileNetCascade(l1, l2).predict([image], box, idx)
    assert torch.allclose(loaded.predict([image], box, idx), want, atol=0.05 * 48)
    compact = build_net("kp68_compact").eval()
    save_landmark_weights(tmp_path / "kp.pt", {"kp68_compact": compact}, "single")
    kp = load_landmark_model(tmp_path / "kp.pt")
    assert isinstance(kp, KeypointModel) and kp.num_landmarks == 68
    assert kp.predict([image], box, idx).shape == (1, 68, 2)
    with pytest.raises(WeightsError, match="nope.pt"):
        load_landmark_model(tmp_path / "nope.pt")
