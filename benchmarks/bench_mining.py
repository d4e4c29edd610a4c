#!/usr/bin/env python
"""Benchmark: images per second of `gen_hard_example.py --test_mode PNet` on 640×480 photos.

Builds a WIDER-format set of real crowd photos (face_mask validation split) resized to 640×480
in a temporary folder, then mines them with a trained P-Net (default: the converted original
weights) on N CPU threads. Target: ≥ 10 images/s with 2 threads.

python benchmarks/bench_mining.py [--pnet third_party/mtcnn_original.pt] [--images 64] [--threads 2] [--mode PNet|RNet]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.config import data_root, from_dict  # noqa: E402
from mtcnn.data.annotations import ImageAnnotation, read_voc_dir, split_by_name, write_wider  # noqa: E402
from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples  # noqa: E402
from mtcnn.io import read_image_rgb, write_image_rgb  # noqa: E402


def build_set(folder: Path, count: int, size=(640, 480)) -> Path:
    records = split_by_name(read_voc_dir(data_root() / "face_mask" / "annotations"), "val")[:count]
    out = []
    for rec in records:
        image = read_image_rgb(rec.path)
        sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
        path = folder / "images" / rec.path.name
        write_image_rgb(path, cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        boxes = rec.boxes * np.array([sx, sy, sx, sy], np.float32)
        out.append(ImageAnnotation(path=path, boxes=boxes, landmarks=np.zeros((len(boxes), 0, 2), np.float32), ignore=rec.ignore))
    write_wider(folder / "gt.txt", out, folder / "images")
    return folder / "gt.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pnet", default="third_party/mtcnn_original.pt")
    parser.add_argument("--rnet", default="third_party/mtcnn_original.pt")
    parser.add_argument("--mode", choices=["PNet", "RNet"], default="PNet")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="image-reading processes")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt = build_set(tmp, args.images)
        cfg = from_dict(MiningConfig, {
            "test_mode": args.mode, "pnet": args.pnet, "rnet": args.rnet, "out": str(tmp / "out" / "{stage}"),
            "threads": args.threads, "workers": args.workers, "landmarks": False,
            "sources": {"train": [{"format": "wider", "path": str(gt), "images_root": str(tmp / "images")}]},
        })  # fmt: skip
        summary = mine_hard_examples(cfg, "train", progress=False)
    result = {
        "mode": args.mode, "images": summary.processed, "seconds": round(summary.seconds, 2),
        "images_per_second": round(summary.processed / summary.seconds, 2), "threads": args.threads,
        "counts": summary.counts, "recall": summary.recall, "target_images_per_second": 10,
    }  # fmt: skip
    print("\n".join(summary.lines()))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
