"""Photo degradations of the training batches: occlusion, motion blur, sensor noise, tone
(low contrast and gamma), down-up resampling and JPEG (mtcnn.data.datasets)."""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest
import torch

from mtcnn.data.datasets import (
    DEGRADATION_PROBS,
    ColorJitter,
    area_shrink,
    augment_batch,
    jpeg_compress,
    motion_blur,
    occlusion_rects,
    resample_down_up,
    sensor_noise,
    tone_curve,
)

NEW_OPS = ("occlusion_prob", "motion_blur_prob", "noise_prob", "tone_prob", "resample_prob", "jpeg_prob")
PLAIN = dict(flip=False, color_jitter=False)


def make_batch(n=24, size=24, seed=0, images=None):
    """Random uint8 crops with the four kinds in turn (pos, part, neg, landmark)."""
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    label = torch.tensor([1, -1, 0, -2] * (n // 4))
    bbox = torch.from_numpy(rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32))
    lmk = torch.from_numpy(rng.uniform(0.05, 0.95, (n, 10)).astype(np.float32))
    return torch.as_tensor(images), label, bbox, lmk


def run(batch, seed=3, **kw):
    return augment_batch(*batch, torch.Generator().manual_seed(seed), **kw)


def grey_levels(out):
    return out["images"] * 128 + 127.5  # float [B, 3, S, S], 0..255


# ----------------------------------------------------------------------------- compatibility

# sha256 (first 16 hex digits) of images, label, bbox and landmark of augment_batch(make_batch-like
# input, seed 11), recorded with the code before these degradations existed.
RECORDED = {
    (12, "default"): "c10af853dd014360",
    (12, "grey_blur_mask"): "5c0435110395016b",
    (24, "default"): "eed7f607d126b7d6",
    (24, "grey_blur_mask"): "5e386ae1b7d8544c",
    (48, "default"): "c0721201c08c6b99",
    (48, "grey_blur_mask"): "2421f04e91b7df40",
}


@pytest.mark.parametrize("size, name", sorted(RECORDED))
def test_without_the_new_ops_batches_are_byte_identical_to_before(size, name):
    jitter = ColorJitter() if name == "default" else ColorJitter(grayscale_prob=0.3, blur_prob=0.3, mask_prob=0.5)
    rng = np.random.default_rng(size)
    n = 24
    images = torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    label = torch.tensor([1, -1, 0, -2] * (n // 4))
    bbox = torch.from_numpy(rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32))
    lmk = torch.from_numpy(rng.uniform(0.05, 0.95, (n, 10)).astype(np.float32))
    out = augment_batch(images, label, bbox, lmk, torch.Generator().manual_seed(11), jitter=jitter)
    h = hashlib.sha256()
    for key in ("images", "label", "bbox", "landmark"):
        h.update(out[key].contiguous().numpy().tobytes())
    assert h.hexdigest()[:16] == RECORDED[size, name]


def test_from_config_reads_every_probability():
    from mtcnn.config.train import DataSection

    data = DataSection(**{name: 0.05 * (i + 1) for i, name in enumerate(DEGRADATION_PROBS)})
    jitter = ColorJitter.from_config(data)
    assert [getattr(jitter, name) for name in DEGRADATION_PROBS] == pytest.approx([0.05 * (i + 1) for i in range(9)])
    assert ColorJitter.from_config(DataSection()) == ColorJitter()  # the defaults: every op off


def test_training_task_hands_the_config_probabilities_to_the_loader(tmp_path):
    from mtcnn.config.core import from_dict
    from mtcnn.config.train import TrainConfig
    from mtcnn.data.h5 import SampleWriter
    from mtcnn.training.mtcnn_task import MTCNNTask

    rng = np.random.default_rng(0)
    path = tmp_path / "pnet_train.h5"
    with SampleWriter(path, 12, {"seed": 0}, chunk=32) as w:
        for kind in ("pos", "part", "neg", "landmark"):
            box = rng.uniform(-0.3, 0.3, (12, 4)).astype(np.float32) if kind in ("pos", "part") else None
            lmk = rng.uniform(0.1, 0.9, (12, 10)).astype(np.float32) if kind == "landmark" else None
            w.add(kind, rng.integers(0, 256, (12, 12, 12, 3), dtype=np.uint8), bbox=box, landmark=lmk)
    probs = {"tone_prob": 0.1, "noise_prob": 0.2, "jpeg_prob": 0.3, "occlusion_prob": 0.4, "grayscale_prob": 0.5}
    data = {"train": [str(path)], "val": None, "num_workers": 0, **probs}
    cfg = from_dict(TrainConfig, {"net": "pnet", "out": str(tmp_path / "run"), "batch_size": 12,
                                  "val": {"enabled": False}, "data": data}).resolved()
    task = MTCNNTask(cfg)
    loader = task.make_loader(task.open_data(1), 0, 1, False)
    assert loader.jitter == ColorJitter(**probs)
    batch = loader.get_batch(0, 0)
    assert batch["images"].shape == (12, 3, 12, 12)


def test_config_rejects_probabilities_outside_0_1():
    from mtcnn.config.core import load_config
    from mtcnn.config.train import TrainConfig

    cfg = load_config(TrainConfig, None, ["data.jpeg_prob=0.2", "data.tone_prob=0.1"])
    assert (cfg.data.jpeg_prob, cfg.data.tone_prob, cfg.data.noise_prob) == (0.2, 0.1, 0.0)
    with pytest.raises(Exception, match="noise_prob"):
        load_config(TrainConfig, None, ["data.noise_prob=1.5"])


# ----------------------------------------------------------------------------- per op, in the batch

@pytest.mark.parametrize("op", NEW_OPS)
def test_each_op_changes_only_the_chosen_samples_and_keeps_shape_dtype_range(op):
    batch = make_batch(n=200, size=24)
    base = run(batch)
    some = run(batch, jitter=ColorJitter(**{op: 0.3}))
    assert some["images"].shape == base["images"].shape and some["images"].dtype == torch.float32
    assert some["images"].min() >= -127.5 / 128 and some["images"].max() <= 127.5 / 128
    for key in ("label", "bbox", "landmark"):
        assert torch.equal(some[key], base[key])
    changed = (some["images"] != base["images"]).flatten(1).any(1)
    # Landmark samples are occluded only where a rectangle misses their points: fewer of them change.
    low = 0.18 if op == "occlusion_prob" else 0.2
    assert low < changed.float().mean() < 0.4
    all_of_them = run(batch, jitter=ColorJitter(**{op: 1.0}))
    changed_all = (all_of_them["images"] != base["images"]).flatten(1).any(1)
    assert changed_all[batch[1] != -2].all()  # every non-landmark sample changes at probability 1
    assert torch.equal(run(batch, jitter=ColorJitter(**{op: 0.3}))["images"], some["images"])  # same seed
    assert not torch.equal(run(batch, seed=4, jitter=ColorJitter(**{op: 0.3}))["images"], some["images"])


@pytest.mark.parametrize("op", NEW_OPS)
def test_ops_draw_independently(op):
    """Each op has its own side generator: adding or removing one changes exactly the samples it
    chooses alone, with every other op (old and new) on. (JPEG, the last op, only when it is the
    one tested: at quality 10 it can round a faint earlier change away.)"""
    batch = make_batch(n=120, size=12)
    everything = {name: 0.4 if name != "jpeg_prob" or op == name else 0.0 for name in DEGRADATION_PROBS}
    with_op = run(batch, jitter=ColorJitter(**everything))["images"]
    without = run(batch, jitter=ColorJitter(**{**everything, op: 0.0}))["images"]
    alone = run(batch, jitter=ColorJitter(**{op: 0.4}))["images"]
    nothing = run(batch)["images"]
    changed_among_all = (with_op != without).flatten(1).any(1)
    changed_alone = (alone != nothing).flatten(1).any(1)
    assert changed_alone.any() and torch.equal(changed_among_all, changed_alone)


def test_all_ops_are_deterministic_and_thread_count_free():
    batch = make_batch(n=48, size=48)
    jitter = ColorJitter(**{name: 0.5 for name in DEGRADATION_PROBS})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(batch, jitter=jitter)["images"]
        torch.set_num_threads(2)
        two = run(batch, jitter=jitter)["images"]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


# ----------------------------------------------------------------------------- tone

def test_tone_curve_closed_form():
    x = torch.arange(256, dtype=torch.float32).repeat(4, 3, 1, 1)  # [4, 3, 1, 256] every grey level
    contrast = torch.tensor([0.3, 0.5, 1.0, 0.8])
    gamma = torch.tensor([0.5, 1.0, 2.0, 1.3])
    pivot = torch.tensor([64.0, 127.5, 192.0, 100.0])
    out = tone_curve(x, contrast, gamma, pivot)
    levels = np.arange(256, dtype=np.float64)
    for i in range(4):
        c, g, p = float(contrast[i]), float(gamma[i]), float(pivot[i])
        expected = p + c * (255.0 * (levels / 255.0) ** g - p)
        np.testing.assert_allclose(out[i, 1, 0].numpy(), expected, atol=2e-3)
    assert torch.equal(tone_curve(x, torch.ones(4), torch.ones(4), pivot), x)  # c = 1, gamma = 1: identity


def test_tone_in_the_batch_is_the_closed_form_with_parameters_in_range():
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None], (64, 16, 16, 3)).copy()
    batch = make_batch(n=64, images=ramp)
    out = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(tone_prob=1.0)))[:, 0].flatten(1)  # [64, 256]
    y0, y255, y128 = out[:, 0].double(), out[:, 255].double(), out[:, 128].double()
    # y(0) = p (1 - c), y(255) - y(0) = 255 c, y(128) - y(0) = 255 c (128 / 255) ** gamma.
    c = (y255 - y0) / 255.0
    g = torch.log((y128 - y0) / (255.0 * c)) / math.log(128 / 255)
    assert ((c > 0.3 - 1e-4) & (c < 1.0 + 1e-6)).all() and ((g > 0.5 - 1e-3) & (g < 2.0 + 1e-3)).all()
    low = c < 0.95  # p is ill-conditioned as c -> 1
    p = y0[low] / (1.0 - c[low])
    assert ((p > 64 - 0.5) & (p < 192 + 0.5)).all() and p.std() > 20
    assert c.std() > 0.1 and g.log().std() > 0.2  # drawn per sample
    levels = torch.arange(256, dtype=torch.float64)
    refit = y0[:, None] + 255.0 * c[:, None] * (levels / 255.0) ** g[:, None]
    assert torch.allclose(refit, out.double(), atol=0.02)


