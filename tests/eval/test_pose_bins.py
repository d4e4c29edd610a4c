"""Landmark error by head pose: roll and yaw proxy of the ground truth, the bins every landmark
evaluator reports (``pose``), the pose CED plot, and the 300-W validation split they run on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mtcnn.eval.landmarks import ROLL_EDGES, YAW_EDGES, pose_breakdown, pose_markdown, pose_proxies

# A frontal face: eyes 40 px apart, nose tip midway below them, mouth corners below.
FACE = np.array([[-20.0, 0.0], [20.0, 0.0], [0.0, 25.0], [-15.0, 45.0], [15.0, 45.0]])


def _rotate(points: np.ndarray, degrees: float, centre=(100.0, 120.0)) -> np.ndarray:
    """``points`` turned by ``degrees`` on screen (y down: positive = clockwise), then moved to ``centre``."""
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ r.T + np.asarray(centre)


def _to_68(five: np.ndarray) -> np.ndarray:
    """A 68-point face with the given eye centres (six points around each), nose tip and mouth corners."""
    p = np.zeros((68, 2))
    ring = np.array([[-4, 0], [-2, -2], [2, -2], [4, 0], [2, 2], [-2, 2]], float)
    p[36:42] = five[0] + ring
    p[42:48] = five[1] + ring
    p[30], p[48], p[54] = five[2], five[3], five[4]
    return p


def test_bins_as_stated():
    assert ROLL_EDGES == (0.0, 10.0, 20.0, 30.0) and YAW_EDGES == (0.0, 0.1, 0.2, 0.3)
    rep = pose_breakdown(np.zeros(1), FACE[None])
    assert [b.label for b in rep.roll] == ["<10 deg", "10-20 deg", "20-30 deg", ">=30 deg"]
    assert [b.label for b in rep.yaw] == ["<0.1", "0.1-0.2", "0.2-0.3", ">=0.3"]


@pytest.mark.parametrize("k", [5, 68])
def test_roll_of_rotated_faces_lands_in_its_bin(k):
    angles = np.array([0, 4, -9, 12, -18, 24, -27, 33, -60, 150])
    gt = np.stack([_rotate(FACE, a) for a in angles])
    if k == 68:
        gt = np.stack([_to_68(f) for f in gt])
    roll, yaw = pose_proxies(gt)
    np.testing.assert_allclose(roll, angles, atol=1e-9)
    np.testing.assert_allclose(yaw, 0, atol=1e-12)  # the nose stays midway whatever the roll
    rep = pose_breakdown(np.arange(len(angles)) / 100, gt)
    assert [b.count for b in rep.roll] == [3, 2, 2, 3]
    assert [b.count for b in rep.yaw] == [10, 0, 0, 0]
    # sample errors 0.00 .. 0.09 in angle order: bin NME = mean of its members
    assert rep.roll[1].nme == pytest.approx((0.03 + 0.04) / 2)
    assert rep.roll[3].nme == pytest.approx((0.07 + 0.08 + 0.09) / 3)


def test_bin_edges():
    gt = np.stack([_rotate(FACE, a) for a in (9.99, -10.01, 19.99, 20.01, -29.99, 30.01)])
    rep = pose_breakdown(np.zeros(6), gt)
    assert [b.count for b in rep.roll] == [1, 2, 2, 1]


def test_yaw_proxy_sign_and_magnitude():
    turned = FACE.copy()
    turned[2, 0] = 12.0  # nose 12 px to the image's right of the mid-eye point, eyes 40 px apart
    other_way = FACE.copy()
    other_way[2, 0] = -6.0
    roll, yaw = pose_proxies(np.stack([turned, other_way, _rotate(turned, 25), _rotate(other_way, -40)]))
    np.testing.assert_allclose(yaw, [0.3, -0.15, 0.3, -0.15], atol=1e-12)  # roll removed first
    np.testing.assert_allclose(roll, [0, 0, 25, -40], atol=1e-9)
    # a nose moved along the face's vertical axis changes nothing
    lower = FACE.copy()
    lower[2, 1] = 40
    assert pose_proxies(lower[None])[1][0] == pytest.approx(0.0)
    rep = pose_breakdown([0.02, 0.2, 0.04, 0.3], np.stack([turned, other_way, _rotate(turned, 25), _rotate(other_way, -40)]))
    assert [b.count for b in rep.yaw] == [0, 2, 0, 2]
    assert rep.yaw[3].nme == pytest.approx(0.03) and rep.yaw[3].failure_rate == 0.0
    assert rep.yaw[1].nme == pytest.approx(0.25) and rep.yaw[1].failure_rate == 1.0


def test_faces_without_pose_and_empty_bins_in_the_report():
    gt = np.stack([FACE, FACE])
    gt[1, 2] = np.nan  # no nose
    rep = pose_breakdown([0.05, 0.5], gt, "box-width", failure_threshold=0.05)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))  # strict JSON: empty bins are null
    assert d["faces_without_pose"] == 1 and d["normaliser"] == "box-width"
    assert d["roll_degrees"][0] == {"bin": "<10 deg", "low": 0.0, "high": 10.0, "faces": 1, "nme": 0.05,
                                    "failure_rate": 0.0, "auc_0_1": pytest.approx(0.5, abs=0.01)}
    assert d["roll_degrees"][3]["high"] is None and d["roll_degrees"][3]["nme"] is None
    with pytest.raises(ValueError, match="2 sample errors for 3"):
        pose_breakdown([0.1, 0.2], np.stack([FACE] * 3))
    with pytest.raises(ValueError, match="5 or 68 points"):
        pose_proxies(np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="roll_edges must start at 0"):
        pose_breakdown([0.1], FACE[None], roll_edges=(5, 10))


def test_pose_ced_plot_and_table(tmp_path):
    from mtcnn.eval.plots import plot_pose_ced

    gt = np.stack([_rotate(FACE, a) for a in (0, 15, 35)])
    rep = pose_breakdown([0.01, 0.05, 0.2], gt)
    curves = rep.curves()
    assert list(curves["roll"]) == ["<10 deg (n=1, NME 0.0100)", "10-20 deg (n=1, NME 0.0500)", ">=30 deg (n=1, NME 0.2000)"]
    path = plot_pose_ced(rep, "test model", {"faces": 3}, tmp_path / "ced_pose.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pose_markdown({"model A": rep}).splitlines()
    assert table[0].startswith("| model | roll <10 deg |") and table[2].startswith("| model A | 0.0100 (1) |")
    assert "- (0)" in table[2]


def test_landmark_set_report_has_a_pose_section(tmp_path):
    from mtcnn.eval.landmark_set import evaluate_landmark_set

    faces = [_rotate(FACE, a, centre=(150, 150)) for a in (0, 25)]
    lines, dets = [], []
    for k, f in enumerate(faces):
        box = [float(v) for v in (f[:, 0].min() - 20, f[:, 1].min() - 30, f[:, 0].max() + 20, f[:, 1].max() + 20)]
        lines.append(f"img{k}.jpg {' '.join(f'{v:.3f}' for v in box)} {' '.join(f'{v:.3f}' for v in f.ravel())}")
        pred = f + [2.0, 0.0]  # 2 px off: 2 / 40 = 0.05 of the inter-ocular distance
        dets.append({"image": f"img{k}.jpg", "width": 300, "height": 300,
                     "faces": [{"box": box, "score": 0.99, "landmarks": pred.tolist()}]})
    ann = tmp_path / "faces.txt"
    ann.write_text("\n".join(lines) + "\n")
    det_file = tmp_path / "dets.jsonl"
    det_file.write_text("".join(json.dumps(d) + "\n" for d in dets))
    out = evaluate_landmark_set([ann], "list", tmp_path, out_dir=tmp_path / "out", detections=det_file,
                                progress=False, log=lambda _: None)
    pose = json.loads((tmp_path / "out" / "report.json").read_text())["pose"]
    assert [b["faces"] for b in pose["roll_degrees"]] == [1, 0, 1, 0]
    assert pose["roll_degrees"][0]["nme"] == pytest.approx(0.05, abs=1e-4)
    assert (tmp_path / "out" / "ced_pose.png").is_file()
    assert out.exit_code == 0


def test_real_300w_validation_split_has_every_pose():
    """The hashed 300-W validation split of the landmark configs spans the pose bins."""
    from mtcnn.config.data import SourceConfig
    from mtcnn.config.paths import w300_root
    from mtcnn.data.generate import load_source

    if not (w300_root() / "afw" / "afw").is_dir():
        pytest.skip(f"300-W training sets not found at {w300_root()} (set MTCNN_300W; see the data README)")
    gt = []
    for folder in ("lfpw/trainset", "helen/trainset", "afw/afw"):
        src = SourceConfig(name=folder, format="pts68", path="{w300}/" + folder, split="val", split_rule="hashed",
                           missing_images="skip", points="five")
        gt += [r.landmarks for r in load_source(src)]
    gt = np.concatenate(gt)
    rep = pose_breakdown(np.zeros(len(gt)), gt)
    assert len(gt) == 402 and rep.unknown == 0  # LFPW 154 + Helen 182 + AFW 66 faces (45 photos)
    assert [b.count for b in rep.roll] == [321, 70, 10, 1] and [b.count for b in rep.yaw] == [190, 97, 71, 44]


def test_cli_evaluates_a_hashed_validation_split_of_pts_folders(tmp_path):
    """``tools/evaluate.py landmarks --format pts68 --split val --split-rule hashed --missing-images skip``."""
    from mtcnn.commands.evaluate import main
    from mtcnn.data.annotations import landmarks_68_to_5, read_pts68_dir, split_by_hash

    folder = tmp_path / "trainset"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(30):
        face = _to_68(_rotate(FACE, rng.uniform(-40, 40), centre=(150, 150))) + 1  # 1-based in the file
        (folder / f"image_{k:04d}.pts").write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in face) + "\n}\n")
        (folder / f"image_{k:04d}.png").write_bytes(b"png %d" % k)  # never decoded: detections come from a file
    (folder / "image_0999.pts").write_text("1 1\n" * 68)  # its image is absent
    records = read_pts68_dir(folder, missing_images="skip")
    det_file = tmp_path / "dets.jsonl"
    with open(det_file, "w") as f:
        for r in records:
            pts = landmarks_68_to_5(r.landmarks)[0]
            box = [float(v) for v in r.boxes[0]]
            f.write(json.dumps({"image": r.path.name, "width": 300, "height": 300,
                                "faces": [{"box": box, "score": 0.99, "landmarks": pts.tolist()}]}) + "\n")
    out = tmp_path / "out"
    code = main(["landmarks", "--annotations", str(folder), "--format", "pts68", "--split", "val", "--split-rule", "hashed",
                 "--missing-images", "skip", "--detections", str(det_file), "--out", str(out), "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    assert code == 0 and report["split_rule"] == "hashed"
    assert report["num_faces"] == len(split_by_hash(records, "val")) > 0
    assert report["inter_ocular"]["nme"] == pytest.approx(0.0, abs=1e-5)
    assert sum(b["faces"] for b in report["pose"]["roll_degrees"]) == report["num_faces"]
    assert (out / "ced_pose.png").is_file()
