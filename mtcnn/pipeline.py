"""The whole training chain from one config (``tools/run_pipeline.py mtcnn/config/defaults/pipeline.yaml``).

scenes -> P-Net samples (+12 px landmarks) -> train P-Net -> mine with P-Net -> R-Net samples
(+24 px landmarks) -> train R-Net -> mine with P-Net + R-Net -> O-Net samples (+48 px landmarks)
-> train O-Net -> weights bundle -> evaluate on the validation scenes.

Everything goes under ``work_dir``. Each step is skipped when its output is complete (a final
HDF5 file, a final checkpoint, a report) and was made with the settings the step has now
(recorded in ``<work_dir>/steps/<step>.yaml``); the steps themselves resume partial work (the
sample writers from their last commit, training from ``last.pt``), so a crash or Ctrl-C picks up
where it stopped. A finished step whose settings changed is never silently kept: the run refuses
before any work, naming every setting that differs (settings that only change the speed, such
as workers and threads, do not count). Step configs are the library's own typed configs; the pipeline only sets the
paths that chain them together.

Fine-tuning (``pipeline_finetune.yaml``): ``finetune.photos`` are the user's annotated photos (any
source format: a COCO file, a YOLO folder, VOC, the project's list...). They replace nothing: every
data step (P-Net samples, both minings) reads them *and* the step's own sources, the original
training sources, of which a random share is replayed so the nets do not forget other faces:
``finetune.replay`` is the share of the training images drawn from the original sources
(``replay / (1 - replay)`` original images per photo of yours, split evenly over the original
sources, each a seeded random choice: :attr:`~mtcnn.config.data.SourceConfig.sample_images`; the
same for validation). The landmark samples come from the landmark sources alone, replayed by
the same rule (the photos give boxes). ``mine_with:
default`` mines with the shipped P- and R-Net (so every data step is independent of training),
``init: default`` in the ``train_*`` sections starts each stage from the shipped weights, and the
evaluation runs on the validation photos, beside ``evaluate.baseline`` (the weights fine-tuning
started from) on the same photos. The bundle loads with ``tools/detect.py --weights``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtcnn.atomic import atomic_write_text
from mtcnn.config import ConfigError, bounded, save_resolved, to_dict
from mtcnn.config.data import PNetDataConfig, SceneConfig, SourceConfig, SplitSources
from mtcnn.errors import DataError
from mtcnn.data.hard_examples import MiningConfig
from mtcnn.config.train import TrainConfig


@dataclass
class PipelineEval:
    enabled: bool = True
    thresholds: tuple[float, float, float] = bounded((0.6, 0.7, 0.7), 0.0, 1.0)
    min_face_size: float = bounded(20.0, 4.0, None)
    factor: float = bounded(0.709, 0.1, 0.99)
    max_images: int | None = bounded(None, 1, None, help="evaluate on the first N validation scenes")
    # Also evaluate these weights on the same images (default: the shipped ones; null: none), so a
    # fine-tuned bundle is compared with what it started from.
    baseline: str | None = None


@dataclass
class FinetuneSection:
    """Fine-tuning on the user's photos (see the module docstring)."""

    photos: SplitSources = field(default_factory=SplitSources)
    replay: float = bounded(0.3, 0.0, 0.95, help="share of the training images drawn from the original sources")

    def __post_init__(self) -> None:
        if not self.photos.train or not self.photos.val:
            raise ValueError("finetune.photos needs train and val sources (e.g. the same photos with split: train / split: val)")