# ----------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("size", [12, 24, 48])
def test_area_shrink_and_down_up_match_opencv(size):
    rng = np.random.default_rng(size)
    image = rng.integers(0, 256, (size, size, 3)).astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    for d in range(1, size + 1):  # every size, dividing or not
        ref = cv2.resize(image, (d, d), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(area_shrink(x, (d, d))[0].permute(1, 2, 0).numpy(), ref, atol=1e-3)
    factors = torch.tensor([2.0, 2.5, 3.0, 3.3, 4.0])
    out = resample_down_up(x.expand(5, -1, -1, -1), factors)
    for i, f in enumerate(factors.tolist()):
        d = round(size / f)
        small = cv2.resize(image, (d, d), interpolation=cv2.INTER_AREA)
        ref = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), ref, atol=1e-3)


def test_resample_in_the_batch_matches_opencv_at_some_factor_in_range():
    batch = make_batch(n=16, size=24)
    out = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(resample_prob=1.0)))
    sizes = set()
    for i in range(16):
        image = batch[0][i].numpy().astype(np.float32)
        errors = {}
        for d in range(6, 13):  # 24 / 4 .. 24 / 2
            small = cv2.resize(image, (d, d), interpolation=cv2.INTER_AREA)
            ref = cv2.resize(small, (24, 24), interpolation=cv2.INTER_LINEAR)
            errors[d] = np.abs(out[i].permute(1, 2, 0).numpy() - ref).max()
        d = min(errors, key=errors.get)
        assert errors[d] < 1e-3
        sizes.add(d)
    assert len(sizes) >= 3


