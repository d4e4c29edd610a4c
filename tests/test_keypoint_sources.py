"""Extra training faces for the landmark zoo (``data.sources``, ``data.val_sources``): a tiny 300-W-like
``.pts`` folder (1-based points, as 300-W writes them) appended to a tiny udacity68-like dataset."""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtcnn.commands.evaluate_zoo import main as evaluate_zoo
from mtcnn.config.data import SourceConfig
from mtcnn.data.face_crops import FaceCrops
from mtcnn.errors import DataError
from mtcnn.landmark_models import LANDMARK_MODELS
from mtcnn.nets import get_net_spec
from mtcnn.training.keypoint_task import KeypointTask, KeypointTrainConfig, load_source_crops

SIDE = 160
NOSE = 30  # the iBUG nose tip, painted white in every image


def _points(rng) -> np.ndarray:
    """68 0-based points of a face in a SIDE² photo: a jitter around a ring, the nose near the middle."""
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    radius = rng.uniform(25, 45, 68)
    p = np.stack([80 + radius * np.cos(angle), 80 + radius * np.sin(angle)], axis=1)
    p[NOSE] = rng.uniform(70, 90, 2)
    return np.round(p, 2)


def _photo(path: Path, points: np.ndarray, rng) -> None:
    img = rng.integers(0, 40, (SIDE, SIDE, 3), dtype=np.uint8)
    x, y = np.round(points[NOSE]).astype(int)
    img[y - 3 : y + 4, x - 3 : x + 4] = 255
    cv2.imwrite(str(path), img)


def _udacity(root: Path, rng, train: int = 3, test: int = 2) -> None:
    """``<root>/udacity68``: training / test CSVs (0-based points) and their photos."""
    base = root / "udacity68"
    header = "," + ",".join(str(i) for i in range(136))
    for csv_name, folder, n in (("training_frames_keypoints.csv", "training", train),
                                ("test_frames_keypoints.csv", "test", test)):
        (base / folder).mkdir(parents=True)
        rows = []
        for k in range(n):
            p = _points(rng)
            _photo(base / folder / f"face_{k}.png", p, rng)
            rows.append(f"face_{k}.png," + ",".join(f"{v:g}" for v in p.reshape(-1)))
        (base / csv_name).write_text("\n".join([header, *rows]) + "\n")


