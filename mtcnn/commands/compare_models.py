"""``tools/compare_models.py``: several detector weights side by side on every validation set
(:mod:`mtcnn.eval.model_table`), the README's "Results" table.

``--model LABEL=WEIGHTS`` (repeat; ``default`` and ``original`` are names too), ``--out DIR``,
``--scenes-val DIR`` (a pipeline's composite validation scenes), ``--threads``, ``--repeats``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import name_equals, report
from mtcnn.errors import MTCNNError, UsageError


def main(argv: Sequence[str] | None = None) -> int:
    from mtcnn.config.paths import data_root, gen_root, webfaces_root, wider_root

    p = argparse.ArgumentParser(prog="compare_models.py", description="Detector weights side by side on every validation set.")
    p.add_argument("--model", type=name_equals("LABEL=WEIGHTS", "ours=default"), action="append", required=True, metavar="LABEL=WEIGHTS")
    p.add_argument("--out", required=True, help="folder for results.json, results.md and the landmark reports")
    p.add_argument("--data", default=None, help="data root (default $MTCNN_DATA or ../shared/data)")
    p.add_argument("--webfaces", default=None, help="Caltech WebFaces folder (default $MTCNN_WEBFACES or ../webfaces)")
    p.add_argument("--wider", default=None, help="WIDER FACE training photos folder (default $MTCNN_WIDER or ../wider; "
                   "its held-out split becomes the WIDER rows, at min face 10 and factor 0.79)")
    p.add_argument("--scenes-val", default=str(gen_root() / "pipeline_default" / "scenes" / "val"),
                   help="composite validation scenes (default: the default pipeline's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto", help="every model's O-Net precision (default auto: bfloat16 on a CPU with native bf16, else float32)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per speed case")
    args = p.parse_args(argv)
    from mtcnn.memory import bound_heap

    bound_heap()  # resident memory flat over thousands of photos (mtcnn.memory)
    from mtcnn.eval.model_table import TableInputs, compare_models

    import torch

    torch.set_num_threads(args.threads)
    try:
        labels = [label for label, _ in args.model]
        if len(set(labels)) != len(labels):
            raise UsageError(f"--model labels must differ: {', '.join(labels)}")
        inputs = TableInputs(Path(args.data) if args.data else data_root(), Path(args.webfaces) if args.webfaces else webfaces_root(),
                             Path(args.scenes_val) if args.scenes_val else None,
                             Path(args.wider) if args.wider else wider_root())
        results = compare_models(dict(args.model), inputs, Path(args.out), threads=args.threads, repeats=args.repeats,
                                 precision=args.precision)
    except MTCNNError as e:
        return report(e)
    from mtcnn.eval.model_table import markdown_table

    print(markdown_table(results), end="")
    return 0
