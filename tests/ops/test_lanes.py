"""Two lanes (mtcnn.ops.lanes): the split, the threads, and detections bit-identical to the
sequential path."""

import threading

import cv2
import numpy as np
import pytest
import torch

from mtcnn.ops.lanes import lane_safe_batch, lanes_available, run_in_lanes, split_by_cost
from mtcnn.stages import chunk_bounds


@pytest.fixture
def two_threads():
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def test_split_by_cost_is_a_balanced_ordered_cut():
    assert split_by_cost([110, 56, 28, 35]) == ([0], [1, 2, 3])
    assert split_by_cost([1, 1, 1, 1]) == ([0, 1], [2, 3])
    assert split_by_cost([5]) in (([], [0]), ([0], []))
    assert split_by_cost([]) == ([], [])
    first, second = split_by_cost([3, 9, 1, 1, 1])
    assert first + second == list(range(5))


def test_chunk_bounds_cover_every_crop_in_an_even_number_of_near_equal_passes():
    assert chunk_bounds(0, 168) == []
    assert chunk_bounds(100, 168) == [(0, 100)]
    assert chunk_bounds(457, 168) == [(0, 114), (114, 228), (228, 342), (342, 457)]
    for n in range(1, 700, 13):
        for size in (8, 32, 64, 168):
            bounds = chunk_bounds(n, size)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [e - s for s, e in bounds]
            assert max(sizes) <= size and max(sizes) - min(sizes) <= 1
            assert len(bounds) == 1 or len(bounds) % 2 == 0


def test_run_in_lanes_keeps_order_uses_two_threads_and_restores_settings(two_threads):
    names = []

    def piece(k):
        def run():
            names.append(threading.current_thread().name)
            assert torch.get_num_threads() == 1  # one intra-op thread per lane
            assert torch.is_inference_mode_enabled()  # the caller's mode reaches the worker
            return k * k

        return run

    with torch.inference_mode():
        assert run_in_lanes([piece(k) for k in range(5)], costs=[1, 1, 1, 1, 1]) == [0, 1, 4, 9, 16]
    assert len(set(names)) == 2
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2


def test_run_in_lanes_passes_errors_on_and_stays_usable(two_threads):
    def boom():
        raise KeyError("lane")

    with pytest.raises(KeyError):
        run_in_lanes([lambda: 1, boom])
    assert torch.get_num_threads() == 2
    assert run_in_lanes([lambda: 1, lambda: 2]) == [1, 2]


def test_lanes_are_off_on_one_thread():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert not lanes_available(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_crop_nets_give_the_same_bits_on_one_and_two_threads(two_threads, precision):
    """What the lanes rely on: a chunk of a lane-safe size scores the same on one thread (a lane)
    as on two (the sequential path)."""
    from mtcnn import MTCNN
    from mtcnn.nets import build_net

    torch.manual_seed(0)
    det = MTCNN(nets={k: build_net(k) for k in ("pnet", "rnet", "onet")}, device="cpu", precision=precision)
    for net, size in ((det.rnet, 24), (det.onet, 48)):
        crops = torch.randn(200, 3, size, size).contiguous(memory_format=torch.channels_last)
        for n in (1, 2, 4, 8, 12, 16, 31, 57, 64, 100, 115, 168, 200):
            assert lane_safe_batch(n)
            torch.set_num_threads(2)
            two = net(crops[:n])
            torch.set_num_threads(1)
            one = net(crops[:n])
            torch.set_num_threads(2)
            assert all(torch.equal(a, b) for a, b in zip(one, two)), n


def _same(a, b) -> bool:
    return all(torch.equal(x.boxes, y.boxes) and torch.equal(x.scores, y.scores) and torch.equal(x.landmarks, y.landmarks)
               for x, y in zip(a, b)) and len(a) == len(b)


def test_lanes_give_the_sequential_detections_on_random_nets(two_threads, monkeypatch):
    import mtcnn.stages as stages
    from mtcnn import MTCNN
    from mtcnn.nets import build_net

    used = []

    def spy(pieces, costs=None):
        used.append(len(pieces))
        return run_in_lanes(pieces, costs)

    monkeypatch.setattr(stages, "run_in_lanes", spy)

    torch.manual_seed(1)
    nets = {k: build_net(k) for k in ("pnet", "rnet", "onet")}
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((240, 320), (130, 90))]
    lanes = MTCNN(nets=nets, device="cpu", thresholds=(0.3, 0.1, 0.1), min_face_size=16, chunk_size=24, lanes=True)
    sequential = lanes.with_settings(lanes=False)
    got = lanes.detect(images)
    assert len(used) == 4  # P-Net's canvases, R-Net's and O-Net's chunks, O-Net's pass over the faces found (onet_points)
    reference = sequential.detect(images)
    assert len(used) == 4 and sum(len(d) for d in reference) > 0
    assert _same(got, reference)


@pytest.mark.data
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_lanes_give_the_sequential_detections_on_dlib_photos(two_threads, shared_data, precision):
    """The shipped detector on 2 threads: the two-lane path's detections are the sequential
    path's, bit for bit (P-Net canvases, R/O-Net chunks with their crops, bf16's float32 re-check)."""
    from mtcnn import MTCNN
    from mtcnn.io import read_image_rgb

    lanes = MTCNN(device="cpu", precision=precision, lanes=True)
    sequential = lanes.with_settings(lanes=False)
    paths = sorted((shared_data / "dlib_faces").glob("*.jpg"))
    faces = 0
    for path in paths:
        image = read_image_rgb(path)
        reference = sequential.detect(image)
        faces += len(reference[0])
        assert _same(lanes.detect(image), reference), path.name
    # A batch of different sizes: canvases shared by several images' levels.
    images = [read_image_rgb(p) for p in paths[:4]]
    assert _same(lanes.detect(images), sequential.detect(images))
    assert faces > 30
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_lane(two_threads):
    """After fork the child has no worker thread; the lanes must start one, not wait forever."""
    import multiprocessing

    assert run_in_lanes([lambda: 1, lambda: 2]) == [1, 2]  # the parent's worker exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_lanes_in_child).get(timeout=60) == [1, 2]


def _lanes_in_child():
    torch.set_num_threads(2)
    return run_in_lanes([lambda: 1, lambda: 2])
