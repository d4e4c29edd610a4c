#!/usr/bin/env python
"""Compose multi-face scenes: real CNN_FacePoint faces pasted onto face-free backgrounds.

Writes <out>/images/*.jpg, a WIDER-format scenes_bbx_gt.txt and a landmark side file
(see mtcnn/data/scenes.py). Resumable: rerun the same command to continue.

    python prepare_data/gen_scenes.py --split train --num-scenes 2000 --preview
    python prepare_data/gen_scenes.py --split val --out /tmp/scenes_val canvas=null seed=3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config import ConfigError, load_config  # noqa: E402
from mtcnn.data.config import SceneConfig  # noqa: E402
from mtcnn.data.generate import GenerationError  # noqa: E402
from mtcnn.data.scenes import generate_scenes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. canvas=null")
    p.add_argument("--config", default=str(ROOT / "configs" / "scenes.yaml"))
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
    try:
        cfg = load_config(SceneConfig, a.config, overrides)
        if a.out is not None:
            cfg.out = a.out
        summary = generate_scenes(cfg, preview=a.preview, progress=not a.quiet)
    except (ConfigError, GenerationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
