#!/usr/bin/env bash
# The package as a user gets it: build a wheel, install it into a fresh venv outside the checkout,
# and from another folder run the console scripts, a tiny detection with a bundle the tests
# wrote, and a detection on a real photo with the weights the package ships. Usage: .ci/check_installed.sh ARTIFACTS_DIR (holds tiny_bundle.pt and tiny.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts="$(cd "$1" && pwd)"
photo="${MTCNN_DATA:-$(pwd)/../shared/data}/dlib_faces/2008_002470.jpg"
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
# The shipped weights, with nothing else given: a real photo's faces are found.
if [ -f "$photo" ]; then
  mtcnn-detect "$photo" --device cpu --json shipped.jsonl
  python -c "import json; rec = json.loads(open('shipped.jsonl').readline()); n = len(rec['faces']); assert n >= 1, rec; print('shipped weights, faces:', n)"
fi
echo "installed package OK"
