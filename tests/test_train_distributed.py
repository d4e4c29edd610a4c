"""DistributedDataParallel: the training script under torchrun with 2 CPU processes (gloo).

Both ranks must end with identical weights, read distinct shards, and only rank 0 writes the
run's files; a DDP run killed after a checkpoint resumes to the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtcnn.data.h5 import SampleWriter

ROOT = Path(__file__).resolve().parent.parent
S = 12


def make_file(path, seed):
    """Small learnable 12 px sample file (bright blob = face, noise = non-face)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    g = np.exp(-((xx - 5.5) ** 2 + (yy - 5.5) ** 2) / 18.0)[None, ..., None]
    counts = {"pos": 64, "part": 64, "neg": 192, "landmark": 64}
    with SampleWriter(path, S, {"seed": seed}, chunk=64) as w:
        for kind, n in counts.items():
            noise = rng.integers(0, 100, (n, S, S, 3)).astype(np.float32)
            img = noise if kind == "neg" else noise + 180 * g
            img = np.clip(img, 0, 255).astype(np.uint8)
            bbox = rng.uniform(-0.1, 0.1, (n, 4)).astype(np.float32) if kind in ("pos", "part") else None
            lmk = rng.uniform(0.2, 0.8, (n, 10)).astype(np.float32) if kind == "landmark" else None
            w.add(kind, img, bbox=bbox, landmark=lmk)
    return path


def torchrun(config_file, *overrides, nproc=2, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train_models" / "train_pnet.py"), "--config", str(config_file), *overrides]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ddp_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    cfg = {
        "net": "pnet", "out": str(d / "run"), "seed": 3, "device": "cpu", "threads": 1,
        "epochs": 2, "steps_per_epoch": 3, "batch_size": 48,
        "data": {"train": [str(make_file(d / "pnet_train.h5", 1))], "val": [str(make_file(d / "pnet_val.h5", 2))],
                 "num_workers": 0},
        "optim": {"lr": 0.02},
        "val": {"num_images": 2},
        "log": {"tensorboard": False, "progress": False},
        "debug": {"save_rank_weights": True},
    }
    path = d / "train_pnet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, d


def test_ddp_two_cpu_ranks_identical_weights_and_resume(ddp_config):
    cfg_file, d = ddp_config
    full, cut = d / "full", d / "cut"
    r = torchrun(cfg_file, "--out", full)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = load(full / "rank0_weights.pt"), load(full / "rank1_weights.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    final = load(full / "pnet.pt")
    for k in w0:
        assert torch.equal(final["state_dict"][k], w0[k]), k
    # Training moved the weights away from the (seeded, shared) initialisation.
    torch.manual_seed(3)
    from mtcnn.nets import build_net

    init = build_net("pnet").state_dict()
    assert not torch.equal(init["body.0.weight"], w0["body.0.weight"])
    # Rank 0 alone wrote the run's files; the state holds both ranks' RNG streams and shards.
    state = load(full / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert state["loader"]["rank"] == 0 and state["loader"]["world_size"] == 2
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records] == [1, 2]
    # Validation is sharded over the ranks and all-reduced: every sample counted once.
    assert records[-1]["val"]["n_pos"] == 64 and records[-1]["val"]["n_neg"] == 192
    assert "on 2 ranks" in records[-1]["settings"]
    assert r.stdout.count("final checkpoint:") == 1

    # Killed after the step-4 checkpoint (mid epoch 2), then resumed: the same final weights.
    r = torchrun(cfg_file, "--out", cut, "debug.stop_after_steps=4")
    assert r.returncode != 0 and load(cut / "last.pt")["global_step"] == 4, r.stderr[-3000:]
    assert not (cut / "pnet.pt").exists()
    r = torchrun(cfg_file, "--out", cut, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = load(cut / "pnet.pt")["state_dict"]
    for k in w0:
        assert torch.equal(resumed[k], w0[k]), k


def test_ddp_shards_are_distinct(ddp_config):
    from mtcnn.data.datasets import MixedBatchLoader

    _, d = ddp_config
    comp = {"pos": 4, "part": 4, "neg": 12, "landmark": 4}  # per rank: 48 / 2
    plans = [MixedBatchLoader(d / "pnet_train.h5", comp, 3, seed=3, rank=r, world_size=2).batch_plan(0, 0)
             for r in (0, 1)]
    for kind in comp:
        assert not set(plans[0][kind].tolist()) & set(plans[1][kind].tolist()), kind
