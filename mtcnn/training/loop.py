"""One training loop for every model (SPEC §3, §4, §11); what differs per model is a *task*
(:mod:`mtcnn.training.task`): the MTCNN multi-task objective for P/R/O-Net
(:mod:`mtcnn.training.mtcnn_task`) or landmark regression (:mod:`mtcnn.training.landmark_task`).

``train(config) -> Path`` trains ``config.net`` with the task of the config's type and writes,
under ``config.out``:

* ``config.resolved.yaml``: the config actually used (net-dependent nulls filled in), at start;
* ``last.pt``: the full training state (model, optimizer, LR scheduler, GradScaler, loader
  position, Python / NumPy / torch RNG states of every rank, epoch, step, resolved config),
  written atomically at every epoch end and every ``checkpoint.every_steps`` steps.
  ``train(config, resume=True)`` continues from it with the *identical* sequence of batches,
  dropout masks and updates: the final weights equal those of an uninterrupted run (same seed,
  same device and thread count);
* ``metrics.jsonl``: one JSON record per epoch (train losses, LR, rate, validation metrics);
  :func:`mtcnn.training.curves.plot_training_curves` draws it;
* ``tb/``: TensorBoard scalars (the task's train summary, LR, validation metrics) and the
  task's picture of validation predictions;
* ``<net>.pt``: the final weights in the detector's checkpoint format
  (:func:`mtcnn.weights.make_checkpoint`), loadable by :func:`mtcnn.weights.load_net`.

Optimisation (defaults, all configurable): SGD momentum 0.9 (Adam/AdamW as options), base LR
0.001 multiplied by 0.1 at epochs 6, 14 and 20 (applied per step: boundary = epoch · steps per
epoch), weight decay 0.0005 on conv/linear weights only (not biases, not PReLU slopes), batch
384 (the MTCNN task splits it pos/part/neg/landmark). On CUDA the
forward pass runs under ``torch.autocast`` (float16) with a ``GradScaler``; on CPU in float32.

Fine-tuning (:mod:`mtcnn.training.finetune`): ``init`` loads trained weights into the freshly
built net before the optimiser is made (a resumed run takes its ``last.pt`` instead); ``freeze``
withholds the gradients of the named layers for the first ``freeze.steps`` steps; the final
checkpoint's ``meta["init"]`` (and ``last.pt``'s ``init``) record what the run started from.

Distributed: under ``torchrun --nproc_per_node N`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in
the environment) the model is wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on
CPU); each rank reads its own shard (the task's loader gets ``rank`` and ``world_size``) with
``batch_size / world_size`` samples per step; only rank 0 writes checkpoints, metrics and
TensorBoard (the logged train losses are rank 0's), the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import mtcnn.device
from mtcnn.atomic import atomic_torch_save, atomic_write_text
from mtcnn.config.core import ConfigError, save_resolved, to_dict
from mtcnn.config.paths import resolve_path
from mtcnn.errors import DataError, UsageError
from mtcnn.training.distributed import dist_env, resolve_device, rng_state, set_rng_state
from mtcnn.training.finetune import apply_init, frozen_parameters, resolve_init
from mtcnn.training.optim import PiecewiseLR, build_optimizer, settings_text
from mtcnn.training.task import Task
from mtcnn.weights import make_checkpoint

STATE_FORMAT = "mtcnn-train-state"
STATE_VERSION = 1
DEBUG_EXIT_CODE = 3


def _to_float32(outputs):
    """A net's outputs (a tensor, or a tuple / dict of tensors and ``None``) in float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_to_float32(v) for v in outputs)
    return outputs


