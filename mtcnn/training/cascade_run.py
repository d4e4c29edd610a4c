"""Train any subset of the 23 cascade nets from one command, in parallel processes, resumably.

Each net is one run of the shared training loop (:class:`mtcnn.training.Trainer`) with a
:class:`~mtcnn.training.cascade_task.CascadeTask`, in ``<out>/<NAME>/``: ``last.pt`` after every
epoch (a stopped net continues where it stopped), ``metrics.jsonl`` and the final
``sun_<name>.pt``; a finished net is skipped on the next run. :func:`assemble_bundle` gathers the
23 finished nets into one cascade bundle (:mod:`mtcnn.cascade`).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
import torch

from mtcnn.cascade import net_checkpoint
from mtcnn.config import data_root, from_dict, to_dict
from mtcnn.config.train import LandmarkTrainConfig
from mtcnn.data.facepoints import FacePointSet, load_facepoint_records, load_facepoint_set
from mtcnn.nets.cascade import CASCADE_NETS
from mtcnn.training.cascade_task import CascadeTask, CascadeTrainConfig


def trainer_config(name: str, cfg: CascadeTrainConfig) -> LandmarkTrainConfig:
    """The shared loop's config for one cascade net: AdamW, the LR divided by 10 at 60 % and
    85 % of the epochs, no TensorBoard (23 small runs), CPU float32."""
    spec = CASCADE_NETS[name]
    sched = cfg.level1_schedule if spec.level == 1 else cfg.patch_schedule
    steps = sorted({max(1, round(0.6 * sched.epochs)), max(1, round(0.85 * sched.epochs))})
    return from_dict(LandmarkTrainConfig, {
        "net": spec.registry_name, "out": str(Path(cfg.out) / name), "seed": cfg.seed, "device": "cpu",
        "threads": cfg.threads, "amp": False, "epochs": sched.epochs, "batch_size": sched.batch_size,
        # The task cuts its own crops from the in-memory faces; the loop never opens these files.
        "data": {"train": [str(cfg.train_list)], "val": None, "num_workers": 0, "flip": cfg.flip},
        "optim": {"name": "adamw", "lr": sched.lr, "weight_decay": sched.weight_decay, "lr_boundaries": steps, "lr_gamma": 0.1},
        "loss": {"kind": "l2" if cfg.loss == "l2" else "l1"},
        "log": {"tensorboard": False, "progress": False},
        "init": cfg.init, "freeze": to_dict(cfg.freeze),
    })  # fmt: skip


def train_net(name: str, cfg: CascadeTrainConfig, train: FacePointSet, held: FacePointSet | None) -> Path:
    """Train one net with the shared loop (resuming its ``last.pt``); a finished net is left alone."""
    from mtcnn.training import train as run

    final = net_checkpoint(cfg.out, name)
    if final.is_file():
        print(f"{name}: done already ({final})", flush=True)
        return final
    tcfg = trainer_config(name, cfg)
    resume = (Path(tcfg.out) / "last.pt").is_file()
    return run(tcfg, resume=resume, task=CascadeTask(name, cfg, train, held))


def _resolve(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() or p.exists() else data_root() / p


def load_training_faces(cfg: CascadeTrainConfig, progress: bool = True) -> tuple[FacePointSet, FacePointSet]:
    """(train, held-out) faces of the configured list and sources (every ``holdout_every``-th face
    of each held out), built once and then read from the cache."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    sets = [load_facepoint_set(
        _resolve(cfg.train_list), _resolve(cfg.images_root), size=cfg.canvas_size, margin=cfg.canvas_margin,
        cache_dir=cache, progress=progress,
    )]  # fmt: skip
    sets += [_source_faces(src, cfg, cache, progress) for src in cfg.sources]
    splits = [s.split_holdout(cfg.holdout_every) for s in sets]
    return FacePointSet.concat([t for t, _ in splits]), FacePointSet.concat([h for _, h in splits])


def _source_faces(src, cfg: CascadeTrainConfig, cache: Path, progress: bool) -> FacePointSet:
    from mtcnn.data.generate import load_source

    records = load_source(src)
    # The cache key: the source's settings and the records it gave (paths and every coordinate).
    digest = hashlib.sha256()
    for r in records:
        digest.update(str(r.path).encode())
        digest.update(np.ascontiguousarray(r.boxes, np.float32).tobytes())
        digest.update(np.ascontiguousarray(r.landmarks, np.float32).tobytes())
    key = {"source": to_dict(src), "records_sha256": digest.hexdigest()}
    return load_facepoint_records(records, src.name or src.format, key, size=cfg.canvas_size, margin=cfg.canvas_margin,
                                  cache_dir=cache, progress=progress, empty_error=src.path)


def source_counts(cfg: CascadeTrainConfig) -> dict[str, int]:
    """Faces per training source (the list first), as the weight card states them."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    counts = {str(cfg.train_list): len(load_facepoint_set(_resolve(cfg.train_list), _resolve(cfg.images_root),
                                                         size=cfg.canvas_size, margin=cfg.canvas_margin,
                                                         cache_dir=cache, progress=False))}
    for src in cfg.sources:
        counts[src.name or src.format] = len(_source_faces(src, cfg, cache, progress=False))
    return counts


def _worker(args: tuple[dict, str]) -> str:
    cfg_dict, name = args
    cfg = from_dict(CascadeTrainConfig, cfg_dict)
    torch.set_num_threads(cfg.threads)
    train, held = load_training_faces(cfg, progress=False)
    return str(train_net(name, cfg, train, held))


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
        ckpt = torch.load(net_checkpoint(cfg.out, name), map_location="cpu", weights_only=True)
        held[name] = (ckpt.get("meta", {}).get("val") or {}).get("error")
    return {
        "training_data": (f"CNN_FacePoint {cfg.train_list}"
                          + "".join(f" + {name} ({n} faces)" for name, n in list(source_counts(cfg).items())[1:])
                          + f" (every {cfg.holdout_every}th face of each held out)"),
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
    sha = detector.weights_info["sha256"]
    # The first calibration also serves detectors without an entry (read before
    # calibrate_for_detector, which leaves its fitted adapter on the cascade).
    first = cascade.box_adapter is None
    result = calibrate_for_detector(cascade, detector, held)
    record = {**result, "detector_weights": str(detector_weights), "detector_sha256": sha}
    meta = {"calibrations": {**cascade.info.get("meta", {}).get("calibrations", {}), sha: record}}
    update_bundle(bundle, box_adapter=result["box_adapter"], detector_start=result["start"], detector_sha256=sha,
                  as_default=first, meta={**meta, "calibration": record} if first else meta)
    return result
