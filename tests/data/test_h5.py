"""HDF5 sample files: round trip, chunked writes, atomic completion, crash + resume, reader errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from mtcnn.data.h5 import (
    FIELDS,
    KIND_LABEL,
    KINDS,
    SampleFileError,
    SampleReader,
    SampleWriter,
    partial_path,
)

S = 12
ROOT = Path(__file__).resolve().parents[2]


def make_batch(kind: str, n: int, seed: int, size: int = S) -> dict:
    """Deterministic synthetic samples of one kind (what a generator would produce)."""
    rng = np.random.default_rng(seed)
    out = {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "box": rng.uniform(0, 300, (n, 4)).astype(np.float32),
        "source": [f"img/{seed}_{i % 3}.jpg" for i in range(n)],
    }
    if kind in ("pos", "part"):
        out["bbox"] = rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32)
    if kind == "landmark":
        out["landmark"] = rng.uniform(0.05, 0.95, (n, 10)).astype(np.float32)
    return out


def item_samples(item: int) -> list[tuple[str, dict]]:
    """The samples one work item (source image) yields: a few of every kind."""
    return [(kind, make_batch(kind, 3 + (item * 7 + k) % 5, seed=item * 10 + k)) for k, kind in enumerate(KINDS)]


def write_item(writer: SampleWriter, item: int) -> None:
    for kind, b in item_samples(item):
        writer.add(kind, b["images"], None, b.get("bbox"), b.get("landmark"), b["source"], b["box"])


def read_all(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {(k, name): f[k][name][:] for k in KINDS for name in FIELDS}
        out["sources"] = list(f["sources"].asstr()[:])
    return out


def assert_same_content(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "sources":
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_round_trip_bit_exact(tmp_path):
    path = tmp_path / "pnet_train.h5"
    written = {k: [] for k in KINDS}
    attrs = {"seed": 7, "iou_rules": {"pos": 0.65, "part": [0.4, 0.65], "neg": 0.3}, "config": "a: 1\nb: [2, 3]\n"}
    with SampleWriter(path, S, attrs, chunk=8) as w:
        for step in range(3):
            for k, kind in enumerate(KINDS):
                b = make_batch(kind, 5 + step, seed=100 * step + k)
                w.add(kind, b["images"], np.full(len(b["images"]), KIND_LABEL[kind]), b.get("bbox"),
                      b.get("landmark"), b["source"], b["box"])
                written[kind].append(b)
    r = SampleReader(path, expected_size=S)
    assert r.size == S
    assert r.attrs["channel_order"] == "RGB" and r.attrs["size"] == S and r.attrs["seed"] == 7
    assert r.attrs["landmark_order"] == "LE,RE,N,LM,RM"
    assert r.attrs["config"] == "a: 1\nb: [2, 3]\n"
    assert "pos: 0.65" in r.attrs["iou_rules"]
    assert r.attrs["complete"] is True or r.attrs["complete"] == 1
    sources = r.sources()
    for kind in KINDS:
        imgs = np.concatenate([b["images"] for b in written[kind]])
        n = len(imgs)
        assert r.len(kind) == n and r.counts()[kind] == n
        got = r.get(kind, np.arange(n))
        np.testing.assert_array_equal(got["images"], imgs)
        assert got["images"].dtype == np.uint8 and got["label"].dtype == np.int8
        assert np.all(got["label"] == KIND_LABEL[kind])
        np.testing.assert_array_equal(got["box"], np.concatenate([b["box"] for b in written[kind]]))
        if kind in ("pos", "part"):
            np.testing.assert_array_equal(got["bbox"], np.concatenate([b["bbox"] for b in written[kind]]))
        else:
            assert not got["bbox"].any()
        if kind == "landmark":
            np.testing.assert_array_equal(got["landmark"], np.concatenate([b["landmark"] for b in written[kind]]))
        else:
            assert not got["landmark"].any()
        names = [sources[i] for i in got["source"]]
        assert names == [s for b in written[kind] for s in b["source"]]
        assert got["bbox"].dtype == got["landmark"].dtype == got["box"].dtype == np.float32


def test_get_any_order_with_repeats(tmp_path):
    path = tmp_path / "x.h5"
    b = make_batch("pos", 40, seed=1)
    with SampleWriter(path, S, {}, chunk=16) as w:
        w.add("pos", b["images"], bbox=b["bbox"])
    for meta_cache in (0, 1 << 20):  # metadata read from the file and from the in-memory cache
        r = SampleReader(path, meta_cache_bytes=meta_cache)
        idx = np.array([39, 3, 3, 17, 0, 18, 19, 20, 5])
        got = r.get("pos", idx)
        np.testing.assert_array_equal(got["images"], b["images"][idx])
        np.testing.assert_array_equal(got["bbox"], b["bbox"][idx])
        assert r.get("pos", [])["images"].shape == (0, S, S, 3)
        with pytest.raises(IndexError, match="pos"):
            r.get("pos", [40])


def test_incremental_write_many_chunks(tmp_path):
    path = tmp_path / "rnet_train.h5"
    chunk = 16
    w = SampleWriter(path, S, {"seed": 1}, chunk=chunk)
    expect = []
    for i in range(11):  # 11 batches of 7 = 77 rows > 4 chunks
        b = make_batch("neg", 7, seed=i)
        w.add("neg", b["images"], box=b["box"])
        expect.append(b["images"])
        assert w.lengths()["neg"] == 7 * (i + 1)
    assert w.lengths()["neg"] == 77
    w.close()
    with h5py.File(path, "r") as f:
        ds = f["neg/label"]
        assert ds.chunks == (chunk,) and ds.maxshape == (None,)
        assert f["neg/images"].maxshape == (None, S, S, 3)
        assert f["neg/images"].chunks[1:] == (S, S, 3)
    r = SampleReader(path)
    np.testing.assert_array_equal(r.get("neg", np.arange(77))["images"], np.concatenate(expect))


def test_atomic_rename(tmp_path):
    path = tmp_path / "onet_train.h5"
    w = SampleWriter(path, S, {})
    write_item(w, 0)
    w.commit([0])
    assert not path.exists() and partial_path(path).exists()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        SampleReader(path)
    assert w.close() == path
    assert path.exists() and not partial_path(path).exists()
    # an exception inside the with-block leaves only the partial file
    path2 = tmp_path / "b.h5"
    with pytest.raises(RuntimeError):
        with SampleWriter(path2, S, {}) as w2:
            write_item(w2, 0)
            raise RuntimeError("generator failed")
    assert not path2.exists() and partial_path(path2).exists()
    # an existing complete file is never clobbered by accident
    with pytest.raises(FileExistsError, match="overwrite"):
        SampleWriter(path, S, {})


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from test_h5 import write_item
    from mtcnn.data.h5 import SampleWriter
    w = SampleWriter({path!r}, 12, {{"seed": 3}}, chunk=8, resume=True)
    for item in range(10):
        if item in w.done_items:
            continue
        write_item(w, item)
        if item < 6:
            w.commit([item])
    for f in w._journal._files.values():
        f.flush()        # half-written work items 6..9 reach the files
    os._exit(1)          # crash: no close, no commit
    """
)


