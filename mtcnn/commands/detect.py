"""``mtcnn-detect`` / ``tools/detect.py``: faces and five landmarks in images or folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtcnn.commands.common import crop_size_from_args, detector_arguments, detector_from_args, report
from mtcnn.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_USAGE, InputError, MTCNNError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="detect.py", description="Detect faces and five landmarks in images or folders of images.")
    p.add_argument("inputs", nargs="+", help="image files or folders (folders: their images, not recursive)")
    p.add_argument("--json", dest="json_path", help="write one JSON object per image to this .jsonl file")
    p.add_argument("--save-dir", help="write images with boxes, scores and landmarks drawn into this folder")
    p.add_argument("--batch-size", type=int, default=1, help="images per detector call (default 1)")
    p.add_argument("--cascade-weights", help="cascade bundle (default mtcnn/weights/cascade_sun.pt)")
    p.add_argument("--rotation", choices=("none", "quarter", "pcn"), default="none",
                   help="none (default): upright faces (about ±20°); quarter: also search the image's three other quarter "
                        "turns (about 4x the time); pcn: the rotation-calibrating cascade (any angle, one pass; --pcn); "
                        "each face gets an \"angle\" and --crops cut it upright")
    p.add_argument("--pcn", metavar="WEIGHTS", help="--rotation pcn: its nets (a folder with pcn1.pt, pcn2.pt, pcn3.pt, or a bundle)")
    p.add_argument("--pcn-thresholds", type=float, nargs=3, metavar=("T1", "T2", "T3"),
                   help="--rotation pcn: its three stages' thresholds (default 0.6 0.6 0.7)")
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

    from mtcnn.commands.outputs import JsonOutput, prepare_save_dir
    from mtcnn.io import list_images

    try:  # output paths first: a bad one fails before any work
        save_dir = prepare_save_dir(args.save_dir) if args.save_dir else None
        json_out = JsonOutput(args.json_path) if args.json_path else None
    except MTCNNError as e:
        return report(e)
    try:
        detector = detector_from_args(args)
        paths = list_images(args.inputs)
        if not paths:
            raise InputError("no images found in " + ", ".join(args.inputs))
        if len(paths) > 1:
            from mtcnn.memory import bound_heap

            bound_heap()  # resident memory flat over a folder of photos (mtcnn.memory)
    except MTCNNError as e:
        code = report(e)
    except (ValueError, RuntimeError) as e:  # settings the detector refuses
        report(e)
        code = EXIT_USAGE
    else:
        return _detect_images(detector, paths, args.batch_size, json_out, save_dir, args.crops, crop_size)
    if json_out:
        json_out.discard()
    return code


def _detect_images(detector, paths: list[Path], batch_size: int, json_out, save_dir: Path | None,
                   crops_dir: str | None = None, crop_size=112) -> int:
    """Detect, print one line per image, write the outputs; an interruption keeps the earlier
    ``--json`` file and saves the results so far beside it."""
    from mtcnn.detect import detect_files
    from mtcnn.io import write_image_rgb
    from mtcnn.structures import image_record

    failures = done = 0
    used_names: set[str] = set()
    crop_stems: set[str] = set()

    def failed(path: Path, error: Exception) -> None:
        nonlocal failures
        report(error)
        failures += 1

    try:
        for found in detect_files(detector, paths, batch_size, failed):
            path, image, faces = found.key, found.image, found.faces
            print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}, {found.ms:.1f} ms")
            if json_out:
                json_out.write(image_record(path, image.shape[1], image.shape[0], faces, found.orientation))
            if save_dir:
                from mtcnn.visualize import draw_detections

                write_image_rgb(_unique_name(save_dir, path, used_names), draw_detections(image, faces))
            if crops_dir:
                from mtcnn.align import save_aligned_crops

                stem = _unique_name(Path(crops_dir), path, crop_stems).stem
                save_aligned_crops(image, faces.landmarks, crops_dir, stem, crop_size)
            done += 1
    except (KeyboardInterrupt, OSError) as e:
        stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {' '.join(str(e).split())}; stopped"
        kept = ""
        if json_out:
            earlier = f"; {json_out.target} kept as it was" if json_out.target.exists() else ""
            kept = f"; results of those are in {json_out.abandon()}{earlier}"
        print(f"{stopped} after {done} of {len(paths)} images{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else EXIT_INPUT
    if json_out:
        json_out.finish()
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0
