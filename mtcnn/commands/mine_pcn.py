"""``mtcnn-mine-pcn`` / ``tools/mine_pcn.py``: hard negatives for stage 2 or 3 of the
rotation-calibrating cascade, mined with its earlier stages on turned photos
(:mod:`mtcnn.data.rotated_mining`).

``--config YAML [key=value ...]``; shipped configs: ``mine_pcn2.yaml``, ``mine_pcn3.yaml``. A
stopped run continues when the same command is run again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import report
from mtcnn.config import default_config, load_config
from mtcnn.errors import MTCNNError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mine_pcn.py", description="Mine hard negatives for the calibrating cascade's stage 2 or 3.")
    p.add_argument("--config", required=True, help="YAML config (a path, or a shipped name such as mine_pcn2.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. pcn=runs/pcn angles_per_photo=4")
    args = p.parse_args(argv)
    from mtcnn.data.rotated_mining import PCNMiningConfig, mine_pcn_negatives

    try:
        path = Path(args.config)
        cfg = load_config(PCNMiningConfig, path if path.exists() else default_config(args.config), args.overrides)
        print(json.dumps(mine_pcn_negatives(cfg)))
    except MTCNNError as e:
        return report(e)
    return 0
