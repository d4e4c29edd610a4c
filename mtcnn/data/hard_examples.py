"""Hard-example mining between stages (SPEC §5): the trained earlier stages propose windows on
the training images, and every window becomes an R-Net (24 px) or O-Net (48 px) sample.

Windows come from the same stage functions the detector uses (:func:`mtcnn.stages.run_pnet`,
:func:`mtcnn.stages.run_rnet`), are squared and truncated exactly as the detector does before its
own crops, labelled against the ground truth (neg < 0.3 vs all faces, at most
``max_negatives_per_image`` per image, the highest-scoring ones; part ≥ 0.4; pos ≥ 0.65, with
offsets to the matched face), cut with the detector's batched crop, and streamed into the
resumable HDF5 writer. Landmark samples at the same size come from the landmark augmenter and
go into the same file, because the mixed-ratio loader reads one file per stage.

Per-stage recall on the ground-truth faces (fraction covered by a kept window at IoU ≥ 0.65 and
≥ 0.4) is reported and written next to the output: low P-Net / R-Net recall is the classic
silent failure of MTCNN training.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import yaml

from mtcnn.atomic import atomic_write_text
from mtcnn.config import ConfigError, bounded, save_resolved, to_dict
from mtcnn.config.data import LandmarkAugConfig, SourceConfig, SplitSources, WiderBoxConfig
from mtcnn.config.paths import resolve_path, runs_root
from mtcnn.data.generate import (
    GenerationError,
    WorkItem,
    ItemProcessor,
    SampleJob,
    detection_items,
    landmark_items,
    open_writer,
    parallel_chunks,
    write_item,
)
from mtcnn.data.h5 import KINDS, SampleReader, SampleWriter
from mtcnn.data.shards import Shard, check_shard_settings, finish, refuse_complete_output, set_line, write_manifest
from mtcnn.device import resolve_device
from mtcnn.io import ImageReadError, file_sha256, read_image_rgb
from mtcnn.nets.registry import get_net_spec
from mtcnn.ops.boxes import box_iou, square_boxes
from mtcnn.ops.coding import encode_boxes
from mtcnn.ops.crops import crop_resize
from mtcnn.stages import Candidates, prepare_for_inference, run_pnet, run_rnet
from mtcnn.weights import load_stage_net

STAGE_OF_MODE = {"PNet": ("rnet", get_net_spec("rnet").crop_size), "RNet": ("onet", get_net_spec("onet").crop_size)}


def _default_sources() -> SplitSources:
    scenes = "{gen}/scenes/{split}"
    return SplitSources(
        train=[
            SourceConfig(name="scenes", format="wider", path=scenes.replace("{split}", "train") + "/scenes_bbx_gt.txt"),
            # LFW photos often show other, unannotated people: no negatives from them.
            SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path="{data}/cnn_facepoint/trainImageList.txt",
                         box_style="wider_like", negatives_per_image=0),
            SourceConfig(name="face_mask", format="voc", path="{data}/face_mask/annotations", split="train"),
        ],
        val=[
            SourceConfig(name="scenes", format="wider", path=scenes.replace("{split}", "val") + "/scenes_bbx_gt.txt"),
            SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path="{data}/cnn_facepoint/testImageList.txt",
                         box_style="wider_like", negatives_per_image=0),
            SourceConfig(name="face_mask", format="voc", path="{data}/face_mask/annotations", split="val"),
        ],
    )


def _default_landmark_sources() -> SplitSources:
    return SplitSources(
        train=[SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path="{data}/cnn_facepoint/trainImageList.txt")],
        val=[SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path="{data}/cnn_facepoint/testImageList.txt")],
    )


@dataclass
class MiningDetectorConfig:
    """Detector settings while mining: low thresholds keep recall (SPEC §5, [A] defaults)."""

    thresholds: tuple[float, float] = bounded((0.3, 0.1), 0.0, 1.0, help="P-Net, R-Net thresholds")
    min_face_size: float = bounded(20.0, 4.0, None)
    factor: float = bounded(0.79, 0.1, 0.99)
    nms_pnet_scale: float = bounded(0.5, 0.0, 1.0)
    nms_pnet: float = bounded(0.7, 0.0, 1.0)
    nms_rnet: float = bounded(0.7, 0.0, 1.0)


@dataclass
class MiningConfig:
    test_mode: Literal["PNet", "RNet"] = "PNet"
    seed: int = 0
    pnet: str = "{runs}/pnet/pnet.pt"  # or default / original: the shipped / the original MTCNN weights
    rnet: str = "{runs}/rnet/rnet.pt"
    out: str = "{gen}/samples"
    device: str = "cpu"
    batch_images: int = bounded(8, 1, 1024, help="images per stage call")
    workers: int = bounded(2, 0, 64, help="image-reading processes")
    threads: int = bounded(0, 0, 256, help="torch threads (0: torch's default)")
    detector: MiningDetectorConfig = field(default_factory=MiningDetectorConfig)
    neg_iou: float = bounded(0.3, 0.0, 1.0)
    part_iou: float = bounded(0.4, 0.0, 1.0)
    pos_iou: float = bounded(0.65, 0.0, 1.0)
    max_negatives_per_image: int = bounded(60, 0, None)
    min_box_size: float = bounded(20.0, 0.0, None, help="skip windows whose square side is below this")
    sources: SplitSources = field(default_factory=_default_sources)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)
    landmarks: bool = True
    landmark_sources: SplitSources = field(default_factory=_default_landmark_sources)
    landmark_aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)


def _expand(path: str, stage: str = "") -> Path:
    return resolve_path(path.replace("{stage}", stage))


def coverage_row(gt: torch.Tensor, windows: torch.Tensor) -> list[int]:
    """One image's [faces, covered at IoU ≥ 0.65, covered at IoU ≥ 0.4, windows]."""
    n = int(gt.shape[0])
    if n and windows.shape[0]:
        best = box_iou(gt, windows).max(dim=1).values
        return [n, int((best >= 0.65).sum()), int((best >= 0.4).sum()), int(windows.shape[0])]
    return [n, 0, 0, int(windows.shape[0])]


