"""P-Net and landmark sample generation: IoU rules, offset/landmark coding, flips, rotations.

Every check recomputes from stored crop boxes and source annotations with code other than the
generator's (torch ``box_iou`` / ``encode_boxes`` from ``mtcnn.ops``, plain formulas here).
The real-data tests run the whole generator on a small subset and skip without the data.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtcnn.config import data_root
from mtcnn.data.annotations import read_cnn_facepoint, read_voc_dir, split_by_name
from mtcnn.config.data import (
    LandmarkAugConfig,
    LandmarkDataConfig,
    PNetDataConfig,
    PNetSamplingConfig,
    SourceConfig,
    SplitSources,
    WiderBoxConfig,
)
from mtcnn.data.generate import generate_landmarks, generate_pnet
from mtcnn.data.h5 import SampleReader
from mtcnn.data.sampling import (
    landmark_samples,
    pnet_samples,
    tight_to_wider,
)
from mtcnn.io import read_image_rgb
from mtcnn.ops import np_boxes as npb
from mtcnn.ops.boxes import box_iou
from mtcnn.ops.coding import encode_boxes

SWAP = [1, 0, 2, 4, 3]


def torch_iou(a, b) -> np.ndarray:
    return box_iou(torch.as_tensor(np.asarray(a, np.float64)), torch.as_tensor(np.asarray(b, np.float64))).numpy()


def decode_points(box: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Normalised [10] -> pixel [5,2] for a square crop box (plain formula)."""
    side = float(box[2] - box[0])
    return lm.reshape(5, 2).astype(np.float64) * side + box[None, :2].astype(np.float64)


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def test_iou_matrix_matches_torch_box_iou():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (40, 2))
    a = np.concatenate([xy, xy + rng.uniform(0, 50, (40, 2))], axis=1)
    b = a[::-1].copy() + rng.uniform(-5, 5, (40, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    np.testing.assert_allclose(npb.box_iou(a, b), torch_iou(a, b), atol=1e-12)
    # no +1: a 10x10 box and its 5x10 half overlap by exactly 0.5
    assert npb.box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10]])[0, 0] == 0.5
    assert npb.box_iou(np.zeros((0, 4)), a).shape == (0, 40)


def test_offsets_round_trip_and_match_ops_coding():
    rng = np.random.default_rng(1)
    x1 = rng.integers(0, 200, 50).astype(np.float64)
    y1 = rng.integers(0, 200, 50).astype(np.float64)
    side = rng.integers(12, 300, 50).astype(np.float64)
    crops = np.stack([x1, y1, x1 + side, y1 + side], 1)
    gt = crops + rng.uniform(-0.3, 0.3, (50, 4)) * side[:, None]
    off = npb.encode_boxes(crops, gt)
    assert off.dtype == np.float64  # the box library computes in float64; the samplers store float32
    ref = encode_boxes(torch.as_tensor(crops), torch.as_tensor(gt)).numpy()
    np.testing.assert_allclose(off, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(npb.decode_boxes(crops, off), gt, atol=1e-4 * side.max())


def test_tight_to_wider_mapping():
    cfg = WiderBoxConfig(widen=1.15, top=0.27, bottom=0.08)
    out = tight_to_wider(np.array([[100, 50, 200, 150]]), cfg)[0]
    np.testing.assert_allclose(out, [92.5, 23.0, 207.5, 158.0], atol=1e-4)


# ------------------------------------------------------------------------------------------
# flips: prove them on pixels
# ------------------------------------------------------------------------------------------


def test_flip_offsets_on_pixels_and_match_loader():
    """A bright rectangle (the face box) in a crop: after mirroring the crop's pixels the
    rectangle sits exactly where decode(npb.flip_box_offsets(offsets)) says."""
    S = 64
    crop = np.zeros((S, S, 3), np.uint8)
    gt = np.array([[9.0, 14.0, 41.0, 58.0]])  # in crop coordinates, crop box = (0, 0, 64, 64)
    crop[14:58, 9:41] = 255
    box = np.array([[0.0, 0.0, S, S]])
    off = npb.encode_boxes(box, gt)
    mirrored = crop[:, ::-1]
    cols = np.flatnonzero(mirrored[:, :, 0].max(axis=0) > 0)
    rows = np.flatnonzero(mirrored[:, :, 0].max(axis=1) > 0)
    seen = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)  # pixel edges
    np.testing.assert_allclose(npb.decode_boxes(box, npb.flip_box_offsets(off))[0], seen, atol=1e-4)
    # the naive (unmirrored) offsets are wrong for this asymmetric box: AITTSMD#81
    assert not np.allclose(npb.decode_boxes(box, off)[0], seen)
    datasets = pytest.importorskip("mtcnn.data.datasets")
    np.testing.assert_allclose(datasets.flip_box_offsets(torch.as_tensor(off)).numpy(), npb.flip_box_offsets(off))