@dataclass
class PipelineConfig:
    work_dir: str = "{gen}/pipeline"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = bounded(None, 1, 1024)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    pnet_data: PNetDataConfig = field(default_factory=PNetDataConfig)
    train_pnet: TrainConfig = field(default_factory=lambda: TrainConfig(net="pnet"))
    mine_pnet: MiningConfig = field(default_factory=lambda: MiningConfig(test_mode="PNet"))
    train_rnet: TrainConfig = field(default_factory=lambda: TrainConfig(net="rnet"))
    mine_rnet: MiningConfig = field(default_factory=lambda: MiningConfig(test_mode="RNet"))
    train_onet: TrainConfig = field(default_factory=lambda: TrainConfig(net="onet"))
    evaluate: PipelineEval = field(default_factory=PipelineEval)
    # The weights the miners run instead of the nets this pipeline trains: default (the shipped
    # ones), original, or a bundle / folder path. Null: this pipeline's own P- and R-Net.
    mine_with: str | None = None
    finetune: FinetuneSection | None = None

    def __post_init__(self) -> None:
        for name, net in (("train_pnet", "pnet"), ("train_rnet", "rnet"), ("train_onet", "onet")):
            if getattr(self, name).net != net:
                raise ValueError(f"{name}.net must be '{net}'")
        if self.mine_pnet.test_mode != "PNet" or self.mine_rnet.test_mode != "RNet":
            raise ValueError("mine_pnet.test_mode must be PNet and mine_rnet.test_mode RNet")


