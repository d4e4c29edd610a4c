"""``mtcnn-evaluate`` / ``tools/evaluate.py``: detection or landmark accuracy on an annotated set."""

from __future__ import annotations

import argparse
import sys

from mtcnn.commands.common import WEIGHTS_HELP, finite_float


def _keypoint_pair(text: str) -> str:
    if "=" not in text or not all(text.split("=", 1)):
        raise argparse.ArgumentTypeError(f"{text!r}: give your keypoint name and ours as THEIRS=OURS (e.g. eye_l=left_eye)")
    return text


def parser() -> argparse.ArgumentParser:
    from mtcnn.eval.rotate import ROTATE_CHOICES
    from mtcnn.eval.runner import DETECTION_FORMATS, LANDMARK_FORMATS

    common = argparse.ArgumentParser(add_help=False)
    a = common.add_argument
    a("--annotations", nargs="+", required=True, help="annotation file(s) (voc: a folder of XML files; fddb: the FDDB-folds folder)")
    a("--images", help="folder the annotated image paths are relative to (default: the format's usual place)")
    a("--detections", help="evaluate this JSON-lines file (detect CLI schema) instead of running the detector")
    a("--weights", help=WEIGHTS_HELP)
    a("--min-face", type=finite_float, help="smallest face in pixels (default 20; 10 with --preset wider)")
    a("--factor", type=finite_float, help="pyramid scale step (default 0.709)")
    a("--thresholds", type=finite_float, nargs=3, metavar=("P", "R", "O"), help="stage thresholds (default: what the weights carry in their detector.json, e.g. 0.4 0.05 0.15 for the shipped weights; else 0.6 0.7 0.7)")
    a("--preset", choices=["default", "wider"], help="'wider': min face 10, factor 0.79, thresholds 0.5 0.5 0.3")
    a("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    a("--backend", choices=["torch", "onnxruntime"], default="torch", help='what runs the nets (onnxruntime: pip install -e ".[onnx]")')
    a("--precision", choices=["auto", "float32", "bfloat16"], default="auto", help="bfloat16: O-Net in bf16, its decisions checked in float32, and the landmark cascade in bf16 (CPU torch backend); auto (default): bfloat16 on a CPU with native bf16 (AVX-512 BF16, AMX), else float32")
    a("--batch-size", type=int, default=8, help="images per detector call (default 8)")
    a("--rotation", choices=("none", "quarter", "pcn"), default="none",
      help="the detector's search: none (default, upright faces), quarter (the photo's four quarter turns, merged) "
           "or pcn (the rotation-calibrating cascade, --pcn)")
    a("--pcn", metavar="WEIGHTS", help="--rotation pcn: its nets (a folder with pcn1.pt, pcn2.pt, pcn3.pt, or a bundle)")
    a("--pcn-thresholds", type=float, nargs=3, metavar=("T1", "T2", "T3"),
      help="--rotation pcn: its three stages' thresholds (default 0.6 0.6 0.7)")
    a("--split", choices=["all", "train", "val"], default="all", help="project split rule: files sorted by name, first 80%% train")
    a("--limit", type=int, help="evaluate only the first N annotated images")
    a("--out", help="output folder for report.json and plots (default eval_<task>)")
    a("--no-progress", action="store_true", help="no progress bar")
    parser = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate face detection or landmarks on an annotated set.")
    sub = parser.add_subparsers(dest="task", required=True)
    det = sub.add_parser("detection", parents=[common], help="precision/recall, AP, WIDER and FDDB protocols")
    det.add_argument("--format", choices=DETECTION_FORMATS, default="list",
                     help="annotation format (default list); coco: a COCO JSON file (--images its image folder), "
                          "yolo: a folder with images/ and labels/")
    det.add_argument("--classes", nargs="+", metavar="CLASS",
                     help="coco / yolo: the category names (or ids) that are faces (default: every box)")
    det.add_argument("--keypoints", nargs="+", metavar="THEIRS=OURS", type=_keypoint_pair,
                     help="coco: your keypoint names mapped to ours (left_eye right_eye nose left_mouth right_mouth)")
    det.add_argument("--unannotated", choices=("skip", "negatives"),
                     help="coco / yolo: images with no face box are left out (skip, the default) or face-free photos (negatives)")
    det.add_argument("--iou", type=finite_float, default=0.5, help="IoU for the second AP / PR curve (AP at 0.5 is always reported)")
    det.add_argument("--wider-gt", help="WIDER eval_tools/ground_truth folder (default under data_root())")
    det.add_argument("--rotate", choices=ROTATE_CHOICES,
                     help="turn every photo (and its boxes and points) before detection: 0/90/180/270 degrees "
                          "counter-clockwise, random (per photo, uniform in ±180°, from --seed) or all (those five "
                          "side by side: AP and recall at 100 false positives, pr_curve_rotations.png)")
    det.add_argument("--seed", type=int, default=0, help="--rotate random: the seed of the photos' angles (default 0)")
    lm = sub.add_parser("landmarks", parents=[common], help="5-point NME, failure rate, CED")
    lm.add_argument("--format", choices=LANDMARK_FORMATS, default="cnn_facepoint", help="annotation format")
    lm.add_argument("--match-iou", type=finite_float, default=0.4, help="IoU for matching a face to a detection (default 0.4)")
    lm.add_argument("--landmarks", choices=("onet", "cascade"), default="onet",
                    help="cascade: per-level report of the Sun et al. cascade (O-Net, levels 1-3) with the list's boxes and the detector's")
    lm.add_argument("--cascade-weights", help="cascade bundle (default mtcnn/weights/cascade_sun.pt)")
    for sp in (det, lm):
        sp.add_argument("--split-rule", choices=("name_order", "hashed"), default="name_order",
                        help="how --split picks: name_order (first 80%% of the sorted names train) or hashed (CRC-32 of "
                             "the file name, as the training configs' WIDER and 300-W validation splits)")
        sp.add_argument("--missing-images", choices=("error", "skip"),
                        help="an annotated image that is absent is an error (default) or left out, counted")
    det.add_argument("--images-layout", choices=("tree", "flat"), default="tree",
                     help="flat: every image directly in --images under its file name (e.g. WIDER FACE photos "
                          "copied without their event folders)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mtcnn.eval.runner import evaluate_from_args

    args = parser().parse_args(argv)
    from mtcnn.memory import bound_heap

    bound_heap()  # resident memory flat over thousands of photos (mtcnn.memory)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "seed", 0) < 0:
        print("error: --seed must be at least 0", file=sys.stderr)
        return 2
    return evaluate_from_args(args)
