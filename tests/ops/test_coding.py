import torch

from mtcnn.ops.coding import (
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    flatten_landmarks,
    unflatten_landmarks,
)


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 500
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 200 + 1
    return torch.cat([xy, xy + wh], 1)


def test_box_round_trip_is_exact():
    ref, target = _boxes(100, 0), _boxes(100, 1)
    offsets = encode_boxes(ref, target)
    assert torch.allclose(decode_boxes(ref, offsets), target, atol=1e-9, rtol=0)
    assert torch.allclose(encode_boxes(ref, decode_boxes(ref, offsets)), offsets, atol=1e-12, rtol=0)


def test_box_offsets_hand_computed():
    crop = torch.tensor([[10.0, 20.0, 60.0, 70.0]])  # side 50
    face = torch.tensor([[15.0, 20.0, 55.0, 80.0]])
    assert torch.allclose(encode_boxes(crop, face), torch.tensor([[0.1, 0.0, -0.1, 0.2]]), atol=1e-7)


def test_landmark_round_trip_and_layout():
    ref = _boxes(20, 2)
    points = torch.rand(20, 5, 2, dtype=torch.float64) * 600
    norm = encode_landmarks(ref, points)
    assert torch.allclose(decode_landmarks(ref, norm), points, atol=1e-9, rtol=0)
    flat = flatten_landmarks(norm)
    assert flat.shape == (20, 10)
    assert torch.equal(flat[:, 0::2], norm[..., 0]) and torch.equal(flat[:, 1::2], norm[..., 1])
    assert torch.equal(unflatten_landmarks(flat), norm)
    assert unflatten_landmarks(torch.zeros(0, 10)).shape == (0, 5, 2)


def test_landmark_no_minus_one_offset():
    box = torch.tensor([[100.0, 200.0, 148.0, 248.0]])
    # SPEC §11: x = x1 + w·u, no MATLAB "-1".
    assert decode_landmarks(box, torch.tensor([[[0.5, 0.25]]])).tolist() == [[[124.0, 212.0]]]