def _pts_folder(folder: Path, rng, n: int = 4, bad: str | None = None, stems=None) -> dict[str, np.ndarray]:
    """``n`` photos (or one per name of ``stems``) with their .pts files (1-based, with the header),
    each its own photo; ``bad``: the stem of one more face whose file holds 67 points. Returns stem ->
    the 1-based points written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem in stems or [f"image_{k:04d}" for k in range(n)]:
        p = _points(rng)
        _photo(folder / f"{stem}.png", p, rng)
        written[stem] = p + 1.0
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in written[stem])
        (folder / f"{stem}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    if bad:
        p = _points(rng)[:67]
        _photo(folder / f"{bad}.png", p, rng)
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in p + 1.0)
        (folder / f"{bad}.pts").write_text(f"version: 1\nn_points:  67\n{{\n{body}\n}}\n")
    return written


def _config(tmp_path: Path, sources, val_sources=(), net: str = "kp68_compact") -> KeypointTrainConfig:
    cfg = KeypointTrainConfig(net=net, out=str(tmp_path / "run"), device="cpu")
    cfg.data = dataclasses.replace(cfg.data, root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                                   sources=list(sources), val_sources=list(val_sources))
    return cfg.resolved()


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    _udacity(tmp_path / "data", rng)
    written = _pts_folder(tmp_path / "w300" / "set", rng)
    return tmp_path, written


def _source(tmp_path: Path, **kw) -> SourceConfig:
    return SourceConfig(name="synth", format="pts68", path=str(tmp_path / "w300" / "set"), **kw)


def test_sources_extend_the_training_faces_and_map_back_to_the_pts_points(folders):
    tmp_path, written = folders
    task = KeypointTask(_config(tmp_path, [_source(tmp_path)]))
    task.open_data(1)
    train = task.train
    assert len(train) == 3 + 4 and train.num_landmarks == 68
    assert tuple(train.images.shape[1:]) == (3, 104, 104) and train.context == 1.6
    assert [Path(p).name for p in train.paths[3:]] == [f"{s}.png" for s in written]
    assert "udacity68 3 + synth 4 faces" in task.settings()
    size, ctx = train.images.shape[-1], train.context
    for i, (stem, pts_1based) in enumerate(written.items(), start=3):
        # reference frame -> image pixels: the .pts coordinates, made 0-based
        face = train.subset([i])
        back = face.image_points(face.points.numpy())[0]
        assert np.abs(back - (pts_1based - 1.0)).max() < 0.5, stem
        # and the crop shows the painted nose where its point says
        r = train.points[i, NOSE].numpy()
        x, y = np.round((r / ctx + 1) * size / 2 - 0.5).astype(int)
        assert int(train.images[i, :, y, x].min()) > 200, (stem, x, y)


def test_source_crops_are_cached_and_the_cache_follows_the_files(folders):
    tmp_path, _ = folders
    cfg = _config(tmp_path, [_source(tmp_path)])
    spec = get_net_spec(cfg.net)
    first = load_source_crops(cfg.data.sources[0], cfg.data, spec)
    cached = sorted((tmp_path / "cache").glob("source_synth_*.pt"))
    assert len(cached) == 1
    again = load_source_crops(cfg.data.sources[0], cfg.data, spec)
    assert torch.equal(first.images, again.images) and len(list((tmp_path / "cache").glob("source_synth_*.pt"))) == 1
    _pts_folder(tmp_path / "w300" / "more", np.random.default_rng(5), n=1)
    for f in (tmp_path / "w300" / "more").iterdir():  # one more face in the source's folder
        f.rename(tmp_path / "w300" / "set" / f.name.replace("image_0000", "image_0100"))
    grown = load_source_crops(cfg.data.sources[0], cfg.data, spec)
    assert len(grown) == len(first) + 1 and len(list((tmp_path / "cache").glob("source_synth_*.pt"))) == 2


def test_val_sources_are_a_second_validation_figure(folders):
    tmp_path, _ = folders
    task = KeypointTask(_config(tmp_path, [], [_source(tmp_path)]))
    task.open_data(1)
    assert len(task.train) == 3 and len(task.val) == 2 and len(task.val_extra) == 4
    val = task.validate(task.build_model(), torch.device("cpu"), False, None)
    assert val["num_samples"] == 2 and val["sources_num_samples"] == 4
    assert np.isfinite(val["nme"]) and np.isfinite(val["sources_nme"]) and 0 <= val["sources_failure_rate"] <= 1
    assert "sources NME" in task.epoch_line({"loss": 1.0, "point_error": 0.1}, val)


def test_a_face_with_another_point_count_is_one_data_error_naming_the_file(folders):
    tmp_path, _ = folders
    _pts_folder(tmp_path / "w300" / "set", np.random.default_rng(1), n=0, bad="image_0009")
    task = KeypointTask(_config(tmp_path, [_source(tmp_path)]))
    with pytest.raises(DataError, match=r"synth.*image_0009\.pts.*67 points, expected 68"):
        task.open_data(1)


def test_a_five_point_net_refuses_68_point_faces_and_an_empty_source(folders):
    tmp_path, _ = folders
    cfg = _config(tmp_path, [])
    with pytest.raises(DataError, match=r"source 'synth': .*image_0000\.pts has 68 points per face; net mobilenet_l1 predicts 5"):
        load_source_crops(_source(tmp_path), cfg.data, get_net_spec("mobilenet_l1"))
    with pytest.raises(DataError, match=r"source 'synth': no faces in .*set"):
        load_source_crops(_source(tmp_path, max_images=0), cfg.data, get_net_spec("kp68_compact"))


def test_face_crops_concat_checks_the_framing():
    a = FaceCrops(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 5, 2), np.zeros((2, 4), np.float32), ["a", "b"], 1.6)
    b = FaceCrops(torch.ones(1, 3, 8, 8, dtype=torch.uint8), torch.ones(1, 5, 2), np.ones((1, 4), np.float32), ["c"], 1.6)
    ab = FaceCrops.concat([a, b])
    assert len(ab) == 3 and ab.paths == ["a", "b", "c"] and float(ab.points[2].sum()) == 10 and ab.ref_boxes.shape == (3, 4)
    with pytest.raises(ValueError, match="context"):
        FaceCrops.concat([a, dataclasses.replace(b, context=2.0)])
    with pytest.raises(ValueError, match="points"):
        FaceCrops.concat([a, dataclasses.replace(b, points=torch.ones(1, 68, 2))])


def _hashed_stems(val: bool, count: int) -> list[str]:
    """Image names on the ``val`` (or train) side of the hashed split (crc32 of the file name, 80 %)."""
    out, k = [], 0
    while len(out) < count:
        stem = f"image_{k:04d}"
        if (zlib.crc32(f"{stem}.png".encode()) >= 0.8 * 2**32) == val:
            out.append(stem)
        k += 1
    return out


def _fake_300w(w300: Path, rng, monkeypatch) -> None:
    """The three 300-W training folders with one validation face and one training face each."""
    for folder in ("lfpw/trainset", "helen/trainset", "afw/afw"):
        _pts_folder(w300 / folder, rng, stems=_hashed_stems(True, 1) + _hashed_stems(False, 1))
    monkeypatch.setenv("MTCNN_300W", str(w300))


def test_evaluate_zoo_kp68_also_on_the_300w_validation_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    _udacity(tmp_path / "data", rng)
    _fake_300w(tmp_path / "300w", rng, monkeypatch)
    out = tmp_path / "eval"
    shipped = str(LANDMARK_MODELS["68"])
    assert evaluate_zoo(["kp68", "--model", f"shipped={shipped}", "--w300-val", "--no-mosaics", "--out", str(out),
                         "--data", str(tmp_path / "data"), "--cache-dir", ""]) == 0
    results = json.loads((out / "kp68_results.json").read_text())
    assert results["shipped"]["num_samples"] == 2
    w = results["w300_val"]["shipped"]
    assert w["num_samples"] == 3 and w["normaliser"] == "outer-eye-corners"
    assert np.isfinite([w["nme"], w["median_nme"], w["failure_rate"]]).all()
    assert (out / "ced_68_300w.png").is_file() and (out / "ced_68.png").is_file()


def _cnn_facepoint(root: Path, rng, n: int = 2) -> None:
    """``<root>/cnn_facepoint/testImageList.txt`` (left right top bottom, five points) and its photos."""
    base = root / "cnn_facepoint"
    (base / "lfw_5590").mkdir(parents=True)
    lines = []
    for k in range(n):
        p = _points(rng)
        _photo(base / "lfw_5590" / f"face_{k}.jpg", p, rng)
        five = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
        lines.append(f"lfw_5590\\face_{k}.jpg 30 130 30 130 " + " ".join(f"{v:.2f}" for v in five.reshape(-1)))
    (base / "testImageList.txt").write_text("\r\n".join(lines) + "\r\n")


def test_evaluate_zoo_mobilenet_also_on_the_300w_validation_split(tmp_path, monkeypatch):
    from mtcnn.eval.zoo import w300_sources
    from mtcnn.landmark_models import load_landmark_model
    from mtcnn.training.keypoint_task import KeypointDataSection, load_sources

    rng = np.random.default_rng(4)
    _cnn_facepoint(tmp_path / "data", rng)
    _fake_300w(tmp_path / "300w", rng, monkeypatch)
    out = tmp_path / "eval"
    assert evaluate_zoo(["mobilenet", "--w300-val", "--out", str(out), "--data", str(tmp_path / "data"),
                         "--cache-dir", ""]) == 0
    results = json.loads((out / "mobilenet_results.json").read_text())
    assert results["faces"] == 2
    w = results["w300_val"]
    assert set(w) == {"level1", "level2"}
    # the same figure by hand: five points of the 300-W val faces, error / eye-centre distance
    faces = FaceCrops.concat(load_sources(w300_sources("val", five=True), KeypointDataSection(dataset="cnn_facepoint", expand=0.0),
                                          get_net_spec("mobilenet_l1")))
    assert len(faces) == 3 and faces.num_landmarks == 5
    gt = faces.points.double()
    iod = (gt[:, 0] - gt[:, 1]).norm(dim=1)
    for level, pred in zip(("level1", "level2"), load_landmark_model(str(LANDMARK_MODELS["mobilenet"])).predict_crops(faces)):
        r = w[level]
        sample = ((pred.double() - gt).norm(dim=2).mean(dim=1) / iod).numpy()
        assert r["num_samples"] == 3 and r["normaliser"] == "inter-ocular"
        assert r["nme"] == pytest.approx(sample.mean(), rel=1e-5)
        assert r["median_nme"] == pytest.approx(np.median(sample), rel=1e-5)
        assert r["failure_rate"] == pytest.approx((sample > 0.1).mean())
    assert (out / "ced_mobilenet_300w.png").is_file() and (out / "ced_mobilenet.png").is_file()


@pytest.mark.parametrize("level", [1, 2])
def test_mobilenet_v2_configs_add_the_5_point_sources_and_start_from_their_shipped_level(level):
    """train_mobilenet_l{1,2}_v2.yaml: the v1 config plus the 300-W train split (three folders) and
    udacity68 training faces as five points with the box from the points, the 300-W val split as
    val_sources, and init: default, which picks that level's net out of the packed cascade."""
    from mtcnn.config import default_config, load_config
    from mtcnn.training.finetune import resolve_init

    cfg = load_config(KeypointTrainConfig, default_config(f"train_mobilenet_l{level}_v2.yaml"))
    v1 = load_config(KeypointTrainConfig, default_config(f"train_mobilenet_l{level}.yaml"))
    assert cfg.net == v1.net == f"mobilenet_l{level}" and cfg.data.level == level and cfg.data.dataset == "cnn_facepoint"
    assert (cfg.data.level2_window, cfg.data.level2_scale) == (v1.data.level2_window, v1.data.level2_scale)
    assert [s.name for s in cfg.data.sources] == ["300w_lfpw", "300w_helen", "300w_afw", "udacity68"]
    assert [s.name for s in cfg.data.val_sources] == ["300w_lfpw", "300w_helen", "300w_afw"]
    for s in cfg.data.sources + cfg.data.val_sources:
        assert (s.points, s.boxes) == ("five", "from_points")
        assert "testset" not in s.path and (s.format == "csv68" or s.split_rule == "hashed")
    assert {s.split for s in cfg.data.sources if s.format == "pts68"} == {"train"}
    assert {s.split for s in cfg.data.val_sources} == {"val"}
    assert cfg.init == "default"
    assert resolve_init(cfg.init, cfg.net).record["source"] == f"mtcnn/weights/mobilenet_cascade.pt[mobilenet_l{level}]"
    if level == 2:
        assert cfg.data.level1_weights == "{gen}/mn_v2/l1/mobilenet_l1.pt"
