"""Paths in shipped files and written records are placeholders ({gen}, {data}, {runs}, {webfaces}),
never the absolute paths of the machine that wrote them (mtcnn.config.paths.portable_path)."""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from types import SimpleNamespace

import pytest
import torch
import yaml

from mtcnn.config import ConfigError, resolve_path
from mtcnn.config.paths import absolute_paths, is_absolute_path, portable_config, portable_path

PACKAGE = Path(__file__).resolve().parents[1] / "mtcnn"
SHIPPED = sorted(p for folder in ("weights", "config/defaults") for p in (PACKAGE / folder).iterdir()
                 if p.suffix in (".json", ".yaml", ".pt"))  # fmt: skip


def _contents(path: Path):
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return yaml.safe_load(path.read_text())


def test_shipped_files_are_found():
    names = {p.name for p in SHIPPED}
    assert {"pnet.pt", "rnet.pt", "onet.pt", "cascade_sun.pt", "cascade_sun.json", "train_pnet.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_file_holds_no_absolute_path(path):
    # Every string (and key) of the parsed file, the pickled configs and meta of a .pt included.
    assert absolute_paths(_contents(path), path.name) == []
    # The raw bytes too: the stored configs of checkpoints are pickled as plain text.
    assert b"/work/" not in path.read_bytes()


@pytest.fixture
def roots(tmp_path, monkeypatch):
    r = SimpleNamespace(gen=tmp_path / "gen", data=tmp_path / "shared" / "data", webfaces=tmp_path / "webfaces")
    monkeypatch.setenv("MTCNN_GEN", str(r.gen))
    monkeypatch.setenv("MTCNN_DATA", str(r.data))
    monkeypatch.setenv("MTCNN_WEBFACES", str(r.webfaces))
    monkeypatch.delenv("MTCNN_RUNS", raising=False)
    return r


def test_each_root_becomes_its_placeholder(roots):
    assert portable_path(roots.gen / "zoo" / "kp68") == "{gen}/zoo/kp68"
    assert portable_path(roots.data / "cnn_facepoint" / "testImageList.txt") == "{data}/cnn_facepoint/testImageList.txt"
    assert portable_path(roots.webfaces / "Caltech_WebFaces") == "{webfaces}/Caltech_WebFaces"
    assert portable_path(str(roots.gen)) == "{gen}"


def test_every_placeholder_of_resolve_path_round_trips(roots, tmp_path, monkeypatch):
    from mtcnn.config.paths import PLACEHOLDERS

    for name, env in (("wider", "MTCNN_WIDER"), ("w300", "MTCNN_300W")):
        monkeypatch.setenv(env, str(tmp_path / name))
    for name in PLACEHOLDERS:
        assert resolve_path(portable_path(resolve_path(f"{{{name}}}/a/b.txt"))) == resolve_path(f"{{{name}}}/a/b.txt")
        assert portable_path(resolve_path(f"{{{name}}}/a")) == f"{{{name}}}/a"


def test_runs_wins_over_gen_it_lies_in(roots, monkeypatch):
    assert portable_path(roots.gen / "runs" / "onet" / "onet.pt") == "{runs}/onet/onet.pt"
    # Elsewhere, {runs} no longer holds gen/runs: that is a {gen} path again.
    monkeypatch.setenv("MTCNN_RUNS", str(roots.gen.parent / "runs_elsewhere"))
    assert portable_path(roots.gen / "runs" / "onet") == "{gen}/runs/onet"
    assert portable_path(roots.gen.parent / "runs_elsewhere" / "onet") == "{runs}/onet"


def test_deepest_root_wins(roots, monkeypatch):
    monkeypatch.setenv("MTCNN_DATA", str(roots.gen / "data"))
    assert portable_path(roots.gen / "data" / "x.txt") == "{data}/x.txt"


@pytest.mark.parametrize("runs_elsewhere", [False, True])
def test_round_trip_through_resolve_path(roots, monkeypatch, runs_elsewhere):
    paths = [roots.gen / "a" / "b.h5", roots.gen / "runs" / "pnet", roots.data / "dlib_faces", roots.webfaces / "w.txt", roots.gen]
    if runs_elsewhere:
        monkeypatch.setenv("MTCNN_RUNS", str(roots.gen.parent / "runs"))
        paths.append(roots.gen.parent / "runs" / "rnet" / "rnet.pt")
    for p in paths:
        stored = portable_path(p)
        assert not is_absolute_path(stored), (p, stored)
        assert resolve_path(stored) == p


def test_round_trip_through_a_symlinked_root(roots, tmp_path, monkeypatch):
    real = tmp_path / "disk" / "gen"
    real.mkdir(parents=True)
    link = tmp_path / "gen_link"
    link.symlink_to(real)
    monkeypatch.setenv("MTCNN_GEN", str(link))
    assert portable_path(real / "zoo") == "{gen}/zoo"


def test_relative_and_placeholder_forms_are_kept(roots):
    for text in ("{gen}/zoo", "{data}/x/{split}.txt", "cnn_facepoint/trainImageList.txt", "~/weights", "", "third_party/a.pt"):
        assert portable_path(text) == text


def test_path_under_no_root_is_kept_or_refused(roots, tmp_path):
    outside = tmp_path / "elsewhere" / "out"
    assert portable_path(outside) == str(outside)
    with pytest.raises(ConfigError, match="under none of the placeholders"):
        portable_path(outside, strict=True)


def test_explicit_roots_rewrite_another_machines_paths(roots):
    other = {"runs": ["/mnt/gen/runs", "/mnt/runs"], "data": "/mnt/shared/data", "gen": "/mnt/gen", "webfaces": "/mnt/webfaces"}
    assert portable_path("/mnt/gen/exp/onet_train.h5", other) == "{gen}/exp/onet_train.h5"
    assert portable_path("/mnt/gen/runs/onet", other) == "{runs}/onet"
    assert portable_path("/mnt/runs/onet", other) == "{runs}/onet"
    assert portable_path("/mnt/shared/data/a.txt", other) == "{data}/a.txt"
    assert portable_path("/mnt/webfaces", other) == "{webfaces}"
    with pytest.raises(ConfigError, match="unknown placeholder"):
        portable_path("/mnt/x", {"scratch": "/mnt"})


@pytest.mark.parametrize("text, absolute", [
    ("/home/a", True), ("C:\\data\\x", True), ("d:/x", True), ("\\\\host\\share", True),
    ("{gen}/x", False), ("a/b", False), ("~/x", False), ("C:x", False),
])  # fmt: skip
def test_is_absolute_path(text, absolute):
    assert is_absolute_path(text) is absolute


def test_portable_config_rewrites_only_absolute_paths(roots):
    weight = torch.ones(2)
    cfg = {"out": str(roots.gen / "runs" / "onet"), "data": {"train": [str(roots.gen / "s" / "t.h5")], "lr": 0.1},
           "name": "onet", "list": "cnn_facepoint/a.txt", "pair": (PurePath(roots.data / "x"), 3), "w": weight}
    out = portable_config(cfg)
    assert out == {**cfg, "out": "{runs}/onet", "data": {"train": ["{gen}/s/t.h5"], "lr": 0.1}, "pair": ("{data}/x", 3)}
    assert out["w"] is weight
    assert cfg["out"] == str(roots.gen / "runs" / "onet")  # the input is not changed
    assert absolute_paths(out) == []
    assert absolute_paths({"a": [str(roots.gen)]}, "f") == [f"f.a[0]: {roots.gen}"]


def test_checkpoints_store_portable_configs(roots):
    from mtcnn.nets import build_net
    from mtcnn.weights import make_checkpoint

    ckpt = make_checkpoint("pnet", build_net("pnet"), {"out": str(roots.gen / "runs" / "pnet")},
                           {"source": str(roots.data / "x.txt")})
    assert ckpt["config"] == {"out": "{runs}/pnet"}
    assert ckpt["meta"] == {"source": "{data}/x.txt"}


def test_cascade_weight_card_is_portable(roots):
    from mtcnn.eval.cascade import weight_card

    cascade = SimpleNamespace(info={"sha256": "abc", "meta": {"config": {"out": str(roots.gen / "casc"), "cache_dir": None}}},
                              variant="relu", box_adapter=None, detector_start="level1", calibrations={})
    card = weight_card(cascade, {"settings": {"list": str(roots.data / "cnn_facepoint" / "testImageList.txt")}})
    assert card["config"] == {"out": "{gen}/casc", "cache_dir": None}
    assert card["test"]["list"] == "{data}/cnn_facepoint/testImageList.txt"
    assert absolute_paths(card) == []