# ----------------------------------------------------------------------------- noise

def test_sensor_noise_statistics():
    x = torch.full((4, 3, 48, 48), 128.0)
    sigma = torch.tensor([2.0, 5.0, 12.0, 8.0])
    per_channel = torch.tensor([False, True, False, True])
    d = sensor_noise(x, sigma, per_channel, torch.Generator().manual_seed(0)) - 128.0
    for i in range(4):
        n = d[i].numel() if per_channel[i] else d[i, 0].numel()
        assert abs(float(d[i].mean())) < 4 * float(sigma[i]) / math.sqrt(n)
        assert float(d[i].std()) == pytest.approx(float(sigma[i]), rel=0.06)
    assert torch.equal(d[0, 0], d[0, 2]) and torch.equal(d[2, 1], d[2, 2])  # luminance noise: channels alike
    assert not torch.equal(d[1, 0], d[1, 1])


def test_noise_in_the_batch():
    flat = np.full((256, 24, 24, 3), 128, np.uint8)
    batch = make_batch(n=256, images=flat)
    d = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(noise_prob=1.0))) - 128.0
    std = d.flatten(1).std(1)
    assert (std > 2.0 * 0.85).all() and (std < 12.0 * 1.15).all() and std.std() > 2.0
    assert d.mean().abs() < 0.1
    luminance = (d[:, 0] == d[:, 1]).flatten(1).all(1) & (d[:, 1] == d[:, 2]).flatten(1).all(1)
    assert 0.35 < luminance.float().mean() < 0.65  # noise_colour_share = 0.5
    grey = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(noise_prob=1.0, grayscale_prob=1.0)))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])  # grey samples stay grey


