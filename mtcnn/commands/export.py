"""``mtcnn-export`` / ``tools/export.py``: every net of a weights bundle to ONNX or TorchScript,
each file run against PyTorch on real crops before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtcnn.commands.common import WEIGHTS_HELP, report
from mtcnn.errors import MTCNNError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export.py", description="Export every net of a weights bundle to ONNX or TorchScript, verified against PyTorch on real crops.")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    parser.add_argument("--out", required=True, help="output folder: <net>.onnx or <net>.pt for each net, and manifest.json")
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--image", help="photo whose crops verify the export (default data_root()/dlib_faces/bald_guys.jpg)")
    parser.add_argument("--no-verify", action="store_true", help="write the files without running them")
    parser.add_argument("--pcn", metavar="WEIGHTS",
                        help="export the rotation-calibrating cascade instead (pcn1-pcn3: a folder with pcn1.pt, pcn2.pt, "
                             "pcn3.pt, or a bundle)")
    args = parser.parse_args(argv)

    from mtcnn.eval.speed import default_image
    from mtcnn.export import export_bundle, verification_inputs
    from mtcnn.io import read_image_rgb
    from mtcnn.weights import load_bundle, resolve_weights

    try:
        if args.pcn:
            from mtcnn.nets.pcn import PCN_NETS
            from mtcnn.weights import load_stage_net

            nets = {name: load_stage_net(args.pcn, name) for name in PCN_NETS}
            info = {"path": str(args.pcn), "sha256": None}
        else:
            nets, info = load_bundle(resolve_weights(args.weights))
        image = read_image_rgb(args.image) if args.image else default_image()[0]
        inputs = None if args.no_verify else verification_inputs(nets, image)
        results = export_bundle(nets, args.out, args.format, inputs, info)
    except MTCNNError as e:
        return report(e)
    for r in results:
        check = "not run" if r.max_abs_diff is None else f"max |diff| {max(r.max_abs_diff.values()):.2e} on {', '.join(r.verified_on)}"
        print(f"{Path(args.out) / r.file}: input {r.input['shape']}, outputs {', '.join(r.outputs)}; {check}")
    return 0