def test_flip_landmarks_on_pixels_and_match_loader():
    """Five coloured dots at the landmarks; after mirroring, each stored point lands on the dot
    of the swapped point (the mirrored left eye is the old right eye)."""
    S = 100
    img = np.zeros((S, S, 3), np.uint8)
    pts = np.array([[30, 35], [68, 33], [50, 55], [35, 75], [66, 76]], np.float64)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), c in zip(pts.astype(int), colours):
        img[y - 1:y + 2, x - 1:x + 2] = c
    lm = ((pts + 0.5) / S).reshape(1, 10).astype(np.float32)  # pixel centres, normalised
    mirrored = img[:, ::-1]
    flipped = npb.flip_landmarks(lm).reshape(5, 2)
    for j in range(5):
        x, y = (flipped[j] * S - 0.5).round().astype(int)
        assert tuple(mirrored[y, x]) == colours[SWAP[j]], f"point {j}"
    np.testing.assert_allclose(npb.flip_landmarks(npb.flip_landmarks(lm)), lm, atol=1e-7)
    datasets = pytest.importorskip("mtcnn.data.datasets")
    np.testing.assert_allclose(datasets.flip_landmarks(torch.as_tensor(lm)).numpy(), flipped.reshape(1, 10), atol=1e-7)


# ------------------------------------------------------------------------------------------
# P-Net samples on synthetic images
# ------------------------------------------------------------------------------------------


def check_pnet_batches(out, faces, ignore, cfg, size=12):
    """The SPEC §1 rules, recomputed from the stored crop boxes with torch's box_iou."""
    faces = np.asarray(faces, np.float64)
    for kind in ("pos", "part"):
        b = out[kind]
        if not len(b):
            continue
        assert b.images.shape[1:] == (size, size, 3) and b.images.dtype == np.uint8
        decoded = npb.decode_boxes(b.box, b.bbox)
        # the decoded box is one of the (eligible) faces, to float32 rounding
        d = np.abs(decoded[:, None, :] - faces[None]).max(axis=2)
        owner = d.argmin(axis=1)
        side = (b.box[:, 2] - b.box[:, 0]).astype(np.float64)
        assert (d[np.arange(len(d)), owner] <= 1e-5 * side + 1e-4).all()
        assert not np.asarray(ignore, bool)[owner].any()
        iou = torch_iou(b.box, faces)[np.arange(len(owner)), owner]
        if kind == "pos":
            assert (iou >= cfg.pos_iou).all()
        else:
            assert ((iou >= cfg.part_iou) & (iou < cfg.pos_iou)).all()
        assert (b.box[:, 2] - b.box[:, 0] == b.box[:, 3] - b.box[:, 1]).all()
    neg = out["neg"]
    if len(neg) and len(faces):
        assert (torch_iou(neg.box, faces).max(axis=1) < cfg.neg_iou).all()
    assert not neg.bbox.any() and not neg.landmark.any()


