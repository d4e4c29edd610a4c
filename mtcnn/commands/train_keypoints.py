"""``mtcnn-train-keypoints`` / ``train_models/train_keypoints.py``: train a landmark-zoo net (a
68-point model or a level of the MobileNet-V2 cascade) with the shared loop and
:class:`mtcnn.training.keypoint_task.KeypointTask`.

``--config YAML [--resume [LAST_PT]] [--out DIR] [--overwrite] [key=value ...]``; shipped
configs: ``train_kp68_compact.yaml``, ``train_kp68_baseline.yaml``, ``train_mobilenet_l1.yaml``,
``train_mobilenet_l2.yaml``. ``init=default`` (or ``init=PATH``) fine-tunes the shipped weights.
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
    p = argparse.ArgumentParser(prog="train_keypoints.py", description="Train a landmark-zoo net (68 points, MobileNet-V2 cascade levels).")
    p.add_argument("--config", required=True, help="YAML config (a path, or a shipped name such as train_kp68_compact.yaml)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="LAST_PT")
    p.add_argument("--out", help="output folder (overrides the config's out)")
    p.add_argument("--overwrite", action="store_true", help="start over even if <out>/last.pt exists")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. loss.kind=l1")
    args = p.parse_args(argv)
    from mtcnn.training.keypoint_task import KeypointTask, KeypointTrainConfig
    from mtcnn.training.loop import Trainer

    try:
        path = Path(args.config)
        cfg = load_config(KeypointTrainConfig, path if path.exists() else default_config(args.config), args.overrides)
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        final = Trainer(cfg, KeypointTask(cfg.resolved()), resume=args.resume, overwrite=args.overwrite).fit()
    except MTCNNError as e:
        return report(e)
    print(f"final checkpoint: {final}")
    return 0
