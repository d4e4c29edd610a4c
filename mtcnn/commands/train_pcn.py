"""``mtcnn-train-pcn`` / ``train_models/train_pcn.py``: train one stage of the rotation-calibrating
cascade (``pcn1``, ``pcn2``, ``pcn3``; :mod:`mtcnn.nets.pcn`) with the shared loop and
:class:`mtcnn.training.rotation_task.PCNTask`.

``--config YAML [--out DIR] [--overwrite] [key=value ...]``; shipped configs: ``train_pcn1.yaml``,
``train_pcn2.yaml``, ``train_pcn3.yaml``. A stopped run continues from its ``last.pt`` when the
same command is run again.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import report
from mtcnn.config import default_config, load_config
from mtcnn.errors import MTCNNError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train_pcn.py", description="Train a stage of the rotation-calibrating cascade.")
    p.add_argument("--config", required=True, help="YAML config (a path, or a shipped name such as train_pcn1.yaml)")
    p.add_argument("--out", help="output folder (overrides the config's out)")
    p.add_argument("--overwrite", action="store_true", help="start over even if <out>/last.pt exists")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=4")
    args = p.parse_args(argv)
    from mtcnn.training.rotation_task import PCNTrainConfig, train_pcn

    try:
        path = Path(args.config)
        cfg = load_config(PCNTrainConfig, path if path.exists() else default_config(args.config), args.overrides)
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        final = train_pcn(cfg, overwrite=args.overwrite)
    except MTCNNError as e:
        return report(e)
    print(f"final checkpoint: {final}")
    return 0
