#!/usr/bin/env python
"""Where the detector's time goes, part by part (the README's table), for several variants.

Each variant (weights × precision) is timed by :func:`mtcnn.eval.time_breakdown.time_breakdown`
in ``--rounds`` interleaved rounds (this machine's speed drifts by 10-30 % between minutes, so
variants are compared within rounds); the table shows each part's median over the rounds.

    python benchmarks/profile_detector.py --threads 2 --weights default original --precision float32 bfloat16 --lanes off on
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import torch  # noqa: E402

from mtcnn.detector import MTCNN  # noqa: E402
from mtcnn.eval.speed import _resize, default_image, parse_size  # noqa: E402
from mtcnn.eval.time_breakdown import time_breakdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT the photo is resized to (default 640x480)")
    p.add_argument("--weights", nargs="+", default=["default", "original"])
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--lanes", nargs="+", default=["off", "on"], choices=["off", "on"],
                   help="the detector's two lanes (mtcnn.ops.lanes); with them a part's time is summed over both lanes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed calls per variant and round")
    p.add_argument("--json", dest="json_path", help="also write every round's figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    width, height = parse_size(args.size)
    photo, source = default_image()
    image = _resize(photo, width, height)
    variants = {f"{w} {prec}" + (f" lanes {lanes}" if len(args.lanes) > 1 else ""): MTCNN(weights=w, precision=prec, lanes=lanes == "on")
                for w in args.weights for prec in args.precision for lanes in args.lanes}
    rounds: dict[str, list] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, detector in variants.items():
            result = time_breakdown(detector, [image], repeats=args.repeats)
            rounds[name].append(result)
            print(f"round {r + 1}/{args.rounds} {name}: {result.total_ms:.1f} ms", file=sys.stderr, flush=True)
    names = list(variants)
    parts = list(rounds[names[0]][0].parts)
    print(f"{source} at {width}×{height}, {args.threads} threads, median of {args.rounds} rounds × {args.repeats} calls")
    print("windows scored:", {name: rounds[name][0].windows for name in names})
    print("| part | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for part in parts + ["total"]:
        cells = []
        for name in names:
            values = [res.total_ms if part == "total" else res.parts[part] for res in rounds[name]]
            cells.append(f"{statistics.median(values):.1f}")
        print(f"| {part} | " + " | ".join(cells) + " |")
    if args.json_path:
        out = {name: [{"parts": res.parts, "total_ms": res.total_ms, "windows": res.windows} for res in rs] for name, rs in rounds.items()}
        Path(args.json_path).write_text(json.dumps({"threads": args.threads, "size": args.size, "source": source, "variants": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
