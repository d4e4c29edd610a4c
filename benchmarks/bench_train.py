#!/usr/bin/env python
"""Training throughput per net: optimisation steps vs the mixed-ratio loader.

    python benchmarks/bench_train.py [--nets pnet rnet onet] [--threads 2 1] [--seconds 3] [--workers 2]

For each net, on synthetic sample files of its crop size (12 / 24 / 48 px, written to a temp
folder):

* the training-step rate (forward + multi-task loss with OHEM + backward + SGD step on a 384
  batch; steps/s and samples/s) on CPU with each ``--threads`` count, and on CUDA with
  autocast + GradScaler when a GPU is present;
* the loader-only rate (batches/s of MixedBatchLoader with flip + colour jitter) in this
  process with one torch thread, which is exactly how one DataLoader worker runs (PyTorch sets
  one thread per worker): reading the HDF5 file, and from RAM (``mtcnn.data.readers.InMemoryReader``,
  what training uses when the samples fit in ``data.cache_mb``); optionally also with
  ``--workers`` real worker processes.

``loader/step`` is the rate of the loader training uses (RAM when the set fits ``--cache-mb``)
over the step rate, for one worker; it must be at least 3 so that training is compute-bound. On a small shared CPU, several torch threads can be much slower
than one (each parallel op waits for a descheduled thread), so both thread counts are shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.data.datasets import MixedBatchLoader, benchmark_loader, composition_for  # noqa: E402
from mtcnn.data.h5 import SampleWriter  # noqa: E402
from mtcnn.losses import DEFAULT_TASK_WEIGHTS, mtcnn_loss  # noqa: E402
from mtcnn.nets import MTCNN_NETS, build_net, get_net_spec  # noqa: E402
from mtcnn.data.readers import InMemoryReader, open_samples  # noqa: E402
from mtcnn.training import build_optimizer  # noqa: E402
from mtcnn.config.train import TrainConfig  # noqa: E402

COUNTS = {"pos": 1000, "part": 1000, "neg": 3000, "landmark": 1000}


def write_samples(path: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with SampleWriter(path, size, {"seed": seed, "synthetic": True}) as w:
        for kind, n in COUNTS.items():
            images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            bbox = rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32) if kind in ("pos", "part") else None
            lmk = rng.uniform(0.1, 0.9, (n, 10)).astype(np.float32) if kind == "landmark" else None
            w.add(kind, images, bbox=bbox, landmark=lmk)
    return path


def step_rate(net: str, batch: dict, device: str, seconds: float, amp: bool,
              bf16: bool = False, channels_last: bool = False) -> float:
    """Training steps per second on one fixed batch (3 warm-up steps, then about ``seconds``).

    ``amp``: float16 autocast + GradScaler (CUDA); ``bf16``: bfloat16 autocast (CPU, no scaler
    needed: bfloat16 has float32's exponent range); ``channels_last``: NHWC model and input.
    """
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_net(net).to(device=device, memory_format=layout).train()
    opt = build_optimizer(model, TrainConfig(net=net))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["images"] = batch["images"].contiguous(memory_format=layout)
    weights = DEFAULT_TASK_WEIGHTS[net]
    dtype = torch.bfloat16 if bf16 else torch.float16

    def one():
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=amp or bf16):
            out = model(batch["images"])
        out = tuple(None if v is None else v.float() for v in out)  # the losses run in float32
        loss, _ = mtcnn_loss(out, batch, weights, 0.7)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    steps = 0
    while steps < 3 or time.perf_counter() - t0 < seconds:
        one()
        steps += 1
        if device.startswith("cuda") and steps % 10 == 0:
            torch.cuda.synchronize()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def loader_rate(reader, comp: dict, batches: int) -> float:
    """Batches per second in this process (timed after the first batch)."""
    loader = MixedBatchLoader(reader, comp, steps_per_epoch=batches + 1, seed=0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in it:
        pass
    return batches / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", nargs="+", default=["pnet", "rnet", "onet"], choices=["pnet", "rnet", "onet"])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="CPU thread counts for the step rate")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per step-rate measurement")
    p.add_argument("--batches", type=int, default=30, help="timed loader batches per measurement")
    p.add_argument("--workers", type=int, default=0, help="also time the file loader with this many worker processes")
    p.add_argument("--cache-mb", type=int, default=1024, help="as data.cache_mb: RAM loader when the set fits")
    p.add_argument("--batch-size", type=int, default=384)
    p.add_argument("--file", action="append", default=[], metavar="NET=PATH",
                   help="use a real sample file for NET instead of synthetic data (repeatable)")
    p.add_argument("--cpu-variants", action="store_true",
                   help="also time channels-last, bfloat16 autocast and both on the CPU")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    real = {}
    for item in args.file:
        net, _, path = item.partition("=")
        if net not in MTCNN_NETS or not path:
            p.error(f"--file expects NET=PATH with NET in pnet/rnet/onet, got {item!r}")
        real[net] = Path(path)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for net in args.nets:
            size = get_net_spec(net).crop_size
            path = real.get(net) or write_samples(Path(tmp) / f"{net}_train.h5", size)
            comp = composition_for(net, args.batch_size)
            batch = MixedBatchLoader(path, comp, 1, seed=0).get_batch(0, 0)
            torch.set_num_threads(1)
            reader = open_samples([str(path)], None, size)
            loader_file = loader_rate(reader, comp, args.batches)
            loader_ram = loader_rate(InMemoryReader(reader), comp, args.batches * 3)
            loader_w = benchmark_loader(path, args.batches, comp, num_workers=args.workers) if args.workers else None
            cached = InMemoryReader.nbytes(reader) <= args.cache_mb * 2**20
            loader = loader_ram if cached else loader_file
            row = {"net": net, "size": size, "file": str(path) if net in real else "synthetic", "batch": args.batch_size, "loader_file_batches_per_s": loader_file,
                   "loader_ram_batches_per_s": loader_ram, "loader_used": "ram" if cached else "file",
                   "loader_workers_batches_per_s": loader_w, "workers": args.workers, "cpu": {}}
            print(f"{net} ({size}px, batch {args.batch_size}, {'synthetic' if net not in real else path}): loader in one worker {loader_file:6.1f} batches/s "
                  f"from HDF5, {loader_ram:6.1f} from RAM" +
                  (f", {loader_w:6.1f} from HDF5 with {args.workers} workers" if loader_w else ""), flush=True)
            for threads in args.threads:
                torch.set_num_threads(threads)
                sps = step_rate(net, batch, "cpu", args.seconds, amp=False)
                row["cpu"][threads] = {"steps_per_s": sps, "samples_per_s": sps * args.batch_size,
                                       "loader_to_step": loader / sps}
                print(f"  cpu {threads} thread(s): train {sps:7.2f} steps/s = {sps * args.batch_size:7.0f} samples/s"
                      f" | loader/step {loader / sps:5.1f}x {'OK' if loader >= 3 * sps else '(< 3x)'}", flush=True)
                if args.cpu_variants:
                    for name, bf16, nhwc in (("channels-last", False, True), ("bf16 autocast", True, False),
                                             ("bf16 + channels-last", True, True)):
                        v = step_rate(net, batch, "cpu", args.seconds, amp=False, bf16=bf16, channels_last=nhwc)
                        row["cpu"][f"{threads} {name}"] = {"steps_per_s": v, "samples_per_s": v * args.batch_size}
                        print(f"    {name:22s} {v:7.2f} steps/s = {v * args.batch_size:7.0f} samples/s ({v / sps:4.2f}x)", flush=True)
            if torch.cuda.is_available():
                sps = step_rate(net, batch, "cuda", args.seconds, amp=True)
                row["cuda"] = {"steps_per_s": sps, "samples_per_s": sps * args.batch_size, "loader_to_step": loader / sps}
                print(f"  cuda + amp: train {sps:7.1f} steps/s = {sps * args.batch_size:8.0f} samples/s"
                      f" | loader/step {loader / sps:5.2f}x", flush=True)
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
