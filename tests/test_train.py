"""Training loop: loss goes down, outputs and checkpoints, bitwise resume, overrides, metrics.

Everything runs on tiny synthetic sample files (a bright blob on dark noise is a "face", its
shift gives the box offsets and the landmarks), on CPU with one thread and no loader workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtcnn.config import ConfigError, default_config, from_dict, load_config
from mtcnn.data.datasets import MixedBatchLoader
from mtcnn.data.h5 import SampleReader, SampleWriter
from mtcnn.commands.train import main
from mtcnn.config.train import TrainConfig
from mtcnn.data.readers import InMemoryReader, MultiFileReader, open_samples
from mtcnn.errors import DataError
from mtcnn.training import PiecewiseLR, parameter_groups, plot_training_curves, read_metrics, train
from mtcnn.training.loop import DEBUG_EXIT_CODE
from mtcnn.training.validation import Validator
from mtcnn.weights import load_net

ROOT = Path(__file__).resolve().parent.parent
COUNTS = {"pos": 120, "part": 120, "neg": 360, "landmark": 120}
TEMPLATE = np.array([0.3, 0.35, 0.7, 0.35, 0.5, 0.55, 0.35, 0.75, 0.65, 0.75], np.float32)


def make_sample_file(path, size=12, counts=COUNTS, seed=0, kinds=None):
    """Learnable synthetic samples: faces are a bright blob shifted by d, negatives are noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def noise(n):
        return rng.integers(0, 100, (n, size, size, 3)).astype(np.float32)

    def blob(n, shift):
        d = rng.uniform(-shift, shift, (n, 2)).astype(np.float32)  # in crop units
        c = (size - 1) / 2 + d * size
        g = np.exp(-((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2) / (2 * (size / 4) ** 2))
        img = np.clip(noise(n) + 180 * g[..., None], 0, 255).astype(np.uint8)
        return img, d

    with SampleWriter(path, size, {"seed": seed, "synthetic": True}, chunk=64) as w:
        for kind in kinds or COUNTS:
            n = counts[kind]
            if kind == "neg":
                w.add("neg", noise(n).astype(np.uint8))
                continue
            img, d = blob(n, 0.1 if kind != "part" else 0.3)
            if kind == "landmark":
                lmk = TEMPLATE[None] + np.tile(d, 5)
                w.add("landmark", img, landmark=lmk)
            else:
                w.add(kind, img, bbox=-np.concatenate([d, d], axis=1))
    return Path(path)


@pytest.fixture(scope="module")
def pnet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pnet_samples")
    return make_sample_file(d / "pnet_train.h5", seed=1), make_sample_file(d / "pnet_val.h5", seed=2)


@pytest.fixture(scope="module")
def onet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onet_samples")
    counts = {"pos": 40, "part": 40, "neg": 100, "landmark": 40}
    return (make_sample_file(d / "onet_train.h5", 48, counts, seed=3),
            make_sample_file(d / "onet_val.h5", 48, counts, seed=4))


def config_dict(files, out, net="pnet", **extra):
    train_file, val_file = files
    cfg = {
        "net": net, "out": str(out), "seed": 7, "device": "cpu", "threads": 1,
        "epochs": 2, "steps_per_epoch": 4, "batch_size": 48 if net == "pnet" else 12,
        "data": {"train": [str(train_file)], "val": [str(val_file)], "num_workers": 0},
        "optim": {"lr": 0.02, "lr_boundaries": [1]},
        "val": {"num_images": 4},
        "log": {"tensorboard": False, "progress": False, "every_steps": 2},
        "checkpoint": {"every_steps": 2},
    }
    for key, value in extra.items():
        node = cfg
        *path, last = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return cfg


def make_config(files, out, net="pnet", **extra) -> TrainConfig:
    return from_dict(TrainConfig, config_dict(files, out, net, **extra))


def script(net, *args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "train_models" / f"train_{net}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------


def test_short_run_reduces_loss_and_writes_everything(pnet_files, tmp_path):
    out = tmp_path / "run"
    cfg = make_config(pnet_files, out, epochs=4, steps_per_epoch=10, **{
        "optim.lr": 0.05, "optim.lr_boundaries": [3], "log.tensorboard": True, "checkpoint.every_steps": 0})
    final = train(cfg)
    assert final == out / "pnet.pt"
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    first, last = records[0], records[-1]
    assert last["train"]["loss"] < 0.6 * first["train"]["loss"], (first["train"], last["train"])
    assert last["val"]["loss"] < first["val"]["loss"]
    v = last["val"]
    assert v["threshold"] == 0.6 and v["n_pos"] == 120 and v["n_neg"] == 360 and v["n_landmark"] == 120
    assert v["recall"] > 0.9 and v["fpr"] < 0.1 and v["accuracy"] > 0.9, v
    for key in ("box_mae", "landmark_error", "landmark_nme", "loss_cls", "loss_box", "loss_landmark"):
        assert np.isfinite(v[key]), key
    # LR: x0.1 from epoch 3 (step 30) on.
    assert records[1]["lr"] == pytest.approx(0.05) and last["lr"] == pytest.approx(0.005)
    # The final checkpoint is in the detector's format; last.pt holds the whole state.
    net = load_net(load_state(final), "pnet", str(final))
    assert isinstance(net, nn.Module)
    state = load_state(out / "last.pt")
    assert state["global_step"] == 40 and state["epochs_completed"] == 4
    assert {"model", "optimizer", "scheduler", "scaler", "loader", "rng", "config"} <= set(state)
    assert state["loader"]["epoch"] == 4 and state["loader"]["step"] == 0
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["epochs"] == 4 and resolved["loss"]["weights"] == {"cls": 1.0, "box": 0.5, "landmark": 0.5}
    assert list((out / "tb").glob("events.out.tfevents.*"))
    png = plot_training_curves(out / "metrics.jsonl", tmp_path / "curves.png")
    assert png.stat().st_size < 200_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("net,stop,workers", [("pnet", 4, 0), ("onet", 5, 1)],
                         ids=["pnet-at-epoch-end", "onet-mid-epoch-dropout-worker"])
def test_killed_run_resumes_bitwise(net, stop, workers, pnet_files, onet_files, tmp_path):
    files = pnet_files if net == "pnet" else onet_files
    extra = {"data.num_workers": workers, "data.cache_mb": 0 if net == "pnet" else 1024}  # HDF5 reads / RAM
    full = train(make_config(files, tmp_path / "full", net, **extra))
    # The same run, hard-killed (os._exit) right after the checkpoint of step `stop`, in a subprocess.
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict(files, tmp_path / "cut", net, **extra)))
    r = script(net, "--config", cfg_file, f"debug.stop_after_steps={stop}")
    assert r.returncode == DEBUG_EXIT_CODE, r.stderr[-2000:]
    assert not (tmp_path / "cut" / f"{net}.pt").exists()
    assert load_state(tmp_path / "cut" / "last.pt")["global_step"] == stop
    # O-Net: dropout consumes the torch RNG, and a DataLoader worker iterator draws its seed from it.
    resumed = train(make_config(files, tmp_path / "cut", net, **extra), resume=True)
    a, b = load_state(full)["state_dict"], load_state(resumed)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = load_state(tmp_path / "full" / "last.pt"), load_state(tmp_path / "cut" / "last.pt")
    for group_a, group_b in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])
    ra, rb = read_metrics(tmp_path / "full" / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["epoch"] for r in rb] == [1, 2]
    assert [r["val"] for r in ra] == [r["val"] for r in rb]
    for x, y in zip(ra, rb):
        assert x["train"] == pytest.approx(y["train"])


