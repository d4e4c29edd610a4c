#!/usr/bin/env python
"""Landmark training samples (SPEC §1 augmentation of CNN_FacePoint faces) into HDF5.

Writes <out>/landmark<size>_<split>.h5 (group "landmark") and its resolved config.
Resumable: rerun the same command to continue an interrupted run.

    python prepare_data/gen_landmark_aug.py --size 24 --split train
    python prepare_data/gen_landmark_aug.py --size 48 --split val aug.rotate_degrees=10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config import ConfigError, load_config  # noqa: E402
from mtcnn.data.config import LandmarkDataConfig  # noqa: E402
from mtcnn.data.generate import GenerationError, generate_landmarks  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. aug.flip_prob=0")
    p.add_argument("--config", default=str(ROOT / "configs" / "landmarks_aug.yaml"))
    p.add_argument("--size", type=int, choices=(12, 24, 48), default=12)
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--out", help="output folder (default {gen}/samples)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an existing complete file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    flags = {"size": a.size, "seed": a.seed, "workers": a.workers}
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        cfg = load_config(LandmarkDataConfig, a.config, overrides)
        if a.out is not None:
            cfg.out = a.out
        summary = generate_landmarks(cfg, a.split, overwrite=a.overwrite, progress=not a.quiet)
    except (ConfigError, GenerationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print("\n".join(summary.lines() + [f"wrote {summary.path}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
