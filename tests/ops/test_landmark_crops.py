"""Cascade crop geometry: exact pixel copies for aligned crops, rotations, the inverse map,
windows, the square-grid trick for 31-high inputs, and train/inference crops agreeing."""

import cv2
import numpy as np
import pytest
import torch

from mtcnn.data.facepoints import build_canvases
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.landmark_crops import (
    affine_crops, crop_fractions, crop_resize_atlas, from_crop, gather_windows, luma_integer, patch_boxes, region_boxes, square_grid_box, to_crop, to_grey,
)  # fmt: skip


def test_grey_matches_luma_within_one_level_on_every_path():
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    cpu = to_grey(chw)[0].numpy().astype(int)
    tensor_path = luma_integer(chw)[0].numpy()
    assert np.abs(cpu - luma).max() <= 1 and np.abs(tensor_path - luma).max() <= 1
    assert np.array_equal(cpu, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_axis_aligned_crop_on_the_pixel_grid_copies_pixels():
    canvas = torch.arange(2 * 20 * 30, dtype=torch.float32).reshape(2, 1, 20, 30)
    origin = torch.tensor([[3.0, 4.0], [0.0, 10.0]])
    axes = torch.diag_embed(torch.tensor([[7.0, 5.0], [7.0, 5.0]]))
    crops = affine_crops(canvas, origin, axes, (5, 7), supersample=1)
    torch.testing.assert_close(crops[0, 0], canvas[0, 0, 4:9, 3:10])
    torch.testing.assert_close(crops[1, 0], canvas[1, 0, 10:15, 0:7])
    # 2×2 supersampling of a 2×-larger box is the 2×2 block average.
    big = affine_crops(canvas, origin, axes * 2, (5, 7), supersample=2)
    expected = torch.nn.functional.avg_pool2d(canvas[0:1, :, 4:14, 3:17], 2)[0, 0]
    torch.testing.assert_close(big[0, 0], expected)


def test_rotation_and_mirror_move_pixels_where_the_fractions_say():
    canvas = torch.arange(12 * 12, dtype=torch.float32).reshape(1, 1, 12, 12)
    # A quarter turn: u runs down the canvas, v runs left, so crop[i, j] = canvas[2 + j, 8 - i].
    origin = torch.tensor([[9.0, 2.0]])
    axes = torch.tensor([[[0.0, 6.0], [-6.0, 0.0]]])
    crop = affine_crops(canvas, origin, axes, (6, 6), supersample=1)[0, 0]
    torch.testing.assert_close(crop, torch.rot90(canvas[0, 0, 2:8, 3:9], k=1))
    mirrored = affine_crops(canvas, torch.tensor([[9.0, 2.0]]), torch.tensor([[[-6.0, 0.0], [0.0, 6.0]]]), (6, 6), supersample=1)
    torch.testing.assert_close(mirrored[0, 0], canvas[0, 0, 2:8, 3:9].flip(1))
    # crop_fractions inverts the map for any axes.
    g = torch.Generator().manual_seed(0)
    o = torch.randn(5, 2, generator=g)
    a = torch.randn(5, 2, 2, generator=g) + torch.eye(2) * 3
    uv = torch.rand(5, 3, 2, generator=g)
    points = o[:, None] + uv[..., :1] * a[:, None, 0] + uv[..., 1:] * a[:, None, 1]
    torch.testing.assert_close(crop_fractions(points, o, a), uv, atol=1e-5, rtol=1e-5)


def test_windows_equal_slices_with_zero_outside():
    canvases = torch.randint(1, 255, (3, 10, 12), dtype=torch.uint8)
    index = torch.tensor([2, 0])
    top_left = torch.tensor([[-2, 3], [8, 7]])
    windows = gather_windows(canvases, index, top_left, 5)
    padded = torch.nn.functional.pad(canvases, (5, 5, 5, 5))
    for k, (i, (x, y)) in enumerate(zip(index.tolist(), top_left.tolist())):
        torch.testing.assert_close(windows[k, 0], padded[i, y + 5 : y + 10, x + 5 : x + 10])


def test_box_frames_round_trip_and_regions():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 140.0]])
    f1 = region_boxes(boxes, (-0.05, 1.05, -0.05, 1.05))
    torch.testing.assert_close(f1, torch.tensor([[5.0, 14.0, 115.0, 146.0]]))
    pts = torch.tensor([[[30.0, 40.0], [100.0, 130.0]]])
    torch.testing.assert_close(from_crop(to_crop(pts, f1), f1), pts)
    patch = patch_boxes(torch.tensor([[50.0, 60.0]]), boxes, 0.16)
    torch.testing.assert_close(patch, torch.tensor([[34.0, 40.8, 66.0, 79.2]]))


@pytest.mark.parametrize("supersample", [1, 2])
def test_square_grid_box_top_rows_are_the_short_crop(supersample):
    canvas = torch.rand(1, 1, 60, 60) * 255
    region = torch.tensor([[5.3, 7.1, 48.2, 41.6]])
    tall = square_grid_box(region, (31, 39))
    short = affine_crops(canvas, region[:, :2], torch.diag_embed(region[:, 2:] - region[:, :2]), (31, 39), supersample)
    square = affine_crops(canvas, tall[:, :2], torch.diag_embed(tall[:, 2:] - tall[:, :2]), (39, 39), supersample)
    torch.testing.assert_close(square[:, :, :31], short, atol=1e-3, rtol=1e-4)


