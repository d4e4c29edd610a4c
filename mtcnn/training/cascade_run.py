"""Train any subset of the 23 cascade nets from one command, in parallel processes, resumably.

Each net trains in ``<out>/<NAME>/``: ``last.pt`` after every epoch (model, optimiser and loader
state: a killed run continues where it stopped), ``metrics.jsonl``, and the final checkpoint
``<NAME>.pt`` (a finished net is skipped on the next run). :func:`assemble_bundle` gathers the
finished nets into one cascade bundle (:mod:`mtcnn.cascade`).

The per-net loop here drives a :class:`~mtcnn.training.cascade_task.CascadeTask` through the
:class:`~mtcnn.training.task.Task` protocol (open_data, build_model, make_loader, loss, validate),
so the same task also runs under the shared ``Trainer`` once a config maps onto it.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch

from mtcnn.config import data_root, to_dict
from mtcnn.data.facepoints import FacePointSet, load_facepoint_set
from mtcnn.nets.cascade import CASCADE_NETS
from mtcnn.training.cascade_task import CascadeTask, CascadeTrainConfig, StageSchedule
from mtcnn.weights import atomic_torch_save, make_checkpoint


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit_net(task: CascadeTask, out_dir: Path, log=print) -> Path:
    """Train one net to ``out_dir/<name>.pt`` (resuming from ``last.pt``); returns that path."""
    final = out_dir / f"{task.name}.pt"
    if final.is_file():
        log(f"{task.name}: done already ({final})")
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule: StageSchedule = task.schedule
    steps = task.open_data(1)
    total = steps * schedule.epochs
    torch.manual_seed(task.cfg.seed)
    model = task.build_model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, total, int(schedule.warmup_epochs * steps)))
    loader = task.make_loader(steps, 0, 1)
    last = out_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        log(f"{task.name}: resuming at epoch {loader.epoch + 1}")
    model = model.to(memory_format=torch.channels_last).train()
    val = None
    while loader.epoch < schedule.epochs:
        epoch, t0 = loader.epoch, time.perf_counter()
        sums = torch.zeros(len(task.stat_names), dtype=torch.float64)
        for batch in loader:
            images = batch["images"].contiguous(memory_format=torch.channels_last)
            loss, stats = task.loss(model(images), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sched.step()
            sums += stats
        train = task.train_summary(sums, steps)
        val = task.validate(model, torch.device("cpu"))
        seconds = time.perf_counter() - t0
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": sched.state_dict(), "loader": loader.state_dict()}
        atomic_torch_save(state, last)
        record = {"epoch": epoch + 1, "train": train, "val": val, "seconds": seconds, "lr": sched.get_last_lr()[0]}
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log(f"{task.name} epoch {epoch + 1}/{schedule.epochs} ({seconds:.0f}s, {len(task.train_data) / seconds:.0f} faces/s): {task.epoch_line(train, val)}")
    meta = {"held_out": val, "epochs": schedule.epochs, "training_faces": len(task.train_data)}
    config = {"variant": task.cfg.variant, "dropout": task.cfg.dropout, "train": to_dict(task.cfg)}
    atomic_torch_save(make_checkpoint(task.spec.name, model.to(memory_format=torch.contiguous_format), config, meta), final)
    return final


def _resolve(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() or p.exists() else data_root() / p


def load_training_faces(cfg: CascadeTrainConfig, progress: bool = True) -> tuple[FacePointSet, FacePointSet]:
    """(train, held-out) faces of the configured list, built once and then read from the cache."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    data = load_facepoint_set(
        _resolve(cfg.train_list), _resolve(cfg.images_root), size=cfg.canvas_size, margin=cfg.canvas_margin,
        cache_dir=cache, progress=progress,
    )  # fmt: skip
    return data.split_holdout(cfg.holdout_every)


