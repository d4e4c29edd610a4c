#!/usr/bin/env python
"""Speed of the full 23-net Sun et al. refinement: faces per second, batched, on 2 CPU threads.

Times :func:`mtcnn.stages.refine_landmarks` (levels 1, 2 and 3: grey conversion, one crop call
per level, all nets) over ``--faces`` faces in one call, on CNN_FacePoint test images (one face
each, their given boxes) or, with ``--synthetic``, on random 640x480 images holding
``--per-image`` faces each. Detection is not timed. Target: >= 2,000 faces/s.

    python benchmarks/bench_cascade.py --threads 2 [--bundle mtcnn/weights/cascade_sun.pt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtcnn.cascade import DEFAULT_CASCADE, LandmarkCascade, load_cascade  # noqa: E402
from mtcnn.config import data_root  # noqa: E402
from mtcnn.nets.cascade import CASCADE_NETS, build_cascade_net  # noqa: E402
from mtcnn.stages import refine_landmarks  # noqa: E402


def _test_faces(count: int):
    from mtcnn.data.annotations import read_cnn_facepoint
    from mtcnn.io import read_image_rgb

    records = read_cnn_facepoint(data_root() / "cnn_facepoint" / "testImageList.txt")[:count]
    images = [torch.from_numpy(read_image_rgb(r.path)).permute(2, 0, 1) for r in records]
    boxes = torch.from_numpy(np.concatenate([r.boxes for r in records])).float()
    return images, boxes, torch.arange(len(records))


def _synthetic_faces(count: int, per_image: int):
    g = torch.Generator().manual_seed(0)
    n_images = -(-count // per_image)
    images = [torch.randint(0, 256, (3, 480, 640), generator=g, dtype=torch.uint8) for _ in range(n_images)]
    side = 40 + torch.rand(count, generator=g) * 120
    x1 = torch.rand(count, generator=g) * (640 - side)
    y1 = torch.rand(count, generator=g) * (480 - side)
    boxes = torch.stack([x1, y1, x1 + side, y1 + side], 1)
    return images, boxes, torch.arange(count) // per_image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bundle", help=f"cascade bundle (default {DEFAULT_CASCADE.relative_to(ROOT)}; random weights if absent)")
    p.add_argument("--synthetic", action="store_true", help="random 640x480 images instead of CNN_FacePoint test images")
    p.add_argument("--per-image", type=int, default=16, help="faces per synthetic image")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: the nets under bf16 autocast (fast where the CPU has AVX-512 BF16 or AMX)")
    p.add_argument("--target", type=float, default=2000.0, help="faces/s to meet")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)  # grey conversion and mip levels: OpenCV's pool defaults to every core
    if a.bundle or DEFAULT_CASCADE.is_file():
        cascade = load_cascade(a.bundle)
    else:  # speed does not depend on the weights' values
        cascade = LandmarkCascade({n: build_cascade_net(n) for n in CASCADE_NETS})
    cascade.prepare("cpu", a.precision)
    images, boxes, index = _synthetic_faces(a.faces, a.per_image) if a.synthetic else _test_faces(a.faces)
    refine_landmarks(cascade, images, boxes, None, index)  # warm-up: oneDNN picks its kernels
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        refine_landmarks(cascade, images, boxes, None, index)
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    rate = len(boxes) / median
    print(f"23-net refinement ({a.precision}): {len(boxes)} faces in {len(images)} images, {a.threads} threads: "
          f"median {median * 1e3:.1f} ms ({rate:,.0f} faces/s, best {len(boxes) / best:,.0f}; "
          f"{median / len(boxes) * 1e3:.3f} ms/face) target >= {a.target:,.0f}: {'OK' if rate >= a.target else 'BELOW TARGET'}")
    return 0 if rate >= a.target else 1


if __name__ == "__main__":
    sys.exit(main())
