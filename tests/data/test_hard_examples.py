import json
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import torch

from mtcnn.config import ConfigError, from_dict
from mtcnn.data.annotations import ImageAnnotation, write_wider
from mtcnn.data.hard_examples import MiningConfig, label_windows, mine_hard_examples
from mtcnn.nets import build_net
from mtcnn.ops.coding import decode_boxes
from mtcnn.weights import NET_NAMES, save_bundle
from tests_helpers import PROJECT_ROOT, bright_face_photo


def test_label_windows_rules():
    cfg = MiningConfig(max_negatives_per_image=2)
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0], [300.0, 50.0, 340.0, 90.0]])
    ignore = torch.tensor([False, True])
    squares = torch.tensor([
        [100.0, 100.0, 200.0, 200.0],  # pos, IoU 1
        [110.0, 110.0, 210.0, 210.0],  # IoU 8100/11900 = 0.68: pos
        [130.0, 130.0, 230.0, 230.0],  # IoU 4900/15100 = 0.32: between neg and part, dropped
        [120.0, 100.0, 220.0, 200.0],  # IoU 8000/12000 = 0.667: pos
        [140.0, 100.0, 240.0, 200.0],  # IoU 6000/14000 = 0.43: part
        [300.0, 50.0, 340.0, 90.0],    # matches an ignored face: dropped
        [400.0, 400.0, 450.0, 450.0],  # neg (score 0.2)
        [500.0, 400.0, 550.0, 450.0],  # neg (score 0.9)
        [500.0, 300.0, 550.0, 350.0],  # neg (score 0.5)
        [590.0, 400.0, 610.0, 420.0],  # outside the 600-wide image: dropped
        [0.0, 0.0, 10.0, 10.0],        # smaller than min_box_size: dropped
    ])  # fmt: skip
    scores = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.9, 0.5, 0.9, 0.9])
    out = label_windows(squares, scores, gt, ignore, 600, 500, cfg)
    assert sorted(out["pos"][0].tolist()) == [0, 1, 3]
    assert out["part"][0].tolist() == [4]
    assert out["neg"][0].tolist() == [7, 8]  # the two highest-scoring negatives
    pos_idx, pos_off = out["pos"]
    assert torch.allclose(decode_boxes(squares[pos_idx], pos_off), gt[0].expand(3, 4), atol=1e-4)


