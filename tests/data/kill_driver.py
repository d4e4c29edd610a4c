"""Kill a sample generator or the miner with SIGKILL at random moments, resume, compare.

Run by ``test_kill_resume.py`` as one subprocess: ``python kill_driver.py WORKDIR JOB KILLS SEED``
(JOB: ``generate`` or ``mine``). The imports happen once here; every run of the job is a forked
child, so a kill costs milliseconds, not an interpreter start. For each of KILLS rounds a child
resumes the job and is SIGKILLed at a random moment within the time an uninterrupted run takes;
a last child finishes the job, and its file must equal the uninterrupted run's, bit for bit.
Prints one JSON line: kills, kills that hit a running job, and the differences found.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from mtcnn.config import from_dict
from mtcnn.data.annotations import ImageAnnotation, write_wider
from mtcnn.config.data import PNetDataConfig
from mtcnn.data.generate import generate_pnet
from mtcnn.data.h5 import FIELDS, KINDS
from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples
from mtcnn.nets import build_net
from mtcnn.weights import NET_NAMES, save_bundle


def make_world(root: Path, n_images: int) -> None:
    rng = np.random.default_rng(0)
    records = []
    for k in range(n_images):
        image = rng.integers(0, 80, (120, 160, 3), dtype=np.uint8)
        boxes = np.array([[10 + 3 * (k % 9), 20, 60 + 3 * (k % 9), 70], [90, 40, 140, 95]], np.float32)
        for x1, y1, x2, y2 in boxes.astype(int):
            image[y1:y2, x1:x2] = 200 + k % 40
        path = root / "images" / f"img{k:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        records.append(ImageAnnotation(path=path, boxes=boxes, landmarks=np.zeros((2, 0, 2), np.float32),
                                       ignore=np.zeros(2, bool)))
    write_wider(root / "gt.txt", records, root / "images")
    torch.manual_seed(0)
    save_bundle({n: build_net(n) for n in NET_NAMES}, root / "nets.pt")


def source(root: Path) -> dict:
    return {"name": "scenes", "format": "wider", "path": str(root / "gt.txt"), "images_root": str(root / "images")}


def run_job(job: str, root: Path, out: Path) -> None:
    torch.set_num_threads(1)
    if job == "generate":
        cfg = from_dict(PNetDataConfig, {"workers": 1, "chunk_images": 2, "out": str(out), "seed": 3,
                                         "sources": {"train": [source(root)], "val": []},
                                         "landmarks": {"enabled": False}})
        generate_pnet(cfg, "train", progress=False)
    else:
        cfg = from_dict(MiningConfig, {
            "test_mode": "PNet", "pnet": str(root / "nets.pt"), "out": str(out), "workers": 0, "batch_images": 2,
            "landmarks": False, "min_box_size": 12, "detector": {"thresholds": [0.0, 0.0], "min_face_size": 24},
            "sources": {"train": [source(root)], "val": []},
        })  # fmt: skip
        mine_hard_examples(cfg, "train", progress=False)


def final_file(job: str, out: Path) -> Path:
    return out / ("pnet_train.h5" if job == "generate" else "rnet_train.h5")


def contents(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {f"{k}/{name}": f[k][name][:] for k in KINDS for name in FIELDS}
        out["sources"] = np.array(f["sources"].asstr()[:])
    return out


def differences(a: dict, b: dict) -> list[str]:
    return [key for key in a if a[key].shape != b[key].shape or not np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f")]


def child(job: str, root: Path, out: Path) -> mp.Process:
    p = mp.get_context("fork").Process(target=run_job, args=(job, root, out))
    p.start()
    return p


def main(work: Path, job: str, kills: int, seed: int) -> dict:
    make_world(work, 24 if job == "generate" else 12)
    t0 = time.perf_counter()
    ref = child(job, work, work / "ref")
    ref.join()
    took = time.perf_counter() - t0
    assert ref.exitcode == 0, f"uninterrupted {job} run failed"
    reference = contents(final_file(job, work / "ref"))
    rng = random.Random(seed)
    out = work / "killed"
    hit = 0
    for _ in range(kills):
        if final_file(job, out).exists():
            final_file(job, out).unlink()  # finished before its kill: start the next round afresh
        p = child(job, work, out)
        time.sleep(rng.uniform(0.0, took))
        hit += p.is_alive()
        p.kill()  # SIGKILL
        p.join()
    if not final_file(job, out).exists():
        p = child(job, work, out)
        p.join()
        assert p.exitcode == 0, f"resumed {job} run failed"
    diff = differences(contents(final_file(job, out)), reference)
    return {"job": job, "seconds": round(took, 2), "kills": kills, "hit_running_job": hit, "differences": diff,
            "rows": {k: int(reference[f"{k}/label"].shape[0]) for k in KINDS}}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
