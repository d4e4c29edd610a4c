"""``tools/measure_point_offsets.py``: how far each landmark source's point definitions sit from the
reference's, measured with an O-Net trained on the reference (the shipped one: CNN_FacePoint).

Prints, per source, the ``point_offsets`` to put in that source's config entry (face frame, eye-distance
units; :mod:`mtcnn.data.point_definitions`) and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mtcnn.commands.common import name_equals, report
from mtcnn.errors import MTCNNError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measure_point_offsets.py", description=__doc__.split("\n\n")[0])
    p.add_argument("samples", help="an O-Net samples file with landmark crops (onet_train.h5)")
    p.add_argument("--source", action="append", type=name_equals("NAME=PATTERN", "300w='*/300w/*'"), required=True, metavar="NAME=PATTERN",
                   help="a source to measure: its name and a glob on its crops' image paths, e.g. 300w='*/300w/*' (repeat)")
    p.add_argument("--reference", default="*/cnn_facepoint/*", help="glob of the reference definition's crops (default: CNN_FacePoint)")
    p.add_argument("--onet", default="default", help="O-Net trained on the reference definition only (default: the shipped one)")
    p.add_argument("--max-samples", type=int, default=40000, help="crops scored, a seeded random subset (default 40000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the offsets as JSON here too")
    args = p.parse_args(argv)
    import torch

    from mtcnn.data.point_definitions import offsets_from_samples
    from mtcnn.weights import load_stage_net, resolve_weights

    torch.set_num_threads(args.threads)
    try:
        onet = load_stage_net(resolve_weights(args.onet), "onet")
        result = offsets_from_samples(onet, args.samples, args.reference, dict(args.source),
                                      max_samples=args.max_samples, seed=args.seed)
    except (MTCNNError, OSError) as e:
        return report(e)
    for name, r in result.items():
        print(f"{name} ({r['faces']} crops; reference {r['reference_faces']}): point_offsets: {json.dumps(r['offsets'])}")
    if args.out:
        args.out.write_text(json.dumps({"reference": args.reference, "onet": args.onet, "sources": result}, indent=2) + "\n")
    return 0
