#!/usr/bin/env bash
# The package as a user gets it: build a wheel, install it into a fresh venv outside the checkout,
# and from another folder run the console scripts and a tiny detection with a bundle the tests
# wrote. Usage: .ci/check_installed.sh ARTIFACTS_DIR (holds tiny_bundle.pt and tiny.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts="$(cd "$1" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/mtcnn-installed.XXXXXX")"
trap 'rm -rf "$work"' EXIT

python -m pip wheel -q --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q torch==2.13.0
"$work/venv/bin/python" -m pip install -q "$work"/dist/mtcnn-*.whl

mkdir "$work/elsewhere"
cd "$work/elsewhere"
export PATH="$work/venv/bin:$PATH"
unset PYTHONPATH
# The import must come from the installed wheel, not from the checkout.
python -c "import mtcnn, sys; assert '/site-packages/' in mtcnn.__file__, mtcnn.__file__"
python -c "from mtcnn.config import default_config; print('shipped default:', default_config('train_pnet.yaml'))"
mtcnn-detect --help > /dev/null
mtcnn-train-pnet --help > /dev/null
mtcnn-detect "$artifacts/tiny.jpg" --weights "$artifacts/tiny_bundle.pt" --device cpu --json out.jsonl
python -c "import json; rec = [json.loads(l) for l in open('out.jsonl')]; assert len(rec) == 1, rec; print('detections:', len(rec[0]['faces']))"
echo "installed package OK"
