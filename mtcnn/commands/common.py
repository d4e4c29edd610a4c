"""What every command shares: detector options, the one error ending, the long-job runner and
the sample generators' command line."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

from mtcnn.config import default_config, load_config
from mtcnn.errors import EXIT_INPUT, EXIT_INTERRUPTED, MTCNNError


def finite_float(text: str) -> float:
    """argparse type: a number, never NaN or infinity (they pass every range check silently)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


WEIGHTS_HELP = (
    "weights bundle or folder of pnet.pt, rnet.pt, onet.pt; 'original' for the converted original MTCNN weights "
    "(third_party/mtcnn_original.pt); default: $MTCNN_WEIGHTS, then this project's shipped weights"
)


def name_equals(form: str, example: str) -> Callable[[str], tuple[str, str]]:
    """An argparse ``type`` for ``NAME=VALUE`` arguments (``form`` and ``example`` go into its error)."""

    def parse(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form}, e.g. {example}")
        return name, value

    return parse


def detector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--min-face", type=finite_float, help="smallest face side in pixels (default 20; 10 with --preset wider)")
    parser.add_argument("--factor", type=finite_float, help="pyramid scale step (default 0.709)")
    parser.add_argument("--thresholds", type=finite_float, nargs=3, metavar=("P", "R", "O"), help="stage thresholds (default: what the weights carry in their detector.json, e.g. 0.4 0.05 0.15 for the shipped weights; else 0.6 0.7 0.7)")
    parser.add_argument("--preset", choices=["default", "wider"], help="'wider': min face 10, factor 0.79, thresholds 0.5 0.5 0.3")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch", help='what runs the nets (default torch; onnxruntime: CPU, needs pip install -e ".[onnx]")')
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto (default: bfloat16 on a CPU with native bf16, AVX-512 BF16 or AMX, else float32), float32, or bfloat16: O-Net (its decisions checked in float32) and the landmark cascade in bf16 (CPU torch backend)")
    parser.add_argument("--crops", metavar="DIR", help="write one aligned face crop per face into DIR (5-point similarity to the face-recognition template)")
    parser.add_argument("--crop-size", default="112", help="aligned crop size: 112 (ArcFace template), 96x112, or any N / WxH (default 112)")
    parser.add_argument("--landmarks", default="onet", metavar="MODEL",
                        help="who places the points: onet (default, 5), cascade (Sun et al. 23-net cascade, 5), "
                             "mobilenet (MobileNet-V2 cascade, 5), 68 (68-point model), or a landmark weights file")
    parser.add_argument("--max-megapixels", type=finite_float,
                        help="refuse larger images (default 50; about 35 MB of memory per megapixel at --min-face 20)")


def rotation_options(args: argparse.Namespace) -> dict[str, Any]:
    """``build_detector`` keywords of ``--rotation``, ``--pcn`` and ``--pcn-thresholds`` (only those given)."""
    options: dict[str, Any] = {}
    if getattr(args, "rotation", None) not in (None, "none"):
        options["rotation"] = args.rotation
    if getattr(args, "pcn", None):
        options["pcn"] = args.pcn
    if getattr(args, "pcn_thresholds", None):
        options["pcn_thresholds"] = args.pcn_thresholds
    return options


def detector_from_args(args: argparse.Namespace):
    from mtcnn.detect import build_detector

    max_megapixels = getattr(args, "max_megapixels", None)
    options = {} if max_megapixels is None else {"max_megapixels": max_megapixels}
    options.update(rotation_options(args))
    return build_detector(args.weights, args.min_face, args.factor, args.thresholds, args.device, args.preset,
                          backend=args.backend, precision=getattr(args, "precision", "auto"), landmarks=getattr(args, "landmarks", "onet"),
                          cascade=getattr(args, "cascade_weights", None), **options)


def crop_size_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """``--crop-size`` as an int or (width, height); a bad value is a usage error (exit 2)."""
    from mtcnn.align import parse_crop_size

    try:
        return parse_crop_size(args.crop_size)
    except ValueError as e:
        parser.error(str(e))


def report(error: BaseException) -> int:
    """Print ``error: <one line>`` and return the exit code of the error's kind."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return error.exit_code if isinstance(error, MTCNNError) else EXIT_INPUT


def run_job(load: Callable[[], Any], run: Callable[[Any], Iterable[str]]) -> int:
    """The shared ending of the long-job commands: ``run(load())`` yields lines to print.

    A library error prints one ``error:`` line and returns its kind's exit code (an OSError
    counts as bad input); Ctrl-C says how to resume (every such job resumes where it stopped).
    """
    try:
        for line in run(load()):
            print(line, flush=True)
    except (MTCNNError, OSError) as e:
        return report(e)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def data_job_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    config_cls,
    default_config_name: str,
    run,
    sizes: tuple[int, ...] | None = None,
) -> int:
    """Shared command line of the sample generators: ``[--config] [--split] [--out] [--seed]
    [--workers] [--size] [--overwrite] [--quiet] [key=value ...]`` -> ``run(cfg, split, ...)``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1")
    p.add_argument("--config", default=None, help=f"YAML config (default: the shipped {default_config_name})")
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--out", help="output folder (default from the config)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    if sizes:
        p.add_argument("--size", type=int, choices=sizes, default=sizes[0])
    p.add_argument("--overwrite", action="store_true", help="replace an existing complete file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    flags = {"seed": a.seed, "workers": a.workers, "size": getattr(a, "size", None)}
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]

    def load():
        cfg = load_config(config_cls, a.config or default_config(default_config_name), overrides)
        if a.out is not None:
            cfg.out = a.out
        return cfg

    def job(cfg):
        summary = run(cfg, a.split, overwrite=a.overwrite, progress=not a.quiet)
        return summary.lines() + [f"wrote {summary.path}"]

    return run_job(load, job)
