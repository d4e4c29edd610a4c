#!/usr/bin/env python
"""P-Net training samples (12x12 pos / part / neg crops + landmark samples) into one HDF5 file.

Writes <out>/pnet_<split>.h5 and pnet_<split>.config.yaml (see mtcnn/data/generate.py).
Resumable: rerun the same command to continue an interrupted run.

    python prepare_data/gen_12net_data.py --split train
    python prepare_data/gen_12net_data.py --split val --workers 2 sampling.negatives_per_image=30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config import ConfigError, load_config  # noqa: E402
from mtcnn.data.config import PNetDataConfig  # noqa: E402
from mtcnn.data.generate import GenerationError, generate_pnet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1")
    p.add_argument("--config", default=str(ROOT / "configs" / "data_pnet.yaml"))
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--out", help="output folder (default {gen}/samples)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an existing complete file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    flags = {"seed": a.seed, "workers": a.workers}
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        cfg = load_config(PNetDataConfig, a.config, overrides)
        if a.out is not None:
            cfg.out = a.out
        summary = generate_pnet(cfg, a.split, overwrite=a.overwrite, progress=not a.quiet)
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
