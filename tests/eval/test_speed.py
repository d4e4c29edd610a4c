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

from mtcnn.eval.speed import BenchmarkError, BenchmarkResult, parse_proc_status, parse_size, run_benchmark

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
                        threads=1, repeats=2, warmup=1, detector=det, image=image, log=lines.append, memory="off")  # fmt: skip
    assert isinstance(res, BenchmarkResult)
    assert torch.get_num_threads() == 1
    assert [(c.min_face, c.batch_size) for c in res.cases if c.device == "cpu"] == [(20, 1), (20, 2), (40, 1), (40, 2)]
    for c in res.cases:
        assert (c.width, c.height) == (160, 120)
        assert len(c.times_ms) == 2 and all(t > 0 for t in c.times_ms)
        assert c.ms_p10 <= c.ms_median <= c.ms_p90
        assert c.peak_mem_mb is None and c.peak_rss_mb is None  # memory="off": in-process, no figures
        assert c.mem_method.startswith("off") and c.faces >= 0
    if not torch.cuda.is_available():
        assert res.skipped == [{"device": "cuda", "reason": "CUDA is not available"}]
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {"settings", "cases", "comparisons", "skipped"}
    s = d["settings"]
    assert s["memory"] == "off"
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


def test_parse_proc_status():
    text = (
        "Name:\tpython\nUmask:\t0022\nState:\tR (running)\nVmPeak:\t 2312480 kB\nVmSize:\t 2246944 kB\n"
        "VmHWM:\t  612344 kB\nVmRSS:\t  398120 kB\nRssAnon:\t  301000 kB\nThreads:\t2\n"
        "Cpus_allowed_list:\t0-1\n"
    )
    st = parse_proc_status(text)
    assert st["VmHWM"] == 612344 and st["VmRSS"] == 398120 and st["RssAnon"] == 301000
    assert "Threads" not in st and "Name" not in st  # only the kB lines
    assert parse_proc_status("") == {}


def _isolated_case(det, backend="torch", precision="float32"):
    image = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    res = run_benchmark([(96, 72)], devices=("cpu",), threads=1, repeats=1, warmup=0, detector=det, image=image,
                        backends=(backend,), precisions=(precision,))  # fmt: skip
    (case,) = res.cases
    assert res.settings["memory"] == "isolated"
    return case


def _assert_seen(case):
    if not case.mem_method.startswith("vmhwm"):
        pytest.skip(f"no /proc here ({case.mem_method})")
    # the child's own peak: everything it touched after the baseline (here oneDNN's bf16 kernels
    # or onnxruntime's arenas), which an in-process probe read as 0 once earlier cases had run
    assert case.baseline_rss_mb > 0 and case.peak_rss_mb > case.baseline_rss_mb
    assert case.peak_mem_mb == pytest.approx(case.peak_rss_mb - case.baseline_rss_mb) and case.peak_mem_mb > 0
    assert case.mem_method == "vmhwm, own process"  # the mark was reset after the model load


def test_isolated_memory_sees_bfloat16(random_nets):
    from mtcnn.detector import MTCNN

    case = _isolated_case(MTCNN(nets=random_nets, device="cpu"), precision="bfloat16")
    assert case.precision == "bfloat16"
    _assert_seen(case)


def test_isolated_memory_sees_onnxruntime(random_nets):
    pytest.importorskip("onnxruntime")
    from mtcnn.detector import MTCNN

    case = _isolated_case(MTCNN(nets=random_nets, device="cpu"), backend="onnxruntime")
    assert case.backend == "onnxruntime"
    _assert_seen(case)


def test_regression_case(random_nets, tmp_path, monkeypatch):
    import cv2

    from mtcnn.detector import MTCNN

    det = MTCNN(nets=random_nets, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    kw = dict(devices=("cpu",), threads=1, repeats=1, warmup=0, detector=det, image=image, memory="off", regression=True)
    monkeypatch.setenv("MTCNN_DATA", str(tmp_path))
    res = run_benchmark([(80, 60)], **kw)
    assert [c.label for c in res.cases] == [""]
    (sk,) = res.skipped
    assert sk["case"] == "led_wall@wider" and "led_wall_press_photo.jpg not found" in sk["reason"]
    assert "skipped led_wall@wider: regression photo" in res.format_table()

    (tmp_path / "regressions").mkdir()
    cv2.imwrite(str(tmp_path / "regressions" / "led_wall_press_photo.jpg"), np.full((50, 40, 3), 128, np.uint8))
    res = run_benchmark([(80, 60)], batch_sizes=(1, 2), **kw)
    led = [c for c in res.cases if c.label == "led_wall@wider"]
    assert len(led) == 1 and not res.skipped  # batch 1 only
    assert (led[0].width, led[0].height, led[0].min_face, led[0].batch_size) == (40, 50, 10.0, 1)
    assert res.settings["regression"]["settings"]["factor"] == pytest.approx(0.79)
    assert "led_wall@wider" in res.format_table()


def test_memory_mode_is_checked(random_nets):
    from mtcnn.detector import MTCNN

    with pytest.raises(BenchmarkError, match="memory must be one of isolated, off"):
        run_benchmark([(80, 60)], detector=MTCNN(nets=random_nets, device="cpu"), memory="tracemalloc")


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
