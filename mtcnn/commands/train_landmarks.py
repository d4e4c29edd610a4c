"""``mtcnn-train-landmarks`` / ``train_models/train_landmarks.py``: train the Sun et al. cascade.

``--level 1|2|3 [...] [--point LE ...] [--workers N] [--out DIR] [--bundle PATH]
[--calibrate-with DETECTOR_WEIGHTS ... [--calibrate-only]] [--config YAML] [key=value ...]``; all 23 nets by default,
several at a time with ``--workers``. Finished nets are skipped and a stopped one resumes from its
last epoch, so rerunning the same command continues. ``init=default`` starts every net from the
shipped ``cascade_sun.pt`` (or ``init=PATH``: a cascade bundle or run folder).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from mtcnn.commands.common import report
from mtcnn.errors import MTCNNError


def parser() -> argparse.ArgumentParser:
    from mtcnn.nets.cascade import POINTS

    p = argparse.ArgumentParser(prog="train_landmarks.py", description="Train the Sun et al. landmark cascade (23 nets).")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. patch_schedule.epochs=20")
    p.add_argument("--config", help="YAML config (default: the shipped landmarks_cascade.yaml)")
    p.add_argument("--level", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3], help="levels to train (default all)")
    p.add_argument("--point", nargs="+", choices=POINTS, help="levels 2/3: only these points' nets")
    p.add_argument("--out", help="run folder (default from the config)")
    p.add_argument("--workers", type=int, help="nets trained at the same time, one process each")
    p.add_argument("--bundle", help="then write all 23 nets of the run folder into this bundle")
    p.add_argument("--calibrate-with", metavar="DETECTOR_WEIGHTS", nargs="+",
                   help="then fit the bundle's box adapter and detector start on held-out training faces, one "
                        "calibration per detector weights given ('default' = the shipped ones); the first also "
                        "serves detectors without one")
    p.add_argument("--calibrate-only", action="store_true",
                   help="train nothing and leave the bundle's nets as they are: only add --calibrate-with's "
                        "calibrations to --bundle (e.g. the shipped cascade_sun.pt for retrained detector weights)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mtcnn.cascade import assemble_bundle
    from mtcnn.config import default_config, load_config
    from mtcnn.nets.cascade import nets_of_level
    from mtcnn.training.cascade_run import bundle_meta, calibrate_bundle, train_cascade
    from mtcnn.training.cascade_task import CascadeTrainConfig

    p = parser()
    a = p.parse_args(argv)
    if a.calibrate_only and not (a.bundle and a.calibrate_with):
        p.error("--calibrate-only needs --bundle and --calibrate-with")
    overrides = list(a.overrides) + [f"{k}={v}" for k, v in (("workers", a.workers), ("out", a.out)) if v]
    try:
        cfg = load_config(CascadeTrainConfig, a.config or default_config("landmarks_cascade.yaml"), overrides)
        if not a.calibrate_only:
            names = [n for level in sorted(set(a.level)) for n in nets_of_level(level, a.point)]
            train_cascade(cfg, names)
        if a.bundle and not a.calibrate_only:
            print(f"wrote {assemble_bundle(cfg.out, a.bundle, cfg.variant, meta=bundle_meta(cfg))}")
        if a.bundle and a.calibrate_with:
            for weights in a.calibrate_with:
                print(json.dumps(calibrate_bundle(cfg, a.bundle, weights)))
    except (MTCNNError, ValueError, OSError) as e:
        return report(e)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume")
        return 130
    return 0
