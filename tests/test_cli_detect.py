import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from mtcnn.commands.detect import main as detect_main
from mtcnn.nets import build_net
from mtcnn.weights import NET_NAMES, save_bundle
from tests_helpers import PROJECT_ROOT


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_bundle({n: build_net(n) for n in NET_NAMES}, path)
    return path


@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    colour = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a_colour.jpg"), colour)
    cv2.imwrite(str(folder / "b_grey.png"), colour[:, :, 0])
    cv2.imwrite(str(folder / "c_rgba.png"), np.concatenate([colour, np.full((60, 80, 1), 128, np.uint8)], 2))
    cv2.imwrite(str(folder / "d_16bit.png"), colour.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "e_tiny.png"), colour[:8, :9])
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "g_empty.png").write_bytes(b"")
    return folder


def test_folder_with_bad_files(image_folder, random_weights, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code = detect_main([str(image_folder), str(tmp_path / "missing.jpg"), "--weights", str(random_weights),
                        "--json", str(out), "--save-dir", str(tmp_path / "drawn"), "--batch-size", "3", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert any("f_corrupt.jpg: not a readable image" in e for e in errors)
    assert any("g_empty.png: file is empty" in e for e in errors)
    assert any("missing.jpg: file not found" in e for e in errors)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"].rsplit("/", 1)[1] for r in records] == ["a_colour.jpg", "b_grey.png", "c_rgba.png", "d_16bit.png", "e_tiny.png"]
    for r in records:
        assert list(r) == ["image", "width", "height", "faces"]
    assert (records[0]["width"], records[0]["height"]) == (80, 60)
    assert records[4]["faces"] == [] and (records[4]["width"], records[4]["height"]) == (9, 8)
    assert len(list((tmp_path / "drawn").iterdir())) == 5
    assert len([l for l in captured.out.splitlines() if " ms" in l]) == 5


def test_json_face_schema_with_permissive_thresholds(image_folder, random_weights, tmp_path):
    out = tmp_path / "o.jsonl"
    code = detect_main([str(image_folder / "a_colour.jpg"), "--weights", str(random_weights), "--json", str(out),
                        "--thresholds", "0", "0", "0", "--min-face", "30", "--device", "cpu"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["faces"], "thresholds of 0 must let candidates through"
    face = record["faces"][0]
    assert list(face) == ["box", "score", "landmarks"]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])


def test_missing_weights_is_one_line_and_exit_1(image_folder, tmp_path):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "detect.py"), str(image_folder / "a_colour.jpg"), "--weights", str(tmp_path / "nope.pt")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1  # a missing input file (mtcnn.errors: input 1, usage 2)
    assert result.stderr.strip().count("\n") == 0 and "nope.pt: weights file not found" in result.stderr


def test_bad_arguments(random_weights, image_folder):
    with pytest.raises(SystemExit) as e:
        detect_main([str(image_folder), "--batch-size", "0", "--weights", str(random_weights)])
    assert e.value.code == 2


def test_leaves_a_bundle_for_the_installed_package_check(random_weights, image_folder, tmp_path):
    """.ci/check_installed.sh runs the installed wheel on the bundle and image this test writes
    into $MTCNN_CI_ARTIFACTS (after checking here that they detect)."""
    import os
    import shutil

    out = os.environ.get("MTCNN_CI_ARTIFACTS")
    if not out:
        pytest.skip("only under .ci/run (MTCNN_CI_ARTIFACTS)")
    shutil.copy(random_weights, os.path.join(out, "tiny_bundle.pt"))
    shutil.copy(image_folder / "a_colour.jpg", os.path.join(out, "tiny.jpg"))
    assert detect_main([os.path.join(out, "tiny.jpg"), "--weights", os.path.join(out, "tiny_bundle.pt"),
                        "--device", "cpu", "--json", str(tmp_path / "d.jsonl")]) == 0
