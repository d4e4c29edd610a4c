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
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtcnn.atomic import atomic_write_text
from mtcnn.config import ConfigError, bounded, save_resolved, to_dict
from mtcnn.config.data import PNetDataConfig, SceneConfig, SourceConfig, SplitSources
from mtcnn.data.hard_examples import MiningConfig
from mtcnn.config.train import TrainConfig


@dataclass
class PipelineEval:
    enabled: bool = True
    thresholds: tuple[float, float, float] = bounded((0.6, 0.7, 0.7), 0.0, 1.0)
    min_face_size: float = bounded(20.0, 4.0, None)
    factor: float = bounded(0.709, 0.1, 0.99)
    max_images: int | None = bounded(None, 1, None, help="evaluate on the first N validation scenes")


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


def plan(cfg: PipelineConfig) -> dict:
    """The chained step configs with every path under ``work_dir`` (resolved, not run)."""
    from mtcnn.config.paths import resolve_path

    work = resolve_path(cfg.work_dir)
    threads = {"threads": cfg.threads} if cfg.threads else {}
    scenes_dir = work / "scenes"
    samples = work / "samples"
    runs = work / "runs"

    def train_cfg(base: TrainConfig, net: str, train_file: Path, val_file: Path) -> TrainConfig:
        data = dataclasses.replace(base.data, train=[str(train_file)], val=[str(val_file)])
        return dataclasses.replace(base, out=str(runs / net), seed=cfg.seed, device=cfg.device, data=data, **threads)

    def mine_cfg(base: MiningConfig, stage: str) -> MiningConfig:
        return dataclasses.replace(
            base, seed=cfg.seed, device=cfg.device, out=str(samples), pnet=str(runs / "pnet" / "pnet.pt"),
            rnet=str(runs / "rnet" / "rnet.pt"), sources=_with_sources_of_scenes(base.sources, scenes_dir),
            threads=cfg.threads or 0,
        )  # fmt: skip

    return {
        "work": work,
        "scenes": {split: dataclasses.replace(cfg.scenes, seed=cfg.seed, split=split, out=str(scenes_dir / split)) for split in ("train", "val")},
        "pnet_data": dataclasses.replace(
            cfg.pnet_data, seed=cfg.seed, out=str(samples), name="pnet",
            sources=_with_sources_of_scenes(cfg.pnet_data.sources, scenes_dir),
        ),  # fmt: skip
        "train_pnet": train_cfg(cfg.train_pnet, "pnet", samples / "pnet_train.h5", samples / "pnet_val.h5"),
        "mine_pnet": mine_cfg(cfg.mine_pnet, "rnet"),
        "train_rnet": train_cfg(cfg.train_rnet, "rnet", samples / "rnet_train.h5", samples / "rnet_val.h5"),
        "mine_rnet": mine_cfg(cfg.mine_rnet, "onet"),
        "train_onet": train_cfg(cfg.train_onet, "onet", samples / "onet_train.h5", samples / "onet_val.h5"),
        "bundle": work / "mtcnn_trained.pt",
        "eval_dir": work / "eval",
    }


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
    for split in ("train", "val"):
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
        stored = yaml.safe_load(record.read_text()) or {}
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

    for split in ("train", "val"):
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
        _write_bundle(steps, bundle)
        stamp("bundle")
    if cfg.evaluate.enabled and not done("evaluate", steps["eval_dir"] / "report.json"):
        report = evaluate_on_val_scenes(bundle, steps, cfg.evaluate)
        stamp("evaluate")
        _log(f"validation scenes: AP@0.5 {report['ap']:.3f}, recall {report['recall']:.3f}, precision {report['precision']:.3f}")
    _log(f"pipeline finished in {time.perf_counter() - t_start:.0f} s; weights: {bundle}")
    return bundle


def _write_bundle(steps: dict, bundle: Path) -> None:
    from mtcnn.config import to_dict
    from mtcnn.weights import load_stage_net, save_bundle

    nets = {net: load_stage_net(Path(steps[f"train_{net}"].out) / f"{net}.pt", net) for net in ("pnet", "rnet", "onet")}
    meta = {net: {"source": "tools/run_pipeline.py", "train_config": to_dict(steps[f"train_{net}"])} for net in nets}
    save_bundle(nets, bundle, meta=meta)


def evaluate_on_val_scenes(bundle: Path, steps: dict, ecfg: PipelineEval) -> dict:
    """Detection PR / AP of the trained cascade on the validation scenes; writes report + plot."""
    import json

    from mtcnn.atomic import atomic_write_text
    from mtcnn.data.annotations import read_wider
    from mtcnn.detector import MTCNN
    from mtcnn.eval.detection import evaluate_detections
    from mtcnn.eval.plots import plot_pr_curves
    from mtcnn.io import read_image_rgb

    scenes_val = Path(steps["scenes"]["val"].out)
    records = read_wider(scenes_val / "scenes_bbx_gt.txt", scenes_val)
    if ecfg.max_images:
        records = records[: ecfg.max_images]
    detector = MTCNN(weights=bundle, min_face_size=ecfg.min_face_size, factor=ecfg.factor, thresholds=ecfg.thresholds,
                     device=steps["train_pnet"].device if steps["train_pnet"].device != "auto" else None)
    detections, truth = [], []
    for rec in records:
        faces = detector.detect(read_image_rgb(rec.path))[0]
        detections.append((faces.boxes.numpy(), faces.scores.numpy()))
        truth.append((rec.boxes, rec.ignore))
    report = evaluate_detections(detections, truth)
    out = steps["eval_dir"]
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "ap": float(report.ap), "recall": float(report.recall[-1]) if len(report.recall) else 0.0,
        "precision": float(report.precision[-1]) if len(report.precision) else 0.0,
        "images": len(records), "faces": int(report.num_gt), "detections": int(report.num_detections),
        "settings": detector.settings,
    }  # fmt: skip
    plot_pr_curves({"validation scenes": (report.recall, report.precision)}, "trained cascade on validation scenes",
                   detector.settings, out / "pr_curve.png")
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2))
    return summary
