"""``mtcnn-pack-landmarks`` / ``tools/pack_landmarks.py``: trained landmark nets (the loop's
``<net>.pt``) → one float16 weights file (``mtcnn.landmark_models.save_landmark_weights``) and a
JSON card beside it (nets, parameters, training meta and config, terms).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import report
from mtcnn.errors import MTCNNError

def _fit_adapter(source: str, every: int, nets: dict, configs: dict) -> dict:
    """The box adapter of the nets' training reference (their config's data.expand; 68 points: the
    points' extent, 5 points: the annotated box), fitted with the shipped detector."""
    from mtcnn.config.paths import data_root
    from mtcnn.data.annotations import read_annotations
    from mtcnn.data.face_crops import UDACITY68_SPLITS
    from mtcnn.detector import MTCNN
    from mtcnn.eval.zoo import fit_detector_box_adapter

    first = next(iter(configs.values())) or {}
    expand = (first.get("data") or {}).get("expand")
    root = data_root()
    if source == "udacity68":
        csv_name, folder = UDACITY68_SPLITS["train"]
        records = read_annotations(root / "udacity68" / csv_name, "csv68", root / "udacity68" / folder)
        reference, expand = "points", 0.1 if expand is None else float(expand)
    else:
        records = read_annotations(root / "cnn_facepoint" / "trainImageList.txt", "cnn_facepoint")
        reference, expand = "box", 0.0 if expand is None else float(expand)
    adapter = fit_detector_box_adapter(MTCNN(device="cpu"), records[:: max(1, every)], reference, expand)
    adapter["fitted_on"] = f"{source} training faces (every {every}th photo), the shipped detector at its defaults"
    print(f"box adapter {adapter['offsets']} from {adapter['matched']} of {adapter['faces']} faces")
    return adapter


def _refit(path: Path, out: Path, source: str, every: int) -> int:
    """A packed file with its box adapter fitted again (the nets, meta and the rest of its card stay)."""
    from mtcnn.atomic import atomic_torch_save
    from mtcnn.landmark_models import load_landmark_model
    from mtcnn.weights import _load_file

    try:
        raw = _load_file(path)
        load_landmark_model(path)  # a packed landmark model, or one clear error
        configs = {name: ck.get("config") or {} for name, ck in raw.get("nets", {}).items()}
        adapter = _fit_adapter(source, every, {}, configs)
        previous = raw.get("box_adapter")
        raw["box_adapter"] = adapter
        atomic_torch_save(raw, out)
        card_path, old_card = out.with_suffix(".json"), path.with_suffix(".json")
        card = json.loads(old_card.read_text()) if old_card.is_file() else {"file": out.name}
        card["box_adapter"] = adapter
        if previous is not None:
            card["box_adapter_previous"] = previous
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    except (MTCNNError, ValueError) as e:
        return report(e)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pack_landmarks.py", description="Pack trained landmark nets into one float16 weights file plus a JSON card.")
    p.add_argument("checkpoints", nargs="+", help="the training loop's <net>.pt files (a cascade: level 1 then level 2)")
    p.add_argument("--kind", choices=["single", "mobilenet_cascade"], default="single")
    p.add_argument("--out", required=True, help="weights file to write (its card: the same name with .json)")
    p.add_argument("--card", help="JSON file with extra card fields (data, figures, ...)")
    p.add_argument("--fit-box-adapter", choices=["cnn_facepoint", "udacity68"],
                   help="fit the offsets from the shipped detector's boxes to the boxes the model was trained on, "
                        "on this set's training faces, and store them (applied whenever the detector hands it boxes)")
    p.add_argument("--fit-every", type=int, default=12, help="--fit-box-adapter: every N-th training photo (default 12)")
    p.add_argument("--refit", action="store_true",
                   help="the one checkpoint given is a packed weights file: keep its nets and card, only fit its box adapter "
                        "again (--fit-box-adapter) to the shipped detector's boxes, after the detector's weights changed")
    args = p.parse_args(argv)
    if args.refit:
        if len(args.checkpoints) != 1 or not args.fit_box_adapter:
            p.error("--refit takes one packed weights file and --fit-box-adapter")
        return _refit(Path(args.checkpoints[0]), Path(args.out), args.fit_box_adapter, args.fit_every)
    from mtcnn.config.paths import portable_config
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
        # Checkpoints written before paths were stored as placeholders may still hold absolute ones.
        meta = portable_config({name: raw.get("meta", {}) for name, raw in zip(nets, raws)})
        configs = portable_config({name: raw.get("config", {}) for name, raw in zip(nets, raws)})
        adapter = _fit_adapter(args.fit_box_adapter, args.fit_every, nets, configs) if args.fit_box_adapter else None
        save_landmark_weights(args.out, nets, args.kind, config=configs, meta=meta, box_adapter=adapter)
        card = {"file": Path(args.out).name, "kind": args.kind, "nets": sorted(nets),
                "params": {n: int(sum(t.numel() for t in m.parameters())) for n, m in nets.items()},
                "storage": "float16 (loaded as float32)", "training": meta, "config": configs,
                "terms": "research use only: trained on data whose terms are research / non-commercial"}
        if adapter is not None:
            card["box_adapter"] = adapter
        if args.card:
            card.update(json.loads(Path(args.card).read_text()))
        Path(args.out).with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    except (MTCNNError, ValueError) as e:  # ValueError: a file that is no landmark model
        return report(e)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0
