"""``mtcnn-detect`` / ``tools/detect.py``: faces and five landmarks in images or folders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtcnn.commands.common import crop_size_from_args, detector_arguments, detector_from_args, report
from mtcnn.errors import MTCNNError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="detect.py", description="Detect faces and five landmarks in images or folders of images.")
    p.add_argument("inputs", nargs="+", help="image files or folders (folders: their images, not recursive)")
    p.add_argument("--json", dest="json_path", help="write one JSON object per image to this .jsonl file")
    p.add_argument("--save-dir", help="write images with boxes, scores and landmarks drawn into this folder")
    p.add_argument("--batch-size", type=int, default=1, help="images per detector call (default 1)")
    p.add_argument("--cascade-weights", help="cascade bundle (default mtcnn/weights/cascade_sun.pt)")
    detector_arguments(p)
    return p


def _unique_name(save_dir: Path, path: Path, used: set[str]) -> Path:
    name = path.stem + ".jpg"
    k = 1
    while name in used:
        name = f"{path.stem}_{k}.jpg"
        k += 1
    used.add(name)
    return save_dir / name


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    crop_size = crop_size_from_args(p, args)

    from mtcnn.atomic import atomic_path
    from mtcnn.detect import detect_files
    from mtcnn.io import list_images, write_image_rgb
    from mtcnn.structures import image_record

    try:
        detector = detector_from_args(args)
    except MTCNNError as e:
        return report(e)
    except (ValueError, RuntimeError) as e:  # settings the detector refuses (e.g. an unknown device)
        report(e)
        return 2
    paths = list_images(args.inputs)
    if not paths:
        print("error: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 1
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    failures: list[Path] = []
    used_names: set[str] = set()
    crop_stems: set[str] = set()

    def failed(path: Path, error: Exception) -> None:
        report(error)
        failures.append(path)

    records = []
    for found in detect_files(detector, paths, args.batch_size, failed):
        path, image, faces = found.key, found.image, found.faces
        print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}, {found.ms:.1f} ms")
        records.append(json.dumps(image_record(path, image.shape[1], image.shape[0], faces)))
        if save_dir:
            from mtcnn.visualize import draw_detections

            write_image_rgb(_unique_name(save_dir, path, used_names), draw_detections(image, faces))
        if args.crops:
            from mtcnn.align import save_aligned_crops

            stem = _unique_name(Path(args.crops), path, crop_stems).stem
            save_aligned_crops(image, faces.landmarks, args.crops, stem, crop_size)
    if args.json_path:
        with atomic_path(args.json_path) as tmp:  # written once complete: never half a file
            tmp.write_text("".join(r + "\n" for r in records))
    if failures:
        print(f"{len(failures)} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0
