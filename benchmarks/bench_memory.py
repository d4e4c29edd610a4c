"""Resident memory over many photos: does a long run stay flat?

Runs the detector over the first N photos of a folder, once per heap setting, each in a fresh
process (``MTCNN_HEAP=bounded``: :func:`mtcnn.memory.bound_heap`, what the long-running commands
set; ``fast``: glibc's own policy), and prints the resident memory every ``--every`` photos, the
peak and the process CPU time::

    python benchmarks/bench_memory.py ../wider/train --photos 300 --preset wider --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
folder, photos, every, preset, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
from mtcnn.memory import bound_heap
bound_heap()
from mtcnn.detect import build_detector, detect_files
from mtcnn.io import list_images
paths = list_images([folder])[:photos]
detector = build_detector(device="cpu", preset=preset)
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
trace, start = [], time.process_time()
for k, _ in enumerate(detect_files(detector, paths, 8, lambda path, error: None), 1):
    if k % every == 0:
        trace.append(round(rss_mb()))
print(json.dumps({"photos": len(paths), "rss_mb": trace, "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "cpu_s": round(time.process_time() - start, 1)}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a folder of photos")
    p.add_argument("--photos", type=int, default=300)
    p.add_argument("--every", type=int, default=50, help="print resident memory every N photos")
    p.add_argument("--preset", choices=("default", "wider"), default="wider")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--heap", nargs="+", choices=("bounded", "fast"), default=["bounded", "fast"])
    args = p.parse_args()
    for heap in args.heap:
        env = {**os.environ, "MTCNN_HEAP": heap, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run([sys.executable, "-c", CHILD, args.folder, str(args.photos), str(args.every), args.preset,
                              str(args.threads)], env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"heap {heap}: {r['photos']} photos, resident MB every {args.every}: {r['rss_mb']}, peak {r['peak_mb']} MB, "
              f"CPU {r['cpu_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