@dataclass
class RecallCounter:
    """Ground-truth faces covered by at least one kept window, per IoU threshold."""

    faces: int = 0
    covered_065: int = 0
    covered_040: int = 0
    windows: int = 0
    images: int = 0

    def update(self, row: list[int]) -> None:
        self.faces += row[0]
        self.covered_065 += row[1]
        self.covered_040 += row[2]
        self.windows += row[3]
        self.images += 1

    def totals(self) -> dict:
        """The raw counts (sums over images), which shards' reports add up."""
        return {"faces": self.faces, "covered_065": self.covered_065, "covered_040": self.covered_040,
                "windows": self.windows, "images": self.images}

    def as_dict(self) -> dict:
        f = max(self.faces, 1)
        return {
            "images": self.images, "faces": self.faces, "windows": self.windows,
            "windows_per_image": round(self.windows / max(self.images, 1), 1),
            "recall_iou_0.65": round(self.covered_065 / f, 4), "recall_iou_0.40": round(self.covered_040 / f, 4),
        }  # fmt: skip


@dataclass
class MiningSummary:
    path: Path
    counts: dict[str, int]
    recall: dict
    seconds: float
    processed: int
    skipped: list[str]
    shard: Shard = field(default_factory=Shard)
    final: Path | None = None  # the usual output, when ``path`` is one rank's shard of it
    manifest: Path | None = None  # the shard list, once every rank has finished

    def lines(self) -> list[str]:
        r = self.recall
        shard = [set_line(self.shard, self.final or self.path, self.manifest)] if self.shard.enabled else []
        return [
            f"{self.path.name}: " + "  ".join(f"{k} {self.counts.get(k, 0):,}" for k in KINDS),
            f"recall on {r['faces']:,} ground-truth faces in {r['images']:,} images: "
            f"{100 * r['recall_iou_0.65']:.1f}% at IoU ≥ 0.65, {100 * r['recall_iou_0.40']:.1f}% at IoU ≥ 0.4 "
            f"({r['windows_per_image']} windows per image)",
            f"{self.processed:,} images mined in {self.seconds:.1f} s ({self.processed / max(self.seconds, 1e-9):.1f} images/s), "
            f"{len(self.skipped)} unreadable skipped",
            *shard,
        ]


