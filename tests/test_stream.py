import json

import cv2
import numpy as np
import pytest
import torch

from mtcnn import MTCNN
from mtcnn.io import ImageReadError
from mtcnn.nets import build_net
from mtcnn.stream import detect_stream


def _noise_clip(path, frames: int, seed: int):
    """A 64x48 MJPG clip of random frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _detector_that_finds_faces_everywhere() -> MTCNN:
    torch.manual_seed(0)
    nets = {n: build_net(n) for n in ("pnet", "rnet", "onet")}
    return MTCNN(nets=nets, thresholds=(0.0, 0.0, 0.0), min_face_size=24, device="cpu")


def test_video_frames_are_batched_and_written(tmp_path):
    path = _noise_clip(tmp_path / "clip.avi", frames=7, seed=0)
    detector = _detector_that_finds_faces_everywhere()
    stats = detect_stream(detector, path, json_path=tmp_path / "f.jsonl", out_video=tmp_path / "o.mp4", batch_size=3, every=2)
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert stats["frames"] == 4 and [r["frame"] for r in lines] == [0, 2, 4, 6]
    assert stats["faces"] == sum(len(r["faces"]) for r in lines) > 0
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_missing_video_is_one_clear_error(tmp_path):
    with pytest.raises(ImageReadError, match="missing.mp4: cannot open video"):
        detect_stream(None, tmp_path / "missing.mp4")


def test_video_writes_aligned_crops(tmp_path):
    path = _noise_clip(tmp_path / "clip.avi", frames=3, seed=1)
    detector = _detector_that_finds_faces_everywhere()
    stats = detect_stream(detector, path, json_path=tmp_path / "f.jsonl", crops_dir=tmp_path / "crops", crop_size=(96, 112))
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    expected = sorted(f"frame{r['frame']:06d}_{k}.png" for r in lines for k in range(len(r["faces"])))
    assert stats["faces"] > 0 and sorted(p.name for p in (tmp_path / "crops").iterdir()) == expected
    assert cv2.imread(str(tmp_path / "crops" / expected[0])).shape == (112, 96, 3)
