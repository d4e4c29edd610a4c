"""The three generator scripts run as subprocesses on tiny synthetic inputs (no real data needed):
exit codes, printed counts, resolved configs, resume, and one clear line per unreadable image."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mtcnn.data.h5 import SampleReader
from mtcnn.io import write_image_rgb

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "prepare_data" / script), *args, "--quiet"],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Synthetic faces (CNN_FacePoint-format list with absolute paths), backgrounds, and two
    bad entries: a missing file and a corrupt one."""
    root = tmp_path_factory.mktemp("cli_inputs")
    rng = np.random.default_rng(0)
    for i in range(5):
        bg = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (0, 0), 2)
        write_image_rgb(root / "bg" / f"bg{i}.jpg", bg)
    good = []
    for i in range(4):
        img = cv2.GaussianBlur(rng.integers(0, 256, (220, 200, 3), dtype=np.uint8), (0, 0), 2)
        cv2.ellipse(img, (100, 115), (50, 62), 0, 0, 360, (220, 180, 150), -1)
        path = root / "faces" / f"face{i}.jpg"
        write_image_rgb(path, img)
        good.append(f"{path} 55 145 75 165 80 100 120 100 100 125 84 148 116 148")
    (root / "corrupt.jpg").write_bytes(b"this is not a JPEG file")
    bad = [f"{root / 'missing.jpg'} 55 145 75 165 80 100 120 100 100 125 84 148 116 148",
           f"{root / 'corrupt.jpg'} 55 145 75 165 80 100 120 100 100 125 84 148 116 148"]
    (root / "good.txt").write_text("\r\n".join(good) + "\r\n")
    (root / "mixed.txt").write_text("\r\n".join(good[:2] + bad + good[2:]) + "\r\n")
    (root / "allbad.txt").write_text("\r\n".join(bad * 11) + "\r\n")
    return {"root": root, "bg": root / "bg", "good": root / "good.txt", "mixed": root / "mixed.txt",
            "allbad": root / "allbad.txt"}


def cnn_source(path: Path, **kw) -> dict:
    return {"name": "faces", "format": "cnn_facepoint", "path": str(path), "box_style": "wider_like", **kw}


def pnet_config(tmp: Path, det: list, lmk: list | None = None, **kw) -> Path:
    cfg = {"workers": 1, "chunk_images": 2, "max_bad_fraction": 0.5, "sources": {"train": det, "val": det},
           "landmarks": {"enabled": lmk is not None, "sources": {"train": lmk or [], "val": lmk or []}}, **kw}
    path = tmp / "pnet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_gen_scenes_cli_and_resume(inputs, tmp_path):
    args = ["--num-scenes", "3", "--workers", "1", "--out", str(tmp_path / "scenes"), "--seed", "5",
            f"backgrounds={inputs['bg']}", f"faces_train={inputs['good']}", "background_train_fraction=1.0"]
    r = run("gen_scenes.py", *args, "--preview", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "scenes: 3 (3 made now, 0 done before, 0 failed)" in r.stdout
    out = tmp_path / "scenes"
    for name in ("scenes_bbx_gt.txt", "scenes_landmarks.txt", "config.resolved.yaml", "preview.png"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["seed"] == 5
    r = run("gen_scenes.py", *args, cwd=tmp_path)
    assert r.returncode == 0 and "0 made now, 3 done before" in r.stdout


def test_gen_12net_cli_reports_bad_images_and_processes_the_rest(inputs, tmp_path):
    cfg = pnet_config(tmp_path, [cnn_source(inputs["mixed"], negatives_per_image=20)])
    r = run("gen_12net_data.py", "--config", str(cfg), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bad_lines = [ln for ln in r.stderr.splitlines() if "unreadable" in ln]
    assert len(bad_lines) == 2
    assert sum("missing.jpg: file not found" in ln for ln in bad_lines) == 1
    assert sum("corrupt.jpg" in ln and "not a readable image" in ln for ln in bad_lines) == 1
    assert "pnet_train.h5: pos" in r.stdout and "2 unreadable skipped" in r.stdout
    assert "6 in job" in r.stdout and "6 processed now" in r.stdout
    out = tmp_path / "out"
    assert (out / "pnet_train.config.yaml").is_file()
    reader = SampleReader(out / "pnet_train.h5", expected_size=12)
    counts = reader.counts()
    assert counts["pos"] > 0 and counts["neg"] >= 4 * 20 and counts["landmark"] == 0
    assert sorted(Path(s).name for s in reader.sources()) == [f"face{i}.jpg" for i in range(4)]
    # a complete file is not overwritten without --overwrite
    r = run("gen_12net_data.py", "--config", str(cfg), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_gen_12net_cli_with_landmarks_and_val_split(inputs, tmp_path):
    cfg = pnet_config(tmp_path, [cnn_source(inputs["good"])], [cnn_source(inputs["good"])])
    r = run("gen_12net_data.py", "--config", str(cfg), "--split", "val", "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    counts = SampleReader(tmp_path / "pnet_val.h5").counts()
    assert counts["landmark"] > 0 and counts["pos"] > 0
    assert f"landmark {counts['landmark']:,}" in r.stdout


def test_gen_landmark_aug_cli(inputs, tmp_path):
    cfg = tmp_path / "lmk.yaml"
    cfg.write_text(yaml.safe_dump({"workers": 1, "max_bad_fraction": 0.5,
                                   "sources": {"train": [cnn_source(inputs["mixed"])]}}))
    r = run("gen_landmark_aug.py", "--config", str(cfg), "--size", "24", "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sum("missing.jpg" in ln for ln in r.stderr.splitlines()) == 1
    reader = SampleReader(tmp_path / "landmark24_train.h5", expected_size=24)
    n = reader.len("landmark")
    assert n >= 4 and f"landmark {n:,}" in r.stdout
    assert (tmp_path / "landmark24_train.config.yaml").is_file()
    lm = reader.get("landmark", np.arange(n))["landmark"]
    assert ((lm > 0) & (lm < 1)).all()


def load_script(name: str):
    """A script's module, to call its main(argv) in this process (fast error-path checks)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "prepare_data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_errors_are_one_line(inputs, tmp_path, capsys):
    pnet, lmk = load_script("gen_12net_data"), load_script("gen_landmark_aug")

    def errors(main, *argv):
        code = main([*argv, "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        return code, err

    # unknown key, with a suggestion
    code, err = errors(pnet.main, "samplng.pos_iou=0.7", "--out", str(tmp_path))
    assert code == 2 and len(err) == 1 and "did you mean 'sampling'" in err[0]
    # out-of-range value
    code, err = errors(lmk.main, "aug.flip_prob=1.5", "--out", str(tmp_path))
    assert code == 2 and len(err) == 1 and "aug.flip_prob" in err[0]
    # a missing annotation source names the file
    cfg = pnet_config(tmp_path, [cnn_source(tmp_path / "nope.txt")])
    code, err = errors(pnet.main, "--config", str(cfg), "--out", str(tmp_path))
    assert code == 1 and len(err) == 1 and "nope.txt" in err[0]  # input error: 1; usage errors above: 2
    # every image unreadable: the job fails instead of writing an empty file
    cfg = pnet_config(tmp_path, [cnn_source(inputs["allbad"])])
    code, err = errors(pnet.main, "--config", str(cfg), "--out", str(tmp_path / "bad"))
    assert code == 1 and err[-1].startswith("error:") and "unreadable" in err[-1]
    assert not (tmp_path / "bad" / "pnet_train.h5").exists()
