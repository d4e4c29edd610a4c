"""Command-line entry points shared by the thin scripts in tools/ and the console scripts."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from mtcnn.config import ConfigError, load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_STEPS = ["scenes", "pnet_data", "train_pnet", "mine_pnet", "train_rnet", "mine_rnet", "train_onet"]


def finite_float(text: str) -> float:
    """argparse type: a number, never NaN or infinity (they pass every range check silently)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _detector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="weights bundle or folder (default: $MTCNN_WEIGHTS, then the shipped weights)")
    parser.add_argument("--min-face", type=finite_float, help="smallest face side in pixels (default 20; 10 with --preset wider)")
    parser.add_argument("--factor", type=finite_float, help="pyramid scale step (default 0.709)")
    parser.add_argument("--thresholds", type=finite_float, nargs=3, metavar=("P", "R", "O"), help="stage thresholds (default 0.6 0.7 0.7)")
    parser.add_argument("--preset", choices=["default", "wider"], help="'wider': min face 10, factor 0.79, thresholds 0.5 0.5 0.3")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--max-megapixels", type=finite_float, help="refuse larger images (default 50; about 35 MB of memory per megapixel at --min-face 20)")


def build_detector(args: argparse.Namespace):
    from mtcnn.eval.runner import build_detector as build

    options = {} if args.max_megapixels is None else {"max_megapixels": args.max_megapixels}
    return build(args.weights, args.min_face, args.factor, args.thresholds, args.device, args.preset, **options)


def _unique_name(save_dir: Path, path: Path, used: set[str]) -> Path:
    name = path.stem + ".jpg"
    k = 1
    while name in used:
        name = f"{path.stem}_{k}.jpg"
        k += 1
    used.add(name)
    return save_dir / name


class OutputPathError(ValueError):
    """An output path that cannot be written; ``str(e)`` is one line."""


def _why(e: OSError) -> str:
    return e.strerror or " ".join(str(e).split())


