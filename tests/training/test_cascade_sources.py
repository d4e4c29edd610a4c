"""Extra training faces for the Sun cascade (``sources`` in landmarks_cascade*.yaml): a tiny
CNN_FacePoint list plus a 300-W-like ``.pts`` folder (1-based 68 points), reduced to five points
and boxed from them, held in memory beside the list's faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtcnn.config.data import SourceConfig
from mtcnn.io import ImageReadError
from mtcnn.training.cascade_run import load_training_faces, source_counts
from mtcnn.training.cascade_task import CascadeTrainConfig

SIDE = 120


def _photo(path: Path, rng) -> None:
    cv2.imwrite(str(path), rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))


def _face_points(rng) -> np.ndarray:
    """68 0-based iBUG points of a face filling the middle of the photo."""
    p = rng.uniform(35, 85, (68, 2))
    p[36:42] = rng.uniform(40, 52, (6, 2)) * [1, 0.6] + [0, 20]   # the left eye's six points, upper left
    p[42:48] = rng.uniform(68, 80, (6, 2)) * [1, 0.6] + [0, -10]  # the right eye's, upper right
    return np.round(p, 3)


def _folders(root: Path, rng, list_faces: int = 6, pts_faces: int = 5) -> dict[str, np.ndarray]:
    (root / "cfp").mkdir(parents=True)
    lines = []
    for k in range(list_faces):
        _photo(root / "cfp" / f"f{k}.jpg", rng)
        five = rng.uniform(40, 80, (5, 2))
        # left right top bottom, then the five points
        lines.append(f"f{k}.jpg 30 90 25 95 " + " ".join(f"{v:.2f}" for v in five.reshape(-1)))
    (root / "cfp" / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "pts").mkdir()
    written = {}
    for k in range(pts_faces):
        p = _face_points(rng)
        _photo(root / "pts" / f"image_{k:04d}.png", rng)
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in p + 1.0)  # 300-W writes 1-based points
        (root / "pts" / f"image_{k:04d}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
        written[str(root / "pts" / f"image_{k:04d}.png")] = p
    return written


def _cfg(root: Path, **kw) -> CascadeTrainConfig:
    src = SourceConfig(name="w300ish", format="pts68", path=str(root / "pts"), points="five", boxes="from_points")
    return CascadeTrainConfig(train_list=str(root / "cfp" / "list.txt"), cache_dir=str(root / "cache"),
                              out=str(root / "run"), sources=[src], **kw)


def test_source_faces_join_the_list_and_map_back_to_their_five_points(tmp_path):
    written = _folders(tmp_path, np.random.default_rng(0))
    train, held = load_training_faces(_cfg(tmp_path, holdout_every=2), progress=False)
    # Every 2nd face of each set held out: list 6 -> 3 + 3, source 5 -> 3 + 2.
    assert (len(train), len(held)) == (6, 5)
    found = {}
    for data in (train, held):
        image_points = data.canvas_origin[:, None] + data.points / data.canvas_scale[:, None, None]
        for path, p in zip(data.paths, image_points):
            found[path] = p.numpy()
    assert set(written) <= set(found)
    for path, p68 in written.items():
        # The oracle: eye centres are the means of the six eye points, nose tip 30, mouth corners 48 / 54.
        five = np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])
        np.testing.assert_allclose(found[path], five, atol=2e-3)


def test_source_cache_is_reused_and_follows_the_records(tmp_path):
    written = _folders(tmp_path, np.random.default_rng(1))
    cfg = _cfg(tmp_path)
    first, _ = load_training_faces(cfg, progress=False)
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(caches) == 2  # the list's and the source's
    again, _ = load_training_faces(cfg, progress=False)
    assert torch.equal(first.canvases, again.canvases) and torch.equal(first.points, again.points)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == caches
    # A moved jaw point leaves the five points and the cache as they are; a moved eye point (iBUG
    # 36, line 3 + 36 of the file) is a different source: a new cache file, not the stale faces.
    path = Path(next(iter(written))).with_suffix(".pts")
    for point, count in ((0, 2), (36, 3)):
        lines = path.read_text().splitlines()
        lines[3 + point] = "50.000 50.000"
        path.write_text("\n".join(lines) + "\n")
        load_training_faces(cfg, progress=False)
        assert len(list((tmp_path / "cache").iterdir())) == count
    assert source_counts(cfg) == {str(tmp_path / "cfp" / "list.txt"): 6, "w300ish": 5}


def test_a_source_without_five_point_faces_is_one_clear_error(tmp_path):
    _folders(tmp_path, np.random.default_rng(2))
    cfg = _cfg(tmp_path)
    cfg.sources = [SourceConfig(name="boxes_only", format="pts68", path=str(tmp_path / "pts"))]  # 68 points, not five
    with pytest.raises(ImageReadError, match=r"pts: no face with five finite points \(a 68-point source needs points: five\)"):
        load_training_faces(cfg, progress=False)
