"""``mtcnn-evaluate-zoo`` / ``tools/evaluate_zoo.py``: the landmark zoo on its test splits.

``kp68 --model LABEL=WEIGHTS ... --out DIR [--detector-weights W] [--w300-val]``: NME (outer eye
corners), failures, CED plot, best/worst-100 mosaics (and the first model from the detector's boxes;
``--w300-val``: also on the 300-W hashed validation split, key ``w300_val``, ``ced_68_300w.png``);
``mobilenet [--weights W] --out DIR [--w300-val]``: the 5-point table of both cascade levels, size, speed
(``--w300-val``: also error / inter-ocular distance on the 300-W hashed validation split reduced to five
points, level 1 and the cascade: mean, median, share over 0.10; key ``w300_val``, ``ced_mobilenet_300w.png``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import report
from mtcnn.errors import MTCNNError

def _kp68_from_detector(args, models: dict, section) -> None:
    from mtcnn.detector import MTCNN
    from mtcnn.eval import zoo
    from mtcnn.landmark_models import load_landmark_model
    from mtcnn.training.keypoint_task import load_crops

    label, path = next(iter(models.items()))
    test = load_crops(section, load_landmark_model(path).spec, "test", None)
    detector = MTCNN(weights=args.detector_weights, device="cpu")
    out = {}
    for passes in (1, 2):
        r = zoo.evaluate_kp68_with_detector(path, detector, test, passes=passes)
        out[f"{label}_detector_{passes}pass"] = r
        print(f"{label} from detector boxes, {passes} pass(es): NME {r['nme']:.4f} on {r['matched']}/{r['faces']} faces, "
              f"failures {100 * r['failure_rate']:.1f} %")
    zoo._write_json(Path(args.out) / "kp68_detector_results.json", out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate_zoo.py", description="Evaluate landmark-zoo models on their test splits.")
    sub = p.add_subparsers(dest="task", required=True)
    kp = sub.add_parser("kp68", help="68-point models on udacity68 test: NME, CED, best/worst-100 mosaics")
    kp.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS", help="repeat for each model")
    kp.add_argument("--no-mosaics", action="store_true")
    kp.add_argument("--detector-weights", help="also crop from this detector's boxes (1 and 2 passes) for the first model")
    kp.add_argument("--w300-val", action="store_true",
                    help="also evaluate on the 300-W training sets' hashed validation split ({w300}, 402 faces; "
                         "crops from the points' extent like udacity68): results key w300_val, ced_68_300w.png")
    mb = sub.add_parser("mobilenet", help="the MobileNet-V2 cascade on CNN_FacePoint test: the 5-point table per level")
    mb.add_argument("--weights", default="mobilenet", help="cascade weights (default: the shipped ones)")
    mb.add_argument("--w300-val", action="store_true",
                    help="also evaluate on the 300-W training sets' hashed validation split ({w300}, 402 faces, five "
                         "points, the box from the points): error / inter-ocular distance per level, results key "
                         "w300_val, ced_mobilenet_300w.png")
    for s in (kp, mb):
        s.add_argument("--out", required=True, help="folder for the JSON results and figures")
        s.add_argument("--data", default="{data}", help="data root (default $MTCNN_DATA or ../shared/data)")
        s.add_argument("--cache-dir", default="{gen}/face_crops", help="where test crops are cached ('' for none)")
    args = p.parse_args(argv)
    from mtcnn.eval import zoo
    from mtcnn.landmark_models import LANDMARK_MODELS
    from mtcnn.nets import get_net_spec
    from mtcnn.data.face_crops import FaceCrops
    from mtcnn.training.keypoint_task import KeypointDataSection, load_crops, load_sources

    def data(dataset: str, expand: float) -> KeypointDataSection:
        return KeypointDataSection(dataset=dataset, root=args.data, cache_dir=args.cache_dir or None, expand=expand)

    try:
        if args.task == "kp68":
            models = dict(m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.model)
            section = data("udacity68", 0.1)
            w300 = ((lambda spec: FaceCrops.concat(load_sources(zoo.w300_sources("val"), section, spec)))
                    if args.w300_val else None)
            results = zoo.evaluate_kp68(models, args.out, lambda spec: load_crops(section, spec, "test", None),
                                        mosaics=not args.no_mosaics, load_w300_val=w300)
            for label in models:
                r = results[label]
                print(f"{label}: NME {r['nme']:.4f}  failures {100 * r['failure_rate']:.1f} %  "
                      f"AUC@0.1 {r['auc_0_1']:.3f}  {r['params']:,} params  {r['faces_per_second_1_thread']} faces/CPU-s")
            for label, r in results.get(zoo.W300_KEY, {}).items():
                print(f"{label} on 300-W val ({r['num_samples']} faces): NME {r['nme']:.4f}  median {r['median_nme']:.4f}  "
                      f"failures {100 * r['failure_rate']:.1f} %  AUC@0.1 {r['auc_0_1']:.3f}")
            if args.detector_weights:
                _kp68_from_detector(args, models, section)
        else:
            weights = LANDMARK_MODELS.get(args.weights, args.weights)
            section, spec = data("cnn_facepoint", 0.0), get_net_spec("mobilenet_l1")
            test = load_crops(section, spec, "test", None)
            w300 = FaceCrops.concat(load_sources(zoo.w300_sources("val", five=True), section, spec)) if args.w300_val else None
            result = zoo.evaluate_mobilenet_cascade(weights, args.out, test, w300_val=w300)
            print(result["table"])
            print(f"{result['params']:,} params, {result['float32_bytes'] / 1024:.0f} KiB as float32, "
                  f"{result['faces_per_second_1_thread']} faces/s (1 thread, whole images)")
            for level, r in result.get(zoo.W300_KEY, {}).items():
                print(f"300-W val ({r['num_samples']} faces), {'level 1' if level == 'level1' else 'cascade (level 2)'}: "
                      f"error / inter-ocular {r['nme']:.4f}  median {r['median_nme']:.4f}  "
                      f"over 0.10 {100 * r['failure_rate']:.1f} %  AUC@0.1 {r['auc_0_1']:.3f}")
    except (MTCNNError, ValueError) as e:  # ValueError: a file that is no landmark model
        return report(e)
    return 0
