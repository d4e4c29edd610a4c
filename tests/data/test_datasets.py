"""Mixed-ratio loader: composition, determinism, sharding, flip correctness, resume, workers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mtcnn.data.datasets import (
    binomial_blur,
    ColorJitter,
    MixedBatchLoader,
    augment_batch,
    benchmark_loader,
    composition_for,
    paint_face_masks,
)
from mtcnn.data.h5 import KIND_LABEL, KINDS, SampleReader, SampleWriter

S = 12
COUNTS = {"pos": 96, "part": 90, "neg": 300, "landmark": 80}
COMP = {"pos": 8, "part": 8, "neg": 24, "landmark": 8}


def write_file(path, counts=COUNTS, size=S, seed=0):
    rng = np.random.default_rng(seed)
    with SampleWriter(path, size, {"seed": seed}, chunk=32) as w:
        for kind, n in counts.items():
            if n == 0:
                continue
            images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            bbox = rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32) if kind in ("pos", "part") else None
            lmk = rng.uniform(0.05, 0.95, (n, 10)).astype(np.float32) if kind == "landmark" else None
            w.add(kind, images, bbox=bbox, landmark=lmk)
    return path


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    return write_file(tmp_path_factory.mktemp("samples") / "pnet_train.h5")


def collect(loader, n):
    """The next ``n`` batches, across epochs (each ``iter(loader)`` is the rest of one epoch)."""
    out = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_composition_for():
    for net in ("pnet", "rnet", "onet"):
        assert composition_for(net, 384) == {"pos": 64, "part": 64, "neg": 192, "landmark": 64}
    c = composition_for("rnet", 100)
    assert c == {"pos": 17, "part": 17, "neg": 49, "landmark": 17} and sum(c.values()) == 100
    assert sum(composition_for("onet", 385).values()) == 385
    with pytest.raises(ValueError):
        composition_for("xnet", 384)


def test_composition_exact_and_plan_matches_batch(sample_file):
    comp = composition_for("pnet", 384)
    loader = MixedBatchLoader(sample_file, comp, steps_per_epoch=3, seed=1, flip=False, color_jitter=False)
    reader = SampleReader(sample_file)
    batches = list(loader)  # one pass = one epoch
    assert len(batches) == len(loader) == 3
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["step"] == 0
    for step, batch in enumerate(batches):
        assert batch["images"].shape == (384, 3, S, S) and batch["images"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64 and batch["bbox"].shape == (384, 4)
        assert batch["landmark"].shape == (384, 10)
        expect_labels = np.concatenate([np.full(comp[k], KIND_LABEL[k]) for k in KINDS])
        np.testing.assert_array_equal(batch["label"].numpy(), expect_labels)
        plan = loader.batch_plan(0, step)
        assert {k: len(v) for k, v in plan.items()} == comp
        raw = {name: np.concatenate([reader.get(k, plan[k])[name] for k in KINDS])
               for name in ("images", "bbox", "landmark")}
        expect_images = (torch.from_numpy(raw["images"]).permute(0, 3, 1, 2).float() - 127.5) / 128
        assert torch.equal(batch["images"], expect_images)
        assert torch.equal(batch["bbox"], torch.from_numpy(raw["bbox"]))
        assert torch.equal(batch["landmark"], torch.from_numpy(raw["landmark"]))


def test_cycles_are_permutations(sample_file):
    # pos: 96 rows, 8 per step -> one cycle every 12 steps; neg: 300 rows, 24 per step
    loader = MixedBatchLoader(sample_file, COMP, steps_per_epoch=40, seed=3)
    pos = np.concatenate([loader.batch_plan(0, s)["pos"] for s in range(36)])
    for c in range(3):
        assert sorted(pos[c * 96:(c + 1) * 96]) == list(range(96))
    assert not np.array_equal(pos[:96], pos[96:192])  # a fresh permutation per cycle
    neg = np.concatenate([loader.batch_plan(0, s)["neg"] for s in range(25)])
    assert sorted(neg[:300]) == list(range(300))
    assert not np.array_equal(loader.batch_plan(0, 0)["pos"], loader.batch_plan(1, 0)["pos"])  # per epoch


def test_determinism_with_seed(sample_file):
    a = collect(MixedBatchLoader(sample_file, COMP, 5, seed=11), 5)
    b = collect(MixedBatchLoader(sample_file, COMP, 5, seed=11), 5)
    c = collect(MixedBatchLoader(sample_file, COMP, 5, seed=12), 5)
    assert_batches_equal(a, b)
    assert not torch.equal(a[0]["images"], c[0]["images"])


def test_distinct_shards_across_ranks(sample_file):
    ws = 3
    loaders = [MixedBatchLoader(sample_file, COMP, 50, seed=5, rank=r, world_size=ws) for r in range(ws)]
    for kind, count in COMP.items():
        per_rank = COUNTS[kind] // ws
        steps = per_rank // count  # whole steps inside the first cycle
        seen = [np.concatenate([ld.batch_plan(0, s)[kind] for s in range(steps)]) for ld in loaders]
        for r in range(ws):
            assert len(set(seen[r].tolist())) == len(seen[r])  # no repeats within a cycle
            for q in range(r + 1, ws):
                assert not set(seen[r].tolist()) & set(seen[q].tolist())
        if per_rank % count == 0:  # the ranks' full shards cover the kind
            union = set().union(*[set(s.tolist()) for s in seen])
            assert len(union) == per_rank * ws >= COUNTS[kind] - (ws - 1)
    # augmentation differs by rank too
    assert not torch.equal(loaders[0].get_batch(0, 0)["images"], loaders[1].get_batch(0, 0)["images"])


def _real_scene(h=60, w=80):
    """An asymmetric textured image (gradients + blobs + noise): mirroring it changes it."""
    rng = np.random.default_rng(42)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3) % 256, (yy * 4) % 256, (xx * yy) % 256], -1).astype(np.float32)
    img += rng.normal(0, 10, img.shape)
    cv2.circle(img, (25, 20), 4, (255, 0, 0), -1)
    cv2.rectangle(img, (30, 28), (38, 34), (0, 255, 0), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _crop(img, box, size):
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(img[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def test_flip_mirrors_box_offsets_and_landmarks():
    """Flip a real crop in the loader, then check its targets against the flipped scene."""
    scene = _real_scene()
    H, W = scene.shape[:2]
    side = 2 * S
    crop = np.array([18.0, 12.0, 18.0 + side, 12.0 + side])
    gt = np.array([19.0, 14.0, 36.0, 37.0])  # deliberately off-centre in the crop
    points = np.array([[25, 20], [36, 21], [30, 27], [26, 32], [35, 33]], np.float64)  # LE RE N LM RM
    offsets = ((gt - crop) / side).astype(np.float32)
    lmk = ((points - crop[:2]) / side).reshape(-1).astype(np.float32)
    patch = _crop(scene, crop, S)
    images = torch.from_numpy(np.stack([patch, patch]))
    label = torch.tensor([KIND_LABEL["pos"], KIND_LABEL["landmark"]])
    bbox = torch.from_numpy(np.stack([offsets, np.zeros(4, np.float32)]))
    landmark = torch.from_numpy(np.stack([np.zeros(10, np.float32), lmk]))
    out = augment_batch(images, label, bbox, landmark, torch.Generator().manual_seed(0),
                        flip=True, color_jitter=False, flip_prob=1.0)

    # the same crop taken from the mirrored scene
    mirrored = np.ascontiguousarray(scene[:, ::-1])
    crop_m = np.array([W - crop[2], crop[1], W - crop[0], crop[3]])
    gt_m = np.array([W - gt[2], gt[1], W - gt[0], gt[3]])
    points_m = np.stack([W - points[:, 0], points[:, 1]], 1)[[1, 0, 2, 4, 3]]  # image-left eye is LE again
    expect_pixels = (torch.from_numpy(_crop(mirrored, crop_m, S)).permute(2, 0, 1).float() - 127.5) / 128
    assert torch.equal(out["images"][0], expect_pixels) and torch.equal(out["images"][1], expect_pixels)
    assert not torch.equal(out["images"][0], (images[0].permute(2, 0, 1).float() - 127.5) / 128)

    decoded = crop_m + out["bbox"][0].numpy() * side
    np.testing.assert_allclose(decoded, gt_m, atol=1e-4)
    unmirrored = crop_m + offsets * side  # the AITTSMD#81 bug: box targets left as they were
    assert np.abs(unmirrored - gt_m).max() > 1.0

    decoded_pts = crop_m[:2] + out["landmark"][1].numpy().reshape(5, 2) * side
    np.testing.assert_allclose(decoded_pts, points_m, atol=1e-4)
    assert decoded_pts[0, 0] < decoded_pts[1, 0] and decoded_pts[3, 0] < decoded_pts[4, 0]
    assert not out["bbox"][1].any() and not out["landmark"][0].any()  # other targets untouched


def test_flip_is_per_sample_and_skips_negatives(sample_file):
    loader = MixedBatchLoader(sample_file, COMP, 10, seed=2, flip=True, color_jitter=False)
    plain = MixedBatchLoader(sample_file, COMP, 10, seed=2, flip=False, color_jitter=False)
    flipped_counts = []
    for step in range(4):
        a, b = loader.get_batch(0, step), plain.get_batch(0, step)
        mirrored = torch.all((a["images"] == b["images"].flip(-1)).flatten(1), 1)
        same = torch.all((a["images"] == b["images"]).flatten(1), 1)
        assert torch.all(mirrored | same)
        lab = a["label"]
        flipped = mirrored & ~same
        assert not flipped[lab == KIND_LABEL["neg"]].any()
        pp = (lab == KIND_LABEL["pos"]) | (lab == KIND_LABEL["part"])
        exp_bbox = torch.stack([-b["bbox"][:, 2], b["bbox"][:, 1], -b["bbox"][:, 0], b["bbox"][:, 3]], 1)
        assert torch.equal(a["bbox"][flipped & pp], exp_bbox[flipped & pp])
        assert torch.equal(a["bbox"][~flipped], b["bbox"][~flipped])
        lm = lab == KIND_LABEL["landmark"]
        pts = b["landmark"].view(-1, 5, 2)[:, [1, 0, 2, 4, 3]]
        exp_lmk = torch.stack([1 - pts[..., 0], pts[..., 1]], -1).view(-1, 10)
        assert torch.allclose(a["landmark"][flipped & lm], exp_lmk[flipped & lm])
        flipped_counts.append(int(flipped[~(lab == KIND_LABEL["neg"])].sum()))
    # per sample, not per batch: batches are neither all flipped nor all unflipped
    assert all(0 < c < 24 for c in flipped_counts)


def test_color_jitter():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (16, S, S, 3), dtype=np.uint8))
    label = torch.zeros(16, dtype=torch.int64)
    z4, z10 = torch.zeros(16, 4), torch.zeros(16, 10)
    plain = augment_batch(images, label, z4, z10, g, flip=False, color_jitter=False)["images"]
    assert torch.equal(plain, (images.permute(0, 3, 1, 2).float() - 127.5) / 128)
    out1 = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(5), flip=False)["images"]
    out2 = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(5), flip=False)["images"]
    assert torch.equal(out1, out2)
    assert out1.min() >= -127.5 / 128 and out1.max() <= 127.5 / 128
    delta = (out1 - plain).abs().flatten(1).mean(1)
    assert (delta > 1e-3).all() and delta.std() > 0  # every sample changed, each differently
    neutral = ColorJitter(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0))
    same = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(5), flip=False, jitter=neutral)
    assert torch.allclose(same["images"], plain, atol=1e-5)


def test_binomial_blur_matches_the_2d_kernel_and_keeps_flat_images():
    impulse = torch.zeros(1, 1, 7, 7)
    impulse[0, 0, 3, 3] = 16.0
    kernel = torch.tensor([1.0, 2.0, 1.0])
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = torch.outer(kernel, kernel)  # 16 * outer([1,2,1]/4, [1,2,1]/4)
    assert torch.equal(binomial_blur(impulse)[0, 0], expected)
    flat = torch.full((2, 3, 12, 12), 77.0)
    assert torch.equal(binomial_blur(flat, repeats=3), flat)  # edges replicated: no dark border


def test_grayscale_and_blur_degradations():
    rng = np.random.default_rng(1)
    n = 400
    images = torch.from_numpy(rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8))
    label, z4, z10 = torch.zeros(n, dtype=torch.int64), torch.zeros(n, 4), torch.zeros(n, 10)
    kw = dict(flip=False, color_jitter=False)
    plain = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(3), **kw)["images"]
    grey = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(3), **kw,
                         jitter=ColorJitter(grayscale_prob=1.0))["images"]
    expected = plain[:, 0] * 0.299 + plain[:, 1] * 0.587 + plain[:, 2] * 0.114
    for c in range(3):
        assert torch.allclose(grey[:, c], expected, atol=1e-5)
    some = augment_batch(images, label, z4, z10, torch.Generator().manual_seed(3), **kw,
                         jitter=ColorJitter(blur_prob=0.3))["images"]
    changed = (some != plain).flatten(1).any(1)
    assert 0.22 < changed.float().mean() < 0.38  # about blur_prob of the samples, drawn per sample
    blurred = binomial_blur(plain[changed] * 128 + 127.5) - 127.5
    assert torch.allclose(some[changed] * 128, blurred, atol=1e-3)


def test_face_masks_cover_the_lower_face_of_pos_and_part_only():
    n, size = 64, 48
    grey = torch.full((n, size, size, 3), 90, dtype=torch.uint8)
    kinds = torch.tensor([1, -1, 0, -2] * (n // 4))  # pos, part, neg, landmark
    # Face box = the middle half of the crop: offsets (x1 - 0)/S = 0.25, (x2 - S)/S = -0.25.
    offsets = torch.tensor([0.25, 0.25, -0.25, -0.25]).repeat(n, 1)
    kw = dict(flip=False, color_jitter=False)
    plain = augment_batch(grey, kinds, offsets, torch.zeros(n, 10), torch.Generator().manual_seed(7), **kw)["images"]
    masked = augment_batch(grey, kinds, offsets, torch.zeros(n, 10), torch.Generator().manual_seed(7), **kw,
                           jitter=ColorJitter(mask_prob=1.0))["images"]
    changed = (masked != plain).any(1)  # [n, S, S]
    has_face = (kinds == 1) | (kinds == -1)
    assert changed[has_face].flatten(1).any(1).all()  # every pos / part sample got a mask
    assert not changed[~has_face].any()  # negatives and landmark samples untouched
    rows, cols = changed[has_face].any(0).nonzero(as_tuple=True)
    # Face box rows/cols 12..36: the mask starts at >= 48 % of its height and stays inside it (chin: <= 104 %).
    assert rows.min() >= 12 + int(0.48 * 24) and rows.max() <= 12 + int(1.04 * 24)
    assert cols.min() >= 12 and cols.max() < 36
    area = changed[has_face].flatten(1).sum(1).float() / (24 * 24)
    assert (area > 0.2).all() and (area < 0.5).all()


def test_face_masks_keep_the_main_random_stream():
    """Masks draw from a side generator: every other augmentation of the batch is as without them."""
    rng = np.random.default_rng(2)
    n = 32
    images = torch.from_numpy(rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8))
    kinds = torch.tensor([1, 0] * (n // 2))
    jitter = ColorJitter(grayscale_prob=0.3, blur_prob=0.3)
    without = augment_batch(images, kinds, torch.zeros(n, 4), torch.zeros(n, 10), torch.Generator().manual_seed(4), jitter=jitter)
    with_masks = augment_batch(images, kinds, torch.zeros(n, 4), torch.zeros(n, 10), torch.Generator().manual_seed(4),
                               jitter=ColorJitter(grayscale_prob=0.3, blur_prob=0.3, mask_prob=1.0))
    negatives = kinds == 0
    assert torch.equal(without["images"][negatives], with_masks["images"][negatives])
    assert not torch.equal(without["images"][~negatives], with_masks["images"][~negatives])
    again = augment_batch(images, kinds, torch.zeros(n, 4), torch.zeros(n, 10), torch.Generator().manual_seed(4),
                          jitter=ColorJitter(grayscale_prob=0.3, blur_prob=0.3, mask_prob=1.0))
    assert torch.equal(again["images"], with_masks["images"])


def test_paint_face_masks_shape_and_colour():
    x = torch.zeros(1, 3, 20, 20)
    face = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    # u: top 0.48, bottom 0.92, half width 0.40, centred, colour 0 (white) at scale 1.0.
    out = paint_face_masks(x, face, torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.0, 0.5]]))
    inside = out[0, 0] > 0
    rows = inside.any(1).nonzero().squeeze(1)
    assert rows.min() == 10 and rows.max() == 17  # centres 10.5 / 20 = 0.525 >= 0.48; 17.5 / 20 = 0.875 <= 0.92
    top_row = inside[10].nonzero().squeeze(1)
    assert top_row.min() == 2 and top_row.max() == 17  # |x + 0.5 - 10| / 20 <= 0.40 at the flat top
    assert inside[17].sum() < inside[10].sum()  # rounded towards the chin
    assert torch.allclose(out[0, :, 10, 10], torch.tensor([236.0, 238.0, 240.0]) * (1 - 0.15 * (0.525 - 0.48) / 0.44))


def test_state_dict_resume_identical(sample_file):
    kw = dict(composition=COMP, steps_per_epoch=5, seed=9)
    full = MixedBatchLoader(sample_file, **kw)
    reference = collect(full, 12)  # crosses two epoch boundaries
    run = MixedBatchLoader(sample_file, **kw)
    first = collect(run, 7)
    state = run.state_dict()
    assert (state["epoch"], state["step"]) == (1, 2)
    resumed = MixedBatchLoader(sample_file, **kw)
    resumed.load_state_dict(state)
    rest = collect(resumed, 5)
    assert_batches_equal(first + rest, reference)
    with pytest.raises(ValueError, match="seed"):
        MixedBatchLoader(sample_file, COMP, 5, seed=10).load_state_dict(state)


def test_workers_do_not_change_batches(sample_file):
    a = collect(MixedBatchLoader(sample_file, COMP, 6, seed=4, num_workers=0), 6)
    loader = MixedBatchLoader(sample_file, COMP, 6, seed=4, num_workers=2)
    b = collect(loader, 6)
    assert_batches_equal(a, b)
    assert loader.state_dict()["epoch"] == 1


def test_missing_kind_is_a_clear_error(tmp_path):
    path = write_file(tmp_path / "nolmk.h5", counts={"pos": 10, "part": 10, "neg": 30, "landmark": 0})
    with pytest.raises(ValueError, match=r"nolmk\.h5.*'landmark'"):
        MixedBatchLoader(path, COMP, 3, seed=0)
    loader = MixedBatchLoader(path, {"pos": 2, "part": 2, "neg": 6}, 3, seed=0)
    assert next(iter(loader))["label"].shape == (10,)
    with pytest.raises(ValueError, match="expected 24"):
        MixedBatchLoader(path, COMP, 3, expected_size=24)


def test_benchmark_loader(sample_file):
    rate = benchmark_loader(sample_file, batches=3, composition=COMP)
    assert rate > 0


def write_sourced_file(path, sources, size=S, seed=0):
    """pos/part/neg/landmark rows with their source image paths: ``sources[kind]`` lists one
    path per row."""
    rng = np.random.default_rng(seed)
    with SampleWriter(path, size, {"seed": seed}, chunk=32) as w:
        for kind, paths in sources.items():
            n = len(paths)
            images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            bbox = np.zeros((n, 4), np.float32) if kind in ("pos", "part") else None
            lmk = np.full((n, 10), 0.5, np.float32) if kind == "landmark" else None
            w.add(kind, images, bbox=bbox, landmark=lmk, source=paths)
    return path


def _sources(n_common, n_rare, kinds=KINDS):
    return {k: [f"/d/common/{i}.jpg" for i in range(n_common)] + [f"/d/face_mask/{i}.jpg" for i in range(n_rare)]
            for k in kinds}


def test_oversample_draws_matching_rows_factor_times_per_cycle(tmp_path):
    path = write_sourced_file(tmp_path / "s.h5", _sources(20, 4))
    comp = {"pos": 4, "part": 4, "neg": 4, "landmark": 4}
    loader = MixedBatchLoader(path, comp, steps_per_epoch=50, seed=2, oversample=[("*/face_mask/*", 3)])
    assert loader.drawn == {k: 20 + 3 * 4 for k in KINDS} and loader.counts["pos"] == 24
    pos = np.concatenate([loader.batch_plan(0, s)["pos"] for s in range(16)])  # two cycles of 32 draws
    for cycle in (pos[:32], pos[32:]):
        counts = np.bincount(cycle, minlength=24)
        assert counts[:20].tolist() == [1] * 20 and counts[20:].tolist() == [3] * 4
    # the largest factor of several matching patterns wins
    both = MixedBatchLoader(path, comp, 50, oversample=[("*/face_mask/*", 3), ("/d/*", 2)])
    assert both.drawn["pos"] == 2 * 20 + 3 * 4


def test_oversample_off_keeps_the_plain_sequence_and_resume_checks_it(tmp_path):
    path = write_sourced_file(tmp_path / "s.h5", _sources(20, 4))
    comp = {"pos": 4, "part": 4, "neg": 4, "landmark": 4}
    plain = MixedBatchLoader(path, comp, 10, seed=5)
    unit = MixedBatchLoader(path, comp, 10, seed=5, oversample=[("*/face_mask/*", 1)])
    assert_batches_equal(collect(plain, 8), collect(unit, 8))
    boosted = MixedBatchLoader(path, comp, 10, seed=5, oversample=[("*/face_mask/*", 4)])
    collect(boosted, 3)
    with pytest.raises(ValueError, match="oversample"):
        MixedBatchLoader(path, comp, 10, seed=5).load_state_dict(boosted.state_dict())
    resumed = MixedBatchLoader(path, comp, 10, seed=5, oversample=[("*/face_mask/*", 4)])
    resumed.load_state_dict(boosted.state_dict())
    reference = MixedBatchLoader(path, comp, 10, seed=5, oversample=[("*/face_mask/*", 4)])
    assert_batches_equal(collect(resumed, 4), collect(reference, 7)[3:])


def test_oversample_pattern_matching_nothing_is_an_error(tmp_path):
    path = write_sourced_file(tmp_path / "s.h5", _sources(6, 2))
    with pytest.raises(ValueError, match=r"s\.h5: oversample pattern\(s\) '\*/facemask/\*' match no source"):
        MixedBatchLoader(path, {"pos": 2, "neg": 2}, 3, oversample=[("*/facemask/*", 4)])


def test_row_sources_follow_each_file_of_a_multi_file_reader(tmp_path):
    from mtcnn.data.readers import InMemoryReader, open_samples

    a = write_sourced_file(tmp_path / "a.h5", {k: ["/x/a0.jpg", "/x/a1.jpg"] for k in KINDS})
    b = write_sourced_file(tmp_path / "b.h5", {k: ["/y/b0.jpg", "/x/a0.jpg", "/y/b1.jpg"] for k in KINDS})
    reader = open_samples([str(a), str(b)], None, S)
    # b's own table puts /y/b0.jpg at index 0: a global table would have mapped it to /x/a0.jpg
    expected = ["/x/a0.jpg", "/x/a1.jpg", "/y/b0.jpg", "/x/a0.jpg", "/y/b1.jpg"]
    assert reader.row_sources("neg").tolist() == expected
    assert InMemoryReader(reader).row_sources("pos").tolist() == expected
    loader = MixedBatchLoader(reader, {"pos": 1, "neg": 1}, 5, oversample=[("/y/*", 2)])
    assert loader.drawn["pos"] == 7
