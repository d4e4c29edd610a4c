"""``mtcnn-run-pipeline`` / ``tools/run_pipeline.py``: the whole training chain from one config."""

from __future__ import annotations

import argparse
import sys

from mtcnn.commands.common import report
from mtcnn.config import load_config
from mtcnn.errors import EXIT_INTERRUPTED, MTCNNError

PIPELINE_STEPS = ["scenes", "pnet_data", "train_pnet", "mine_pnet", "train_rnet", "mine_rnet", "train_onet"]


def main(argv: list[str] | None = None) -> int:
    from mtcnn.pipeline import PipelineConfig, run_pipeline

    parser = argparse.ArgumentParser(prog="run_pipeline.py", description="Run the whole MTCNN training chain from one config, resuming where it stopped.")
    parser.add_argument("config", help="pipeline YAML, or the name of a shipped one: pipeline_default.yaml, pipeline_tiny.yaml, "
                                       "pipeline_finetune.yaml (fine-tune the shipped weights on your photos)")
    parser.add_argument("--stop-after", choices=PIPELINE_STEPS, help="stop after this step")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train_pnet.epochs=5")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
        bundle = run_pipeline(cfg, stop_after=args.stop_after)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MTCNNError, OSError, RuntimeError, ValueError) as e:
        return report(e)
    if args.stop_after or not bundle.exists():
        print(f"stopped after {args.stop_after}; outputs so far are in {bundle.parent} (run without --stop-after to continue)")
    else:
        print(f"trained weights: {bundle}")
    return 0
