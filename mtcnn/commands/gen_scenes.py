"""``mtcnn-gen-scenes`` / ``prepare_data/gen_scenes.py``: composite training scenes."""

from __future__ import annotations

import argparse

from mtcnn.commands.common import run_job
from mtcnn.config import default_config, load_config


def main(argv: list[str] | None = None) -> int:
    from mtcnn.config.data import SceneConfig
    from mtcnn.data.scenes import generate_scenes

    p = argparse.ArgumentParser(prog="gen_scenes.py", description="Composite training scenes: real faces pasted onto face-free photos, WIDER-format annotations.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. canvas=null")
    p.add_argument("--config", default=None, help="YAML config (default: the shipped scenes.yaml)")
    p.add_argument("--split", choices=("train", "val"))
    p.add_argument("--num-scenes", type=int)
    p.add_argument("--out", help="output folder (default {gen}/scenes/<split>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--preview", action="store_true", help="also write <out>/preview.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    flags = {"split": a.split, "num_scenes": a.num_scenes, "seed": a.seed, "workers": a.workers}
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]

    def load():
        cfg = load_config(SceneConfig, a.config or default_config("scenes.yaml"), overrides)
        if a.out is not None:
            cfg.out = a.out
        return cfg

    def job(cfg):
        return generate_scenes(cfg, preview=a.preview, progress=not a.quiet).lines()

    return run_job(load, job)
