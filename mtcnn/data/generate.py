"""Running the sample generators: work items, a process pool, progress, resumable HDF5 writing.

A job is a list of :class:`WorkItem` (one source image each, with an integer id that is its
position in the job's deterministic order). Workers turn items into samples with a random
generator seeded from ``(seed, item id)`` only, so the output does not depend on the number of
workers or on scheduling; ``Pool.imap`` returns chunks in order and the main process alone
writes them through :class:`mtcnn.data.h5.SampleWriter` and commits each chunk, so a killed
run resumes where it stopped (``SampleWriter(resume=True)``) without duplicated samples.

Under ``torchrun`` each rank processes its share of the items (``id % world_size == rank``)
into its own crash-safe shard beside the usual file, and the finished set is listed in a
manifest the training readers read as one file (:mod:`mtcnn.data.shards`); since the samples
depend on ``(seed, item id)`` only, the ranks together make exactly one process's samples.

An unreadable source image is reported as one line naming the file and skipped (not
committed, so a rerun retries it); the job fails only when more than ``max_bad_fraction`` of
the images could not be read.

Entry points: :func:`generate_pnet` (``prepare_data/gen_12net_data.py``) and
:func:`generate_landmarks` (``prepare_data/gen_landmark_aug.py``); :func:`parallel_chunks` is
the pool helper the scene generator shares.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtcnn.errors import DataError
from mtcnn.config import save_resolved, to_dict
from mtcnn.data.annotations import AnnotationError, ImageAnnotation, read_annotations, read_wider, split_by_hash, split_by_name
from mtcnn.data.annotation_formats import five_point_record
from mtcnn.config.data import (
    LandmarkAugConfig,
    LandmarkDataConfig,
    PNetDataConfig,
    PNetSamplingConfig,
    SourceConfig,
    WiderBoxConfig,
)
from mtcnn.config.paths import data_hint, resolve_path
from mtcnn.data.h5 import KINDS, SampleReader, SampleWriter
from mtcnn.data.shards import Shard, check_shard_settings, finish, refuse_complete_output, set_line, write_manifest
from mtcnn.data.sampling import SampleBatch, landmark_samples, pnet_samples, tight_to_wider
from mtcnn.io import ImageReadError, read_image_rgb

__all__ = [
    "GenerationError",
    "JobSummary",
    "WorkItem",
    "detection_items",
    "generate_landmarks",
    "generate_pnet",
    "landmark_items",
    "load_source",
    "parallel_chunks",
    "run_sample_job",
]


class GenerationError(DataError, RuntimeError):
    """A generation job cannot run or failed; ``str(e)`` is one line."""


# ------------------------------------------------------------------------------------------
# work items
# ------------------------------------------------------------------------------------------


@dataclass
class WorkItem:
    """One source image and what to make from it.

    task "detect": P-Net pos/part/neg crops from ``boxes`` (already in the style to train on);
    task "landmark": landmark samples from each face's tight ``boxes`` and 5 ``landmarks``.
    """

    id: int
    task: str
    path: str
    boxes: np.ndarray
    ignore: np.ndarray
    landmarks: np.ndarray
    negatives: int | None = None
    near_negatives: int | None = None


def load_source(src: SourceConfig) -> list[ImageAnnotation]:
    """Read one configured source, apply its ``points``, ``boxes``, split, ``sample_images`` and ``max_images``."""
    path = resolve_path(src.path)
    label = src.name or src.format
    if not path.exists():
        hint = " (generate it first: prepare_data/gen_scenes.py)" if "scenes" in str(path) else data_hint(path)
        if src.format == "webfaces":
            hint = " (Caltech WebFaces is not in the shared data: see the README, or set MTCNN_WEBFACES)"
        if src.format == "pts68" or "{w300}" in src.path:
            hint = " (the 300-W training sets are not in the shared data: see its README, or set MTCNN_300W)"
        raise GenerationError(f"source '{label}': {path} not found{hint}")
    root = resolve_path(src.images_root) if src.images_root else None
    try:
        if src.format == "wider" and src.landmarks_path:
            records = read_wider(path, root, landmarks_path=resolve_path(src.landmarks_path))
        else:
            records = read_annotations(path, src.format, root, **src.reader_options())
    except AnnotationError as e:
        raise GenerationError(f"source '{label}': {e}") from None
    if src.points == "five":
        try:
            records = [five_point_record(r) for r in records]
        except ValueError as e:
            raise GenerationError(f"source '{label}' (points: five): {e}") from None
    if src.point_offsets is not None:
        from mtcnn.data.point_definitions import shift_points

        records = [dataclasses.replace(r, landmarks=shift_points(r.landmarks, src.point_offsets)) for r in records]
    if src.boxes == "from_points":
        from mtcnn.data.webfaces import boxes_from_five_points

        try:
            records = [boxes_from_five_points(r) for r in records]
        except ValueError as e:
            raise GenerationError(f"source '{label}' (boxes: from_points): {e}") from None
    if src.images_layout == "flat":
        flat_root = root if root is not None else path.parent
        records = [dataclasses.replace(r, path=flat_root / r.path.name) for r in records]
    if src.missing_images == "skip":
        present = [r for r in records if r.path.is_file()]
        if len(present) < len(records):
            print(f"source '{label}': {len(records) - len(present)} of {len(records)} annotated images are absent "
                  "and left out (missing_images: skip)", file=sys.stderr)
        records = present
    if src.split != "all":
        splitter = split_by_hash if src.split_rule == "hashed" else split_by_name
        records = splitter(records, src.split, src.train_fraction)
    if src.sample_images is not None and src.sample_images < len(records):
        # Seeded by the source's name: the same source gives the same images in every step.
        rng = np.random.default_rng(zlib.crc32(label.encode("utf-8")))
        keep = np.sort(rng.choice(len(records), src.sample_images, replace=False))
        records = [records[int(k)] for k in keep]
    if src.max_images is not None:
        records = records[: src.max_images]
    return records


def detection_items(sources: Sequence[SourceConfig], wider_box: WiderBoxConfig, start_id: int = 0) -> list[WorkItem]:
    """P-Net work items of every source, in config order then record order."""
    items: list[WorkItem] = []
    for src in sources:
        for rec in load_source(src):
            boxes = rec.boxes
            if src.box_style == "wider_like" and len(boxes):
                boxes = tight_to_wider(boxes, wider_box)
            items.append(WorkItem(
                id=start_id + len(items), task="detect", path=str(rec.path),
                boxes=np.asarray(boxes, np.float32), ignore=np.asarray(rec.ignore, bool),
                landmarks=np.zeros((len(boxes), 0, 2), np.float32),
                negatives=src.negatives_per_image, near_negatives=src.near_negatives_per_face,
            ))
    return items


def landmark_items(sources: Sequence[SourceConfig], start_id: int = 0) -> list[WorkItem]:
    """Landmark work items: images with at least one face holding 5 points, both eyes finite
    (a missing nose or mouth corner is NaN: WebFaces' four points become five with NaN mouth
    corners, and the loss masks them).

    Boxes stay as the source gives them (tight CNN_FacePoint boxes); the landmark sampler
    applies its own ``box_style``.
    """
    items: list[WorkItem] = []
    for src in sources:
        for rec in load_source(src):
            if rec.num_landmarks != 5:
                if rec.num_faces and rec.num_landmarks not in (0, 5):
                    raise GenerationError(
                        f"source '{src.name or src.format}': {rec.path} has {rec.num_landmarks} points per face, need 5"
                    )
                continue
            ok = np.isfinite(rec.landmarks[:, :2]).all(axis=(1, 2)) & (np.isfinite(rec.landmarks).all(axis=2).sum(axis=1) >= 3) & ~rec.ignore
            if not ok.any():
                continue
            items.append(WorkItem(
                id=start_id + len(items), task="landmark", path=str(rec.path),
                boxes=np.asarray(rec.boxes[ok], np.float32), ignore=np.zeros(int(ok.sum()), bool),
                landmarks=np.asarray(rec.landmarks[ok], np.float32),
            ))
    return items


# ------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------


@dataclass
class SampleJob:
    seed: int
    size: int
    sampling: PNetSamplingConfig = field(default_factory=PNetSamplingConfig)
    aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)


@dataclass
class _ItemResult:
    id: int
    path: str
    batches: dict[str, SampleBatch]
    error: str | None = None


def _concat(batches: list[SampleBatch], size: int) -> SampleBatch:
    batches = [b for b in batches if len(b)]
    if not batches:
        return SampleBatch.empty(size)
    if len(batches) == 1:
        return batches[0]
    return SampleBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("images", "bbox", "landmark", "box")))


def process_item(item: WorkItem, job: SampleJob) -> _ItemResult:
    """Samples of one work item (runs in a worker). Unreadable images give ``error``."""
    rng = np.random.default_rng([job.seed, item.id])
    try:
        image = read_image_rgb(item.path)
    except ImageReadError as e:
        return _ItemResult(item.id, item.path, {}, str(e))
    if item.task == "detect":
        batches = pnet_samples(image, item.boxes, item.ignore, job.sampling, rng, job.size,
                               item.negatives, item.near_negatives)
    elif item.task == "landmark":
        per_face = [landmark_samples(image, b, p, job.aug, rng, job.size, job.wider_box)
                    for b, p in zip(item.boxes, item.landmarks)]
        batches = {"landmark": _concat(per_face, job.size)}
    else:  # pragma: no cover - items are built in this module
        raise ValueError(f"unknown task {item.task!r}")
    return _ItemResult(item.id, item.path, batches)


def write_item(writer: SampleWriter, result: _ItemResult) -> None:
    """Append one processed work item's samples, every kind, to ``writer`` (not committed)."""
    for kind, b in result.batches.items():
        if len(b) == 0:
            continue
        writer.add(
            kind, b.images,
            bbox=b.bbox if kind in ("pos", "part") else None,
            landmark=b.landmark if kind == "landmark" else None,
            source=result.path, box=b.box,
        )  # fmt: skip


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(fn: Callable[[Any], Any]) -> None:
    _WORKER_STATE["fn"] = fn