def test_crash_and_resume(tmp_path):
    # reference: an uninterrupted run
    ref = tmp_path / "ref.h5"
    with SampleWriter(ref, S, {"seed": 3}, chunk=8) as w:
        for item in range(10):
            write_item(w, item)
            w.commit([item])
    # crashed run in a subprocess
    path = tmp_path / "run.h5"
    script = CRASH_SCRIPT.format(root=str(ROOT), tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert not path.exists() and partial_path(path).exists()
    written = (partial_path(path) / "pos.label").stat().st_size
    assert written > sum(len(b["images"]) for i in range(6) for k, b in item_samples(i) if k == "pos")
    # resume: everything after the last commit is dropped
    w = SampleWriter(path, S, {"seed": 3}, chunk=8, resume=True)
    assert w.done_items == set(range(6))
    committed = {kind: sum(len(b["images"]) for i in range(6) for k, b in item_samples(i) if k == kind)
                 for kind in KINDS}
    assert w.lengths() == committed
    for item in range(10):
        if item not in w.done_items:
            write_item(w, item)
            w.commit([item])
    w.close()
    assert_same_content(read_all(path), read_all(ref))


def test_resume_refuses_other_settings_and_corrupt_files(tmp_path):
    path = tmp_path / "a.h5"
    w = SampleWriter(path, S, {"seed": 1})
    write_item(w, 0)
    w.commit([0])
    w.close(complete=False)
    with pytest.raises(SampleFileError, match="'seed'"):
        SampleWriter(path, S, {"seed": 2}, resume=True)
    with pytest.raises(SampleFileError, match="'size'"):
        SampleWriter(path, 24, {"seed": 1}, resume=True)
    w = SampleWriter(path, S, {"seed": 1}, resume=True)
    assert w.done_items == {0}
    with pytest.raises(ValueError, match="twice"):
        w.commit([0])
    w.close(complete=False)
    # a damaged partial file: one line saying so, and that file starts over
    part = partial_path(path)
    column = part / "pos.bbox"
    data = bytearray(column.read_bytes())
    data[5] ^= 0xFF
    column.write_bytes(bytes(data))
    w = SampleWriter(path, S, {"seed": 1}, resume=True)
    assert w.notice is not None and "\n" not in w.notice
    assert str(part) in w.notice and "damaged" in w.notice and "pos.bbox" in w.notice and "starting" in w.notice
    assert w.done_items == set() and w.lengths() == {k: 0 for k in KINDS}
    w.close(complete=False)
    # resume=False starts over
    w = SampleWriter(path, S, {"seed": 1}, resume=False)
    assert w.done_items == set() and w.lengths() == {k: 0 for k in KINDS}
    w.close()


def test_add_validation(tmp_path):
    w = SampleWriter(tmp_path / "v.h5", S, {})
    good = make_batch("pos", 2, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        w.add("pos", good["images"].astype(np.float32), bbox=good["bbox"])
    with pytest.raises(ValueError, match=r"\[n,12,12,3\]"):
        w.add("pos", np.zeros((2, 24, 24, 3), np.uint8), bbox=good["bbox"])
    with pytest.raises(ValueError, match="bbox"):
        w.add("pos", good["images"])
    with pytest.raises(ValueError, match="label"):
        w.add("neg", good["images"], labels=[1, 1])
    with pytest.raises(ValueError, match="landmark"):
        w.add("landmark", good["images"])
    with pytest.raises(ValueError, match="kind"):
        w.add("face", good["images"])
    with pytest.raises(ValueError, match="conflicts"):
        SampleWriter(tmp_path / "w.h5", S, {"channel_order": "BGR"})
    w.close()


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        SampleReader(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["size"] = S
        g = f.create_group("pos")
        g.create_dataset("images", data=np.zeros((1, S, S, 3), np.uint8))
        for name, shape in (("label", (1,)), ("bbox", (1, 4)), ("landmark", (1, 10))):
            g.create_dataset(name, data=np.zeros(shape))
    with pytest.raises(SampleFileError, match="missing group.*part") as err:
        SampleReader(bad)
    assert str(bad) in str(err.value)
    good = tmp_path / "good.h5"
    with SampleWriter(good, 24, {}) as w:
        b = make_batch("neg", 2, seed=0, size=24)
        w.add("neg", b["images"])
    with pytest.raises(SampleFileError, match="expected 12x12"):
        SampleReader(good, expected_size=12)
    assert SampleReader(good, expected_size=24).counts() == {"pos": 0, "part": 0, "neg": 2, "landmark": 0}


def test_reader_pickles_and_reopens_lazily(tmp_path):
    path = tmp_path / "p.h5"
    b = make_batch("pos", 4, seed=0)
    with SampleWriter(path, S, {}) as w:
        w.add("pos", b["images"], bbox=b["bbox"])
    r = SampleReader(path)
    r.get("pos", [0])
    assert r._f is not None
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._f is None and r2._meta is None
    np.testing.assert_array_equal(r2.get("pos", [3, 1])["images"], b["images"][[3, 1]])
    r._pid = -1  # as if inherited through fork: must open a new handle, not reuse
    old = r._f
    r.get("pos", [0])
    assert r._f is not old


LOCK_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from mtcnn.data.h5 import SampleWriter, SampleFileError
    try:
        SampleWriter({path!r}, 12, {{}}, resume=True)
    except SampleFileError as e:
        print(e)
    """
)


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE", reason="HDF5 file locking off")
def test_partial_file_in_use_is_not_called_corrupt(tmp_path):
    path = tmp_path / "busy.h5"
    w = SampleWriter(path, S, {}, resume=True)
    w.commit([0])
    proc = subprocess.run([sys.executable, "-c", LOCK_SCRIPT.format(root=str(ROOT), path=str(path))],
                          capture_output=True, text=True)
    w.close(complete=False)
    assert "locked by another process" in proc.stdout, proc.stdout + proc.stderr
    assert "delete" not in proc.stdout
