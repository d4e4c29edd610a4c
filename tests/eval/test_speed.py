"""Benchmark plumbing (mtcnn.eval.speed, tools/benchmark.py): structure of the results, the JSON
and the table. No timing thresholds: timings on shared machines are noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtcnn.eval.speed import BenchmarkError, BenchmarkResult, PeakMemory, parse_size, run_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def random_nets():
    from mtcnn.nets import build_net

    torch.manual_seed(0)
    return {k: build_net(k) for k in ("pnet", "rnet", "onet")}


def test_run_benchmark_structure(random_nets):
    from mtcnn.detector import MTCNN

    det = MTCNN(nets=random_nets, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    lines = []
    res = run_benchmark([(160, 120)], min_faces=(20, 40), batch_sizes=(1, 2), devices=("cpu", "cuda"),
                        threads=1, repeats=2, warmup=1, detector=det, image=image, log=lines.append)  # fmt: skip
    assert isinstance(res, BenchmarkResult)
    assert torch.get_num_threads() == 1
    assert [(c.min_face, c.batch_size) for c in res.cases if c.device == "cpu"] == [(20, 1), (20, 2), (40, 1), (40, 2)]
    for c in res.cases:
        assert (c.width, c.height) == (160, 120)
        assert len(c.times_ms) == 2 and all(t > 0 for t in c.times_ms)
        assert c.ms_p10 <= c.ms_median <= c.ms_p90
        assert c.peak_mem_mb is None or c.peak_mem_mb >= 0
        assert c.mem_method and c.faces >= 0
    if not torch.cuda.is_available():
        assert res.skipped == [{"device": "cuda", "reason": "CUDA is not available"}]
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {"settings", "cases", "comparisons", "skipped"}
    s = d["settings"]
    assert s["threads"] == 1 and s["repeats"] == 2 and s["warmup"] == 1 and s["sizes"] == ["160x120"]
    assert s["image"] == "<array>" and s["weights"] == "<in memory>" and s["detector"]["factor"] == pytest.approx(0.709)
    assert {"ms_median", "ms_p10", "ms_p90", "peak_mem_mb", "mem_method", "batch_size", "min_face", "device"} <= set(d["cases"][0])
    table = res.format_table()
    assert "160x120" in table and "median ms" in table
    assert len(lines) >= 4


def test_benchmark_cli_writes_json(random_nets, tmp_path):
    from mtcnn.weights import save_bundle

    weights = tmp_path / "random.pt"
    save_bundle(random_nets, weights)
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--sizes", "160x120", "--repeats", "1", "--warmup", "0",
         "--threads", "1", "--weights", str(weights), "--json", str(out), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    d = json.loads(out.read_text())
    assert len(d["cases"]) == 1 and d["settings"]["weights"] == str(weights)
    assert "160x120" in run.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--sizes", "640by480"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: size '640by480'")


def test_parse_size():
    assert parse_size("640x480") == (640, 480) and parse_size("1920X1080") == (1920, 1080)
    for bad in ("640", "0x10", "axb"):
        with pytest.raises(BenchmarkError):
            parse_size(bad)


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        a = np.ones(25_000_000)  # 200 MB
        a[::4096] = 2.0
        del a
    if mem.method != "vmhwm-reset":
        pytest.skip(f"peak RSS cannot be reset here ({mem.method})")
    assert mem.peak_mb > 150


def test_compare_with_facenet(original_weights, facenet_wheel):
    from mtcnn.detector import MTCNN

    det = MTCNN(weights=original_weights, device="cpu")
    res = run_benchmark([(320, 240)], devices=("cpu",), repeats=1, warmup=0, detector=det, compare_facenet=facenet_wheel)
    (cmp,) = res.comparisons
    assert (cmp.width, cmp.height, cmp.min_face) == (320, 240, 20.0)
    assert cmp.reference_ms_median > 0 and cmp.speedup > 0
    assert cmp.matched_iou50 <= cmp.matched_iou30 <= min(cmp.reference_count, cmp.ours_count)
    # the same weights and settings find (nearly) the same faces
    assert cmp.matched_iou30 >= cmp.reference_count - 1
    assert "facenet" in res.format_table()


def test_facenet_runs_at_our_thresholds_only_beside_the_same_nets(original_weights):
    from mtcnn.detector import MTCNN
    from mtcnn.eval.speed import FACENET_DEFAULT_THRESHOLDS, reference_thresholds

    same = MTCNN(weights=original_weights, device="cpu", thresholds=(0.5, 0.4, 0.3))
    assert reference_thresholds(same) == [0.5, 0.4, 0.3]
    shipped = MTCNN(device="cpu")  # calibrated at 0.6/0.3/0.3 for its own scores
    assert tuple(shipped.config.thresholds) != FACENET_DEFAULT_THRESHOLDS
    assert reference_thresholds(shipped) == list(FACENET_DEFAULT_THRESHOLDS)
    assert reference_thresholds(shipped, (0.6, 0.3, 0.3)) == [0.6, 0.3, 0.3]
    with pytest.raises(BenchmarkError, match="three numbers"):
        reference_thresholds(shipped, (0.6, 1.3, 0.3))