@pytest.mark.parametrize("override,expected", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
    ("loss.ohem_keep_ratio=1.5", "loss.ohem_keep_ratio=1.5 is out of range: must be within [0.0, 1.0]"),
    ("data.oversample=[{pattern: '*/face_mask/*', factor: 0}]",
     "data.oversample[0].factor=0 is out of range: must be within [1, 1000]"),
    ("data.oversample=[{factor: 3}]", "data.oversample[0]"),
])
def test_script_rejects_bad_overrides_before_any_work(override, expected, tmp_path):
    out = tmp_path / "never"
    r = script("pnet", "--out", out, "epochs=1", override, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert not out.exists()


def test_cli_errors_are_one_line(pnet_files, tmp_path, capsys):
    # Exit codes by kind (mtcnn.errors): bad input / data 1, bad usage or config 2.
    missing = tmp_path / "nope.h5"
    assert main("pnet", ["--out", str(tmp_path / "a"), f"data.train=[{missing}]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.h5 not found" in err[0]
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict(pnet_files, tmp_path / "b")))
    assert main("pnet", ["--config", str(cfg_file), "--resume"]) == 1
    assert "cannot resume" in capsys.readouterr().err
    assert main("rnet", ["--config", str(cfg_file)]) == 2
    assert "this script trains rnet" in capsys.readouterr().err
    # A net's crops must have its input size.
    assert main("onet", ["--config", str(cfg_file), "net=onet"]) == 1
    assert "expected 48x48" in capsys.readouterr().err
    # An existing run is never overwritten silently.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "last.pt").write_bytes(b"x")
    assert main("pnet", ["--config", str(cfg_file)]) == 2
    assert main("pnet", ["optim.lrr=0.1"]) == 2
    assert "--resume" in capsys.readouterr().err
    # A pattern that oversamples nothing is a typo, not a no-op.
    assert main("pnet", ["--config", str(cfg_file), "--out", str(tmp_path / "c"),
                         "data.oversample=[{pattern: '*/facemask/*', factor: 4}]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.oversample" in err[0] and "'*/facemask/*' match no source image" in err[0], err


def test_config_files_validate():
    for net in ("pnet", "rnet", "onet"):
        cfg = load_config(TrainConfig, default_config(f"train_{net}.yaml")).resolved()
        assert cfg.net == net and cfg.batch_size == 384 and cfg.optim.lr == 0.001
        assert cfg.optim.name == "sgd" and cfg.optim.momentum == 0.9 and list(cfg.optim.lr_boundaries) == [6, 14, 20]
        assert cfg.epochs == {"pnet": 30, "rnet": 22, "onet": 22}[net]
        assert cfg.val.threshold == {"pnet": 0.6, "rnet": 0.7, "onet": 0.7}[net]
    with pytest.raises(ConfigError, match="must be increasing"):
        load_config(TrainConfig, None, ["optim.lr_boundaries=[5,2]"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(TrainConfig, None, ["optim.name=rmsprop"])


def test_separate_landmark_file(tmp_path):
    main_file = make_sample_file(tmp_path / "pnet_train.h5", kinds=("pos", "part", "neg"), seed=5)
    lmk_a = make_sample_file(tmp_path / "landmark12_a.h5", counts={**COUNTS, "landmark": 30}, kinds=("landmark",), seed=6)
    lmk_b = make_sample_file(tmp_path / "landmark12_b.h5", counts={**COUNTS, "landmark": 20}, kinds=("landmark",), seed=7)
    with pytest.raises(DataError, match="train_by_kind.landmark"):
        train(make_config((main_file, main_file), tmp_path / "x", **{"val.enabled": False}))
    reader = open_samples([str(main_file)], {"landmark": [str(lmk_a), str(lmk_b)]}, 12)
    assert isinstance(reader, MultiFileReader)
    assert reader.counts() == {"pos": 120, "part": 120, "neg": 360, "landmark": 50}
    rows = np.array([49, 0, 31, 29, 30])
    got = reader.get("landmark", rows)
    a, b = SampleReader(lmk_a), SampleReader(lmk_b)
    expect = np.concatenate([a.get("landmark", np.arange(30))["landmark"], b.get("landmark", np.arange(20))["landmark"]])
    np.testing.assert_array_equal(got["landmark"], expect[rows])
    assert reader.get("pos", np.array([], np.int64))["images"].shape == (0, 12, 12, 3)
    final = train(make_config((main_file, main_file), tmp_path / "y", epochs=1, **{
        "data.train_by_kind.landmark": [str(lmk_a), str(lmk_b)], "data.val_by_kind.landmark": [str(lmk_b)]}))
    rec = read_metrics(final.parent / "metrics.jsonl")[0]
    assert rec["val"]["n_landmark"] == 20 and rec["val"]["n_pos"] == 120


def test_in_memory_reader_gives_identical_batches(pnet_files, tmp_path):
    lmk = make_sample_file(tmp_path / "landmark12.h5", counts={**COUNTS, "landmark": 30}, kinds=("landmark",), seed=8)
    for files, by_kind in (([str(pnet_files[0])], None), ([str(pnet_files[0])], {"landmark": [str(lmk)]})):
        comp = {"pos": 8, "part": 8, "neg": 24, "landmark": 8}
        on_disk = MixedBatchLoader(open_samples(files, by_kind, 12), comp, 5, seed=3)
        in_ram = MixedBatchLoader(InMemoryReader(open_samples(files, by_kind, 12)), comp, 5, seed=3)
        for epoch, step in ((0, 0), (2, 4)):
            a, b = on_disk.get_batch(epoch, step), in_ram.get_batch(epoch, step)
            assert all(torch.equal(a[k], b[k]) for k in a)
    reader = InMemoryReader(SampleReader(pnet_files[0]))
    assert reader.counts() == COUNTS and reader.size == 12
    with pytest.raises(IndexError):
        reader.get("pos", [120])
    assert reader.get("neg", [5], ("source",))["source"].shape == (1,)  # other fields: from the file


class _ConstantNet(nn.Module):
    """Says 'face' with p = sigmoid(2) everywhere; predicts zero offsets and landmarks."""

    def forward(self, x, with_landmarks=True):
        b = x.shape[0]
        cls = torch.tensor([0.0, 2.0]).expand(b, 2)
        return cls, torch.zeros(b, 4), torch.zeros(b, 10)


def test_validator_metrics_match_oracle(pnet_files):
    reader = SampleReader(pnet_files[1])
    m = Validator(reader, threshold=0.6, batch_size=50).evaluate(_ConstantNet(), torch.device("cpu"))
    assert m["recall"] == 1.0 and m["fpr"] == 1.0 and m["accuracy"] == pytest.approx(120 / 480)
    box = np.concatenate([reader.get(k, np.arange(120))["bbox"] for k in ("pos", "part")])
    assert m["box_mae"] == pytest.approx(np.abs(box).mean(), rel=1e-5)
    assert m["loss_box"] == pytest.approx((box ** 2).sum(1).mean(), rel=1e-5)
    pts = reader.get("landmark", np.arange(120))["landmark"].reshape(-1, 5, 2)
    d = np.linalg.norm(pts, axis=2)
    assert m["landmark_error"] == pytest.approx(d.mean(), rel=1e-5)
    assert m["landmark_nme"] == pytest.approx((d.mean(1) / np.linalg.norm(pts[:, 0] - pts[:, 1], axis=1)).mean(), rel=1e-5)
    # The stage threshold matters: above sigmoid(2) = 0.88 nothing is a face.
    m2 = Validator(reader, threshold=0.9, max_per_kind=10).evaluate(_ConstantNet(), torch.device("cpu"))
    assert m2["recall"] == 0.0 and m2["fpr"] == 0.0 and m2["n_pos"] == 10


def test_validator_leaves_missing_points_out(tmp_path):
    # Landmark samples whose mouth corners are missing (NaN): the errors average the known points.
    rng = np.random.default_rng(0)
    pts = np.tile(TEMPLATE, (6, 1)) + rng.uniform(-0.05, 0.05, (6, 10)).astype(np.float32)
    pts[3:, 6:] = np.nan
    with SampleWriter(tmp_path / "v.h5", 12, {"seed": 0}) as w:
        w.add("landmark", rng.integers(0, 255, (6, 12, 12, 3), dtype=np.uint8), landmark=pts)
        w.commit(0)
    m = Validator(SampleReader(tmp_path / "v.h5"), threshold=0.6).evaluate(_ConstantNet(), torch.device("cpu"))
    p = pts.reshape(-1, 5, 2)
    d = np.linalg.norm(p, axis=2)  # the constant net predicts (0, 0)
    known = ~np.isnan(d)
    assert m["landmark_error"] == pytest.approx(d[known].mean(), rel=1e-5)
    iod = np.linalg.norm(p[:, 0] - p[:, 1], axis=1)
    assert m["landmark_nme"] == pytest.approx((np.nanmean(d, axis=1) / iod).mean(), rel=1e-5)


def test_lr_schedule_and_weight_decay_groups():
    f = PiecewiseLR([6, 14, 20], steps_per_epoch=10, gamma=0.1)
    assert [f(s) for s in (0, 59, 60, 139, 140, 200, 10_000)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
    from mtcnn.nets import build_net

    model = build_net("rnet")
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    n_prelu = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.PReLU))
    assert sum(p.numel() for p in no_decay["params"]) == n_prelu + sum(
        m.bias.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_adam_option_trains(pnet_files, tmp_path):
    cfg = make_config(pnet_files, tmp_path / "adam", epochs=1, **{
        "optim.name": "adam", "optim.betas": [0.8, 0.999], "val.max_per_kind": 20})
    final = train(cfg)
    assert load_state(final)["config"]["optim"]["name"] == "adam"
    state = load_state(tmp_path / "adam" / "last.pt")
    assert "exp_avg" in next(iter(state["optimizer"]["state"].values()))
    assert os.environ.get("RANK") is None  # nothing above touched the distributed environment


def test_cpu_bf16_and_channels_last_track_the_float32_run(onet_files, tmp_path):
    """The CPU speed options change the arithmetic, not the training: same losses within bfloat16's
    precision, channels-last alone within float32 rounding, and checkpoints in the plain layout."""
    runs = {}
    for name, extra in {"fp32": {}, "nhwc": {"channels_last": True},
                        "bf16": {"channels_last": True, "cpu_bf16": True}}.items():
        final = train(make_config(onet_files, tmp_path / name, "onet", **extra))
        runs[name] = (load_state(final)["state_dict"], read_metrics(tmp_path / name / "metrics.jsonl"))
    ref_state, ref_metrics = runs["fp32"]
    for k, v in runs["nhwc"][0].items():
        assert v.is_contiguous() and torch.allclose(v, ref_state[k], atol=1e-4), k
    bf16_state, bf16_metrics = runs["bf16"]
    assert any(not torch.equal(bf16_state[k], ref_state[k]) for k in ref_state)  # bfloat16 really ran
    for ours, ref in zip(bf16_metrics, ref_metrics):
        assert ours["train"]["loss"] == pytest.approx(ref["train"]["loss"], rel=0.05)
        assert ours["val"]["loss"] == pytest.approx(ref["val"]["loss"], rel=0.05)