class Trainer:
    """The training loop behind :func:`train`; ``Trainer(cfg).fit()`` returns the final checkpoint.

    ``task`` defaults to the task of the config's type (:func:`task_for`). After :meth:`fit`,
    :attr:`model` is the trained (unwrapped) network of this rank.
    """

    def __init__(self, config, task: Task | None = None, resume: bool | str | os.PathLike = False,
                 overwrite: bool = False):
        self.cfg = config.resolved()
        self.task = task if task is not None else task_for(self.cfg)
        self.resume = resume
        self.overwrite = overwrite
        self.out = resolve_path(self.cfg.out)  # {runs}, {gen}, ~: the same place whatever the working directory
        self.info = dist_env()
        self.model: nn.Module | None = None
        self.metrics: list[dict[str, Any]] = []

    # -------------------------------------------------------------- set-up
    def _resume_path(self) -> Path | None:
        if self.resume is False or self.resume is None:
            return None
        path = self.out / "last.pt" if self.resume is True else Path(self.resume)
        if not path.is_file():
            raise DataError(f"cannot resume: {path} not found (start without --resume)")
        return path

    def _check_inputs(self) -> None:
        cfg = self.cfg
        ws = self.info.world_size
        mtcnn.device.resolve_device(cfg.device)  # a device this machine lacks fails before the data is read
        if cfg.batch_size % ws:
            raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {ws} ranks")
        self.steps_per_epoch = self.task.open_data(ws)
        self.resume_path = self._resume_path()
        if self.resume_path is None and not self.overwrite and (self.out / "last.pt").exists():
            raise UsageError(f"{self.out / 'last.pt'} exists: continue it with --resume, or choose another --out")
        # Fine-tuning: the weights to start from, read and checked before any process group or model
        # exists (a resumed run continues from last.pt instead).
        self.init_weights = None
        if getattr(cfg, "init", None) and self.resume_path is None:
            self.init_weights = resolve_init(cfg.init, self.task.spec)
            check = getattr(self.task, "check_init", None)
            if check is not None:
                check(self.init_weights)

    def _setup(self) -> None:
        cfg, info = self.cfg, self.info
        if info.enabled and not dist.is_initialized():
            backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
            info.initialised_here = True
        self.device = resolve_device(cfg.device, info)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.cpu_bf16 = bool(cfg.cpu_bf16 and self.device.type == "cpu")
        self.layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = self.task.build_model()
        self.init_record = None
        if self.init_weights is not None:
            apply_init(model, self.init_weights)
            self.init_record = self.init_weights.record
        model = model.to(device=self.device, memory_format=self.layout)
        # Then one stream per rank (dropout masks differ across ranks).
        torch.manual_seed(cfg.seed + 1_000_003 * info.rank)
        random.seed(cfg.seed + info.rank)
        np.random.seed((cfg.seed + info.rank) % 2**32)
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        freeze = getattr(cfg, "freeze", None)
        self.frozen = frozen_parameters(model, freeze.layers, cfg.net) if freeze is not None and freeze.layers else []
        self.freeze_steps = freeze.steps if self.frozen else None
        if self.frozen and info.is_main:
            until = f"for the first {self.freeze_steps} steps" if self.freeze_steps else "for the whole run"
            print(f"{cfg.net}: {', '.join(freeze.layers)} frozen {until} ({sum(p.numel() for p in self.frozen)} parameters)",
                  file=sys.stderr, flush=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, PiecewiseLR(cfg.optim.lr_boundaries, self.steps_per_epoch, cfg.optim.lr_gamma))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ddp = (nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if info.enabled else model)
        self.loader = self.task.make_loader(self.steps_per_epoch, info.rank, info.world_size,
                                            pin_memory=self.device.type == "cuda")
        self.global_step = 0
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.epochs_completed = 0
        self.epoch_stats = self._zero_stats()  # the task's stat_names, then the step count
        self.epoch_time = 0.0
        self.settings = settings_text(cfg, self.steps_per_epoch, info.world_size, self.task.settings())
        if getattr(cfg, "init", None):
            self.settings += f", init {cfg.init}"
        if self.resume_path is not None:
            self._load_state(self.resume_path)
        self.writer = None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.out)
            self._trim_metrics()
            if cfg.log.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.global_step if self.resume_path else None)
        info.barrier()

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        rng = rng_state()
        if self.info.enabled:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "net": self.cfg.net,
            "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": rngs,
            "global_step": self.global_step,
            "last_lr": self.last_lr,
            "epochs_completed": self.epochs_completed,
            "epoch_stats": self.epoch_stats.clone(),
            "epoch_time": self.epoch_time,
            "world_size": self.info.world_size,
            "config": to_dict(self.cfg),
            "init": self.init_record or {},
        }

    def save_state(self) -> None:
        state = self._state()  # collective under DDP: every rank calls it
        if self.info.is_main:
            atomic_torch_save(state, self.out / "last.pt")
        self.info.barrier()

    def _load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DataError(f"{path}: not a readable training state ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(f"{path}: not a training state written by mtcnn.training (a final <net>.pt? resume needs last.pt)")
        if state["net"] != self.cfg.net:
            raise DataError(f"{path}: holds a {state['net']} run, this config trains {self.cfg.net}")
        changed = _config_diff(state.get("config", {}), to_dict(self.cfg))
        if changed and self.info.is_main:
            print(f"warning: resuming with a config that differs from the checkpoint's: {', '.join(changed[:8])}",
                  file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        try:
            self.loader.load_state_dict(state["loader"])
        except ValueError as e:
            raise DataError(f"{path}: cannot resume with this data/config: {e}") from None
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        elif self.info.is_main:
            print(f"warning: {path} was written by {len(rngs)} ranks, now {self.info.world_size}: "
                  "RNG streams are not restored", file=sys.stderr)
        self.global_step = int(state["global_step"])
        self.last_lr = float(state.get("last_lr", self.optimizer.param_groups[0]["lr"]))
        self.epochs_completed = int(state["epochs_completed"])
        self.epoch_stats = state["epoch_stats"].to(torch.float64)
        self.epoch_time = float(state.get("epoch_time", 0.0))
        self.init_record = state.get("init") or None

    def _trim_metrics(self) -> None:
        """metrics.jsonl holds exactly the completed epochs (a crash may have left a later line)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        if self.resume_path is None:
            path.unlink()
            return
        keep = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if rec.get("epoch", 0) <= self.epochs_completed:
                    keep.append(line)
                    self.metrics.append(rec)
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    # -------------------------------------------------------------- loop
    def fit(self) -> Path:
        prev_threads = torch.get_num_threads()
        threads = self.cfg.threads
        if threads is None and self.info.enabled:
            threads = max(1, (os.cpu_count() or 1) // max(1, self.info.local_world_size))
        try:
            self._check_inputs()
            if threads is not None:
                torch.set_num_threads(threads)
            self._setup()
            try:
                return self._run()
            finally:
                if self.writer is not None:
                    self.writer.close()
        finally:
            torch.set_num_threads(prev_threads)
            if self.info.initialised_here and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self) -> Path:
        cfg = self.cfg
        epoch = self.epochs_completed
        while epoch < cfg.epochs:
            if self.loader.state_dict()["epoch"] == epoch:
                self._train_epoch(epoch)
            self._end_epoch(epoch)
            epoch += 1
        final = self.out / f"{cfg.net}.pt"
        if self.info.is_main:
            meta = {"epochs": self.epochs_completed, "steps": self.global_step, "seed": cfg.seed,
                    "steps_per_epoch": self.steps_per_epoch, "world_size": self.info.world_size,
                    "val": self.metrics[-1].get("val") if self.metrics else None, "trained_by": "mtcnn.training"}
            if self.init_record:
                meta["init"] = dict(self.init_record)  # what the run started from (fine-tuning)
            atomic_torch_save(make_checkpoint(self.task.spec.name, self.model, to_dict(cfg), meta), final)
            print(f"{cfg.net}: wrote {final}")
        if cfg.debug.save_rank_weights:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                       self.out / f"rank{self.info.rank}_weights.pt")
        self.info.barrier()
        return final

    def _next_batch(self, it):
        # DataLoader iterators draw their base seed from the global torch RNG when created;
        # isolate fetching so the RNG stream (dropout) depends only on the optimisation steps.
        with torch.random.fork_rng(devices=[]):
            return next(it, None)

    def _zero_stats(self) -> torch.Tensor:
        return torch.zeros(len(self.task.stat_names) + 1, dtype=torch.float64)

    def _step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the task's stat row with the step count appended."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        images = batch["images"].contiguous(memory_format=self.layout)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16 if self.cpu_bf16 else torch.float16,
                            enabled=self.use_amp or self.cpu_bf16):
            outputs = self.ddp(images)
        if self.cpu_bf16:
            outputs = _to_float32(outputs)  # the multi-task losses and OHEM sort in float32
        loss, row = self.task.loss(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.frozen and (self.freeze_steps is None or self.global_step < self.freeze_steps):
            for p in self.frozen:  # no gradient: neither the optimiser nor weight decay moves them
                p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the LR this step used
        self.scheduler.step()
        self.global_step += 1
        return torch.cat([row.to(torch.float64), torch.ones(1, dtype=torch.float64, device=row.device)])

    def _progress_bar(self, epoch: int, start_step: int):
        if not (self.info.is_main and self.cfg.log.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, initial=start_step, desc=f"{self.cfg.net} epoch {epoch + 1}/{self.cfg.epochs}",
                    dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0.5)

    def _train_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        spe = self.steps_per_epoch
        self.ddp.train()
        window = self._zero_stats().to(self.device)
        window_start, window_samples = time.perf_counter(), 0
        bar = self._progress_bar(epoch, self.loader.state_dict()["step"])
        t_epoch = time.perf_counter()
        it = iter(self.loader)
        try:
            while (batch := self._next_batch(it)) is not None:
                window += self._step(batch)
                window_samples += batch["images"].shape[0]
                if bar is not None:
                    bar.update(1)
                end_of_epoch = self.loader.step >= spe
                stop = cfg.debug.stop_after_steps is not None and self.global_step == cfg.debug.stop_after_steps
                save = not end_of_epoch and (stop or (cfg.checkpoint.every_steps > 0
                                                      and self.global_step % cfg.checkpoint.every_steps == 0))
                if self.global_step % cfg.log.every_steps == 0 or end_of_epoch or save:
                    self._flush_window(window, window_start, window_samples, bar)
                    window.zero_()
                    window_start, window_samples = time.perf_counter(), 0
                if save:
                    self.epoch_time += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    self.save_state()
                    if stop:
                        self._debug_exit()
                self._stop_after_epoch = stop and end_of_epoch
        finally:
            if bar is not None:
                bar.close()
        self.epoch_time += time.perf_counter() - t_epoch

    def _debug_exit(self) -> None:
        if self.info.is_main:
            print(f"debug.stop_after_steps: stopping hard after step {self.global_step}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(DEBUG_EXIT_CODE)

    def _flush_window(self, window: torch.Tensor, start: float, samples: int, bar) -> None:
        w = window.cpu()
        self.epoch_stats += w
        summary = self.task.train_summary(w[:-1], float(w[-1]))
        lr = self.last_lr
        rate = samples / max(1e-9, time.perf_counter() - start)
        if bar is not None:
            bar.set_postfix(loss=f"{summary['loss']:.4f}", lr=f"{lr:.1e}", rate=f"{rate:.0f}/s", refresh=False)
        if self.writer is not None:
            s = self.global_step
            for k, v in summary.items():
                if not math.isnan(v):
                    self.writer.add_scalar(f"train/{k}", v, s)
            self.writer.add_scalar("train/lr", lr, s)
            self.writer.add_scalar("train/samples_per_s", rate * self.info.world_size, s)

    def _validation_due(self, epoch: int) -> bool:
        every = self.cfg.val.every_epochs
        return self.cfg.val.enabled and ((epoch + 1) % every == 0 or epoch + 1 == self.cfg.epochs)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        """Rank 0: append to metrics.jsonl, print the epoch line, write TensorBoard."""
        cfg, train, val = self.cfg, record["train"], record["val"]
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{cfg.net} epoch {record['epoch']}/{cfg.epochs} step {self.global_step}: "
              f"{self.task.epoch_line(train, val)} lr {record['lr']:.1e}", flush=True)
        if self.writer is None:
            return
        s = self.global_step
        for k, v in train.items():
            self.writer.add_scalar(f"epoch/train_{k}", v, s)
        if val is not None:
            for k, v in val.items():
                if not k.startswith("n_") and isinstance(v, (int, float)) and not math.isnan(v):
                    self.writer.add_scalar(f"val/{k}", v, s)
            grid = self.task.validation_image(self.model, self.device)
            if grid is not None:
                self.writer.add_image("val/predictions", grid, s, dataformats="HWC")
        self.writer.flush()

    def _end_epoch(self, epoch: int) -> None:
        cfg, info = self.cfg, self.info
        stats = self.epoch_stats
        steps = max(1.0, float(stats[-1]))
        train = self.task.train_summary(stats[:-1], steps)
        val = None
        if self._validation_due(epoch):
            val = self.task.validate(self.model, self.device, self.use_amp, info)
        samples = steps * cfg.batch_size
        record = {
            "epoch": epoch + 1, "epochs": cfg.epochs, "step": self.global_step, "net": cfg.net,
            "lr": self.last_lr, "epoch_time_s": round(self.epoch_time, 3),
            "samples_per_s": round(samples / self.epoch_time, 1) if self.epoch_time > 0 else None,
            "train": train, "val": val, "settings": self.settings,
        }
        self.metrics.append(record)
        if info.is_main:
            self._log_epoch(record)
        self.epochs_completed = epoch + 1
        self.epoch_stats = self._zero_stats()
        self.epoch_time = 0.0
        self.save_state()
        if getattr(self, "_stop_after_epoch", False):
            self._debug_exit()


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return keys


def task_for(cfg) -> Task:
    """The task that trains a (resolved) config: MTCNN multi-task or landmark regression."""
    from mtcnn.config.train import LandmarkTrainConfig
    from mtcnn.training.landmark_task import LandmarkTask
    from mtcnn.training.mtcnn_task import MTCNNTask

    return LandmarkTask(cfg) if isinstance(cfg, LandmarkTrainConfig) else MTCNNTask(cfg)


def train(config, resume: bool | str | os.PathLike = False, overwrite: bool = False, task: Task | None = None) -> Path:
    """Train ``config.net``; returns the path of the final checkpoint ``<out>/<net>.pt``.

    ``resume=True`` continues from ``<out>/last.pt`` (or from the given path); without it an
    existing ``last.pt`` is refused unless ``overwrite``.
    """
    return Trainer(config, task, resume=resume, overwrite=overwrite).fit()