def _run_chunk(chunk: list[Any]) -> list[Any]:
    fn = _WORKER_STATE["fn"]
    return [fn(x) for x in chunk]


class ItemProcessor:
    """Picklable ``item -> process_item(item, job)``."""

    def __init__(self, job: SampleJob):
        self.job = job

    def __call__(self, item: WorkItem) -> _ItemResult:
        return process_item(item, self.job)


def parallel_chunks(fn: Callable[[Any], Any], chunks: Iterable[list[Any]], workers: int) -> Iterator[list[Any]]:
    """``[fn(x) for x in chunk]`` for every chunk, in order, over ``workers`` processes.

    ``fn`` is sent to each worker once (pool initializer). ``workers <= 1`` runs in this
    process. Closing the generator early terminates the pool.
    """
    if workers <= 1:
        _init_worker(fn)
        for chunk in chunks:
            yield _run_chunk(chunk)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(fn,))
    try:
        yield from pool.imap(_run_chunk, chunks)
    finally:
        pool.terminate()
        pool.join()


# ------------------------------------------------------------------------------------------
# main-process runner
# ------------------------------------------------------------------------------------------


@dataclass
class JobSummary:
    path: Path
    counts: dict[str, int]
    items: int
    resumed: int
    processed: int
    skipped: list[str]
    seconds: float
    shard: Shard = field(default_factory=Shard)
    final: Path | None = None  # the usual output, when ``path`` is one rank's shard of it
    manifest: Path | None = None  # the shard list, once every rank has finished

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("inf")

    def lines(self) -> list[str]:
        counts = "  ".join(f"{k} {self.counts.get(k, 0):,}" for k in KINDS)
        out = [
            f"{self.path.name}: {counts}  (total {sum(self.counts.values()):,})",
            f"images: {self.items:,} in job, {self.resumed:,} done before, {self.processed:,} processed now, "
            f"{len(self.skipped):,} unreadable skipped; {self.images_per_second:.1f} images/s",
        ]
        if self.shard.enabled:
            out.append(set_line(self.shard, self.final or self.path, self.manifest))
        return out


