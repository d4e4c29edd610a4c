#!/usr/bin/env python
"""Run the whole MTCNN training chain from one config, resuming where it stopped.

python tools/run_pipeline.py configs/pipeline.yaml [--stop-after STEP] [key=value ...]
STEP: scenes, pnet_data, train_pnet, mine_pnet, train_rnet, mine_rnet, train_onet
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.config import ConfigError, load_config  # noqa: E402
from mtcnn.pipeline import PipelineConfig, run_pipeline  # noqa: E402

STEPS = ["scenes", "pnet_data", "train_pnet", "mine_pnet", "train_rnet", "mine_rnet", "train_onet"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="pipeline YAML (configs/pipeline.yaml, configs/pipeline_tiny.yaml)")
    parser.add_argument("--stop-after", choices=STEPS, help="stop after this step")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train_pnet.epochs=5")
    args = parser.parse_args()
    try:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
        bundle = run_pipeline(cfg, stop_after=args.stop_after)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(f"trained weights: {bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
