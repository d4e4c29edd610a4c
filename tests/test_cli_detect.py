import json
import os
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
        assert list(r) == ["image", "width", "height", "exif_orientation", "faces"] and r["exif_orientation"] == 1
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


@pytest.mark.weights
@pytest.mark.data
def test_aligned_crops_one_per_face(original_weights, shared_data, tmp_path):
    photo = shared_data / "dlib_faces" / "2008_002506.jpg"
    out = tmp_path / "faces.jsonl"
    code = detect_main([str(photo), str(photo), "--weights", str(original_weights), "--json", str(out),
                        "--crops", str(tmp_path / "crops"), "--crop-size", "96x112", "--device", "cpu"])
    assert code == 0
    faces = [len(json.loads(line)["faces"]) for line in out.read_text().splitlines()]
    crops = sorted(p.name for p in (tmp_path / "crops").iterdir())
    # The same photo twice: the second gets its own names instead of overwriting the first.
    assert faces[0] == faces[1] > 0
    assert crops == sorted([f"2008_002506_{k}.png" for k in range(faces[0])] + [f"2008_002506_1_{k}.png" for k in range(faces[0])])
    assert cv2.imread(str(tmp_path / "crops" / crops[0])).shape == (112, 96, 3)


def test_bad_crop_size_is_a_usage_error(random_weights, image_folder):
    with pytest.raises(SystemExit) as e:
        detect_main([str(image_folder), "--crop-size", "0x5", "--weights", str(random_weights)])
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


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_json_onto_a_folder_fails_before_any_work(image_folder, random_weights, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    code = detect_main([str(image_folder), "--weights", str(random_weights), "--json", str(tmp_path / "results"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "is a folder" in err, err
    assert " ms" not in out  # no image was processed
    assert _no_temp_files(tmp_path) and list((tmp_path / "results").iterdir()) == []


@pytest.mark.parametrize("flag", ["--json", "--save-dir"])
def test_uncreatable_output_is_one_line_before_any_work(image_folder, random_weights, tmp_path, capsys, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / ("out.jsonl" if flag == "--json" else "drawn")
    code = detect_main([str(image_folder), "--weights", str(random_weights), flag, str(target), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {flag} {target}: cannot write there"), err
    assert " ms" not in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_is_one_line(image_folder, random_weights, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for flag, target in (("--json", locked / "o.jsonl"), ("--save-dir", locked / "drawn")):
            code = detect_main([str(image_folder), "--weights", str(random_weights), flag, str(target), "--device", "cpu"])
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1 and "cannot write there" in err, err
    finally:
        locked.chmod(0o755)


def test_ctrl_c_keeps_the_earlier_results_and_saves_the_partial_ones_beside(image_folder, random_weights, tmp_path,
                                                                          capsys, monkeypatch):
    import mtcnn.commands.detect as command

    out = tmp_path / "out.jsonl"
    out.write_text('{"earlier": "complete results"}\n')
    real_build = command.detector_from_args

    def interrupted_on_third_batch(args):
        detector = real_build(args)
        calls = []

        def detect(images):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return type(detector).detect(detector, images)

        detector.detect = detect
        return detector

    monkeypatch.setattr(command, "detector_from_args", interrupted_on_third_batch)
    code = detect_main([str(image_folder), "--weights", str(random_weights), "--json", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 130
    assert out.read_text() == '{"earlier": "complete results"}\n'
    partial = tmp_path / "out.partial.jsonl"
    assert [json.loads(line)["image"].rsplit("/", 1)[1] for line in partial.read_text().splitlines()] == ["a_colour.jpg", "b_grey.png"]
    assert f"interrupted after 2 of 7 images; results of those are in {partial}; {out} kept as it was" in err
    assert _no_temp_files(tmp_path)
    # a complete run replaces the file atomically and leaves no temporary file
    monkeypatch.setattr(command, "detector_from_args", real_build)
    assert detect_main([str(image_folder), "--weights", str(random_weights), "--json", str(out), "--device", "cpu"]) == 1
    assert len(out.read_text().splitlines()) == 5 and _no_temp_files(tmp_path)


def test_huge_images_are_refused_before_any_work(random_weights, tmp_path, capsys):
    from mtcnn.detector import MTCNN

    detector = MTCNN(weights=random_weights, device="cpu")
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 10000, 3))  # 100 MP, no memory behind it
    with pytest.raises(ValueError, match=r"image 0: 10000x10000 is 100\.0 megapixels, more than max_megapixels=50 "
                                         r"\(it would need about 3\.6 GB\)"):
        detector.detect(huge)
    assert MTCNN(weights=random_weights, device="cpu", max_megapixels=None).size_problem(10000, 10000) is None
    # the CLI reports a too-large image in one line and carries on with the others
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.png"), np.zeros((400, 500, 3), np.uint8))
    cv2.imwrite(str(folder / "small.png"), np.zeros((60, 80, 3), np.uint8))
    code = detect_main([str(folder), "--weights", str(random_weights), "--max-megapixels", "0.1", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {folder / 'big.png'}: 500x400 is 0.2 megapixels, more than max_megapixels=0.1 (it would need about "
        "0.0 GB): shrink the image, raise max_megapixels (--max-megapixels), or raise min_face_size (--min-face)"]
    assert "small.png: 0 faces" in out and "big.png:" not in out