def test_pnet_samples_rules_on_synthetic_image():
    rng = np.random.default_rng(0)
    img = noise_image(300, 400)
    faces = np.array([[50, 60, 110, 130], [200, 40, 240, 90], [300, 200, 380, 290], [10, 250, 18, 262],
                      [150, 150, 200, 210], [390, 10, 420, 50]], np.float32)  # last: partly outside
    ignore = np.array([False, False, False, False, True, False])
    cfg = PNetSamplingConfig()
    out = pnet_samples(img, faces, ignore, cfg, rng)
    check_pnet_batches(out, faces, ignore, cfg)
    assert len(out["pos"]) > 5 and len(out["part"]) > 5
    assert 50 <= len(out["neg"]) <= 50 + 5 * 3
    # crops are inside the image and are the stored pixels, resized with INTER_AREA
    for b in out.values():
        assert (b.box[:, :2] >= 0).all() and (b.box[:, 2] <= 400).all() and (b.box[:, 3] <= 300).all()
    x1, y1, x2, y2 = out["pos"].box[0].astype(int)
    ref = cv2.resize(img[y1:y2, x1:x2], (12, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out["pos"].images[0], ref)


def test_pnet_samples_are_deterministic_per_generator():
    img = noise_image(200, 200, 3)
    faces = np.array([[40, 40, 120, 130]], np.float32)
    a = pnet_samples(img, faces, np.zeros(1, bool), PNetSamplingConfig(), np.random.default_rng([7, 3]))
    b = pnet_samples(img, faces, np.zeros(1, bool), PNetSamplingConfig(), np.random.default_rng([7, 3]))
    for k in a:
        np.testing.assert_array_equal(a[k].box, b[k].box)
        np.testing.assert_array_equal(a[k].images, b[k].images)


def test_crowded_image_cannot_loop_forever():
    """Faces tiling the image: no square of the allowed sizes has IoU < 0.3 with all of them
    only rarely; the bounded rounds return fewer negatives instead of looping."""
    img = noise_image(120, 120)
    g = np.arange(0, 120, 12, dtype=np.float32)
    faces = np.array([[x, y, x + 12, y + 12] for x in g for y in g], np.float32)
    cfg = PNetSamplingConfig(negatives_per_image=50, negative_rounds=3)
    out = pnet_samples(img, faces, np.zeros(len(faces), bool), cfg, np.random.default_rng(0))
    assert len(out["neg"]) <= 50
    check_pnet_batches(out, faces, np.zeros(len(faces), bool), cfg)


def test_small_image_and_no_faces():
    out = pnet_samples(noise_image(20, 20), np.zeros((0, 4)), np.zeros(0, bool), PNetSamplingConfig(),
                       np.random.default_rng(0))
    assert all(len(b) == 0 for b in out.values())  # min(W,H)/2 = 10 < 12: no negative fits
    out = pnet_samples(noise_image(100, 100), np.zeros((0, 4)), np.zeros(0, bool), PNetSamplingConfig(),
                       np.random.default_rng(0))
    assert len(out["neg"]) == 50 and len(out["pos"]) == 0


# ------------------------------------------------------------------------------------------
# landmark samples on a synthetic face
# ------------------------------------------------------------------------------------------

BOX = np.array([100.0, 110.0, 180.0, 190.0])
PTS = np.array([[121.5, 131.0], [158.5, 131.5], [140.0, 153.0], [124.0, 171.0], [156.0, 171.5]])


@pytest.mark.parametrize("style", ["tight", "wider_like"])
def test_landmark_samples_plain_decode_to_the_source_points(style):
    cfg = LandmarkAugConfig(flip_prob=0, rotate_prob=0, box_style=style)
    b = landmark_samples(noise_image(300, 300), BOX, PTS, cfg, np.random.default_rng(0), 24, WiderBoxConfig())
    assert len(b) >= 2 and b.images.shape[1:] == (24, 24, 3)
    assert ((b.landmark > 0) & (b.landmark < 1)).all() and not b.bbox.any()
    for box, lm in zip(b.box, b.landmark):
        np.testing.assert_allclose(decode_points(box, lm), PTS, atol=1e-3)
    if style == "tight":  # random crops have IoU > 0.65 with the reference box
        assert (torch_iou(b.box, BOX[None])[:, 0] > 0.65).all()


def test_landmark_samples_flip_and_rotation():
    img = noise_image(300, 300, 5)
    cfg = LandmarkAugConfig(flip_prob=1.0, rotate_prob=1.0, rotate_degrees=10.0, crops_per_face=3,
                            include_gt_crop=True, box_style="tight")
    b = landmark_samples(img, BOX, PTS, cfg, np.random.default_rng(2), 48)
    plain, mirrored, rotated = 0, 0, 0
    for box, lm, im in zip(b.box, b.landmark, b.images):
        pts = decode_points(box, lm)
        side = box[2] - box[0]
        c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        mirror_pts = decode_points(box, npb.flip_landmarks(lm[None])[0])  # undo the flip
        candidates = {"plain": (pts, False), "mirror": (mirror_pts, True)}
        matched = None
        for name, (p, _) in candidates.items():
            if np.allclose(p, PTS, atol=1e-3):
                matched = name
            for sign in (1, -1):  # OpenCV's angle: counter-clockwise in the image (y down)
                t = math.radians(sign * 10.0)
                rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
                if np.allclose((PTS - c) @ rot.T + c, p, atol=1e-3):
                    matched = "rotated"
        assert matched is not None
        plain += matched == "plain"
        mirrored += matched == "mirror"
        rotated += matched == "rotated"
        if matched == "plain":  # the stored pixels are the crop
            x1, y1, x2, y2 = box.astype(int)
            ref = cv2.resize(img[y1:y2, x1:x2], (48, 48), interpolation=cv2.INTER_AREA if side > 48 else cv2.INTER_LINEAR)
            np.testing.assert_array_equal(im, ref)
        if matched == "mirror":
            x1, y1, x2, y2 = box.astype(int)
            ref = cv2.resize(np.ascontiguousarray(img[y1:y2, x1:x2][:, ::-1]), (48, 48),
                             interpolation=cv2.INTER_AREA if side > 48 else cv2.INTER_LINEAR)
            np.testing.assert_array_equal(im, ref)
    assert plain >= 1 and mirrored == plain and rotated == 4 * plain


def test_landmark_samples_uniform_rotation_angles():
    """rotate_mode uniform: each rotated sample is the face turned by one angle within
    (0, rotate_degrees] either way (recovered from its decoded points), and the angles vary."""
    cfg = LandmarkAugConfig(flip_prob=0.0, rotate_prob=1.0, rotate_degrees=30.0, rotate_mode="uniform",
                            rotate_flip=False, crops_per_face=6, include_gt_crop=True, box_style="tight")
    b = landmark_samples(noise_image(400, 400, 3), BOX + 60, PTS + 60, cfg, np.random.default_rng(4), 48)
    angles = []
    for box, lm in zip(b.box, b.landmark):
        pts = decode_points(box, lm)
        if np.allclose(pts, PTS + 60, atol=1e-3):
            continue
        c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        a, p = (PTS + 60) - c, pts - c
        # the rotation that maps a onto p (least squares over the five points), then check it is exact
        t = math.atan2(float((a[:, 0] * p[:, 1] - a[:, 1] * p[:, 0]).sum()), float((a * p).sum()))
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        np.testing.assert_allclose(a @ rot.T, p, atol=1e-3)
        angles.append(math.degrees(t))
    assert len(angles) >= 4 and all(0 < abs(x) <= 30 + 1e-6 for x in angles)
    assert len({round(abs(x), 3) for x in angles}) > 2  # not two fixed tilts
    # the fixed mode keeps its exact angles and random stream
    fixed = landmark_samples(noise_image(400, 400, 3), BOX + 60, PTS + 60,
                             LandmarkAugConfig(rotate_degrees=30.0, box_style="tight"), np.random.default_rng(4), 48)
    again = landmark_samples(noise_image(400, 400, 3), BOX + 60, PTS + 60,
                             LandmarkAugConfig(rotate_degrees=30.0, rotate_mode="fixed", box_style="tight"), np.random.default_rng(4), 48)
    np.testing.assert_array_equal(fixed.images, again.images)


def test_landmark_samples_drop_small_faces_and_outside_points():
    cfg = LandmarkAugConfig()
    small = np.array([10.0, 10.0, 40.0, 40.0])
    assert len(landmark_samples(noise_image(100, 100), small, PTS * 0 + 20, cfg, np.random.default_rng(0), 12)) == 0
    # a point outside every crop: every sample is dropped
    pts = PTS.copy()
    pts[2] = [290.0, 290.0]
    assert len(landmark_samples(noise_image(300, 300), BOX, pts, LandmarkAugConfig(box_style="tight"),
                                np.random.default_rng(0), 12)) == 0


# ------------------------------------------------------------------------------------------
# the whole generator on a small real subset
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root() -> Path:
    root = data_root()
    if not (root / "face_mask" / "annotations").is_dir() or not (root / "cnn_facepoint").is_dir():
        pytest.skip(f"real data not found at {root} (set MTCNN_DATA)")
    return root


def test_pnet_generator_on_real_subset(real_root, tmp_path):
    cfg = PNetDataConfig(workers=1, out=str(tmp_path))
    cfg.sources = SplitSources(train=[
        SourceConfig(name="face_mask", format="voc", path="{data}/face_mask/annotations", split="train", max_images=12),
        SourceConfig(name="cnn", format="cnn_facepoint", path="{data}/cnn_facepoint/trainImageList.txt",
                     box_style="wider_like", negatives_per_image=0, max_images=6),
    ])
    cfg.landmarks.enabled = False
    summary = generate_pnet(cfg, "train", progress=False)
    assert summary.processed == 18 and not summary.skipped
    r = SampleReader(tmp_path / "pnet_train.h5", expected_size=12)
    counts = r.counts()
    assert counts["pos"] > 20 and counts["part"] > 20 and counts["neg"] > 12 * 40
    # the source annotations, read again and mapped with the config's numbers (not the generator's code)
    masks = {str(x.path): x for x in split_by_name(read_voc_dir(real_root / "face_mask" / "annotations"), "train")[:12]}
    cnn = {str(x.path): x for x in read_cnn_facepoint(real_root / "cnn_facepoint" / "trainImageList.txt")[:6]}
    wb = cfg.wider_box
    truth = {}
    for p, rec in masks.items():
        truth[p] = (rec.boxes.astype(np.float64), rec.ignore)
    for p, rec in cnn.items():
        x1, y1, x2, y2 = rec.boxes[0].astype(np.float64)
        w, h = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2
        truth[p] = (np.array([[cx - wb.widen * w / 2, y1 - wb.top * h, cx + wb.widen * w / 2, y2 + wb.bottom * h]]),
                    np.zeros(1, bool))
    sources = r.sources()
    s = cfg.sampling
    for kind in ("pos", "part", "neg"):
        d = r.get(kind, np.arange(r.len(kind)))
        assert (d["label"] == {"pos": 1, "part": -1, "neg": 0}[kind]).all()
        for box, off, src in zip(d["box"].astype(np.float64), d["bbox"], d["source"]):
            faces, ignore = truth[sources[src]]
            iou = torch_iou(box[None], faces)[0]
            if kind == "neg":
                assert iou.max() < s.neg_iou
                assert not off.any()
                continue
            gt = box + off.astype(np.float64) * (box[2] - box[0])
            j = int(np.abs(faces - gt).max(axis=1).argmin())
            assert np.abs(faces[j] - gt).max() <= 1e-5 * (box[2] - box[0]) + 1e-4, "offsets decode to a face box"
            assert not ignore[j]
            if kind == "pos":
                assert iou[j] >= s.pos_iou
            else:
                assert s.part_iou <= iou[j] < s.pos_iou
    # pixels: a stored crop is the resized source region
    d = r.get("pos", [0])
    x1, y1, x2, y2 = d["box"][0].astype(int)
    img = read_image_rgb(sources[int(d["source"][0])])
    np.testing.assert_array_equal(d["images"][0], cv2.resize(img[y1:y2, x1:x2], (12, 12), interpolation=cv2.INTER_AREA))


def test_landmark_generator_on_real_subset(real_root, tmp_path):
    cfg = LandmarkDataConfig(workers=1, out=str(tmp_path), size=24)
    cfg.sources = SplitSources(train=[SourceConfig(format="cnn_facepoint", path="{data}/cnn_facepoint/trainImageList.txt",
                                                   max_images=8)])
    cfg.aug.flip_prob = 0.0
    cfg.aug.rotate_prob = 0.0
    generate_landmarks(cfg, "train", progress=False)
    r = SampleReader(tmp_path / "landmark24_train.h5", expected_size=24)
    assert r.counts()["pos"] == r.counts()["neg"] == 0 and r.len("landmark") >= 8
    d = r.get("landmark", np.arange(r.len("landmark")))
    assert (d["label"] == -2).all() and not d["bbox"].any()
    assert ((d["landmark"] > 0) & (d["landmark"] < 1)).all()
    truth = {str(x.path): x.landmarks[0].astype(np.float64)
             for x in read_cnn_facepoint(data_root() / "cnn_facepoint" / "trainImageList.txt")[:8]}
    sources = r.sources()
    for box, lm, src in zip(d["box"], d["landmark"], d["source"]):
        np.testing.assert_allclose(decode_points(box, lm), truth[sources[src]], atol=2e-3)


def test_landmark_samples_keep_a_missing_point_missing():
    # WebFaces' mouth corners are NaN: the samples keep them NaN (mirrored: the other corner's
    # slot, still NaN), every known point decodes as before; without the eyes there is no sample.
    partial = PTS.copy()
    partial[3:] = np.nan
    cfg = LandmarkAugConfig(flip_prob=1.0, rotate_prob=0, box_style="tight")
    b = landmark_samples(noise_image(300, 300), BOX, partial, cfg, np.random.default_rng(0), 24)
    full = landmark_samples(noise_image(300, 300), BOX, PTS, cfg, np.random.default_rng(0), 24)
    assert len(b) == len(full) and len(b) >= 2
    lm = b.landmark.reshape(-1, 5, 2)
    assert np.isnan(lm[:, 3:]).all() and np.isfinite(lm[:, :3]).all()
    np.testing.assert_array_equal(lm[:, :3], full.landmark.reshape(-1, 5, 2)[:, :3])
    no_eye = PTS.copy()
    no_eye[1] = np.nan
    assert len(landmark_samples(noise_image(300, 300), BOX, no_eye, cfg, np.random.default_rng(0), 24)) == 0