def _worker(args: tuple[dict, str]) -> str:
    from mtcnn.config import from_dict

    cfg_dict, name = args
    cfg = from_dict(CascadeTrainConfig, cfg_dict)
    torch.set_num_threads(cfg.threads)
    train, held = load_training_faces(cfg, progress=False)
    out_dir = Path(cfg.out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    return str(fit_net(CascadeTask(name, cfg, train, held), out_dir, log=lambda m: print(m, flush=True)))


def train_cascade(cfg: CascadeTrainConfig, names: list[str]) -> list[Path]:
    """Train ``names`` (cascade net names) with ``cfg.workers`` processes; returns their checkpoints."""
    unknown = [n for n in names if n not in CASCADE_NETS]
    if unknown:
        raise ValueError(f"unknown cascade net(s) {', '.join(unknown)}: choose from {', '.join(CASCADE_NETS)}")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    load_training_faces(cfg)  # builds the cache once before the workers read it
    jobs = [(to_dict(cfg), name) for name in names]
    if cfg.workers == 1 or len(names) == 1:
        return [Path(_worker(job)) for job in jobs]
    # Heaviest first so the slowest net does not start last.
    jobs.sort(key=lambda j: CASCADE_NETS[j[1]].level)
    with mp.get_context("spawn").Pool(min(cfg.workers, len(jobs))) as pool:
        done = [Path(p) for p in pool.imap_unordered(_worker, jobs)]
    print(f"trained {len(done)} net(s) in {cfg.out}", file=sys.stderr)
    return done


def bundle_meta(cfg: CascadeTrainConfig) -> dict:
    """What the bundle says about its training (the weight card's facts)."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    held = {}
    for name in CASCADE_NETS:
        ckpt = torch.load(Path(cfg.out) / name / f"{name}.pt", map_location="cpu", weights_only=True)
        held[name] = (ckpt.get("meta", {}).get("held_out") or {}).get("error")
    return {
        "training_data": f"CNN_FacePoint {cfg.train_list} (every {cfg.holdout_every}th face held out)",
        "terms": "CNN_FacePoint (Sun, Wang, Tang, CVPR 2013; CUHK): research use only",
        "commit": commit,
        "config": to_dict(cfg),
        "held_out_error_per_net": held,
    }


def calibrate_bundle(cfg: CascadeTrainConfig, bundle: str | os.PathLike, detector_weights: str | os.PathLike) -> dict:
    """Fit the box adapter and detector start on the held-out training faces; store them in the bundle."""
    from mtcnn.cascade import load_cascade, update_bundle
    from mtcnn.data.annotations import read_cnn_facepoint
    from mtcnn.detector import MTCNN
    from mtcnn.eval.cascade import calibrate_for_detector

    records = read_cnn_facepoint(_resolve(cfg.train_list), _resolve(cfg.images_root))
    held = [r for i, r in enumerate(records) if i % cfg.holdout_every == cfg.holdout_every - 1]
    cascade = load_cascade(bundle).prepare()
    detector = MTCNN(weights=detector_weights, device="cpu")
    result = calibrate_for_detector(cascade, detector, held)
    meta = {"calibration": {**result, "detector_weights": str(detector_weights), "detector_sha256": detector.weights_info["sha256"]}}
    update_bundle(bundle, box_adapter=result["box_adapter"], detector_start=result["start"], meta=meta)
    return result


def main(argv: list[str] | None = None) -> int:
    """``train_models/train_landmarks.py``: train cascade nets, then write the bundle."""
    import argparse

    from mtcnn.cascade import assemble_bundle
    from mtcnn.config import ConfigError, load_config
    from mtcnn.io import ImageReadError
    from mtcnn.nets.cascade import POINTS, nets_of_level

    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(prog="train_landmarks.py", description="Train the Sun et al. landmark cascade (23 nets).")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. workers=2")
    p.add_argument("--config", default=str(root / "configs" / "landmarks_cascade.yaml"))
    p.add_argument("--level", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3], help="levels to train (default all)")
    p.add_argument("--point", nargs="+", choices=POINTS, help="levels 2/3: only these points' nets")
    p.add_argument("--out", help="run folder (default from the config)")
    p.add_argument("--workers", type=int, help="nets trained at the same time, one process each")
    p.add_argument("--bundle", help="after training, write all 23 nets of the run folder into this bundle")
    p.add_argument("--calibrate-with", metavar="DETECTOR_WEIGHTS",
                   help="fit the bundle's box adapter and detector start on the held-out training faces with this detector")
    a = p.parse_args(argv)
    overrides = list(a.overrides) + ([f"workers={a.workers}"] if a.workers else []) + ([f"out={a.out}"] if a.out else [])
    try:
        cfg = load_config(CascadeTrainConfig, a.config, overrides)
        names = [n for level in sorted(set(a.level)) for n in nets_of_level(level, a.point)]
        train_cascade(cfg, names)
        if a.bundle:
            print(f"wrote {assemble_bundle(cfg.out, a.bundle, meta=bundle_meta(cfg))}")
        if a.bundle and a.calibrate_with:
            print(json.dumps(calibrate_bundle(cfg, a.bundle, a.calibrate_with)))
    except (ConfigError, ImageReadError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