def _progress(total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr, smoothing=0.1)


def run_sample_job(
    items: Sequence[WorkItem],
    out_path: Path,
    job: SampleJob,
    attrs: dict[str, Any],
    *,
    workers: int = 2,
    chunk_items: int = 16,
    overwrite: bool = False,
    max_bad_fraction: float = 0.1,
    desc: str = "samples",
    progress: bool = True,
    on_start: Callable[[], None] | None = None,
    shard: Shard | None = None,
) -> JobSummary:
    """Process ``items`` into ``out_path`` (resuming a partial file of the same settings;
    ``overwrite`` starts over). ``on_start`` runs once the output is accepted, before any work.

    ``shard`` (default: from the torchrun environment, :meth:`Shard.from_env`): a rank of a split
    job takes its share of ``items`` into its own shard file beside ``out_path`` (a finished one
    of the same settings is kept as it is) and, when every rank is done, the shard list is
    written (:mod:`mtcnn.data.shards`)."""
    out_path = Path(out_path)
    shard = Shard.from_env() if shard is None else shard
    if not items:
        raise GenerationError(f"{out_path.name}: no source images to process (check the sources in the config)")
    final = out_path
    refuse_complete_output(final, overwrite, shard)
    if shard.enabled:
        items = shard.select(items, key=lambda it: it.id)
        attrs = {**attrs, **shard.attrs()}
        out_path = shard.path(final)
        desc = out_path.name
        if out_path.exists():  # this rank finished before (another rank was stopped): keep it
            check_shard_settings(out_path, attrs)
            summary = JobSummary(out_path, SampleReader(out_path).counts(), len(items), len(items), 0, [], 0.0,
                                 shard, final)
            summary.manifest = finish(shard, lambda: write_manifest(final, shard.world_size), "the shards")
            return summary
    try:
        writer = open_writer(out_path, job.size, attrs, overwrite)
        if on_start is not None:
            on_start()
    except (ValueError, OSError) as e:
        raise GenerationError(" ".join(str(e).split())) from None
    done = writer.done_items
    todo = [it for it in items if it.id not in done]
    resumed = len(items) - len(todo)
    chunks = [todo[i:i + chunk_items] for i in range(0, len(todo), chunk_items)]
    bar = _progress(len(items), resumed, desc) if progress else None
    skipped: list[str] = []
    processed = 0
    t0 = time.perf_counter()
    ok = False
    try:
        for results in parallel_chunks(ItemProcessor(job), chunks, workers):
            committed = []
            for r in results:
                processed += 1
                if r.error is not None:
                    skipped.append(r.error)
                    msg = f"skipped unreadable image: {r.error}"
                    (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))
                    continue
                write_item(writer, r)
                committed.append(r.id)
            writer.commit(committed)
            if bar is not None:
                bar.update(len(results))
                n = writer.lengths()
                bar.set_postfix_str(" ".join(f"{k}={n[k]}" for k in KINDS), refresh=False)
            if processed >= 20 and len(skipped) == processed:
                raise GenerationError(
                    f"the first {processed} images were all unreadable (first: {skipped[0]}); check the paths"
                )
        seconds = time.perf_counter() - t0
        if processed and len(skipped) > max_bad_fraction * processed:
            raise GenerationError(
                f"{len(skipped)} of {processed} images were unreadable (more than max_bad_fraction="
                f"{max_bad_fraction}); first: {skipped[0]}. The partial file is kept: fix the paths and rerun to resume"
            )
        counts = writer.lengths()
        ok = True
    finally:
        if bar is not None:
            bar.close()
        writer.close(complete=ok)
    summary = JobSummary(out_path, counts, len(items), resumed, processed, skipped, seconds, shard, final)
    if shard.enabled:
        summary.manifest = finish(shard, lambda: write_manifest(final, shard.world_size), "the shards")
    return summary


