#!/usr/bin/env python
"""Benchmark: 1 vs 2 torchrun processes of P-Net sample generation and of hard-example mining.

Builds a WIDER-format set of ``--images`` photos (the face_mask crowd photos, every split,
resized to 640x480, repeated past their 853; ``--synthetic``: random images with bright boxes) in a
temporary folder, then runs each job as the user would, under
``torchrun --standalone --nproc_per_node 1`` and ``--nproc_per_node 2``:

* ``gen``: ``prepare_data/gen_12net_data.py`` (detection samples only, ``--workers`` pool
  processes per rank);
* ``mine``: ``tools/gen_hard_example.py --test_mode PNet`` with ``--pnet`` (default: the
  converted original weights), ``--threads`` torch threads and ``--workers`` readers per rank.

For each it prints the wall time of the whole command (start-up included), images/s, and the
speedup of 2 processes over 1; "job s" is the slowest rank's own timing (start-up excluded).
The 2-process samples are checked to equal the 1-process samples as a multiset (``--no-check``
skips it). Target: >= 1.6x on a 2-core machine. Every process gets OMP_NUM_THREADS=--threads.
Each torchrun start costs a few seconds (imports), so use enough images for the wall times to
mean something (P-Net generation runs at about 80 images/s per core, mining at about 5-10).

    python benchmarks/bench_sharding.py --images 1200 --jobs gen,mine [--repeats 3]
    python benchmarks/bench_sharding.py --synthetic --images 16     # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config import data_root  # noqa: E402
from mtcnn.data.annotations import ImageAnnotation, read_voc_dir, write_wider  # noqa: E402
from mtcnn.data.h5 import FIELDS, KINDS  # noqa: E402
from mtcnn.data.readers import open_sample_file  # noqa: E402
from mtcnn.io import read_image_rgb, write_image_rgb  # noqa: E402

SCRIPTS = {"gen": "prepare_data/gen_12net_data.py", "mine": "tools/gen_hard_example.py"}
OUTPUT = {"gen": "pnet_train.h5", "mine": "rnet_train.h5"}


def build_set(folder: Path, count: int, synthetic: bool, size=(640, 480)) -> Path:
    """``count`` photos at ``size`` with their boxes, as ``folder/gt.txt`` (WIDER format)."""
    out = []
    if synthetic:
        rng = np.random.default_rng(0)
        for k in range(count):
            image = rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8)
            boxes = np.array([[60 + k % 80, 80, 220 + k % 80, 260], [360, 120, 480, 250]], np.float32)
            for x1, y1, x2, y2 in boxes.astype(int):
                image[y1:y2, x1:x2] = 160 + k % 90
            path = folder / "images" / f"img{k:05d}.jpg"
            write_image_rgb(path, image)
            out.append(ImageAnnotation(path=path, boxes=boxes, landmarks=np.zeros((2, 0, 2), np.float32),
                                       ignore=np.zeros(2, bool)))
    else:
        records = read_voc_dir(data_root() / "face_mask" / "annotations")
        for k in range(count):  # past the 853 photos they repeat (each copy is a work item of its own)
            rec = records[k % len(records)]
            image = read_image_rgb(rec.path)
            sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
            path = folder / "images" / f"{k:05d}_{rec.path.name}"
            write_image_rgb(path, cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
            boxes = rec.boxes * np.array([sx, sy, sx, sy], np.float32)
            out.append(ImageAnnotation(path=path, boxes=boxes, landmarks=np.zeros((len(boxes), 0, 2), np.float32),
                                       ignore=rec.ignore))
    write_wider(folder / "gt.txt", out, folder / "images")
    return folder / "gt.txt"


def config(job: str, folder: Path, gt: Path, a: argparse.Namespace) -> Path:
    source = {"name": "bench", "format": "wider", "path": str(gt), "images_root": str(folder / "images")}
    if job == "gen":
        cfg = {"seed": 1, "workers": a.workers, "sources": {"train": [source], "val": []}, "landmarks": {"enabled": False}}
    else:
        cfg = {"test_mode": "PNet", "pnet": str(Path(a.pnet).resolve()), "workers": a.workers, "threads": a.threads,
               "landmarks": False, "sources": {"train": [source], "val": []}}
    path = folder / f"{job}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(job: str, nproc: int, cfg: Path, out: Path, threads: int) -> dict:
    args = ["--config", str(cfg), "--out", str(out), "--quiet"] if job == "gen" else \
        ["--test_mode", "PNet", "--split", "train", "--config", str(cfg), f"out={out}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / SCRIPTS[job]), *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{job} with {nproc} process(es) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    if job == "gen":  # "images: N in job, R done before, P processed now, S unreadable skipped; X images/s"
        rates = re.findall(r"(\d[\d,]*) processed now, .*?; ([\d.]+) images/s", proc.stdout)
        seconds = [int(p.replace(",", "")) / float(r) for p, r in rates if float(r) > 0]
    else:  # "P images mined in S s"
        seconds = [float(s) for s in re.findall(r"images mined in ([\d.]+) s", proc.stdout)]
    if len(seconds) != nproc:
        raise SystemExit(f"could not read the {nproc} rank timings of {job} from:\n{proc.stdout}")
    return {"wall_s": round(wall, 2), "job_s": round(max(seconds), 2)}


def multiset(path: Path) -> dict[str, list[bytes]]:
    reader = open_sample_file(path)
    out = {}
    for kind in KINDS:
        data = reader.get(kind, np.arange(reader.counts()[kind]), FIELDS)
        src = reader.row_sources(kind)
        out[kind] = sorted(b"".join(data[f][i].tobytes() for f in FIELDS if f != "source") + str(src[i]).encode()
                           for i in range(len(src)))
    reader.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--jobs", default="gen,mine", help="comma-separated: gen, mine")
    p.add_argument("--pnet", default=str(ROOT / "third_party" / "mtcnn_original.pt"), help="P-Net weights for mining")
    p.add_argument("--workers", type=int, default=1, help="pool / reader processes per rank")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per rank")
    p.add_argument("--synthetic", action="store_true", help="random images instead of the face_mask photos")
    p.add_argument("--no-check", action="store_true", help="skip comparing the 2-process samples with the 1-process ones")
    p.add_argument("--repeats", type=int, default=1, help="run 1 and 2 processes this many times each, alternating; medians count")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    jobs = [j.strip() for j in a.jobs.split(",") if j.strip()]
    if set(jobs) - set(SCRIPTS):
        p.error(f"--jobs: unknown job(s) {sorted(set(jobs) - set(SCRIPTS))}; expected gen, mine")
    results = {"images": a.images, "workers": a.workers, "threads": a.threads, "cpus": os.cpu_count(), "jobs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt = build_set(tmp, a.images, a.synthetic)
        n = sum(1 for _ in (tmp / "images").iterdir())
        results["images"] = n
        print(f"{n} photos at 640x480 ({'synthetic' if a.synthetic else 'face_mask'}); {os.cpu_count()} CPUs, "
              f"{a.threads} thread(s) and {a.workers} worker(s) per process")
        print(f"{'job':6} {'procs':>5} {'wall s':>8} {'img/s':>8} {'job s':>8} {'img/s':>8}")
        for job in jobs:
            cfg = config(job, tmp, gt, a)
            # 1, 2, 1, 2, ... so that a slow spell of a shared machine hits both; the medians count.
            trials: dict[int, list[dict]] = {1: [], 2: []}
            for rep in range(a.repeats):
                for nproc in (1, 2):
                    folder = tmp / f"{job}{nproc}"
                    if rep:
                        shutil.rmtree(folder, ignore_errors=True)
                    trials[nproc].append(run(job, nproc, cfg, folder, a.threads))
                    r = trials[nproc][-1]
                    print(f"{job:6} {nproc:>5} {r['wall_s']:>8.2f} {n / r['wall_s']:>8.1f} {r['job_s']:>8.2f} {n / r['job_s']:>8.1f}",
                          flush=True)
            runs = {k: {key: statistics.median(t[key] for t in v) for key in ("wall_s", "job_s")} for k, v in trials.items()}
            speed = {"wall": round(runs[1]["wall_s"] / runs[2]["wall_s"], 2), "job": round(runs[1]["job_s"] / runs[2]["job_s"], 2)}
            if a.repeats > 1:
                print(f"{job}: medians of {a.repeats}: 1 process {runs[1]['wall_s']:.2f} s, 2 processes {runs[2]['wall_s']:.2f} s (wall)")
            same = None
            if not a.no_check:
                same = multiset(tmp / f"{job}1" / OUTPUT[job]) == multiset(tmp / f"{job}2" / OUTPUT[job])
            print(f"{job}: 2 processes are {speed['wall']:.2f}x faster (wall), {speed['job']:.2f}x (job)"
                  + ("" if same is None else f"; same samples as 1 process: {'yes' if same else 'NO'}"))
            results["jobs"][job] = {"runs": {str(k): v for k, v in runs.items()}, "trials": {str(k): v for k, v in trials.items()},
                                    "speedup": speed, "same_samples": same}
    print(json.dumps(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["same_samples"] is not False for r in results["jobs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
