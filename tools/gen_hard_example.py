#!/usr/bin/env python
"""Mine the next stage's training set with the trained earlier stages.

python tools/gen_hard_example.py --test_mode PNet|RNet [--split train|val] [--config configs/mine.yaml]
                                 [--pnet CKPT] [--rnet CKPT] [--overwrite] [key=value ...]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.config import ConfigError, load_config  # noqa: E402
from mtcnn.data.generate import GenerationError  # noqa: E402
from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples  # noqa: E402
from mtcnn.weights import WeightsError  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mine.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test_mode", "--test-mode", choices=["PNet", "RNet"], required=True)
    parser.add_argument("--split", choices=["train", "val", "both"], default="both")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--pnet", help="P-Net checkpoint (overrides the config)")
    parser.add_argument("--rnet", help="R-Net checkpoint (overrides the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete output file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. detector.thresholds=[0.4,0.1]")
    args = parser.parse_args()
    overrides = [f"test_mode={args.test_mode}", *args.overrides]
    overrides += [f"pnet={args.pnet}"] * bool(args.pnet) + [f"rnet={args.rnet}"] * bool(args.rnet)
    try:
        cfg = load_config(MiningConfig, args.config, overrides)
        for split in ("train", "val") if args.split == "both" else (args.split,):
            summary = mine_hard_examples(cfg, split, overwrite=args.overwrite)
            print("\n".join(summary.lines()))
    except (ConfigError, GenerationError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