def _log(message: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _with_sources_of_scenes(sources: SplitSources, scenes_dir: Path) -> SplitSources:
    """Point every 'scenes' source at this pipeline's scenes."""
    def fix(src: SourceConfig, split: str) -> SourceConfig:
        if src.name != "scenes":
            return src
        return dataclasses.replace(src, path=str(scenes_dir / split / "scenes_bbx_gt.txt"), images_root=None)

    return SplitSources(train=[fix(s, "train") for s in sources.train], val=[fix(s, "val") for s in sources.val])


def _photo_counts(finetune: FinetuneSection) -> dict[str, int]:
    """How many of the user's photos each split has (their annotations read and checked now)."""
    from mtcnn.data.generate import load_source

    counts = {split: sum(len(load_source(src)) for src in getattr(finetune.photos, split)) for split in ("train", "val")}
    for split, n in counts.items():
        if n == 0:
            raise DataError(f"finetune.photos.{split}: no annotated photos (check the paths, the split and classes)")
    return counts


def replay_sources(originals: SplitSources, photos: SplitSources, replay: float, photo_counts: dict[str, int]) -> SplitSources:
    """The user's photos, then the original sources, each cut to its share of the replay: with
    ``U`` photos in a split, ``ceil(U * replay / (1 - replay))`` original images split evenly over
    the original sources (``sample_images``; a source's own smaller ``sample_images`` stays)."""
    def mix(split: str) -> list[SourceConfig]:
        own, old = list(getattr(photos, split)), list(getattr(originals, split))
        if not old or replay <= 0:
            return own
        per_source = math.ceil(math.ceil(photo_counts[split] * replay / (1.0 - replay)) / len(old))
        kept = []
        for src in old:
            n = per_source if src.sample_images is None else min(per_source, src.sample_images)
            if n > 0:
                kept.append(dataclasses.replace(src, sample_images=n))
        return own + kept

    return SplitSources(train=mix("train"), val=mix("val"))


def plan(cfg: PipelineConfig) -> dict:
    """The chained step configs with every path under ``work_dir`` (resolved, not run).

    With ``finetune`` the user's photos are read (to size the replay of the original sources)."""
    from mtcnn.config.paths import resolve_path

    work = resolve_path(cfg.work_dir)
    threads = {"threads": cfg.threads} if cfg.threads else {}
    scenes_dir = work / "scenes"
    samples = work / "samples"
    runs = work / "runs"
    counts = _photo_counts(cfg.finetune) if cfg.finetune is not None else None

    def sources(base: SplitSources, photos: bool = True) -> SplitSources:
        """Fine-tuning: the user's photos (not for landmark samples) and the replayed share of ``base``."""
        if cfg.finetune is not None and (photos or cfg.finetune.replay > 0):  # replay 0: landmark sources whole
            base = replay_sources(base, cfg.finetune.photos if photos else SplitSources(), cfg.finetune.replay, counts)
        return _with_sources_of_scenes(base, scenes_dir)

    def train_cfg(base: TrainConfig, net: str, train_file: Path, val_file: Path) -> TrainConfig:
        data = dataclasses.replace(base.data, train=[str(train_file)], val=[str(val_file)])
        return dataclasses.replace(base, out=str(runs / net), seed=cfg.seed, device=cfg.device, data=data, **threads)

    def mine_cfg(base: MiningConfig, stage: str) -> MiningConfig:
        return dataclasses.replace(
            base, seed=cfg.seed, device=cfg.device, out=str(samples), pnet=cfg.mine_with or str(runs / "pnet" / "pnet.pt"),
            rnet=cfg.mine_with or str(runs / "rnet" / "rnet.pt"), sources=sources(base.sources),
            landmark_sources=sources(base.landmark_sources, photos=False), threads=cfg.threads or 0,
        )  # fmt: skip

    steps = {
        "work": work,
        "scenes": {split: dataclasses.replace(cfg.scenes, seed=cfg.seed, split=split, out=str(scenes_dir / split)) for split in ("train", "val")},
        "pnet_data": dataclasses.replace(
            cfg.pnet_data, seed=cfg.seed, out=str(samples), name="pnet", sources=sources(cfg.pnet_data.sources),
            landmarks=dataclasses.replace(cfg.pnet_data.landmarks, sources=sources(cfg.pnet_data.landmarks.sources, photos=False)),
        ),  # fmt: skip
        "train_pnet": train_cfg(cfg.train_pnet, "pnet", samples / "pnet_train.h5", samples / "pnet_val.h5"),
        "mine_pnet": mine_cfg(cfg.mine_pnet, "rnet"),
        "train_rnet": train_cfg(cfg.train_rnet, "rnet", samples / "rnet_train.h5", samples / "rnet_val.h5"),
        "mine_rnet": mine_cfg(cfg.mine_rnet, "onet"),
        "train_onet": train_cfg(cfg.train_onet, "onet", samples / "onet_train.h5", samples / "onet_val.h5"),
        "bundle": work / "mtcnn_trained.pt",
        "eval_dir": work / "eval",
        # The evaluation's images: the user's validation photos when fine-tuning, else the validation scenes.
        "eval_sources": list(cfg.finetune.photos.val) if cfg.finetune is not None else None,
    }
    lists = [steps["pnet_data"].sources, steps["pnet_data"].landmarks.sources]
    lists += [x for m in ("mine_pnet", "mine_rnet") for x in (steps[m].sources, steps[m].landmark_sources)]
    # Composite scenes are made when a source reads them (always, outside fine-tuning: they are its validation set).
    steps["needs_scenes"] = cfg.finetune is None or any(
        src.name == "scenes" for lst in lists for split in ("train", "val") for src in getattr(lst, split))
    return steps


# Settings that change how fast a step runs, never what it makes.
_SPEED_ONLY = frozenset({"workers", "threads", "num_workers", "progress", "chunk_images", "tensorboard", "every_steps"})


def step_settings(config) -> dict:
    """What a step's output depends on: its resolved config without the speed-only settings."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _SPEED_ONLY}
        return value

    return yaml.safe_load(yaml.safe_dump(strip(to_dict(config)), sort_keys=True))


def default_settings(config) -> dict:
    """:func:`step_settings` of a config of the same type built from its defaults (same net).

    A setting a finished step's record lacks was added to the code after that step ran; the step
    then behaved as the setting's default, so only a different value is a change.
    """
    fresh = type(config)(net=config.net) if hasattr(config, "net") else type(config)()
    return step_settings(fresh.resolved() if hasattr(fresh, "resolved") else fresh)


def _step_configs(cfg: PipelineConfig, steps: dict) -> list[tuple[str, Any, Path]]:
    """Every step in order as (name, the config it runs with or None, output that marks it complete)."""
    out: list[tuple[str, Any, Path]] = []
    for split in ("train", "val") if steps["needs_scenes"] else ():
        out.append((f"scenes/{split}", steps["scenes"][split], Path(steps["scenes"][split].out) / "scenes_bbx_gt.txt"))
    for split in ("train", "val"):
        out.append((f"pnet_data/{split}", steps["pnet_data"], Path(steps["pnet_data"].out) / f"pnet_{split}.h5"))
    for net, miner, stage in (("pnet", "mine_pnet", "rnet"), ("rnet", "mine_rnet", "onet"), ("onet", None, None)):
        tcfg = steps[f"train_{net}"]
        out.append((f"train_{net}", tcfg.resolved(), Path(tcfg.out) / f"{net}.pt"))
        if miner:
            for split in ("train", "val"):
                out.append((f"{miner}/{split}", steps[miner], Path(steps[miner].out) / f"{stage}_{split}.h5"))
    out.append(("bundle", None, steps["bundle"]))
    if cfg.evaluate.enabled:
        out.append(("evaluate", cfg.evaluate, steps["eval_dir"] / "report.json"))
    return out


def pipeline_steps(cfg: PipelineConfig, steps: dict) -> list[tuple[str, dict, Path]]:
    """Every step in order as (name, settings, output that marks it complete)."""
    return [(name, {} if config is None else step_settings(config), output)
            for name, config, output in _step_configs(cfg, steps)]  # fmt: skip


def step_defaults(cfg: PipelineConfig, steps: dict) -> dict[str, dict]:
    """:func:`default_settings` per step name of :func:`pipeline_steps`."""
    return {name: default_settings(config) for name, config, _ in _step_configs(cfg, steps) if config is not None}


def _record_path(work: Path, name: str) -> Path:
    return work / "steps" / (name.replace("/", "_") + ".yaml")


def _added_later_as_default(diff: tuple[str, Any, Any], defaults: dict) -> bool:
    path, stored, now = diff
    if stored != "<absent>":
        return False
    value: Any = defaults
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return value == now


def _source_defaults() -> dict:
    return to_dict(SourceConfig())


def _with_new_source_defaults(stored: Any, now: Any) -> Any:
    """``stored`` with every source entry (an item of a list of sources) completed by the options
    newer than the record, where the entry now holds their default: a source option added later
    (say ``split_rule``) must not make every finished step look changed."""
    if isinstance(stored, dict) and isinstance(now, dict):
        return {k: _with_new_source_defaults(v, now.get(k)) for k, v in stored.items()}
    if isinstance(stored, list) and isinstance(now, list) and len(stored) == len(now):
        defaults = _source_defaults()
        out = []
        for old, new in zip(stored, now):
            if isinstance(old, dict) and isinstance(new, dict) and set(new) <= set(defaults) and "format" in new:
                old = {**{k: v for k, v in new.items() if k not in old and v == defaults[k]}, **old}
            out.append(_with_new_source_defaults(old, new))
        return out
    return stored


def check_finished_steps(work: Path, order: list[tuple[str, dict, Path]], defaults: dict[str, dict] | None = None) -> None:
    """Refuse (ConfigError) when a finished step was made with other settings than it has now.

    ``defaults``: per step name, :func:`default_settings` of its config; a setting missing from
    the record that now holds its default is not a change (the option is newer than the step).
    """
    from mtcnn.data.journal import _mapping_diffs

    defaults = defaults or {}

    for k, (name, settings, output) in enumerate(order):
        record = _record_path(work, name)
        if not output.exists() or not record.exists():
            continue
        stored = _with_new_source_defaults(yaml.safe_load(record.read_text()) or {}, settings)
        diffs = _mapping_diffs(stored, settings, "")
        if diffs and name in defaults:
            diffs = [d for d in diffs if not _added_later_as_default(d, defaults[name])]
        if diffs:
            changed = "; ".join(f"{name.split('/')[0]}.{path} was {a!r}, now {b!r}" for path, a, b in diffs)
            later = [str(o) for _, _, o in order[k:] if o.exists()]
            raise ConfigError(
                f"step {name} in {work} was finished with other settings ({changed}). Finished steps are not "
                f"rerun silently: choose another work_dir, or delete {', '.join(later)} to rerun from {name}"
            )


def _training_done(steps: dict, net: str, data_step: str) -> bool:
    """Whether ``net``'s training is complete, so the samples ``data_step`` makes for it are not needed.

    Samples only feed their training step: once that one is complete (say, from weights committed
    by an earlier effort) they are not regenerated, which saves the P-Net samples' and P-Net
    mining's hour.
    """
    final = Path(steps[f"train_{net}"].out) / f"{net}.pt"
    if final.exists():
        _log(f"skip {data_step}: train_{net} is complete ({final}), its samples are not needed")
    return final.exists()


def run_pipeline(cfg: PipelineConfig, *, stop_after: str | None = None) -> Path:
    """Run (or resume) every step; returns the trained weights bundle. ``stop_after`` names a step."""
    from mtcnn.data.generate import generate_pnet
    from mtcnn.data.hard_examples import mine_hard_examples
    from mtcnn.data.scenes import generate_scenes
    from mtcnn.training import train

    steps = plan(cfg)
    work: Path = steps["work"]
    order = pipeline_steps(cfg, steps)
    check_finished_steps(work, order, step_defaults(cfg, steps))
    settings = {name: step for name, step, _ in order}
    work.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, work, "pipeline.resolved.yaml")
    t_start = time.perf_counter()

    def done(name: str, output: Path) -> bool:
        record = _record_path(work, name)
        if output.exists():
            if not record.exists():  # made before settings were recorded: adopt them, say so
                _log(f"note: {name}: recording the current settings for {output} (it predates step records)")
                stamp(name)
            _log(f"skip {name}: {output} is complete")
            return True
        record.unlink(missing_ok=True)
        _log(f"run {name} -> {output}")
        return False

    def stamp(name: str) -> None:
        record = _record_path(work, name)
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, yaml.safe_dump(settings[name], sort_keys=True))

    def finish(name: str) -> bool:
        return stop_after == name

    for split in ("train", "val") if steps["needs_scenes"] else ():
        scene_cfg = steps["scenes"][split]
        if not done(f"scenes/{split}", Path(scene_cfg.out) / "scenes_bbx_gt.txt"):
            generate_scenes(scene_cfg, preview=True)
            stamp(f"scenes/{split}")
    if finish("scenes"):
        return steps["bundle"]
    for split in ("train", "val") if not _training_done(steps, "pnet", "pnet_data") else ():
        if not done(f"pnet_data/{split}", Path(steps["pnet_data"].out) / f"pnet_{split}.h5"):
            for line in generate_pnet(steps["pnet_data"], split).lines():
                _log(line)
            stamp(f"pnet_data/{split}")
    if finish("pnet_data"):
        return steps["bundle"]
    for net, miner in (("pnet", "mine_pnet"), ("rnet", "mine_rnet"), ("onet", None)):
        tcfg = steps[f"train_{net}"]
        final = Path(tcfg.out) / f"{net}.pt"
        if not done(f"train_{net}", final):
            train(tcfg, resume=(Path(tcfg.out) / "last.pt").exists())
            stamp(f"train_{net}")
        if finish(f"train_{net}"):
            return steps["bundle"]
        if miner:
            mcfg = steps[miner]
            stage = "rnet" if miner == "mine_pnet" else "onet"
            for split in ("train", "val") if not _training_done(steps, stage, miner) else ():
                if not done(f"{miner}/{split}", Path(mcfg.out) / f"{stage}_{split}.h5"):
                    for line in mine_hard_examples(mcfg, split).lines():
                        _log(line)
                    stamp(f"{miner}/{split}")
            if finish(miner):
                return steps["bundle"]
    bundle = steps["bundle"]
    if not done("bundle", bundle):
        _write_bundle(steps, bundle, operating_point(cfg.evaluate))
        stamp("bundle")
    if cfg.evaluate.enabled and not done("evaluate", steps["eval_dir"] / "report.json"):
        report = evaluate_on_val_scenes(bundle, steps, cfg.evaluate)
        stamp("evaluate")
        where = "validation photos" if steps["eval_sources"] is not None else "validation scenes"
        _log(f"{where}: AP@0.5 {report['ap']:.3f}, recall {report['recall']:.3f}, precision {report['precision']:.3f}")
        if "baseline" in report:
            b = report["baseline"]
            _log(f"{where}, {b['weights']} weights: AP@0.5 {b['ap']:.3f}, recall {b['recall']:.3f}, precision {b['precision']:.3f}")
    _log(f"pipeline finished in {time.perf_counter() - t_start:.0f} s; weights: {bundle}")
    return bundle


def operating_point(ecfg: PipelineEval) -> dict:
    """The detector settings the bundle carries (its ``detector`` entry): the ``evaluate:``
    section's, so ``tools/detect.py --weights`` and every comparison run the trained weights at
    the operating point they were evaluated at, unless told otherwise."""
    return {"thresholds": list(ecfg.thresholds), "min_face_size": ecfg.min_face_size, "factor": ecfg.factor}


def _write_bundle(steps: dict, bundle: Path, detector: dict | None = None) -> None:
    from mtcnn.config import to_dict
    from mtcnn.weights import _load_file, load_stage_net, save_bundle

    nets, meta = {}, {}
    for net in ("pnet", "rnet", "onet"):
        path = Path(steps[f"train_{net}"].out) / f"{net}.pt"
        nets[net] = load_stage_net(path, net)
        meta[net] = {"source": "tools/run_pipeline.py", "train_config": to_dict(steps[f"train_{net}"])}
        started_from = (_load_file(path).get("meta") or {}).get("init")
        if started_from:
            meta[net]["init"] = started_from  # fine-tuning: the weights the stage started from
    save_bundle(nets, bundle, meta=meta, detector=detector)


def _validation_records(steps: dict, ecfg: PipelineEval) -> list:
    """The evaluation's annotated images: the validation scenes, or the user's validation photos."""
    from mtcnn.data.annotations import read_wider
    from mtcnn.data.generate import load_source

    if steps.get("eval_sources") is not None:
        records = [r for src in steps["eval_sources"] for r in load_source(src)]
    else:
        scenes_val = Path(steps["scenes"]["val"].out)
        records = read_wider(scenes_val / "scenes_bbx_gt.txt", scenes_val)
    return records[: ecfg.max_images] if ecfg.max_images else records


def _detect_and_score(weights, records: list, ecfg: PipelineEval | None, device: str | None) -> tuple[dict, Any, dict]:
    """``ecfg`` None: at the operating point the weights carry (a baseline at its own settings)."""
    from mtcnn.detector import MTCNN
    from mtcnn.eval.detection import evaluate_detections
    from mtcnn.io import read_image_rgb

    chosen = operating_point(ecfg) if ecfg is not None else {}
    detector = MTCNN(weights=weights, device=device, **chosen)
    detections, truth = [], []
    for rec in records:
        faces = detector.detect(read_image_rgb(rec.path))[0]
        detections.append((faces.boxes.numpy(), faces.scores.numpy()))
        truth.append((rec.boxes, rec.ignore))
    report = evaluate_detections(detections, truth)
    summary = {
        "ap": float(report.ap), "recall": float(report.recall[-1]) if len(report.recall) else 0.0,
        "precision": float(report.precision[-1]) if len(report.precision) else 0.0,
        "images": len(records), "faces": int(report.num_gt), "detections": int(report.num_detections),
    }  # fmt: skip
    return summary, report, detector.settings


def evaluate_on_val_scenes(bundle: Path, steps: dict, ecfg: PipelineEval) -> dict:
    """Detection PR / AP of the trained cascade on the validation scenes (fine-tuning: on the
    user's validation photos), and of ``ecfg.baseline``'s weights on the same images; writes
    report + plot."""
    import json

    from mtcnn.atomic import atomic_write_text
    from mtcnn.eval.plots import plot_pr_curves

    records = _validation_records(steps, ecfg)
    device = steps["train_pnet"].device if steps["train_pnet"].device != "auto" else None
    summary, report, settings = _detect_and_score(bundle, records, ecfg, device)
    summary["settings"] = settings
    where = "validation photos" if steps.get("eval_sources") is not None else "validation scenes"
    curves = {where: (report.recall, report.precision)}
    if ecfg.baseline:
        # The baseline at its own operating point: what the user had before fine-tuning.
        base, base_report, base_settings = _detect_and_score(ecfg.baseline, records, None, device)
        summary["baseline"] = {"weights": ecfg.baseline, **base, "settings": base_settings}
        curves[f"{ecfg.baseline} weights"] = (base_report.recall, base_report.precision)
    out = steps["eval_dir"]
    out.mkdir(parents=True, exist_ok=True)
    plot_pr_curves(curves, f"trained cascade on {where}", settings, out / "pr_curve.png")
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2))
    return summary
