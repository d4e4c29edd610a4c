"""``mtcnn-benchmark`` / ``tools/benchmark.py``: detector speed and memory by size, min face, batch, device."""

from __future__ import annotations

import argparse

from mtcnn.commands.common import WEIGHTS_HELP, finite_float, report
from mtcnn.errors import MTCNNError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark.py", description="Time the detector: ms per image and peak memory by size, min face, batch size and device.")
    p.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"], help="WIDTHxHEIGHT ...")
    p.add_argument("--min-face", nargs="+", type=finite_float, default=[20.0], help="minimum face sizes (default 20)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[1], help="images per detect call (default 1)")
    p.add_argument("--device", nargs="+", default=["cpu"], help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per case (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case (default 2)")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--image", help="photo to resize to each size (default data_root()/dlib_faces/bald_guys.jpg)")
    p.add_argument("--json", dest="json_path", help="write settings and per-case results here")
    p.add_argument("--compare-facenet", metavar="WHEEL", help="also time facenet-pytorch 2.6.0's MTCNN from this wheel (interleaved with ours)")
    p.add_argument("--facenet-thresholds", nargs=3, type=float, metavar=("P", "R", "O"),
                   help="facenet-pytorch's stage thresholds (default: ours with --weights original, else its own 0.6 0.7 0.7)")
    p.add_argument("--backend", nargs="+", default=["torch"], choices=["torch", "onnxruntime"], help="what runs the nets (default torch)")
    p.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"],
                   help="auto (default: what MTCNN() runs, bfloat16 on a CPU with native bf16, else float32), float32 and/or bfloat16 (O-Net in bf16; CPU torch backend)")
    p.add_argument("--mixed", type=int, default=0, metavar="N", help="also time one batch of N (<= 8) differently sized copies of the image")
    p.add_argument("--memory", choices=["isolated", "off"], default="isolated",
                   help="isolated (default): each case in its own process, peak RSS seen by the OS (every allocator; "
                        "about 2 s more per case); off: all cases in this process, no memory figures")
    p.add_argument("--regression", action="store_true",
                   help="also run the LED-wall regression photo (data folder's regressions/led_wall_press_photo.jpg) "
                        "at --preset wider (min face 10, factor 0.79), batch 1; skipped when absent")
    p.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; one ``error:`` line and the error's exit code when
    the benchmark cannot run (bad settings 2, missing weights or image 1)."""
    import json
    import sys

    from mtcnn.atomic import atomic_write_text
    from mtcnn.eval.speed import parse_size, run_benchmark

    a = parser().parse_args(argv)
    try:
        result = run_benchmark(
            [parse_size(s) for s in a.sizes], a.min_face, a.batch_size, a.device, threads=a.threads,
            repeats=a.repeats, warmup=a.warmup, weights=a.weights, image=a.image, compare_facenet=a.compare_facenet,
            backends=a.backend, mixed=a.mixed, precisions=a.precision, facenet_thresholds=a.facenet_thresholds,
            memory=a.memory, regression=a.regression, log=None if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)),
        )  # fmt: skip
    except MTCNNError as e:
        return report(e)
    print(result.format_table())
    if a.json_path:
        atomic_write_text(a.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {a.json_path}")
    return 0