class JsonOutput:
    """``--json``: results go to a temporary file beside the target, renamed onto it only when
    every image was processed. An interrupted run keeps the earlier file and leaves its partial
    results as ``<stem>.partial<suffix>`` beside it. Opened before any work, so a bad path fails
    at once."""

    def __init__(self, target: Path):
        self.target = target
        if target.is_dir():
            raise OutputPathError(f"--json {target}: is a folder; give a file name such as {target / 'detections.jsonl'}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as e:
            raise OutputPathError(f"--json {target}: cannot write there ({_why(e)})") from None
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w")

    @property
    def partial(self) -> Path:
        return self.target.with_name(f"{self.target.stem}.partial{self.target.suffix}")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def finish(self) -> None:
        self.file.close()
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.target)

    def abandon(self) -> Path:
        """Keep what was written under :attr:`partial`; the target stays as it was."""
        self.file.close()
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.partial)
        return self.partial


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_save_dir(path: Path) -> Path:
    """Create ``--save-dir`` and prove it writable before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"--save-dir {path}: cannot write there ({_why(e)})") from None
    return path


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

    from mtcnn.io import list_images
    from mtcnn.weights import WeightsError

    try:
        save_dir = prepare_save_dir(Path(args.save_dir)) if args.save_dir else None
        json_out = JsonOutput(Path(args.json_path)) if args.json_path else None
    except OutputPathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        detector = build_detector(args)
    except (WeightsError, ConfigError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    else:
        paths = list_images(args.inputs)
        if paths:
            return _detect_images(detector, paths, args.batch_size, json_out, save_dir)
        print("error: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        code = 1
    if json_out:
        json_out.file.close()
        json_out.tmp.unlink(missing_ok=True)
    return code


def _detect_images(detector, paths: list[Path], batch_size: int, json_out: JsonOutput | None, save_dir: Path | None) -> int:
    from mtcnn.io import ImageReadError, iter_image_batches, write_image_rgb
    from mtcnn.structures import image_record

    failures = done = 0
    used_names: set[str] = set()
    orientations: dict[Path, int] = {}

    def report_failure(path: Path, error: ImageReadError) -> None:
        nonlocal failures
        print(f"error: {error}", file=sys.stderr)
        failures += 1

    try:
        for batch in iter_image_batches(paths, batch_size, report_failure, orientations):
            too_big = [(p, detector.size_problem(*im.shape[:2])) for p, im in batch]
            for path, problem in too_big:
                if problem:
                    report_failure(path, ImageReadError(path, problem))
            batch = [item for item, (_, problem) in zip(batch, too_big) if not problem]
            if not batch:
                continue
            t0 = time.perf_counter()
            results = detector.detect([image for _, image in batch])
            per_image_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            for (path, image), faces in zip(batch, results):
                print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}, {per_image_ms:.1f} ms")
                if json_out:
                    json_out.write(image_record(path, image.shape[1], image.shape[0], faces, orientations[path]))
                if save_dir:
                    from mtcnn.visualize import draw_detections

                    write_image_rgb(_unique_name(save_dir, path, used_names), draw_detections(image, faces))
                done += 1
    except (KeyboardInterrupt, OSError) as e:
        stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {' '.join(str(e).split())}; stopped"
        kept = ""
        if json_out:
            earlier = f"; {json_out.target} kept as it was" if json_out.target.exists() else ""
            kept = f"; results of those are in {json_out.abandon()}{earlier}"
        print(f"{stopped} after {done} of {len(paths)} images{kept}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    if json_out:
        json_out.finish()
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
        source = f"facenet-pytorch 2.6.0 ({Path(args.source).name})"
        # Only the original O-Net has a landmark head; P/R-Net's stay zero.
        meta = {net: {"source": source, "landmark_head_trained": net == "onet"} for net in nets}
        save_bundle(nets, args.out, meta=meta)
        _, info = load_bundle(args.out)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (weights sha256 {info['sha256']})")
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    from mtcnn.eval.runner import DETECTION_FORMATS, LANDMARK_FORMATS

    common = argparse.ArgumentParser(add_help=False)
    a = common.add_argument
    a("--annotations", nargs="+", required=True, help="annotation file(s) (voc: a folder of XML files; fddb: the FDDB-folds folder)")
    a("--images", help="folder the annotated image paths are relative to (default: the format's usual place)")
    a("--detections", help="evaluate this JSON-lines file (detect CLI schema) instead of running the detector")
    a("--weights", help="weights bundle (default: $MTCNN_WEIGHTS, then the shipped weights)")
    a("--min-face", type=finite_float, help="smallest face in pixels (default 20; 10 with --preset wider)")
    a("--factor", type=finite_float, help="pyramid scale step (default 0.709)")
    a("--thresholds", type=finite_float, nargs=3, metavar=("P", "R", "O"), help="stage thresholds (default 0.6 0.7 0.7)")
    a("--preset", choices=["default", "wider"], help="'wider': min face 10, factor 0.79, thresholds 0.5 0.5 0.3")
    a("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    a("--batch-size", type=int, default=8, help="images per detector call (default 8)")
    a("--split", choices=["all", "train", "val"], default="all", help="project split rule: files sorted by name, first 80%% train")
    a("--limit", type=int, help="evaluate only the first N annotated images")
    a("--out", help="output folder for report.json and plots (default eval_<task>)")
    a("--no-progress", action="store_true", help="no progress bar")
    parser = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate face detection or landmarks on an annotated set.")
    sub = parser.add_subparsers(dest="task", required=True)
    det = sub.add_parser("detection", parents=[common], help="precision/recall, AP, WIDER and FDDB protocols")
    det.add_argument("--format", choices=DETECTION_FORMATS, default="list", help="annotation format (default list)")
    det.add_argument("--iou", type=finite_float, default=0.5, help="IoU for the second AP / PR curve (AP at 0.5 is always reported)")
    det.add_argument("--wider-gt", help="WIDER eval_tools/ground_truth folder (default under data_root())")
    lm = sub.add_parser("landmarks", parents=[common], help="5-point NME, failure rate, CED")
    lm.add_argument("--format", choices=LANDMARK_FORMATS, default="cnn_facepoint", help="annotation format")
    lm.add_argument("--match-iou", type=finite_float, default=0.4, help="IoU for matching a face to a detection (default 0.4)")
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    from mtcnn.eval.runner import evaluate_from_args

    args = evaluate_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    return evaluate_from_args(args)


def benchmark_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark.py", description="Time the detector: ms per image and peak memory by size, min face, batch size and device.")
    p.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"], help="WIDTHxHEIGHT ...")
    p.add_argument("--min-face", nargs="+", type=finite_float, default=[20.0], help="minimum face sizes (default 20)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[1], help="images per detect call (default 1)")
    p.add_argument("--device", nargs="+", default=["cpu"], help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per case (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case (default 2)")
    p.add_argument("--weights", help="weights bundle (default: $MTCNN_WEIGHTS, then the shipped weights)")
    p.add_argument("--image", help="photo to resize to each size (default data_root()/dlib_faces/bald_guys.jpg)")
    p.add_argument("--json", dest="json_path", help="write settings and per-case results here")
    p.add_argument("--compare-facenet", metavar="WHEEL", help="also time facenet-pytorch 2.6.0's MTCNN from this wheel")
    p.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    return p


def benchmark_main(argv: list[str] | None = None) -> int:
    from mtcnn.eval.speed import benchmark_command

    a = benchmark_parser().parse_args(argv)
    return benchmark_command(
        a.sizes, a.min_face, a.batch_size, a.device, threads=a.threads, repeats=a.repeats, warmup=a.warmup,
        weights=a.weights, image=a.image, json_path=a.json_path, compare_facenet=a.compare_facenet, verbose=not a.quiet,
    )  # fmt: skip


def _run_job(load, run, errors: tuple[type[BaseException], ...], error_code: int) -> int:
    """The shared ending of the long-job commands: ``run(load())`` yields lines to print.

    A config or data problem prints one ``error:`` line and returns ``error_code``; Ctrl-C says
    how to resume (every such job resumes where it stopped) and returns 130.
    """
    try:
        for line in run(load()):
            print(line, flush=True)
    except errors as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def data_job_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    config_cls,
    default_config: str,
    run,
    sizes: tuple[int, ...] | None = None,
) -> int:
    """Shared command line of the sample generators: ``[--config] [--split] [--out] [--seed]
    [--workers] [--size] [--overwrite] [--quiet] [key=value ...]`` -> ``run(cfg, split, ...)``."""
    from mtcnn.data.generate import GenerationError

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1")
    p.add_argument("--config", default=str(PROJECT_ROOT / "configs" / default_config))
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
        cfg = load_config(config_cls, a.config, overrides)
        if a.out is not None:
            cfg.out = a.out
        return cfg

    def job(cfg):
        summary = run(cfg, a.split, overwrite=a.overwrite, progress=not a.quiet)
        return summary.lines() + [f"wrote {summary.path}"]

    return _run_job(load, job, (ConfigError, GenerationError, OSError), 2)


def gen_scenes_main(argv: list[str] | None = None) -> int:
    from mtcnn.data.config import SceneConfig
    from mtcnn.data.generate import GenerationError
    from mtcnn.data.scenes import generate_scenes

    p = argparse.ArgumentParser(prog="gen_scenes.py", description="Composite training scenes: real faces pasted onto face-free photos, WIDER-format annotations.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. canvas=null")
    p.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "scenes.yaml"))
    p.add_argument("--split", choices=("train", "val"))
    p.add_argument("--num-scenes", type=int)
    p.add_argument("--out", help="output folder (default {gen}/scenes/<split>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--preview", action="store_true", help="also write <out>/preview.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    flags = {"split": a.split, "num_scenes": a.num_scenes, "seed": a.seed, "workers": a.workers}
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]

    def load():
        cfg = load_config(SceneConfig, a.config, overrides)
        if a.out is not None:
            cfg.out = a.out
        return cfg

    def job(cfg):
        return generate_scenes(cfg, preview=a.preview, progress=not a.quiet).lines()

    return _run_job(load, job, (ConfigError, GenerationError, OSError), 2)


def gen_hard_example_main(argv: list[str] | None = None) -> int:
    from mtcnn.data.generate import GenerationError
    from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples
    from mtcnn.weights import WeightsError

    parser = argparse.ArgumentParser(prog="gen_hard_example.py", description="Mine the next stage's training set with the trained earlier stages (PNet: R-Net 24 px set; RNet: O-Net 48 px set).")
    parser.add_argument("--test_mode", "--test-mode", choices=["PNet", "RNet"], required=True)
    parser.add_argument("--split", choices=["train", "val", "both"], default="both")
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "mine.yaml"))
    parser.add_argument("--pnet", help="P-Net checkpoint (overrides the config)")
    parser.add_argument("--rnet", help="R-Net checkpoint (overrides the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete output file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. detector.thresholds=[0.4,0.1]")
    args = parser.parse_args(argv)
    overrides = [f"test_mode={args.test_mode}", *args.overrides]
    overrides += [f"pnet={args.pnet}"] * bool(args.pnet) + [f"rnet={args.rnet}"] * bool(args.rnet)
    splits = ("train", "val") if args.split == "both" else (args.split,)

    def job(cfg):
        for split in splits:
            yield from mine_hard_examples(cfg, split, overwrite=args.overwrite).lines()

    return _run_job(lambda: load_config(MiningConfig, args.config, overrides), job,
                    (ConfigError, GenerationError, WeightsError), 2)  # as the other data jobs


def run_pipeline_main(argv: list[str] | None = None) -> int:
    from mtcnn.pipeline import PipelineConfig, run_pipeline

    parser = argparse.ArgumentParser(prog="run_pipeline.py", description="Run the whole MTCNN training chain from one config, resuming where it stopped.")
    parser.add_argument("config", help="pipeline YAML (configs/pipeline.yaml, configs/pipeline_tiny.yaml)")
    parser.add_argument("--stop-after", choices=PIPELINE_STEPS, help="stop after this step")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train_pnet.epochs=5")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
        bundle = run_pipeline(cfg, stop_after=args.stop_after)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    if args.stop_after or not bundle.exists():
        print(f"stopped after {args.stop_after}; outputs so far are in {bundle.parent} (run without --stop-after to continue)")
    else:
        print(f"trained weights: {bundle}")
    return 0


def gen_12net_data_main(argv: list[str] | None = None) -> int:
    from mtcnn.data.config import PNetDataConfig
    from mtcnn.data.generate import generate_pnet

    return data_job_main(argv, prog="gen_12net_data.py", description="P-Net training samples (12x12 pos / part / neg crops + landmark samples) into one HDF5 file.",
                         config_cls=PNetDataConfig, default_config="data_pnet.yaml", run=generate_pnet)


def gen_landmark_aug_main(argv: list[str] | None = None) -> int:
    from mtcnn.data.config import LandmarkDataConfig
    from mtcnn.data.generate import generate_landmarks

    return data_job_main(argv, prog="gen_landmark_aug.py", description="Landmark training samples (SPEC §1 augmentation of CNN_FacePoint faces) into HDF5.",
                         config_cls=LandmarkDataConfig, default_config="landmarks_aug.yaml",
                         run=generate_landmarks, sizes=(12, 24, 48))


def train_pnet_main(argv: list[str] | None = None) -> int:
    from mtcnn.train import main

    return main("pnet", argv)


def train_rnet_main(argv: list[str] | None = None) -> int:
    from mtcnn.train import main

    return main("rnet", argv)


def train_onet_main(argv: list[str] | None = None) -> int:
    from mtcnn.train import main

    return main("onet", argv)
