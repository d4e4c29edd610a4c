r"""What the photo-degradation augmentations bought O-Net: O-Net training states side by side.

Each O-Net runs behind the shipped P-Net and R-Net on the face_mask and WebFaces validation
splits, as photographed and degraded the way each augmentation imitates (one row per set and
degradation), so the effect on the photos the augmentation is meant for is visible, not only
on the mined validation samples.

    python benchmarks/ablation_augment.py --onet with_aug=runs/onet_epoch1/last.pt \
        --onet without=ablation/onet_noaug/last.pt --webfaces-limit 400 --threads 1

``--onet LABEL=PATH``: a training state (``last.pt``) or an O-Net checkpoint. Prints one
Markdown table and writes it with every figure to ``--json``.

One arm per change: train O-Net twice on the same samples, once as the recipe has it and once
with one ``data.*_prob`` switched on, e.g.

    python train_models/train_onet.py --out ablation/onet_base epochs=3
    python train_models/train_onet.py --out ablation/onet_jpeg epochs=3 data.jpeg_prob=0.2

(``grayscale_prob``, ``blur_prob``, ``tone_prob``, ``noise_prob``, ``jpeg_prob``,
``resample_prob``, ``motion_blur_prob``, ``occlusion_prob``, ``mask_prob``), then compare them
on the rows that change imitates and on the plain photos:

    python benchmarks/ablation_augment.py --onet base=ablation/onet_base/onet.pt \
        --onet jpeg=ablation/onet_jpeg/onet.pt --variants colour,jpeg

``--variants`` picks the rows (default: all), ``--limit N`` the first N photos of each set
(a smoke run: ``--limit 4 --variants colour,jpeg``).

``--cost`` instead times the loader's augmentation for each op (milliseconds per 384-sample
batch at 12, 24 and 48 px, with the op at probability 0.2 and at 1.0, beside every op off).
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


def _grey(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _blur(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 1.5)


def _tone(contrast: float, gamma: float, pivot: float):
    def change(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        curved = 255.0 * (image / 255.0) ** gamma
        return np.clip(pivot + contrast * (curved - pivot) + 0.5, 0, 255).astype(np.uint8)
    return change


def _jpeg(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 20])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _noise(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    luminance = rng.normal(0.0, 8.0, image.shape[:2] + (1,))
    return np.clip(image + luminance + 0.5, 0, 255).astype(np.uint8)


def _small(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / 3)), max(1, round(h / 3))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _motion(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kernel = np.zeros((9, 9), np.float32)
    cv2.line(kernel, (1, 6), (7, 2), 1.0, 1, cv2.LINE_AA)  # 7 px at about 30 degrees
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def _occlusion(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A flat random colour over a quarter of every face box (half its width and height), at a
    random place inside the box."""
    out = image.copy()
    for x1, y1, x2, y2 in boxes:
        w, h = (x2 - x1) / 2, (y2 - y1) / 2
        ox, oy = x1 + rng.uniform(0, w), y1 + rng.uniform(0, h)
        out[int(oy):int(np.ceil(oy + h)), int(ox):int(np.ceil(ox + w))] = rng.integers(0, 256, 3)
    return out


# key -> (row label, change(image RGB uint8, face boxes [N, 4], rng) -> image)
VARIANTS = {
    "colour": ("colour", lambda im, boxes, rng: im),
    "grey": ("grey", _grey),
    "blur": ("blur σ1.5", _blur),
    "tone-dark": ("contrast 0.5, gamma 1.8 (to 64)", _tone(0.5, 1.8, 64.0)),
    "tone-faded": ("contrast 0.4, gamma 0.6 (to 192)", _tone(0.4, 0.6, 192.0)),
    "noise": ("noise σ8", _noise),
    "jpeg": ("JPEG q20", _jpeg),
    "small": ("down 3x, up", _small),
    "motion": ("motion blur 7 px", _motion),
    "occlusion": ("a quarter of each face occluded", _occlusion),
}