# ----------------------------------------------------------------------------- JPEG

def _cv2_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def test_jpeg_compress_matches_opencv():
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (0, 0), 2.0)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None].expand(2, -1, -1, -1)
    out = jpeg_compress(x + 0.3, torch.tensor([20, 55]))  # rounded to uint8 first
    for i, q in enumerate((20, 55)):
        assert np.array_equal(out[i].permute(1, 2, 0).numpy().astype(np.uint8), _cv2_jpeg(image, q))
    assert out.dtype == torch.float32 and not torch.equal(out[0], out[1])
    assert jpeg_compress(x[:0], torch.zeros(0)).shape == (0, 3, 48, 48)


def test_jpeg_in_the_batch_is_opencv_at_a_quality_in_range():
    rng = np.random.default_rng(6)
    noise = rng.integers(0, 256, (12, 24, 24, 3), dtype=np.uint8)
    images = np.stack([cv2.GaussianBlur(im, (0, 0), 1.5) for im in noise])
    batch = make_batch(n=12, images=images)
    out = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(jpeg_prob=1.0)))
    qualities = set()
    for i in range(12):
        got = out[i].permute(1, 2, 0).numpy()
        match = [q for q in range(0, 101) if np.array_equal(_cv2_jpeg(images[i], q).astype(np.float32), got)]
        assert any(10 <= q <= 60 for q in match)
        qualities.add(match[0])
    assert len(qualities) >= 4


# ----------------------------------------------------------------------------- motion blur

@pytest.mark.parametrize("length, angle, ksize", [(2.0, 0.0, (3, 1)), (4.0, 0.0, (5, 1)), (6.0, math.pi / 2, (1, 7))])
def test_motion_blur_along_an_axis_is_a_box_filter(length, angle, ksize):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (24, 24, 3)).astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    out = motion_blur(x, torch.tensor([length]), torch.tensor([angle]))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, cv2.blur(image, ksize, borderType=cv2.BORDER_REPLICATE), atol=1e-3)


def test_motion_blur_diagonal_keeps_flat_images_and_mass():
    flat = torch.full((2, 3, 12, 12), 77.0)
    out = motion_blur(flat, torch.tensor([3.5, 5.0]), torch.tensor([0.7, 2.0]))
    assert torch.allclose(out, flat, atol=1e-4)
    impulse = torch.zeros(1, 1, 25, 25)
    impulse[0, 0, 12, 12] = 1.0
    spread = motion_blur(impulse, torch.tensor([6.0]), torch.tensor([math.pi / 4]))[0, 0]
    assert float(spread.sum()) == pytest.approx(1.0, abs=1e-5)  # away from the edges nothing is lost
    assert torch.allclose(spread, spread.T, atol=1e-6)  # symmetric about the diagonal y = x
    assert spread[10, 10] > 0 and spread[14, 14] > 0 and spread[9, 15] == 0 and spread[15, 9] == 0
    assert spread[8:17, 8:17].sum() == pytest.approx(1.0, abs=1e-5)  # reach ceil(3 * cos 45°) = 3 px
    assert torch.equal(motion_blur(impulse, torch.zeros(1), torch.zeros(1)), impulse)


def test_motion_blur_of_a_sample_does_not_depend_on_the_others():
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(8)) * 255
    length = torch.tensor([1.5, 7.0, 3.2, 0.0, 4.9, 2.0])
    angle = torch.tensor([0.1, 1.0, 2.0, 0.5, 3.0, 1.6])
    together = motion_blur(x, length, angle)
    for i in range(6):
        assert torch.equal(together[i:i + 1], motion_blur(x[i:i + 1], length[i:i + 1], angle[i:i + 1]))
    assert torch.equal(together[3], x[3])