def label_windows(
    squares: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor, width: int, height: int,
    cfg: MiningConfig, max_negatives: int | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Label one image's squared windows: kind -> (window indices, box offsets to the matched face).

    ``max_negatives`` overrides ``cfg.max_negatives_per_image`` (a source's own
    ``negatives_per_image``, e.g. 0 for photos with unannotated people in them).
    """
    cap = cfg.max_negatives_per_image if max_negatives is None else max_negatives
    side = squares[:, 2] - squares[:, 0]
    inside = (squares[:, 0] >= 0) & (squares[:, 1] >= 0) & (squares[:, 2] <= width) & (squares[:, 3] <= height)
    usable = inside & (side >= cfg.min_box_size)
    empty = torch.zeros(0, dtype=torch.long)
    if gt.shape[0] == 0:
        iou = torch.zeros((squares.shape[0], 0))
        best, match = torch.zeros(squares.shape[0]), torch.zeros(squares.shape[0], dtype=torch.long)
    else:
        iou = box_iou(squares, gt)
        best, match = iou.max(dim=1)
    neg = torch.nonzero(usable & (best < cfg.neg_iou), as_tuple=True)[0]
    # The hardest negatives: the windows the detector was most sure of.
    neg = neg[torch.argsort(scores[neg], descending=True, stable=True)][:cap]
    out = {"neg": (neg, torch.zeros((neg.numel(), 4)))}
    if gt.shape[0]:
        counted = usable & ~ignore[match]
        for kind, lo, hi in (("pos", cfg.pos_iou, 2.0), ("part", cfg.part_iou, cfg.pos_iou)):
            idx = torch.nonzero(counted & (best >= lo) & (best < hi), as_tuple=True)[0]
            out[kind] = (idx, encode_boxes(squares[idx], gt[match[idx]]))
    else:
        out["pos"] = out["part"] = (empty, torch.zeros((0, 4)))
    return out


class _ImageItems(torch.utils.data.Dataset):
    def __init__(self, items: list[WorkItem]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        item = self.items[k]
        try:
            return item, read_image_rgb(item.path), None
        except ImageReadError as e:
            return item, None, str(e)


def _stage_path(text: str, name: str) -> Path:
    """A stage's weights: a checkpoint (bundle, folder) path, or ``default`` / ``original``: the shipped
    nets / the converted original MTCNN weights (fine-tuning mines with the shipped P- and R-Net)."""
    if text in ("default", "original"):
        from mtcnn.weights import resolve_weights

        path = resolve_weights(text)
        return path / f"{name}.pt" if path.is_dir() else path
    return _expand(text)


def _stage_checkpoints(cfg: MiningConfig) -> dict[str, Path]:
    """The trained stages the miner runs (P-Net; R-Net too in RNet mode), each checked to exist."""
    checkpoints = {"pnet": _stage_path(cfg.pnet, "pnet")}
    if cfg.test_mode == "RNet":
        checkpoints["rnet"] = _stage_path(cfg.rnet, "rnet")
    for name, path in checkpoints.items():
        if not path.exists():
            raise GenerationError(
                f"{name} checkpoint {path} not found: train it first (python train_models/train_{name}.py writes "
                f"{{runs}}/{name}/{name}.pt; {{runs}} is {runs_root()}, set by MTCNN_RUNS) or pass --{name} PATH"
            )
    return checkpoints


def mine_hard_examples(cfg: MiningConfig, split: str = "train", *, overwrite: bool = False, progress: bool = True,
                       shard: Shard | None = None) -> MiningSummary:
    """Mine one split into ``<out>/<stage>_<split>.h5`` and write ``<stage>_<split>.recall.json``.

    ``shard`` (default: from the torchrun environment): a rank of a split job mines its share
    of the images (whole ``batch_images`` blocks, so every stage call sees the images it sees in
    one process) into its own shard ``<stage>_<split>.rankRR-of-WW.h5`` with its own recall
    report; when every rank is done the shard list and the combined report are written
    (:mod:`mtcnn.data.shards`). Resident memory stays flat over the photos
    (:func:`mtcnn.memory.bounded_heap`)."""
    from mtcnn.memory import bounded_heap

    with bounded_heap():
        return _mine_hard_examples(cfg, split, overwrite=overwrite, progress=progress, shard=shard)


def _mine_hard_examples(cfg: MiningConfig, split: str, *, overwrite: bool, progress: bool,
                        shard: Shard | None) -> MiningSummary:
    from tqdm import tqdm

    if split not in ("train", "val"):
        raise GenerationError(f"split must be 'train' or 'val', got {split!r}")
    check_config(cfg)
    shard = Shard.from_env() if shard is None else shard
    stage, size = STAGE_OF_MODE[cfg.test_mode]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        # OpenCV's pool (the crops' remap and mip levels) defaults to every core: two ranks at one
        # thread each then run four threads on two cores. Measured on 2 cores, 800 photos: one
        # process as fast either way (52 s), two ranks 28 s held to their threads against 33 s not.
        cv2.setNumThreads(cfg.threads)
    device = resolve_device(shard.device(cfg.device))
    checkpoints = _stage_checkpoints(cfg)
    nets = {name: prepare_for_inference(load_stage_net(path, name), device) for name, path in checkpoints.items()}

    out_dir = _expand(cfg.out, stage)
    final = out_path = out_dir / f"{stage}_{split}.h5"
    refuse_complete_output(final, overwrite, shard)
    items = detection_items(getattr(cfg.sources, split), cfg.wider_box)
    landmark_work = landmark_items(getattr(cfg.landmark_sources, split), start_id=len(items)) if cfg.landmarks else []
    if not items:
        raise GenerationError(f"{out_path.name}: no source images to mine (check the sources in the config)")
    attrs = {
        "stage": stage, "split": split, "seed": cfg.seed, "generator": "mtcnn.data.hard_examples",
        "test_mode": cfg.test_mode, "iou_neg": cfg.neg_iou, "iou_part": cfg.part_iou, "iou_pos": cfg.pos_iou,
        "checkpoints": json.dumps({k: str(v) for k, v in checkpoints.items()}),
        "checkpoint_sha256": json.dumps({k: file_sha256(v)[:16] for k, v in checkpoints.items()}),
        "config": yaml.safe_dump(to_dict(cfg), sort_keys=True),
    }  # fmt: skip

    def complete():
        return write_manifest(final, shard.world_size, lambda shards: _combine_recall(final, shards))

    if shard.enabled:
        items = shard.select(items, key=lambda it: it.id, block=cfg.batch_images)
        landmark_work = shard.select(landmark_work, key=lambda it: it.id)
        attrs.update(shard.attrs())
        out_path = shard.path(final)
        if out_path.exists():  # this rank finished before (another rank was stopped): keep it
            check_shard_settings(out_path, attrs)
            recall = _recall_report(out_dir / f"{out_path.stem}.recall.json")
            summary = MiningSummary(out_path, SampleReader(out_path).counts(), recall, 0.0, 0, [], shard, final)
            summary.manifest = finish(shard, complete, "the shards")
            return summary
    try:
        writer = open_writer(out_path, size, attrs, overwrite)
    except (ValueError, OSError) as e:
        raise GenerationError(" ".join(str(e).split())) from None
    save_resolved(cfg, out_dir, f"{final.stem}.config.yaml")  # only once the run is accepted

    recall_path = out_dir / f"{out_path.stem}.recall.json"
    per_item = _load_recall_rows(recall_path, writer.done_items)
    todo = [it for it in items if it.id not in writer.done_items]
    skipped: list[str] = []
    processed = 0
    t0 = time.perf_counter()
    ok = False
    bar = tqdm(total=len(items) + len(landmark_work), initial=len(items) - len(todo), desc=out_path.name, unit="img",
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr, disable=not progress)
    try:
        loader = torch.utils.data.DataLoader(
            _ImageItems(todo), batch_size=cfg.batch_images, num_workers=cfg.workers, collate_fn=list,
        )  # fmt: skip
        for batch in loader:
            good = [(it, im) for it, im, err in batch if err is None]
            for it, _, err in batch:
                if err is not None:
                    skipped.append(err)
                    bar.write(f"skipped unreadable image: {err}", file=sys.stderr)
            if good:
                _mine_batch(good, nets, cfg, size, writer, per_item, device)
            # Rows first: a kill between the two leaves rows for uncommitted items, filtered on resume.
            atomic_write_text(recall_path.with_suffix(".rows.json"), json.dumps(per_item))
            writer.commit([it.id for it, _, _ in batch])
            processed += len(batch)
            bar.update(len(batch))
            bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in writer.lengths().items()), refresh=False)
        if landmark_work:
            _add_landmarks(landmark_work, writer, cfg, size, bar, skipped)
        counts = writer.lengths()
        recall = RecallCounter()
        for row in per_item.values():
            recall.update(row)
        report = {"stage": cfg.test_mode, "output": str(out_path), "counts": counts, "recall": recall.as_dict(),
                  "totals": recall.totals(), "checkpoints": {k: str(v) for k, v in checkpoints.items()}}
        # Before the file is finished: a kill in between resumes an all-committed journal and writes both again.
        atomic_write_text(recall_path, json.dumps(report, indent=2))
        ok = True
    finally:
        bar.close()
        writer.close(complete=ok)
    recall_path.with_suffix(".rows.json").unlink(missing_ok=True)
    summary = MiningSummary(out_path, counts, recall.as_dict(), time.perf_counter() - t0, processed, skipped, shard, final)
    if shard.enabled:
        summary.manifest = finish(shard, complete, "the shards")
    return summary


def _recall_report(path: Path) -> dict:
    """A finished shard's recall (zeros when its report is gone)."""
    try:
        return json.loads(path.read_text())["recall"]
    except (OSError, ValueError, KeyError):
        return RecallCounter().as_dict()


def _combine_recall(final: Path, shards: list[Path]) -> None:
    """``<stage>_<split>.recall.json`` of a shard set: the shards' reports added up."""
    total, counts, reports = RecallCounter(), {k: 0 for k in KINDS}, []
    for p in shards:
        path = p.with_name(f"{p.stem}.recall.json")
        try:
            report = json.loads(path.read_text())
            totals = report["totals"]
        except (OSError, ValueError, KeyError):
            print(f"warning: {path} is missing or unreadable; the combined recall report leaves that shard out",
                  file=sys.stderr)
            continue
        for key, value in totals.items():
            setattr(total, key, getattr(total, key) + int(value))
        for k in KINDS:
            counts[k] += int(report["counts"].get(k, 0))
        reports.append(report)
    if not reports:
        return
    combined = {"stage": reports[0]["stage"], "output": str(final), "counts": counts, "recall": total.as_dict(),
                "totals": total.totals(), "checkpoints": reports[0]["checkpoints"],
                "shards": [str(p) for p in shards]}
    atomic_write_text(final.with_name(f"{final.stem}.recall.json"), json.dumps(combined, indent=2))


def _mine_batch(good, nets, cfg: MiningConfig, size: int, writer: SampleWriter, per_item: dict, device) -> None:
    d = cfg.detector
    tensors = [torch.from_numpy(im).to(device).permute(2, 0, 1) for _, im in good]
    cands: Candidates = run_pnet(
        nets["pnet"], tensors, min_face_size=d.min_face_size, factor=d.factor, threshold=d.thresholds[0],
        nms_scale=d.nms_pnet_scale, nms_image=d.nms_pnet,
    )  # fmt: skip
    if "rnet" in nets:
        cands = run_rnet(nets["rnet"], tensors, cands, threshold=d.thresholds[1], nms=d.nms_rnet)
    boxes, scores, owner = cands.boxes.cpu(), cands.scores.cpu(), cands.image_index.cpu()
    # Exactly the squares the detector's next stage would crop.
    squares = square_boxes(boxes).trunc()
    picks, offsets, kinds, sources = [], [], [], []
    for b, (item, image) in enumerate(good):
        mine = torch.nonzero(owner == b, as_tuple=True)[0]
        gt = torch.tensor(item.boxes, dtype=torch.float32)
        ignore = torch.tensor(item.ignore, dtype=torch.bool)
        per_item[str(item.id)] = coverage_row(gt[~ignore], boxes[mine])
        labelled = label_windows(squares[mine], scores[mine], gt, ignore, image.shape[1], image.shape[0], cfg, item.negatives)
        for kind, (idx, off) in labelled.items():
            picks.append(mine[idx])
            offsets.append(off)
            kinds += [kind] * idx.numel()
            sources += [item.path] * idx.numel()
    if not picks:
        return
    index = torch.cat(picks)
    if index.numel() == 0:
        return
    crops = crop_resize(tensors, squares[index].to(device), owner[index].to(device), size)
    crops = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    off = torch.cat(offsets).numpy().astype(np.float32)
    sq = squares[index].numpy().astype(np.float32)
    kinds_arr = np.array(kinds)
    src = np.array(sources, dtype=object)
    for kind in ("pos", "part", "neg"):
        sel = np.nonzero(kinds_arr == kind)[0]
        if sel.size:
            writer.add(kind, crops[sel], bbox=off[sel] if kind != "neg" else None, source=list(src[sel]), box=sq[sel])


def _add_landmarks(work: list[WorkItem], writer: SampleWriter, cfg: MiningConfig, size: int, bar, skipped: list[str]) -> None:
    job = SampleJob(cfg.seed, size, aug=cfg.landmark_aug, wider_box=cfg.wider_box)
    todo = [it for it in work if it.id not in writer.done_items]
    bar.update(len(work) - len(todo))
    chunks = [todo[i : i + 32] for i in range(0, len(todo), 32)]
    for results in parallel_chunks(ItemProcessor(job), chunks, max(cfg.workers, 1)):
        for r in results:
            if r.error is not None:
                skipped.append(r.error)
            else:
                write_item(writer, r)
        writer.commit([r.id for r in results])
        bar.update(len(results))


def _load_recall_rows(path: Path, done: set[int]) -> dict:
    rows_path = path.with_suffix(".rows.json")
    if not rows_path.exists():
        return {}
    rows = json.loads(rows_path.read_text())
    return {k: v for k, v in rows.items() if int(k) in done}


def check_config(cfg: MiningConfig) -> None:
    if not cfg.part_iou <= cfg.pos_iou:
        raise ConfigError(f"part_iou ({cfg.part_iou}) must not exceed pos_iou ({cfg.pos_iou})")
    if cfg.neg_iou > cfg.part_iou:
        raise ConfigError(f"neg_iou ({cfg.neg_iou}) must not exceed part_iou ({cfg.part_iou})")
