#!/usr/bin/env python
"""Benchmark: time and peak memory of NMS against the number of windows, on a synthetic P-Net flood.

The flood is what a P-Net gives on a textured wall at min face 10: on every level of a pyramid
(factor 0.79) a quarter of the stride-2 cells fire, windows of the level's size with random
scores; a larger "photo" gives more windows. Each method runs in a child process of its own
(peak memory = the child's peak resident set minus its resident set before the call), under an
address-space limit (default 6 GB) so that a method that needs more fails instead of swapping.

- ``new``: :func:`mtcnn.ops.boxes.batched_nms` (exact greedy, blocks against the kept boxes).
- ``pairs``: the implementation it replaced (every pair of x-overlapping windows at once).
- ``greedy``: the textbook loop (take the best box, drop what it overlaps, repeat) in torch.
- ``cv2``: OpenCV's ``cv2.dnn.NMSBoxesBatched`` (union only; its Python binding rounds the boxes
  to whole pixels, so it keeps a different set; it agrees with ``new`` on rounded boxes).
- ``topk+new``: the detector's P-Net path: at most ``--topk`` windows per level, then ``new``.

Per-level NMS at 0.5 (groups = levels), as P-Net's first NMS. Columns: windows, kept, wall and CPU
seconds (CPU is the steadier figure on a shared machine), peak MB; a note says where the kept set
differs from ``new``'s (``topk+new`` keeps fewer by design, once a level has over ``--topk``).

python benchmarks/bench_nms.py [--sides 200 400 800 1600] [--methods new pairs greedy cv2 topk+new] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.ops.boxes import batched_nms, box_iou, paired_iou  # noqa: E402
from mtcnn.stages import top_per_group  # noqa: E402

SLOW_MAX = 60_000  # greedy and cv2 (time ∝ windows × kept) take minutes beyond this


def flood(side: int, seed: int = 0, fire: float = 0.25, min_face: float = 10.0, factor: float = 0.79):
    """P-Net-like windows of a ``side``×``side`` photo: boxes, scores, level."""
    g = torch.Generator().manual_seed(seed)
    boxes, levels = [], []
    scale, level = 12.0 / min_face, 0
    while side * scale >= 12:
        cells = int((side * scale - 12) // 2) + 1
        j, i = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="xy")
        on = torch.rand(cells * cells, generator=g) < fire
        i, j = i.reshape(-1)[on].float(), j.reshape(-1)[on].float()
        boxes.append(torch.stack([2 * j / scale, 2 * i / scale, (2 * j + 12) / scale, (2 * i + 12) / scale], 1))
        levels.append(torch.full((i.numel(),), level))
        scale, level = scale * factor, level + 1
    boxes, levels = torch.cat(boxes), torch.cat(levels)
    return boxes, torch.rand(boxes.shape[0], generator=g), levels


def pairs_nms(boxes, scores, groups, threshold):
    """The replaced implementation: all x-overlapping pairs of a group, then a fixed point."""
    n = boxes.shape[0]
    x1, x2 = boxes[:, 0].double(), boxes[:, 2].double()
    base = x1.min()
    span = (torch.maximum(x2.max(), x1.max()) - base).abs() * 2 + 1
    lo, hi = groups.double() * span + (x1 - base), groups.double() * span + (x2 - base)
    order = torch.argsort(lo, stable=True)
    end = torch.searchsorted(lo[order], hi[order], side="left")
    counts = (end - torch.arange(1, n + 1)).clamp(min=0)
    total = int(counts.sum())
    first = torch.repeat_interleave(torch.arange(n), counts)
    within = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    i, j = order[first], order[first + 1 + within]
    hit = paired_iou(boxes[i], boxes[j]) > threshold
    i, j = i[hit], j[hit]
    rank = torch.empty(n, dtype=torch.long)
    by_score = torch.argsort(scores, descending=True, stable=True)
    rank[by_score] = torch.arange(n)
    first_i = rank[i] < rank[j]
    sup, vic = torch.where(first_i, i, j), torch.where(first_i, j, i)
    keep = torch.ones(n, dtype=torch.bool)
    for _ in range(n):
        suppressed = torch.zeros(n, dtype=torch.bool)
        suppressed[vic[keep[sup]]] = True
        if torch.equal(~suppressed, keep):
            break
        keep = ~suppressed
    return by_score[keep[by_score]]


def greedy_nms(boxes, scores, groups, threshold):
    """Take the best remaining box, drop every box of its group it overlaps beyond the threshold."""
    order = torch.argsort(scores, descending=True, stable=True)
    kept = []
    while order.numel():
        best = order[0]
        kept.append(int(best))
        rest = order[1:]
        over = (box_iou(boxes[best][None], boxes[rest])[0] > threshold) & (groups[rest] == groups[best])
        order = rest[~over]
    return torch.tensor(kept, dtype=torch.long)


def cv2_nms(boxes, scores, groups, threshold):
    import cv2

    b = boxes.double()
    xywh = torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).tolist()
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores.double().tolist(), groups.tolist(), -1.0, threshold)
    return torch.as_tensor(kept, dtype=torch.long).reshape(-1)


def topk_nms(boxes, scores, groups, threshold, topk):
    top = top_per_group(scores, groups, topk)
    if top is None:
        return batched_nms(boxes, scores, groups, threshold)
    return top[batched_nms(boxes[top], scores[top], groups[top], threshold)]


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(method: str, side: int, threads: int, topk: int, mem_limit_gb: float) -> dict:
    torch.set_num_threads(threads)
    boxes, scores, levels = flood(side)
    n = boxes.shape[0]
    if method in ("greedy", "cv2") and n > SLOW_MAX:
        return {"windows": n, "skipped": f"over {SLOW_MAX} windows (minutes)"}
    fns = {
        "new": lambda: batched_nms(boxes, scores, levels, 0.5),
        "pairs": lambda: pairs_nms(boxes, scores, levels, 0.5),
        "greedy": lambda: greedy_nms(boxes, scores, levels, 0.5),
        "cv2": lambda: cv2_nms(boxes, scores, levels, 0.5),
        "topk+new": lambda: topk_nms(boxes, scores, levels, 0.5, topk),
    }
    # new's result, to compare with (for new itself a warm-up: first-call costs out of the timing)
    reference = set(batched_nms(boxes, scores, levels, 0.5).tolist())
    before = _rss_mb("VmRSS")
    limit = int(mem_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        kept = fns[method]()
    except (RuntimeError, MemoryError) as e:
        return {"windows": n, "failed": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"}
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"windows": n, "kept": int(kept.numel()), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
           "peak_mb": round(max(0.0, _rss_mb("VmHWM") - before), 1)}
    if method != "new":
        out["agrees"] = set(kept.tolist()) == reference
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[200, 400, 800, 1600], help="photo sides (px)")
    parser.add_argument("--methods", nargs="+", default=["new", "pairs", "greedy", "cv2", "topk+new"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--topk", type=int, default=10_000, help="windows per level for topk+new")
    parser.add_argument("--mem-limit-gb", type=float, default=6.0)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.threads, args.topk, args.mem_limit_gb)))
        return 0
    rows = []
    print(f"{'side':>5} {'method':>9} {'windows':>8} {'kept':>7} {'seconds':>8} {'CPU s':>7} {'peak MB':>8}  notes")
    for side in args.sides:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--one", method, str(side), "--threads", str(args.threads),
                   "--topk", str(args.topk), "--mem-limit-gb", str(args.mem_limit_gb)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            try:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                row = {"failed": (done.stderr.strip().splitlines() or ["no output"])[-1][:80]}
            row.update(side=side, method=method)
            rows.append(row)
            notes = row.get("skipped") or row.get("failed") or ("" if row.get("agrees", True) else "differs from new")
            print(f"{side:>5} {method:>9} {row.get('windows', ''):>8} {row.get('kept', ''):>7} "
                  f"{row.get('seconds', ''):>8} {row.get('cpu_seconds', ''):>7} {row.get('peak_mb', ''):>8}  {notes}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
