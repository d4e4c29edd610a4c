"""Command-line entry points shared by the thin scripts in tools/ and the console scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mtcnn.config import ConfigError


def _detector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="weights bundle or folder (default: $MTCNN_WEIGHTS, then the shipped weights)")
    parser.add_argument("--min-face", type=float, default=20.0, help="smallest face side in pixels (default 20)")
    parser.add_argument("--factor", type=float, default=0.709, help="pyramid scale step (default 0.709)")
    parser.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7), metavar=("P", "R", "O"))
    parser.add_argument("--preset", choices=["default", "wider"], help="'wider': min face 10, factor 0.79, thresholds 0.5 0.5 0.3")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")


def build_detector(args: argparse.Namespace):
    from mtcnn.detector import MTCNN

    return MTCNN(
        weights=args.weights,
        min_face_size=args.min_face,
        factor=args.factor,
        thresholds=tuple(args.thresholds),
        device=args.device,
        preset=None if args.preset in (None, "default") else args.preset,
    )


def _unique_name(save_dir: Path, path: Path, used: set[str]) -> Path:
    name = path.stem + ".jpg"
    k = 1
    while name in used:
        name = f"{path.stem}_{k}.jpg"
        k += 1
    used.add(name)
    return save_dir / name


def detect_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="detect.py", description="Detect faces and five landmarks in images or folders of images."
    )
    parser.add_argument("inputs", nargs="+", help="image files or folders (folders: their images, not recursive)")
    parser.add_argument("--json", dest="json_path", help="write one JSON object per image to this .jsonl file")
    parser.add_argument("--save-dir", help="write images with boxes, scores and landmarks drawn into this folder")
    parser.add_argument("--batch-size", type=int, default=1, help="images per detector call (default 1)")
    _detector_arguments(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    from mtcnn.io import ImageReadError, list_images, read_image_rgb, write_image_rgb
    from mtcnn.weights import WeightsError

    try:
        detector = build_detector(args)
    except (WeightsError, ConfigError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    paths = list_images(args.inputs)
    if not paths:
        print("error: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 1
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    json_file = json_tmp = None
    if args.json_path:
        target = Path(args.json_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed at the end: a crash never leaves half a file.
        json_tmp = target.with_name(f".{target.name}.tmp")
        json_file = open(json_tmp, "w")

    failures = 0
    used_names: set[str] = set()
    try:
        for start in range(0, len(paths), args.batch_size):
            batch = []
            for path in paths[start : start + args.batch_size]:
                try:
                    batch.append((path, read_image_rgb(path)))
                except ImageReadError as e:
                    print(f"error: {e}", file=sys.stderr)
                    failures += 1
            if not batch:
                continue
            t0 = time.perf_counter()
            results = detector.detect([image for _, image in batch])
            per_image_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            for (path, image), faces in zip(batch, results):
                print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}, {per_image_ms:.1f} ms")
                if json_file:
                    record = {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]), "faces": faces.to_records()}
                    json_file.write(json.dumps(record) + "\n")
                if save_dir:
                    from mtcnn.visualize import draw_detections

                    write_image_rgb(_unique_name(save_dir, path, used_names), draw_detections(image, faces))
    finally:
        if json_file:
            json_file.close()
            os.replace(json_tmp, args.json_path)
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0


def convert_weights_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert the original MTCNN weights shipped in the facenet-pytorch 2.6.0 wheel into this library's format.",
    )
    parser.add_argument("source", help="facenet_pytorch-2.6.0-py3-none-any.whl (pip download facenet-pytorch==2.6.0 --no-deps) or its unpacked folder")
    parser.add_argument("--out", default="third_party/mtcnn_original.pt", help="output bundle (default third_party/mtcnn_original.pt)")
    args = parser.parse_args(argv)

    from mtcnn.weights import WeightsError, import_facenet_pytorch, load_bundle, save_bundle

    try:
        nets = import_facenet_pytorch(args.source)
        meta = {"source": f"facenet-pytorch 2.6.0 ({Path(args.source).name})", "landmark_head_trained": None}
        save_bundle(
            nets,
            args.out,
            meta={
                "pnet": {**meta, "landmark_head_trained": False},
                "rnet": {**meta, "landmark_head_trained": False},
                "onet": {**meta, "landmark_head_trained": True},
            },
        )
        _, info = load_bundle(args.out)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (weights sha256 {info['sha256']})")
    return 0
