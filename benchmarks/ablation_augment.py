"""What greyscale + blur augmentation bought O-Net: two O-Net training states side by side.

Each O-Net runs behind the shipped P-Net and R-Net on the face_mask and WebFaces validation
splits, as photographed and converted to grey (and, for blur, Gaussian-blurred), so the effect on
the photos the augmentation is meant for is visible, not only on the mined validation samples.

    python benchmarks/ablation_augment.py --onet with_aug=runs/onet_epoch1/last.pt \
        --onet without=ablation/onet_noaug/last.pt --webfaces-limit 400 --threads 1

``--onet LABEL=PATH``: a training state (``last.pt``) or an O-Net checkpoint. Prints one
Markdown table and writes it with every figure to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config.paths import data_root, webfaces_root  # noqa: E402
from mtcnn.eval.model_table import TableInputs, detection_rows, detection_sets  # noqa: E402
from mtcnn.io import read_image_rgb  # noqa: E402


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 1.5)


VARIANTS = {"colour": lambda im: im, "grey": _grey, "blur σ1.5": _blur}


def load_onet(path: str) -> torch.nn.Module:
    from mtcnn.nets import build_net
    from mtcnn.weights import load_stage_net

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:  # a training state
        net = build_net("onet")
        net.load_state_dict(state["model"])
        return net.eval()
    return load_stage_net(path, "onet")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onet", action="append", required=True, metavar="LABEL=PATH")
    p.add_argument("--webfaces-limit", type=int, default=400, help="first N WebFaces validation photos")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_path")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    from mtcnn.detector import MTCNN
    from mtcnn.weights import DEFAULT_WEIGHTS, load_stage_net

    base = {n: load_stage_net(DEFAULT_WEIGHTS / f"{n}.pt", n) for n in ("pnet", "rnet")}
    sets = detection_sets(TableInputs(data_root(), webfaces_root()))
    chosen = {"face_mask val": sets["face_mask val"]}
    if "WebFaces val" in sets:
        chosen["WebFaces val"] = sets["WebFaces val"][: a.webfaces_limit]
    results: dict[str, dict] = {}
    for spec in a.onet:
        label, _, path = spec.partition("=")
        detector = MTCNN(nets={**base, "onet": load_onet(path)}, device="cpu")
        for set_name, records in chosen.items():
            for variant, change in VARIANTS.items():
                found = []
                for start in range(0, len(records), 8):
                    images = [change(read_image_rgb(r.path)) for r in records[start : start + 8]]
                    found.extend((f.boxes.numpy(), f.scores.numpy()) for f in detector.detect(images))
                row = detection_rows(set_name, records, found)
                results.setdefault(f"{set_name}, {variant}", {})[label] = row
                print(f"{label}: {set_name}, {variant}: {row}", file=sys.stderr, flush=True)
    labels = [s.partition("=")[0] for s in a.onet]
    lines = ["| set | " + " | ".join(f"{lab} AP@0.5" for lab in labels) + " |", "|---|" + "---|" * len(labels)]
    for name, by_label in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_label[lab]['AP at IoU 0.5']:.3f}" for lab in labels) + " |")
    print("\n".join(lines))
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