def open_writer(out_path: Path, size: int, attrs: dict[str, Any], overwrite: bool) -> SampleWriter:
    """The job's writer: resumes a partial file of the same settings (a damaged one starts over,
    said in one line on stderr); ``overwrite`` starts over, partial file included."""
    writer = SampleWriter(out_path, size, attrs, resume=not overwrite, overwrite=overwrite)
    if writer.notice:
        print(f"warning: {writer.notice}", file=sys.stderr, flush=True)
    return writer


def _content_config(cfg: Any) -> dict[str, Any]:
    """The parts of a config that decide the samples (not workers / chunking / output place)."""
    d = to_dict(cfg)
    for key in ("workers", "chunk_images", "out", "max_bad_fraction"):
        d.pop(key, None)
    return d


def _attrs(stage: str, split: str, cfg: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "split": split,
        "seed": int(cfg.seed),
        "generator": "mtcnn.data.generate",
        "interpolation": "cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
        "iou_convention": "no +1 (width = x2 - x1)",
        "config": yaml.safe_dump(_content_config(cfg), sort_keys=True),
        **extra,
    }


def _check_split(split: str) -> None:
    if split not in ("train", "val"):
        raise GenerationError(f"split must be 'train' or 'val', got {split!r}")


def generate_pnet(cfg: PNetDataConfig, split: str = "train", *, overwrite: bool = False,
                  progress: bool = True, shard: Shard | None = None) -> JobSummary:
    """P-Net samples of one split into ``<out>/<name>_<split>.h5`` (+ resolved config beside it;
    under torchrun, or with ``shard``, this rank's shard of it: :func:`run_sample_job`).

    Detection crops from ``cfg.sources.<split>`` and, if ``cfg.landmarks.enabled``, landmark
    samples from ``cfg.landmarks.sources.<split>`` in the same file (the mixed-ratio loader
    reads one file per stage).
    """
    _check_split(split)
    out_dir = resolve_path(cfg.out, split)
    out_path = out_dir / f"{cfg.name}_{split}.h5"
    items = detection_items(getattr(cfg.sources, split), cfg.wider_box)
    if cfg.landmarks.enabled:
        items += landmark_items(getattr(cfg.landmarks.sources, split), start_id=len(items))
    s = cfg.sampling
    attrs = _attrs("pnet", split, cfg, {"iou_neg": s.neg_iou, "iou_part": s.part_iou, "iou_pos": s.pos_iou})
    job = SampleJob(cfg.seed, cfg.size, cfg.sampling, cfg.landmarks.aug, cfg.wider_box)
    return run_sample_job(items, out_path, job, attrs, workers=cfg.workers, chunk_items=cfg.chunk_images,
                          overwrite=overwrite, max_bad_fraction=cfg.max_bad_fraction, desc=out_path.name,
                          progress=progress, on_start=lambda: save_resolved(cfg, out_dir, f"{out_path.stem}.config.yaml"),
                          shard=shard)


def generate_landmarks(cfg: LandmarkDataConfig, split: str = "train", *, overwrite: bool = False,
                       progress: bool = True, shard: Shard | None = None) -> JobSummary:
    """Landmark samples of one split into ``<out>/landmark<size>_<split>.h5`` (group ``landmark``;
    under torchrun, or with ``shard``, this rank's shard of it: :func:`run_sample_job`)."""
    _check_split(split)
    out_dir = resolve_path(cfg.out, split)
    out_path = out_dir / f"landmark{cfg.size}_{split}.h5"
    items = landmark_items(getattr(cfg.sources, split))
    attrs = _attrs("landmark", split, cfg, {"landmark_crop_iou": cfg.aug.crop_iou})
    job = SampleJob(cfg.seed, cfg.size, PNetSamplingConfig(), cfg.aug, cfg.wider_box)
    return run_sample_job(items, out_path, job, attrs, workers=cfg.workers, chunk_items=cfg.chunk_images,
                          overwrite=overwrite, max_bad_fraction=cfg.max_bad_fraction, desc=out_path.name,
                          progress=progress, on_start=lambda: save_resolved(cfg, out_dir, f"{out_path.stem}.config.yaml"),
                          shard=shard)