def test_config_rules():
    with pytest.raises(ConfigError, match="test_mode"):
        from_dict(MiningConfig, {"test_mode": "ONet"})
    with pytest.raises(ConfigError, match="did you mean 'max_negatives_per_image'"):
        from_dict(MiningConfig, {"max_negative_per_image": 3})


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Two synthetic photos with bright square 'faces', a WIDER file, and random-weight nets."""
    root = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(0)
    records = []
    for k in range(3):
        boxes = [[20 + 30 * k, 30, 80 + 30 * k, 90], [120, 60, 170, 110]]
        records.append(bright_face_photo(root / "images" / f"img{k}.jpg", (160, 200), boxes, 220, rng))
    (root / "images" / "broken.jpg").write_bytes(b"broken")
    records.append(ImageAnnotation(path=root / "images" / "broken.jpg", boxes=np.zeros((0, 4), np.float32),
                                   landmarks=np.zeros((0, 0, 2), np.float32), ignore=np.zeros(0, bool)))
    write_wider(root / "gt.txt", records, root / "images")
    torch.manual_seed(0)
    save_bundle({n: build_net(n) for n in NET_NAMES}, root / "nets.pt")
    return root


def _config(root, mode):
    return from_dict(MiningConfig, {
        "test_mode": mode, "pnet": str(root / "nets.pt"), "rnet": str(root / "nets.pt"), "out": str(root / "out" / "{stage}"),
        "workers": 0, "landmarks": False, "min_box_size": 12,
        "detector": {"thresholds": [0.0, 0.0], "min_face_size": 24},
        "sources": {"train": [{"format": "wider", "path": str(root / "gt.txt"), "images_root": str(root / "images")}]},
    })  # fmt: skip


@pytest.mark.parametrize("mode,stage,size", [("PNet", "rnet", 24), ("RNet", "onet", 48)])
def test_mined_samples_obey_the_iou_rules(tiny_world, mode, stage, size):
    summary = mine_hard_examples(_config(tiny_world, mode), "train", overwrite=True, progress=False)
    assert summary.path.name == f"{stage}_train.h5" and len(summary.skipped) == 1
    assert "broken.jpg" in summary.skipped[0]
    gt = {f"img{k}.jpg": np.array([[20 + 30 * k, 30, 80 + 30 * k, 90], [120, 60, 170, 110]], np.float32) for k in range(3)}
    with h5py.File(summary.path) as f:
        assert f.attrs["size"] == size and "checkpoint_sha256" in f.attrs
        sources = [s.decode() if isinstance(s, bytes) else s for s in f["sources"][:]]
        total = 0
        for kind in ("pos", "part", "neg"):
            g = f[kind]
            assert g["images"].shape[1:] == (size, size, 3)
            boxes, src = g["box"][:], g["source"][:]
            total += len(boxes)
            per_image = {}
            for box, s, off in zip(boxes, src, g["bbox"][:]):
                faces = gt[sources[s].rsplit("/", 1)[1]]
                iw = np.clip(np.minimum(box[2], faces[:, 2]) - np.maximum(box[0], faces[:, 0]), 0, None)
                ih = np.clip(np.minimum(box[3], faces[:, 3]) - np.maximum(box[1], faces[:, 1]), 0, None)
                inter = iw * ih
                iou = inter / ((box[2] - box[0]) * (box[3] - box[1]) + (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]) - inter)
                if kind == "neg":
                    assert iou.max() < 0.3
                    per_image[s] = per_image.get(s, 0) + 1
                else:
                    assert iou.max() >= (0.65 if kind == "pos" else 0.4)
                    # Offsets are relative to the crop's own width and height (truncated squares
                    # can be a pixel off square), exactly what decode_boxes undoes.
                    w, h = box[2] - box[0], box[3] - box[1]
                    assert abs(w - h) <= 1
                    assert np.allclose(box + off * np.array([w, h, w, h]), faces[iou.argmax()], atol=1e-3)
            assert all(v <= 60 for v in per_image.values())
        assert total > 0
    report = json.loads((summary.path.parent / f"{stage}_train.recall.json").read_text())
    assert report["recall"]["faces"] == 6 and 0 <= report["recall"]["recall_iou_0.65"] <= 1


def test_cli_errors_are_one_line(tiny_world, tmp_path):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "gen_hard_example.py"), "--test_mode", "PNet",
         f"pnet={tmp_path / 'missing.pt'}", "--split", "train"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1  # a missing input file: 1, as a missing --weights in mtcnn-detect
    assert result.stderr.strip().startswith("error:") and "missing.pt" in result.stderr and result.stderr.strip().count("\n") == 0
    bad = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "gen_hard_example.py"), "--test_mode", "PNet", "pos_iou=1.5"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "pos_iou=1.5 is out of range" in bad.stderr  # usage: 2, missing input: 1


def test_mining_resumes_after_a_crash_without_duplicates(tiny_world, monkeypatch):
    import mtcnn.data.hard_examples as he

    def config(out):
        cfg = _config(tiny_world, "PNet")
        return type(cfg)(**{**cfg.__dict__, "out": str(tiny_world / out / "{stage}"), "batch_images": 1})

    reference = mine_hard_examples(config("uninterrupted"), "train", progress=False)
    real_batch = he._mine_batch
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(he, "_mine_batch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        mine_hard_examples(config("crashed"), "train", progress=False)
    monkeypatch.setattr(he, "_mine_batch", real_batch)
    resumed = mine_hard_examples(config("crashed"), "train", progress=False)
    assert resumed.counts == reference.counts
    assert resumed.recall == reference.recall
    with h5py.File(reference.path) as a, h5py.File(resumed.path) as b:
        for kind in ("pos", "part", "neg"):
            assert np.array_equal(a[kind]["images"][:], b[kind]["images"][:])
            assert np.array_equal(a[kind]["box"][:], b[kind]["box"][:])


def test_one_default_place_for_runs_chains_training_and_mining(tmp_path, monkeypatch):
    """train_pnet's default output is where the miner looks, and the miner writes where
    train_rnet reads, from any working directory."""
    from mtcnn.config import default_config, load_config, resolve_path
    from mtcnn.config.train import TrainConfig

    monkeypatch.setenv("MTCNN_GEN", str(tmp_path / "gen"))
    monkeypatch.delenv("MTCNN_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    pnet_run = load_config(TrainConfig, default_config("train_pnet.yaml"))
    rnet_run = load_config(TrainConfig, default_config("train_rnet.yaml"))
    mining = load_config(MiningConfig, default_config("mine.yaml"))
    assert resolve_path(pnet_run.out) / "pnet.pt" == resolve_path(mining.pnet) == tmp_path / "gen" / "runs" / "pnet" / "pnet.pt"
    mined = resolve_path(mining.out.replace("{stage}", "rnet")) / "rnet_train.h5"
    assert [resolve_path(p) for p in rnet_run.data.train] == [mined]
    monkeypatch.setenv("MTCNN_RUNS", str(tmp_path / "elsewhere"))
    assert resolve_path(mining.pnet) == resolve_path(pnet_run.out) / "pnet.pt" == tmp_path / "elsewhere" / "pnet" / "pnet.pt"
    # the miner's advice when the checkpoint is missing: train it, or point at it
    from mtcnn.data.generate import GenerationError

    with pytest.raises(GenerationError) as err:
        mine_hard_examples(mining, "train", progress=False)
    text = str(err.value)
    assert "train_models/train_pnet.py" in text and "--pnet" in text and "MTCNN_RUNS" in text
    assert "facenet" not in text and "--weights" not in text
