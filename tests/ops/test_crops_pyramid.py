import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtcnn.ops.crops import crop_resize
from mtcnn.ops.pyramid import cell_level_map, level_size, pack_pyramid, pnet_output_size, pyramid_scales
from mtcnn.nets import PNet


def test_integer_box_crop_equals_slice_when_size_matches():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 50), generator=g).float()
    boxes = torch.tensor([[5.0, 7.0, 17.0, 19.0], [30.0, 0.0, 42.0, 12.0]])
    out = crop_resize([image], boxes, torch.tensor([0, 0]), 12)
    assert torch.allclose(out[0], image[:, 7:19, 5:17], atol=1e-3)
    assert torch.allclose(out[1], image[:, 0:12, 30:42], atol=1e-3)


def test_crop_outside_image_is_zero_padded():
    image = torch.full((3, 20, 20), 200.0)
    out = crop_resize([image], torch.tensor([[-10.0, -10.0, 10.0, 10.0]]), torch.tensor([0]), 20)
    # Top-left quadrant lies outside the image: zeros; bottom-right inside: the image value.
    assert torch.allclose(out[0, :, :10, :10], torch.tensor(0.0), atol=1e-4)
    assert torch.allclose(out[0, :, 10:, 10:], torch.tensor(200.0))


def test_downscale_supersampling_matches_area_average():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 96, 96, generator=g) * 255
    out = crop_resize([image], torch.tensor([[0.0, 0.0, 96.0, 96.0]]), torch.tensor([0]), 24)
    # 96 = 4·24: mip level 1 (2×2 averages) sampled at the centres of a 2×2 sub-grid, averaged
    # again: exactly a 4×4 box average, i.e. area interpolation.
    assert torch.allclose(out[0], F.avg_pool2d(image[None], 4)[0], atol=1e-3)


def test_non_power_of_two_downscale_is_close_to_area():
    g = torch.Generator().manual_seed(2)
    image = F.interpolate(torch.rand(1, 3, 30, 30, generator=g), size=(150, 150), mode="bilinear")[0] * 255
    out = crop_resize([image], torch.tensor([[0.0, 0.0, 150.0, 150.0]]), torch.tensor([0]), 24)
    area = F.interpolate(image[None], size=(24, 24), mode="area")[0]
    aliased = F.interpolate(image[None], size=(24, 24), mode="bilinear", align_corners=False)[0]
    ours_error = (out[0] - area).abs().mean()
    # Much closer to true area averaging than plain (aliasing) bilinear resampling is.
    assert ours_error < 0.5 * (aliased - area).abs().mean()


def test_uint8_fast_path_matches_float_path():
    g = torch.Generator().manual_seed(3)
    smooth = F.interpolate(torch.rand(1, 3, 20, 25, generator=g), size=(301, 397), mode="bilinear")[0] * 255
    image_u8 = smooth.round().to(torch.uint8)
    boxes = torch.tensor([[-20.0, 10.0, 180.0, 210.0], [5.0, 5.0, 45.0, 45.0], [100.0, 50.0, 390.0, 300.0], [0, 0, 20, 20]])
    index = torch.zeros(4, dtype=torch.long)
    for size in (24, 48):
        fast = crop_resize([image_u8], boxes, index, size)
        slow = crop_resize([image_u8.float()], boxes, index, size)
        # Same geometry; only the uint8 rounding of the halved levels differs.
        assert (fast - slow).abs().max() < 1.5 and (fast - slow).abs().mean() < 0.3


def test_boxes_from_images_of_different_sizes_land_in_order():
    a = torch.full((3, 30, 40), 10.0)
    b = torch.full((3, 60, 20), 99.0)
    boxes = torch.tensor([[0.0, 0.0, 12.0, 12.0], [2.0, 2.0, 14.0, 14.0], [1.0, 1.0, 13.0, 13.0]])
    out = crop_resize([a, b], boxes, torch.tensor([1, 0, 1]), 6)
    assert out.shape == (3, 3, 6, 6)
    assert torch.allclose(out[0], torch.tensor(99.0)) and torch.allclose(out[1], torch.tensor(10.0))
    assert crop_resize([a], torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 24).shape == (0, 3, 24, 24)


def test_pyramid_scales_rule():
    scales = pyramid_scales(100, 200, 20, 0.5)
    # s0 = 12/20 = 0.6; 0.6, 0.3, 0.15 (100·0.15 = 15 ≥ 12), 0.075 stops (7.5 < 12).
    assert scales == pytest.approx([0.6, 0.3, 0.15])
    assert pyramid_scales(11, 500, 20, 0.709) == pytest.approx([]) or all(11 * s >= 12 for s in pyramid_scales(11, 500, 20, 0.709))
    assert pyramid_scales(11, 500, 12, 0.709) == []
    assert level_size(100, 200, 0.15) == (15, 30)


