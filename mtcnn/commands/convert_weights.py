"""``mtcnn-convert-weights`` / ``tools/convert_weights.py``: the original MTCNN weights (facenet-pytorch
2.6.0 wheel) into this library's checkpoint format."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtcnn.commands.common import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert the original MTCNN weights shipped in the facenet-pytorch 2.6.0 wheel into this library's format.",
    )
    parser.add_argument("source", help="facenet_pytorch-2.6.0-py3-none-any.whl (pip download facenet-pytorch==2.6.0 --no-deps) or its unpacked folder")
    parser.add_argument("--out", default="third_party/mtcnn_original.pt", help="output bundle (default third_party/mtcnn_original.pt)")
    args = parser.parse_args(argv)

    from mtcnn.weights import WeightsError, import_facenet_pytorch, load_bundle, save_bundle

    try:
        nets = import_facenet_pytorch(args.source)
        source = f"facenet-pytorch 2.6.0 ({Path(args.source).name})"
        # Only the original O-Net has a landmark head; P/R-Net's stay zero.
        meta = {net: {"source": source, "landmark_head_trained": net == "onet"} for net in nets}
        save_bundle(nets, args.out, meta=meta)
        _, info = load_bundle(args.out)
    except WeightsError as e:
        return report(e)
    print(f"wrote {args.out} (weights sha256 {info['sha256']})")
    return 0
