#!/usr/bin/env python
"""Benchmark: faces at any angle with ``MTCNN(rotation="quarter")`` (and, with ``--pcn DIR``, the
rotation-calibrating cascade ``MTCNN(rotation="pcn")``) against the upright detector.

``accuracy``: on the validation sets of ``tools/compare_models.py`` (face_mask val, WebFaces val,
the composite scenes val; :func:`mtcnn.eval.model_table.detection_sets`), every photo turned by
0 / 90 / 180 / 270 and by a seeded random angle in ±180° (:mod:`mtcnn.eval.rotate`), AP at IoU
0.5 and recall at 100 false positives, for the upright detector and for the quarter detector.
Writes ``rotation_accuracy.json`` beside a table.

``speed``: the same photos (the first ``--images`` of each set, batch 1) through both detectors,
median ms per photo over ``--repeats`` alternating passes, and where the time goes
(:func:`mtcnn.eval.time_breakdown.time_breakdown`) at 640×480.

python benchmarks/bench_rotation.py accuracy [--sets face_mask WebFaces scenes] [--seed 0] [--out DIR] [--pcn DIR]
python benchmarks/bench_rotation.py speed [--images 40] [--repeats 3] [--threads 2] [--pcn DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn import MTCNN  # noqa: E402
from mtcnn.config.paths import data_root, gen_root, webfaces_root  # noqa: E402
from mtcnn.eval.model_table import TableInputs, detection_sets  # noqa: E402
from mtcnn.eval.runner import rotated_detection_table  # noqa: E402
from mtcnn.io import read_image_rgb  # noqa: E402

SETS = {"face_mask": "face_mask val", "WebFaces": "WebFaces val", "scenes": "composite scenes val"}


def _sets(names, scenes: Path) -> dict:
    found = detection_sets(TableInputs(data_root(), webfaces_root(), scenes))
    return {SETS[n]: found[SETS[n]] for n in names if SETS[n] in found}


def _detectors(args) -> dict:
    out = {"upright": MTCNN(device="cpu"), "quarter": MTCNN(device="cpu", rotation="quarter")}
    if args.pcn:
        thresholds = tuple(args.pcn_thresholds) if args.pcn_thresholds else None
        out["pcn"] = MTCNN(device="cpu", rotation="pcn", pcn=args.pcn, pcn_thresholds=thresholds)
    return out


def accuracy(args) -> None:
    detectors = _detectors(args)
    results: dict = {}
    for set_name, records in _sets(args.sets, Path(args.scenes)).items():
        for det_name, detector in detectors.items():
            t0 = time.perf_counter()
            table, _ = rotated_detection_table(detector, records, "all", seed=args.seed, batch_size=8, progress=False)
            seconds = time.perf_counter() - t0
            keys = ("ap50", "recall_at_100_fp", "num_faces", "num_detections", "num_images_evaluated", "angle_error")
            results.setdefault(set_name, {})[det_name] = {s: {k: e[k] for k in keys if k in e} for s, e in table.items()}
            row = "  ".join(f"{s:>6}: AP {e['ap50']:.3f} R@100FP {e['recall_at_100_fp']:.3f}"
                            + (f" angle err {e['angle_error']['mean']:.1f}" if "angle_error" in e else "") for s, e in table.items())
            print(f"{set_name:>22} {det_name:>8} ({seconds:6.0f} s)  {row}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rotation_accuracy.json").write_text(json.dumps({"seed": args.seed, "results": results}, indent=2) + "\n")
    print(f"wrote {out / 'rotation_accuracy.json'}")


def speed(args) -> None:
    from mtcnn.eval.time_breakdown import time_breakdown

    torch.set_num_threads(args.threads)
    detectors = _detectors(args)
    for set_name, records in _sets(args.sets, Path(args.scenes)).items():
        images = [read_image_rgb(r.path) for r in records[: args.images]]
        for im in images[:2]:
            for det in detectors.values():
                det.detect(im)
        times = {name: [] for name in detectors}
        for _ in range(args.repeats):
            for name, det in detectors.items():
                t0 = time.perf_counter()
                for im in images:
                    det.detect(im)
                times[name].append((time.perf_counter() - t0) * 1e3 / len(images))
        ms = {name: statistics.median(t) for name, t in times.items()}
        row = ", ".join(f"{name} {v:.1f} ms ({v / ms['upright']:.2f}x)" for name, v in ms.items())
        print(f"{set_name:>22}: {len(images)} photos, per photo: {row}", flush=True)
    scene = [read_image_rgb(r.path) for r in _sets(["scenes"], Path(args.scenes)).get(SETS["scenes"], [])[:1]]
    if scene:
        for name, det in detectors.items():
            if name == "pcn":
                continue  # time_breakdown knows the upright stages only
            b = time_breakdown(det, scene, repeats=args.repeats * 3, warmup=2)
            print(f"\n{name} at {scene[0].shape[1]}x{scene[0].shape[0]}:\n{b.format_table()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("accuracy", "speed"))
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    p.add_argument("--scenes", default=str(gen_root() / "pipeline_v2" / "scenes" / "val"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_rotation")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pcn", help="also the rotation-calibrating cascade: a folder with pcn1.pt, pcn2.pt, pcn3.pt")
    p.add_argument("--pcn-thresholds", type=float, nargs=3, help="its three thresholds (default: rotation_pcn.PCNSettings)")
    args = p.parse_args()
    accuracy(args) if args.task == "accuracy" else speed(args)


if __name__ == "__main__":
    main()
