"""Landmark-zoo commands: train a 68-point model or a MobileNet-V2 cascade level, pack trained nets
into one weights file with its card, evaluate on the test splits.

* ``train_models/train_keypoints.py --config train_kp68_compact.yaml [--out DIR] [key=value ...]``
* ``tools/pack_landmarks.py --kind mobilenet_cascade L1.pt L2.pt --out mtcnn/weights/mobilenet_cascade.pt``
* ``tools/evaluate_zoo.py kp68 --model compact=W.pt --model baseline=B.pt --out DIR`` /
  ``tools/evaluate_zoo.py mobilenet --weights W.pt --out DIR``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mtcnn.config import default_config, load_config
from mtcnn.errors import MTCNNError


def train_keypoints_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train_keypoints.py", description="Train a landmark-zoo net (68 points, MobileNet-V2 cascade levels).")
    p.add_argument("--config", required=True, help="YAML config (a path, or a shipped name such as train_kp68_compact.yaml)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="LAST_PT")
    p.add_argument("--out", help="output folder (overrides the config's out)")
    p.add_argument("--overwrite", action="store_true", help="start over even if <out>/last.pt exists")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. loss.kind=l1")
    args = p.parse_args(argv)
    from mtcnn.training.keypoint_task import KeypointTask, KeypointTrainConfig
    from mtcnn.training.loop import Trainer

    try:
        path = Path(args.config)
        cfg = load_config(KeypointTrainConfig, path if path.exists() else default_config(args.config), args.overrides)
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        final = Trainer(cfg, KeypointTask(cfg.resolved()), resume=args.resume, overwrite=args.overwrite).fit()
    except MTCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"final checkpoint: {final}")
    return 0


def pack_landmarks_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pack_landmarks.py", description="Pack trained landmark nets into one float16 weights file plus a JSON card.")
    p.add_argument("checkpoints", nargs="+", help="the training loop's <net>.pt files (a cascade: level 1 then level 2)")
    p.add_argument("--kind", choices=["single", "mobilenet_cascade"], default="single")
    p.add_argument("--out", required=True, help="weights file to write (its card: the same name with .json)")
    p.add_argument("--card", help="JSON file with extra card fields (data, figures, ...)")
    args = p.parse_args(argv)
    from mtcnn.landmark_models import load_landmark_model, save_landmark_weights
    from mtcnn.weights import WeightsError, _load_file

    try:
        raws = [_load_file(Path(c)) for c in args.checkpoints]
        nets = {}
        for c in args.checkpoints:
            model = load_landmark_model(c)
            nets[model.spec.name] = model.net
        if args.kind == "mobilenet_cascade" and sorted(nets) != ["mobilenet_l1", "mobilenet_l2"]:
            raise WeightsError(f"a cascade needs mobilenet_l1 and mobilenet_l2 checkpoints, got {sorted(nets)}")
        meta = {name: raw.get("meta", {}) for name, raw in zip(nets, raws)}
        configs = {name: raw.get("config", {}) for name, raw in zip(nets, raws)}
        save_landmark_weights(args.out, nets, args.kind, config=configs, meta=meta)
        card = {"file": Path(args.out).name, "kind": args.kind, "nets": sorted(nets),
                "params": {n: int(sum(t.numel() for t in m.parameters())) for n, m in nets.items()},
                "storage": "float16 (loaded as float32)", "training": meta, "config": configs,
                "terms": "research use only: trained on data whose terms are research / non-commercial"}
        if args.card:
            card.update(json.loads(Path(args.card).read_text()))
        Path(args.out).with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    except (MTCNNError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


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


def evaluate_zoo_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate_zoo.py", description="Evaluate landmark-zoo models on their test splits.")
    sub = p.add_subparsers(dest="task", required=True)
    kp = sub.add_parser("kp68", help="68-point models on udacity68 test: NME, CED, best/worst-100 mosaics")
    kp.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS", help="repeat for each model")
    kp.add_argument("--no-mosaics", action="store_true")
    kp.add_argument("--detector-weights", help="also crop from this detector's boxes (1 and 2 passes) for the first model")
    mb = sub.add_parser("mobilenet", help="the MobileNet-V2 cascade on CNN_FacePoint test: the 5-point table per level")
    mb.add_argument("--weights", default="mobilenet", help="cascade weights (default: the shipped ones)")
    for s in (kp, mb):
        s.add_argument("--out", required=True, help="folder for the JSON results and figures")
        s.add_argument("--data", default="{data}", help="data root (default $MTCNN_DATA or ../shared/data)")
        s.add_argument("--cache-dir", default="{gen}/face_crops", help="where test crops are cached ('' for none)")
    args = p.parse_args(argv)
    from mtcnn.eval import zoo
    from mtcnn.landmark_models import LANDMARK_MODELS
    from mtcnn.nets import get_net_spec
    from mtcnn.training.keypoint_task import KeypointDataSection, load_crops
    from mtcnn.weights import WeightsError

    def data(dataset: str, expand: float) -> KeypointDataSection:
        return KeypointDataSection(dataset=dataset, root=args.data, cache_dir=args.cache_dir or None, expand=expand)

    try:
        if args.task == "kp68":
            models = dict(m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.model)
            section = data("udacity68", 0.1)
            results = zoo.evaluate_kp68(models, args.out, lambda spec: load_crops(section, spec, "test", None),
                                        mosaics=not args.no_mosaics)
            for label, r in results.items():
                print(f"{label}: NME {r['nme']:.4f}  failures {100 * r['failure_rate']:.1f} %  "
                      f"AUC@0.1 {r['auc_0_1']:.3f}  {r['params']:,} params  {r['faces_per_second_1_thread']} faces/CPU-s")
            if args.detector_weights:
                _kp68_from_detector(args, models, section)
        else:
            weights = LANDMARK_MODELS.get(args.weights, args.weights)
            test = load_crops(data("cnn_facepoint", 0.0), get_net_spec("mobilenet_l1"), "test", None)
            result = zoo.evaluate_mobilenet_cascade(weights, args.out, test)
            print(result["table"])
            print(f"{result['params']:,} params, {result['float32_bytes'] / 1024:.0f} KiB as float32, "
                  f"{result['faces_per_second_1_thread']} faces/s (1 thread, whole images)")
    except (MTCNNError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
