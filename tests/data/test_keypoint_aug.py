"""Mirror permutations, the batched warp (against painted dots) and the resumable batch loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtcnn.data.face_crops import FaceCrops
from mtcnn.data.keypoint_aug import (
    FLIP_5, FLIP_68, AugmentSettings, KeypointBatchLoader, flip_permutation, sample_affines, warp,
)
from mtcnn.nets import get_net_spec


def test_68_point_flip_is_an_involution_that_swaps_the_eyes():
    perm = np.asarray(FLIP_68)
    assert sorted(perm.tolist()) == list(range(68))
    assert (perm[perm] == np.arange(68)).all()
    assert perm[36] == 45 and perm[45] == 36  # outer eye corners
    assert perm[39] == 42  # inner eye corners
    assert set(perm[36:42].tolist()) == set(range(42, 48))  # left eye -> right eye
    assert set(perm[17:22].tolist()) == set(range(22, 27))  # brows
    assert perm[0] == 16 and perm[8] == 8  # jaw ends swap, chin stays
    assert [perm[i] for i in (27, 28, 29, 30, 33, 51, 57, 62, 66)] == [27, 28, 29, 30, 33, 51, 57, 62, 66]
    assert perm[48] == 54 and perm[60] == 64  # mouth corners


def test_5_point_flip():
    assert FLIP_5 == (1, 0, 2, 4, 3) and flip_permutation(5) == FLIP_5
    with pytest.raises(ValueError, match="mirror"):
        flip_permutation(7)


def _dots(points_ref: np.ndarray, size: int, context: float) -> torch.Tensor:
    """A stored crop [K,1,S,S] per point: one 3×3 bright dot at each point (one image per point)."""
    k = len(points_ref)
    img = torch.zeros(k, 1, size, size)
    for j, (x, y) in enumerate(points_ref):
        px = int((x / context + 1) * size / 2)
        py = int((y / context + 1) * size / 2)
        img[j, 0, py - 1 : py + 2, px - 1 : px + 2] = 255
    return img


def test_warp_moves_points_with_the_pixels_and_renumbers_mirrored_faces():
    rng = np.random.default_rng(0)
    context, stored, out = 1.6, 160, 64
    pts = rng.uniform(-0.6, 0.6, (5, 2)).astype(np.float32)
    dots = _dots(pts, stored, context)  # dot j on image j
    # where each dot's centre really is in the reference frame (pixel-centre rounding)
    centres = (np.floor((pts / context + 1) * stored / 2) + 0.5) / (stored / 2) - 1
    centres = centres * context
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        a, t, flipped = sample_affines(1, AugmentSettings(45, 1.0, 0.1, 0.05, 0.5), g)
        images = dots.reshape(1, 5, stored, stored)  # 5 channels = 5 dots, same geometry
        warped, o = warp(images, torch.from_numpy(centres[None]).float(), context, out, a, t, flipped)
        perm = FLIP_5 if bool(flipped[0]) else tuple(range(5))
        for j in range(5):
            channel = warped[0, perm[j]]  # new point j is old point perm[j]
            ys, xs = torch.nonzero(channel > channel.max() * 0.5, as_tuple=True)
            w = channel[ys, xs]
            cx = float((xs.float() + 0.5).mul(w).sum() / w.sum())
            cy = float((ys.float() + 0.5).mul(w).sum() / w.sum())
            ox, oy = ((o[0, j] + 1) * out / 2).tolist()
            assert math.hypot(cx - ox, cy - oy) < 0.6, (seed, j, cx, cy, ox, oy)


def test_identity_warp_keeps_reference_points():
    pts = torch.tensor([[[0.5, -0.25], [-1.0, 1.0]]])
    eye = torch.eye(2, dtype=torch.float64)[None]
    _, o = warp(torch.zeros(1, 1, 8, 8), pts, 1.6, 4, eye, torch.zeros(1, 2))
    assert torch.allclose(o, pts)
    # a window centred at (0.5, 0) with half-side 0.5: (0.5, -0.25) -> (0, -0.5)
    _, o = warp(torch.zeros(1, 1, 8, 8), pts, 1.6, 4, eye, torch.zeros(1, 2), None,
                torch.tensor([[0.5, 0.0]]), torch.tensor([0.5]))
    assert torch.allclose(o[0, 0], torch.tensor([0.0, -0.5]))


def _tiny_crops(n=10, k=68):
    g = torch.Generator().manual_seed(1)
    return FaceCrops(torch.randint(0, 255, (n, 3, 40, 40), generator=g, dtype=torch.uint8),
                     torch.rand(n, k, 2, generator=g) - 0.5, np.zeros((n, 4), np.float32), ["x"] * n, 1.6)


def test_loader_is_a_pure_function_of_seed_epoch_and_step():
    crops = _tiny_crops()
    spec = get_net_spec("kp68_compact")
    aug = AugmentSettings(45, 0.5, 0.1, 0.05, 0.5)
    first = KeypointBatchLoader(crops, spec, 4, 3, aug, seed=7)
    before = torch.random.get_rng_state()
    batches = [b for b in first] + [b for b in first]  # two epochs
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is not used
    assert batches[0]["images"].shape == (4, 3, 64, 64) and batches[0]["landmark"].shape == (4, 136)
    assert not torch.equal(batches[0]["landmark"], batches[3]["landmark"])  # epochs differ
    resumed = KeypointBatchLoader(crops, spec, 4, 3, aug, seed=7)
    resumed.load_state_dict({"epoch": 1, "step": 1, "world_size": 1})
    again = list(resumed)
    for a, b in zip(again, batches[4:]):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["landmark"], b["landmark"])
    assert first.state_dict()["epoch"] == 2


def test_loader_grey_net_gets_one_plane():
    crops = _tiny_crops()
    batch = next(iter(KeypointBatchLoader(crops, get_net_spec("kp68_compact_grey"), 2, 1, AugmentSettings())))
    assert batch["images"].shape == (2, 1, 64, 64)
