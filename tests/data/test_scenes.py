"""Composite scenes: determinism, geometry of pasted faces and landmarks, WIDER round trip, resume.

Most tests use small synthetic faces and backgrounds written into tmp_path (always run); the
last one runs on the real CNN_FacePoint faces and nonface_scenes (skipped without the data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn.config import data_root
from mtcnn.data.annotations import read_wider
from mtcnn.config.data import SceneConfig
from mtcnn.data.generate import GenerationError
from mtcnn.ops.np_boxes import box_iou as np_box_iou
from mtcnn.data.scenes import (
    ANNOTATION_NAME,
    LANDMARKS_NAME,
    blur_sigma,
    compose_scene,
    generate_scenes,
    list_backgrounds,
    load_face_pool,
)
from mtcnn.io import read_image_rgb, write_image_rgb

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
SWAP = [1, 0, 2, 4, 3]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """10 backgrounds and 6 'faces': a skin ellipse with a coloured dot on each landmark."""
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    bg = root / "bg"
    for i in range(10):
        h, w = (300, 400) if i % 2 else (450, 600)
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
        write_image_rgb(bg / f"bg{i:02d}.png", img)
    lines = []
    for i in range(6):
        img = np.full((220, 200, 3), (40 + 20 * i, 90, 60), np.uint8)
        cv2.ellipse(img, (100, 115), (55, 70), 0, 0, 360, (225, 180, 150), -1)
        left, right, top, bottom = 55.0, 145.0, 75.0, 165.0
        pts = [(80, 100), (120, 100), (100, 125), (84, 148), (116, 148)]
        for (x, y), c in zip(pts, COLOURS):
            cv2.circle(img, (x, y), 4, c, -1)
        path = root / "faces" / f"face{i}.png"
        write_image_rgb(path, img)
        coords = " ".join(f"{x} {y}" for x, y in pts)
        lines.append(f"{path} {left} {right} {top} {bottom} {coords}")
    (root / "faces.txt").write_text("\r\n".join(lines) + "\r\n")
    return {"root": root, "bg": bg, "faces": root / "faces.txt"}


def config(synthetic, out: Path, **kw) -> SceneConfig:
    base = dict(backgrounds=str(synthetic["bg"]), faces_train=str(synthetic["faces"]),
                faces_val=str(synthetic["faces"]), out=str(out), workers=1, num_scenes=4)
    base.update(kw)
    return SceneConfig(**base)


def test_same_seed_gives_identical_files_whatever_the_worker_count(synthetic, tmp_path):
    a = generate_scenes(config(synthetic, tmp_path / "a", workers=1), progress=False)
    b = generate_scenes(config(synthetic, tmp_path / "b", workers=2), progress=False)
    assert a.scenes == b.scenes == 4 and a.faces > 4
    for name in (ANNOTATION_NAME, LANDMARKS_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for i in range(4):
        np.testing.assert_array_equal(read_image_rgb(tmp_path / "a" / f"images/{i:06d}.jpg"),
                                      read_image_rgb(tmp_path / "b" / f"images/{i:06d}.jpg"))
    generate_scenes(config(synthetic, tmp_path / "c", seed=1), progress=False)
    assert (tmp_path / "c" / ANNOTATION_NAME).read_bytes() != (tmp_path / "a" / ANNOTATION_NAME).read_bytes()


def test_faces_inside_image_and_wider_file_reads_back(synthetic, tmp_path):
    cfg = config(synthetic, tmp_path, num_scenes=6)
    generate_scenes(cfg, progress=False)
    recs = read_wider(tmp_path / ANNOTATION_NAME, landmarks_path=tmp_path / LANDMARKS_NAME)
    assert [r.path for r in recs] == [tmp_path / f"images/{i:06d}.jpg" for i in range(6)]
    for r in recs:
        img = read_image_rgb(r.path)
        assert img.shape == (480, 640, 3)
        b = r.boxes.astype(np.float64)
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 3] <= 480).all()
        w = b[:, 2] - b[:, 0]
        assert (w >= cfg.min_face - 1e-3).all() and (w <= cfg.max_face_fraction * 480 + 1e-3).all()
        assert r.landmarks.shape == (r.num_faces, 5, 2) and np.isfinite(r.landmarks).all()
        lm = r.landmarks
        assert ((lm[:, :, 0] >= b[:, None, 0]) & (lm[:, :, 0] <= b[:, None, 2])).all()
        assert ((lm[:, :, 1] >= b[:, None, 1]) & (lm[:, :, 1] <= b[:, None, 3])).all()
        if r.num_faces > 1:
            iou = np_box_iou(b, b)
            np.fill_diagonal(iou, 0)
            assert iou.max() <= cfg.max_iou + 1e-9
    assert (tmp_path / "config.resolved.yaml").is_file()


def test_recorded_landmarks_sit_on_the_pasted_dots(synthetic, tmp_path):
    """No colour / blur matching and big faces: the pixel under each recorded point has the
    colour of its dot, the swapped one when the face was mirrored."""
    cfg = config(synthetic, tmp_path, min_face=110.0, max_face_fraction=0.5, faces_per_scene=(2, 3),
                 color_match=(0.0, 0.0), color_match_ab=(0.0, 0.0), blur_match=False, flip_prob=0.5)
    backgrounds = list_backgrounds(synthetic["bg"], "train")
    pool = load_face_pool(synthetic["faces"], cfg.wider_box)
    flips = set()
    for index in range(6):
        scene = compose_scene(index, cfg, "train", backgrounds, pool)
        for pts, face in zip(scene.landmarks, scene.faces):
            flips.add(face["flip"])
            for j, (x, y) in enumerate(pts):
                px = scene.image[int(math.floor(y)), int(math.floor(x))].astype(int)
                want = np.array(COLOURS[SWAP[j] if face["flip"] else j])
                assert np.abs(px - want).max() < 60, (index, j, face["flip"], px)
    assert flips == {True, False}


def test_canvas_null_keeps_background_size(synthetic, tmp_path):
    generate_scenes(config(synthetic, tmp_path, canvas=None, num_scenes=3), progress=False)
    sizes = {read_image_rgb(p).shape[:2] for p in sorted((tmp_path / "images").glob("*.jpg"))}
    assert sizes <= {(300, 400), (450, 600)}


def test_resume_skips_finished_scenes_and_refuses_other_settings(synthetic, tmp_path):
    first = generate_scenes(config(synthetic, tmp_path, num_scenes=3), progress=False)
    text3 = (tmp_path / ANNOTATION_NAME).read_text()
    second = generate_scenes(config(synthetic, tmp_path, num_scenes=5), preview=True, progress=False)
    assert (first.made, second.made, second.resumed, second.scenes) == (3, 2, 3, 5)
    assert (tmp_path / ANNOTATION_NAME).read_text().startswith(text3)
    assert second.preview is not None and read_image_rgb(second.preview).shape[1] == 3 * 640
    # the same scenes as a fresh 5-scene run
    generate_scenes(config(synthetic, tmp_path / "fresh", num_scenes=5), progress=False)
    assert (tmp_path / "fresh" / ANNOTATION_NAME).read_text() == (tmp_path / ANNOTATION_NAME).read_text()
    with pytest.raises(GenerationError, match="other settings"):
        generate_scenes(config(synthetic, tmp_path, num_scenes=5, max_iou=0.5), progress=False)


def test_background_split_follows_the_name_rule(synthetic):
    train = list_backgrounds(synthetic["bg"], "train")
    val = list_backgrounds(synthetic["bg"], "val")
    assert [p.name for p in train] == [f"bg{i:02d}.png" for i in range(8)]
    assert [p.name for p in val] == ["bg08.png", "bg09.png"]


def test_blur_sigma():
    assert blur_sigma(1.0, 0.3, 0.5) == 0.0  # background not enlarged: nothing to match
    assert blur_sigma(2.0, 3.0, 0.5) == 0.0  # face enlarged more: already blurrier
    assert blur_sigma(4.0, 0.5, 0.5) == pytest.approx(math.sqrt(4.0 - 0.25))


def test_real_scenes(tmp_path):
    root = data_root()
    if not (root / "nonface_scenes").is_dir() or not (root / "cnn_facepoint" / "trainImageList.txt").is_file():
        pytest.skip(f"real data not found at {root} (set MTCNN_DATA)")
    for split in ("train", "val"):
        cfg = SceneConfig(split=split, num_scenes=3, workers=1, out=str(tmp_path / split))
        s = generate_scenes(cfg, progress=False)
        again = generate_scenes(SceneConfig(split=split, num_scenes=3, workers=2, out=str(tmp_path / f"{split}2")),
                                progress=False)
        assert s.scenes == again.scenes == 3 and s.faces > 3
        assert (tmp_path / split / ANNOTATION_NAME).read_bytes() == (tmp_path / f"{split}2" / ANNOTATION_NAME).read_bytes()
        recs = read_wider(tmp_path / split / ANNOTATION_NAME, landmarks_path=tmp_path / split / LANDMARKS_NAME)
        for r in recs:
            assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= 640).all() and (r.boxes[:, 3] <= 480).all()
            assert np.isfinite(r.landmarks).all()
        # provenance: val scenes use val backgrounds and test-list faces only
        entries = [json.loads(line) for line in (tmp_path / split / "scenes_manifest.jsonl").read_text().splitlines()]
        allowed = {str(p) for p in list_backgrounds(root / "nonface_scenes", split)}
        assert all(e["background"] in allowed for e in entries)
        pool = load_face_pool(root / "cnn_facepoint" / ("trainImageList.txt" if split == "train" else "testImageList.txt"),
                              cfg.wider_box)
        paths = set(pool.paths)
        assert all(f["path"] in paths for e in entries for f in e["faces"])
