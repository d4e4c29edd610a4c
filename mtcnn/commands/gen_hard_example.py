"""``mtcnn-gen-hard-example`` / ``tools/gen_hard_example.py``: mine the next stage's training set."""

from __future__ import annotations

import argparse

from mtcnn.commands.common import run_job
from mtcnn.config import default_config, load_config


def main(argv: list[str] | None = None) -> int:
    from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples

    parser = argparse.ArgumentParser(prog="gen_hard_example.py", description="Mine the next stage's training set with the trained earlier stages (PNet: R-Net 24 px set; RNet: O-Net 48 px set).")
    parser.add_argument("--test_mode", "--test-mode", choices=["PNet", "RNet"], required=True)
    parser.add_argument("--split", choices=["train", "val", "both"], default="both")
    parser.add_argument("--config", default=None, help="YAML config (default: the shipped mine.yaml)")
    parser.add_argument("--pnet", help="P-Net checkpoint (overrides the config)")
    parser.add_argument("--rnet", help="R-Net checkpoint (overrides the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete output file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. detector.thresholds=[0.4,0.1]")
    args = parser.parse_args(argv)
    overrides = [f"test_mode={args.test_mode}", *args.overrides]
    overrides += [f"pnet={args.pnet}"] * bool(args.pnet) + [f"rnet={args.rnet}"] * bool(args.rnet)
    splits = ("train", "val") if args.split == "both" else (args.split,)

    def job(cfg):
        for split in splits:
            yield from mine_hard_examples(cfg, split, overwrite=args.overwrite).lines()

    return run_job(lambda: load_config(MiningConfig, args.config or default_config("mine.yaml"), overrides), job)