def test_packed_canvas_gives_the_same_pnet_map_as_each_level_alone():
    torch.manual_seed(0)
    pnet = PNet().eval()
    images = [torch.rand(3, 61, 90) * 255, torch.rand(3, 40, 33) * 255]
    packing = pack_pyramid([(61, 90), (40, 33)], 12, 0.7, solo_pixels=2000)
    assert len(packing.canvas_sizes) > 1  # both solo canvases and a packed one
    from mtcnn.stages import _paint_canvas

    maps = {}
    with torch.no_grad():
        for cid, (h, w) in enumerate(packing.canvas_sizes):
            canvas = _paint_canvas(images, packing, cid, h, w)
            maps[cid] = (canvas, pnet(canvas, with_landmarks=False)[0][0])
        for lv in packing.levels:
            canvas, out = maps[lv.canvas]
            # The level exactly as painted, run alone (even-padded slot).
            h2, w2 = lv.height + (lv.height & 1), lv.width + (lv.width & 1)
            alone = pnet(canvas[:, :, lv.y0 : lv.y0 + h2, lv.x0 : lv.x0 + w2], with_landmarks=False)[0][0]
            nh, nw = pnet_output_size(h2, w2)
            assert alone.shape[1:] == (nh, nw)
            assert (nh, nw) == pnet_output_size(lv.height, lv.width)  # same cells as the ceil-mode level
            got = out[:, lv.y0 // 2 : lv.y0 // 2 + nh, lv.x0 // 2 : lv.x0 // 2 + nw]
            assert torch.allclose(got, alone, atol=1e-4)
    counts = np.zeros(len(packing.levels), dtype=np.int64)
    for cid in range(len(packing.canvas_sizes)):
        table = cell_level_map(packing, cid)
        counts += np.bincount(table[table >= 0].numpy(), minlength=len(packing.levels))
    expected = [np.prod(pnet_output_size(lv.height, lv.width)) for lv in packing.levels]
    assert counts.tolist() == expected


@pytest.mark.parametrize("solo", [None, 16384])
def test_packing_has_no_overlapping_slots(solo):
    packing = pack_pyramid([(480, 640), (1080, 1920), (37, 300)], 20, 0.709, solo_pixels=solo)
    assert len(packing.levels) == sum(len(pyramid_scales(h, w, 20, 0.709)) for h, w in [(480, 640), (1080, 1920), (37, 300)])
    for cid, (h, w) in enumerate(packing.canvas_sizes):
        mask = np.zeros((h, w), dtype=np.int32)
        for lv in packing.levels:
            if lv.canvas == cid:
                assert lv.y0 % 2 == 0 and lv.x0 % 2 == 0
                mask[lv.y0 : lv.y0 + lv.height + (lv.height & 1), lv.x0 : lv.x0 + lv.width + (lv.width & 1)] += 1
        assert mask.max() == 1


@pytest.mark.parametrize("k", [1, 2])
def test_opencv_sampling_matches_grid_sample(k):
    from mtcnn.ops.crops import _sample_cv2, _sample_torch

    g = torch.Generator().manual_seed(4)
    level = torch.rand(3, 57, 83, generator=g) * 255
    # Inside, across every border, sub-pixel positions, thin and tiny boxes.
    boxes = torch.tensor([[3.3, 4.7, 40.1, 41.5], [-12.0, -7.5, 20.0, 24.5], [60.2, 30.0, 95.0, 64.8], [10.0, 50.0, 13.0, 53.0], [0.0, 0.0, 83.0, 57.0]])
    fast = _sample_cv2(np.ascontiguousarray(level.permute(1, 2, 0).numpy()), boxes, 24, k)
    oracle = _sample_torch(level, boxes, 24, k)
    assert fast.shape == oracle.shape == (5, 24, 24, 3)
    assert (fast - oracle).abs().max() < 0.02


def test_crops_come_back_channels_last():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    out = crop_resize([image], torch.tensor([[5.0, 7.0, 30.0, 32.0]]), torch.tensor([0]), 24)
    assert out.shape == (1, 3, 24, 24) and out.is_contiguous(memory_format=torch.channels_last)


def test_more_boxes_than_one_opencv_map_holds():
    """A crowd's R-Net candidates: 1,400 boxes × 48 map rows > OpenCV's 32,767-row limit."""
    from mtcnn.ops.crops import _sample_cv2, _sample_torch

    g = torch.Generator().manual_seed(5)
    level = torch.rand(3, 64, 64, generator=g) * 255
    x1y1 = torch.rand(1400, 2, generator=g) * 40
    boxes = torch.cat([x1y1, x1y1 + 20 + torch.rand(1400, 1, generator=g) * 20], 1)
    fast = _sample_cv2(np.ascontiguousarray(level.permute(1, 2, 0).numpy()), boxes, 24, 2)
    oracle = _sample_torch(level, boxes, 24, 2)
    assert fast.shape == oracle.shape == (1400, 24, 24, 3)
    assert (fast - oracle).abs().max() < 0.02


@pytest.mark.parametrize("make", [
    lambda t: t,                                                    # channels-first, contiguous
    lambda t: t[:, 5:40, 7:60],                                     # a window of it
    lambda t: t[:, ::2, ::3],                                       # strided
    lambda t: t.permute(1, 2, 0).contiguous().permute(2, 0, 1),     # a decoded photo's view
    lambda t: t.permute(1, 2, 0).contiguous().permute(2, 0, 1)[:, 3:30, 4:50],
    lambda t: t[:1, 2:20, 3:30],                                    # one channel
    lambda t: torch.cat([t, t[:1]])[:, :9, :11],                    # four channels
])
def test_hwc_array_is_the_contiguous_channels_last_copy(make):
    from mtcnn.ops.crops import hwc_array

    image = make(torch.randint(0, 256, (3, 50, 70), generator=torch.Generator().manual_seed(0), dtype=torch.uint8))
    out = hwc_array(image)
    assert out.flags.c_contiguous and out.dtype == np.uint8
    assert np.array_equal(out, image.permute(1, 2, 0).numpy())