def test_motion_blur_length_scales_with_the_sample_size():
    """A line of 3-7 px at 24 px: at 48 px the blur reaches twice as far."""
    for size, reach in ((24, (1, 4)), (48, (3, 7))):
        image = np.zeros((32, size, size, 3), np.uint8)
        image[:, size // 2, size // 2] = 255
        batch = make_batch(n=32, images=image)
        out = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(motion_blur_prob=1.0)))[:, 0]
        lit = out > 1e-3
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        radius = torch.stack([torch.maximum((ys - size // 2).abs(), (xs - size // 2).abs())[m].max() for m in lit])
        assert reach[0] <= int(radius.min()) and int(radius.max()) <= reach[1]


# ----------------------------------------------------------------------------- occlusion

# A typical landmark crop's points (x, y in 0..1): eyes 30 / 70 % across and 36 % down, nose, mouth corners.
TYPICAL_POINTS = torch.tensor([[[0.3, 0.36], [0.7, 0.36], [0.5, 0.55], [0.35, 0.74], [0.65, 0.74]]])

def test_occlusion_rects_cover_the_area_range_and_stay_inside():
    u = torch.rand(4000, 1, 4, generator=torch.Generator().manual_seed(0))
    for size in (12, 24, 48):
        rects, ok = occlusion_rects(u, size)
        assert ok.all() and (rects[:, :2] >= 0).all() and (rects[:, 2:] <= size).all()
        assert (rects[:, 2:] > rects[:, :2]).all()
        area = ((rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])).float() / size**2
        slack = 0.5 / size  # whole pixels
        assert area.min() >= 0.10 - slack and area.max() <= 0.35 + slack
        assert area.min() < 0.13 and area.max() > 0.32
        aspect = (rects[:, 2] - rects[:, 0]).float() / (rects[:, 3] - rects[:, 1]).float()
        assert aspect.min() < 0.5 and aspect.max() > 2.0


def test_occlusion_rects_refuse_points():
    u = torch.rand(500, 64, 4, generator=torch.Generator().manual_seed(1))
    points = TYPICAL_POINTS.expand(500, -1, -1) * 24
    rects, ok = occlusion_rects(u, 24, points=points, margin=2.0)
    assert 0.3 < ok.float().mean() < 0.9  # most fit somewhere, not all
    r = rects[ok][:, None, :].float()
    p = points[ok]
    inside = ((p[..., 0] >= r[..., 0] - 2) & (p[..., 0] < r[..., 2] + 2)
              & (p[..., 1] >= r[..., 1] - 2) & (p[..., 1] < r[..., 3] + 2))
    assert not inside.any()


def test_occlusion_in_the_batch():
    n, size = 400, 24
    grey = np.full((n, size, size, 3), 90, np.uint8)
    images, label, bbox, _ = make_batch(n=n, images=grey)
    jiggle = torch.rand(n, 5, 2, generator=torch.Generator().manual_seed(2)) * 0.1 - 0.05
    lmk = (TYPICAL_POINTS[0] + jiggle).view(n, 10)
    batch = (images, label, bbox, lmk)
    out = grey_levels(run(batch, **PLAIN, jitter=ColorJitter(occlusion_prob=1.0)))
    changed = (out != 90.0).any(1)  # [n, S, S]
    fraction = changed.flatten(1).float().mean(1)
    hit = fraction > 0
    assert hit[label != -2].all()
    slack = 0.5 / size
    assert (fraction[hit] >= 0.10 - slack).all() and (fraction[hit] <= 0.35 + slack).all()
    rows, cols = changed.any(2), changed.any(1)  # the changed pixels form one rectangle
    assert torch.equal(changed.flatten(1).sum(1), rows.sum(1) * cols.sum(1))
    # Landmark samples: most occluded, none over a point or the pixels around it.
    lm = label == -2
    assert 0.5 < hit[lm].float().mean() < 1.0
    pts = (lmk[lm].view(-1, 5, 2) * size).floor().long()
    for img, p in zip(changed[lm], pts):
        for x, y in p.tolist():
            assert not img[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any()
    values = out.flatten(2)
    spread = torch.stack([values[i][:, changed[i].flatten()].std(1).max() for i in hit.nonzero().squeeze(1).tolist()])
    noisy = spread > 1.0
    assert 0.35 < noisy.float().mean() < 0.65  # half flat colours, half noise
