"""``mtcnn-train-{pnet,rnet,onet}`` / ``train_models/train_<net>.py``: train one MTCNN net.

``[--config YAML] [--resume [LAST_PT]] [--out DIR] [--overwrite] [key=value ...]``; the default
config is the shipped ``train_<net>.yaml``. Also runs under ``torchrun --nproc_per_node N``.
Fine-tuning: ``init=default`` (the shipped weights), ``init=original`` or ``init=PATH`` starts from
trained weights, ``freeze.layers=[trunk] freeze.steps=N`` (:mod:`mtcnn.training.finetune`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from mtcnn.config import ConfigError, default_config, load_config
from mtcnn.config.train import TrainConfig
from mtcnn.errors import MTCNNError


def parser(net: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"train_{net}.py",
        description=f"Train the MTCNN {net} (also under torchrun --nproc_per_node N for DistributedDataParallel).",
    )
    p.add_argument("--config", default=None, help=f"YAML config (default: the shipped train_{net}.yaml)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="LAST_PT",
                   help="continue from <out>/last.pt (or the file given)")
    p.add_argument("--out", help="output folder (overrides the config's out)")
    p.add_argument("--overwrite", action="store_true", help="start over even if <out>/last.pt exists")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.01")
    return p


def main(net: str, argv: Sequence[str] | None = None) -> int:
    from mtcnn.training import train
    from mtcnn.training.distributed import dist_env

    args = parser(net).parse_args(argv)
    try:
        config = args.config or default_config(f"train_{net}.yaml")
        cfg = load_config(TrainConfig, config, args.overrides)
        if cfg.net != net:
            raise ConfigError(f"{config}: net={cfg.net!r}, but this script trains {net}")
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        path = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except MTCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if dist_env().is_main:
        print(f"final checkpoint: {path}")
    return 0


def pnet_main(argv: Sequence[str] | None = None) -> int:
    return main("pnet", argv)


def rnet_main(argv: Sequence[str] | None = None) -> int:
    return main("rnet", argv)


def onet_main(argv: Sequence[str] | None = None) -> int:
    return main("onet", argv)