def load_onet(path: str) -> torch.nn.Module:
    from mtcnn.nets import build_net
    from mtcnn.weights import load_stage_net

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:  # a training state
        net = build_net("onet")
        net.load_state_dict(state["model"])
        return net.eval()
    return load_stage_net(path, "onet")


def augmentation_cost(batch: int = 384, repeats: int = 5) -> list[str]:
    """Markdown rows: milliseconds per batch of :func:`mtcnn.data.datasets.augment_batch` with
    each op at probability 0.2 and 1.0 (flip and colour jitter on, as in training; the fastest
    of ``repeats`` batches, each with its own seed)."""
    import time

    from mtcnn.data.datasets import DEGRADATION_PROBS, ColorJitter, augment_batch

    def timed(images, label, bbox, lmk, jitter) -> float:
        augment_batch(images, label, bbox, lmk, torch.Generator().manual_seed(0), jitter=jitter)
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            augment_batch(images, label, bbox, lmk, torch.Generator().manual_seed(r + 1), jitter=jitter)
            times.append(time.perf_counter() - start)
        return min(times) * 1000  # the least disturbed run: other processes only ever add time

    sizes = (12, 24, 48)
    inputs = {}
    for size in sizes:
        rng = np.random.default_rng(size)
        inputs[size] = (torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)),
                        torch.tensor([1, -1, 0, 0, 0, -2] * (batch // 6) + [0] * (batch % 6)),
                        torch.from_numpy(rng.uniform(-0.3, 0.3, (batch, 4)).astype(np.float32)),
                        torch.from_numpy(rng.uniform(0.2, 0.8, (batch, 10)).astype(np.float32)))
    lines = ["| op | " + " | ".join(f"{s} px, p 0.2 | {s} px, p 1" for s in sizes) + " |",
             "|---|" + "---|---|" * len(sizes)]
    base = {s: timed(*inputs[s], ColorJitter()) for s in sizes}
    lines.append("| every op off | " + " | ".join(f"{base[s]:.1f} | {base[s]:.1f}" for s in sizes) + " |")
    for name in DEGRADATION_PROBS:
        cells = [f"{timed(*inputs[s], ColorJitter(**{name: p})):.1f}" for s in sizes for p in (0.2, 1.0)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onet", action="append", metavar="LABEL=PATH", help="an O-Net arm (repeat the option)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated rows, from: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--webfaces-limit", type=int, default=400, help="first N WebFaces validation photos")
    p.add_argument("--limit", type=int, help="first N photos of every set (smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and occluder draws")
    p.add_argument("--cost", action="store_true", help="time each augmentation op instead (no --onet needed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_path")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    if a.cost:
        print("\n".join(augmentation_cost()))
        return 0
    if not a.onet:
        p.error("--onet LABEL=PATH is required (or --cost)")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    from mtcnn.detector import MTCNN
    from mtcnn.weights import DEFAULT_WEIGHTS, load_stage_net

    base = {n: load_stage_net(DEFAULT_WEIGHTS / f"{n}.pt", n) for n in ("pnet", "rnet")}
    sets = detection_sets(TableInputs(data_root(), webfaces_root()))
    chosen = {"face_mask val": sets["face_mask val"]}
    if "WebFaces val" in sets:
        chosen["WebFaces val"] = sets["WebFaces val"][: a.webfaces_limit]
    if a.limit is not None:
        chosen = {name: records[: a.limit] for name, records in chosen.items()}
    results: dict[str, dict] = {}
    for spec in a.onet:
        label, _, path = spec.partition("=")
        detector = MTCNN(nets={**base, "onet": load_onet(path)}, device="cpu")
        for set_name, records in chosen.items():
            for key in variants:
                variant, change = VARIANTS[key]
                found = []
                for start in range(0, len(records), 8):
                    images = [change(read_image_rgb(r.path), r.boxes, np.random.default_rng([a.seed, start + i]))
                              for i, r in enumerate(records[start : start + 8])]
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