def test_training_and_inference_crops_agree_on_a_smooth_image():
    yy, xx = np.mgrid[0:300, 0:260]
    image = (127 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.2 * xx).clip(0, 255).astype(np.uint8)
    grey = torch.from_numpy(image)[None]
    box = torch.tensor([[70.0, 90.0, 170.5, 191.0]])
    canvases, cboxes, _, _, _ = build_canvases([grey], box, torch.zeros(1, 5, 2))
    region = region_boxes(box, (-0.05, 1.05, -0.05, 1.05))
    direct = crop_resize([grey], region, torch.zeros(1, dtype=torch.long), 39)[0, 0]
    cregion = region_boxes(cboxes, (-0.05, 1.05, -0.05, 1.05))
    via_canvas = affine_crops(canvases[:, None], cregion[:, :2], torch.diag_embed(cregion[:, 2:] - cregion[:, :2]), (39, 39))[0, 0]
    assert (direct - via_canvas).abs().mean() < 2.0


def test_atlas_crops_equal_per_image_crops():
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (1, h, w), generator=g, dtype=torch.uint8) for h, w in ((50, 70), (90, 40), (33, 33), (120, 160))]
    n = 40
    index = torch.randint(0, 4, (n,), generator=g)
    sizes = torch.tensor([[70.0, 50.0], [40.0, 90.0], [33.0, 33.0], [160.0, 120.0]])[index]
    side = 4 + torch.rand(n, generator=g) * 90
    x1 = torch.rand(n, generator=g) * sizes[:, 0] * 1.2 - 0.3 * side  # some cross the borders
    y1 = torch.rand(n, generator=g) * sizes[:, 1] * 1.2 - 0.3 * side
    boxes = torch.stack([x1, y1, x1 + side, y1 + side * (0.8 + 0.4 * torch.rand(n, generator=g))], 1)
    for size in (15, 39):
        expected = crop_resize(images, boxes, index, size)
        # Equal up to float rounding of the atlas's normalised coordinates (grey levels 0..255).
        torch.testing.assert_close(crop_resize_atlas(images, boxes, index, size), expected, atol=0.02, rtol=1e-4)
    assert crop_resize_atlas(images, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 15).shape == (0, 1, 15, 15)


@pytest.mark.parametrize("limit, value", [("ATLAS_ROWS", 90), ("ATLAS_CHUNK_BYTES", 90 * 27 * 4)])
def test_atlas_splits_tall_batches_without_changing_crops(monkeypatch, limit, value):
    import mtcnn.ops.landmark_crops as lc

    g = torch.Generator().manual_seed(4)
    images = [torch.randint(0, 256, (1, 40, 30), generator=g, dtype=torch.uint8) for _ in range(6)]
    boxes = torch.tensor([[2.0, 3.0, 25.0, 30.0]]).repeat(6, 1)
    index = torch.arange(6)
    whole = crop_resize_atlas(images, boxes, index, 15)
    chunks = []
    monkeypatch.setattr(lc.LevelAtlas, "chunk", lambda self, first, end, _orig=lc.LevelAtlas.chunk: chunks.append(end - first) or _orig(self, first, end))
    # Each region is 26 columns + a zero column wide and 28 + 1 rows high: 90 rows hold two.
    monkeypatch.setattr(lc, limit, value)
    torch.testing.assert_close(crop_resize_atlas(images, boxes, index, 15), whole, atol=0.01, rtol=1e-4)
    assert chunks == [2, 2, 2]


def test_atlas_crops_of_many_faces_per_image_and_boxes_outside():
    """Regions cut to the boxes of each image (several per image, some wholly outside it, some
    at several mip levels) give the crops of whole-image sampling: one image per atlas chunk."""
    import mtcnn.ops.landmark_crops as lc

    g = torch.Generator().manual_seed(6)
    images = [torch.randint(0, 256, (1, h, w), generator=g, dtype=torch.uint8) for h, w in ((200, 150), (64, 90), (300, 310))]
    n = 60
    index = torch.randint(0, 3, (n,), generator=g)
    side = 5 + torch.rand(n, generator=g) * 150
    x1 = torch.rand(n, generator=g) * 400 - 100
    y1 = torch.rand(n, generator=g) * 400 - 100
    boxes = torch.stack([x1, y1, x1 + side, y1 + side], 1)
    for size in (15, 39):
        whole = torch.cat([_whole_image_crops(images[i], boxes[k : k + 1], size) for k, i in enumerate(index.tolist())])
        torch.testing.assert_close(lc.crop_resize_atlas(images, boxes, index, size), whole, atol=0.02, rtol=1e-4)


def _whole_image_crops(image, boxes, size):
    """Reference: grid_sample + 2×2 mean on the whole (zero-padded) mip level, as crop_resize does."""
    from mtcnn.ops.crops import MipChain, _sampling_grid

    side = float(torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    m = max(0, int(np.floor(np.log2(side / size))))
    k = 2 if side / 2**m > size else 1
    level = MipChain(image).level(m)
    grid = _sampling_grid(boxes / 2**m, size * k, level.shape[2], level.shape[1])
    sampled = torch.nn.functional.grid_sample(level[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.nn.functional.avg_pool2d(sampled, k)


def test_mean_blocks_is_avg_pool_of_interleaved_samples():
    from mtcnn.ops.landmark_crops import _mean_blocks

    x = torch.rand(5, 2, 30, 30) * 255  # interleaved: sub-samples of output i at 2i and 2i + 1
    blocked = x[:, :, torch.tensor([0, 1]).repeat_interleave(15) + 2 * torch.arange(15).repeat(2)]
    blocked = blocked[..., torch.tensor([0, 1]).repeat_interleave(15) + 2 * torch.arange(15).repeat(2)]
    torch.testing.assert_close(_mean_blocks(blocked, 15), torch.nn.functional.avg_pool2d(x, 2), atol=1e-4, rtol=0)
