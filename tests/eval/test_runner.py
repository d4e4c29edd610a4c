"""tools/evaluate.py and its library (mtcnn.eval.runner): plumbing from annotations and
detections (a JSON-lines file or the detector) to report.json and plots.

Most tests feed detections built from the ground truth through ``--detections`` (no detector,
no images needed), so the expected metrics are exact; one test runs the real detector on
dlib_faces. Tests needing the real data or weights skip without them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn.data.annotations import landmarks_68_to_5, read_annotations
from mtcnn.eval.landmark_set import evaluate_landmark_set
from mtcnn.eval.runner import ErrorLog, evaluate_detection_set

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] >= 200 and img.shape[1] >= 200


def quiet():
    return {"log": lambda _msg: None, "progress": False}


def write_jsonl(path: Path, items) -> Path:
    """items: (image path string, boxes [K,4], scores [K], landmarks [K,5,2] or None)."""
    with open(path, "w") as f:
        for image, boxes, scores, marks in items:
            faces = []
            for k, (b, s) in enumerate(zip(np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float).reshape(-1))):
                face = {"box": [float(v) for v in b], "score": float(s)}
                if marks is not None:
                    face["landmarks"] = np.asarray(marks, float)[k].tolist()
                faces.append(face)
            f.write(json.dumps({"image": image, "width": 0, "height": 0, "faces": faces}) + "\n")
    return path


def gt_items(records, name=lambda r: r.path.name, seed=0):
    rng = np.random.default_rng(seed)
    return [(name(r), r.boxes, rng.random(r.num_faces), None) for r in records]


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlib_dir():
    from mtcnn.config import data_root

    d = data_root() / "dlib_faces"
    if not (d / "testing.xml").is_file():
        pytest.skip(f"dlib_faces not found in {data_root()} (set MTCNN_DATA)")
    return d


def test_ground_truth_detections_give_ap_1(dlib_dir, tmp_path):
    records = read_annotations(dlib_dir / "testing.xml", "dlib")
    # file names only: matched to the annotated images by name
    dets = write_jsonl(tmp_path / "dets.jsonl", gt_items(records))
    out = evaluate_detection_set([dlib_dir / "testing.xml"], "dlib", dlib_dir, out_dir=tmp_path / "out",
                                 detections=dets, iou=0.75, **quiet())  # fmt: skip
    assert outcome_ok(outcome := out)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep == outcome.report
    assert rep["ap50"] == 1.0 and rep["ap_at_iou"] == {"iou": 0.75, "ap": 1.0}
    d50 = rep["detection"]["iou_0.5"]
    assert (d50["true_positives"], d50["false_positives"], d50["num_gt"]) == (25, 0, 25)
    assert d50["precision"] == 1.0 and d50["recall"] == 1.0 and d50["recall_at_fp"]["0"] == 1.0
    assert rep["num_images_evaluated"] == 5 and rep["num_images_failed"] == 0
    # the report says the detections came from a file, with its hash
    assert rep["settings"] == {
        "source": "file", "detections": str(dets), "detections_sha256": hashlib.sha256(dets.read_bytes()).hexdigest()
    }  # fmt: skip
    assert_png(tmp_path / "out" / "pr_curve.png")
    assert not (tmp_path / "out" / "detections.jsonl").exists()


def outcome_ok(outcome) -> bool:
    assert outcome.exit_code == 0, outcome.errors
    assert outcome.errors == []
    return True


def test_missing_and_bad_lines_are_reported_and_the_rest_evaluated(dlib_dir, tmp_path, capsys):
    records = read_annotations(dlib_dir / "testing.xml", "dlib")
    items = gt_items(records, name=lambda r: str(r.path))  # absolute paths
    dropped = items.pop(1)
    dets = write_jsonl(tmp_path / "dets.jsonl", items)
    with open(dets, "a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"image": "elsewhere/unrelated.jpg", "faces": [{"box": [1, 2]}]}) + "\n")
    out = evaluate_detection_set([dlib_dir / "testing.xml"], "dlib", dlib_dir, out_dir=tmp_path / "out", detections=dets, **quiet())
    assert out.exit_code == 1
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err_lines) == 3
    assert any(f"{dets}:{len(items) + 1}: not valid JSON" in ln for ln in err_lines)
    assert any(f"{dets}:{len(items) + 2}:" in ln and "box must be 4" in ln for ln in err_lines)
    assert any(ln == f"error: {dropped[0]}: no detections for this image in {dets}" for ln in err_lines)
    rep = out.report
    assert rep["num_images_failed"] == 1 and rep["failed_images"] == [dropped[0]]
    assert rep["num_images_evaluated"] == 4 and rep["ap50"] == 1.0
    assert len(rep["errors"]) == 3


def test_cli_missing_annotation_file_and_exit_codes(dlib_dir, tmp_path):
    records = read_annotations(dlib_dir / "testing.xml", "dlib")
    dets = write_jsonl(tmp_path / "dets.jsonl", gt_items(records))
    script = str(ROOT / "tools" / "evaluate.py")
    missing = tmp_path / "no_such.xml"
    cmd = [sys.executable, script, "detection", "--annotations", str(dlib_dir / "testing.xml"), str(missing),
           "--format", "dlib", "--images", str(dlib_dir), "--detections", str(dets), "--out", str(tmp_path / "o")]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert f"error: {missing}: file not found" in run.stderr.splitlines()
    assert "AP 1.0000" in run.stdout and "detections_file=" in run.stdout
    assert json.loads((tmp_path / "o" / "report.json").read_text())["ap50"] == 1.0
    # nothing left to evaluate: exit 2
    run = subprocess.run(cmd[:4] + [str(missing)] + cmd[6:], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "no annotated images" in run.stderr


def test_voc_val_split(tmp_path):
    from mtcnn.config import data_root

    ann = data_root() / "face_mask" / "annotations"
    if not ann.is_dir():
        pytest.skip(f"face_mask not found in {data_root()}")
    records = read_annotations(ann, "voc")
    dets = write_jsonl(tmp_path / "dets.jsonl", gt_items(records))
    out = evaluate_detection_set([ann], "voc", None, out_dir=tmp_path / "out", detections=dets, split="val", limit=50, **quiet())
    assert outcome_ok(out)
    rep = out.report
    # last 20 % by file name: 853 - floor(0.8 * 853) = 171 images, then the first 50 of those
    assert rep["split"] == "val" and rep["num_images"] == 50
    assert rep["ap50"] == pytest.approx(1.0)


def test_real_detector_report_and_rerun_from_its_jsonl(dlib_dir, original_weights, tmp_path):
    out = evaluate_detection_set([dlib_dir / "testing.xml"], "dlib", dlib_dir, out_dir=tmp_path / "run",
                                 detector_kwargs={"weights": original_weights, "device": "cpu"}, batch_size=3, **quiet())  # fmt: skip
    assert outcome_ok(out)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    s = rep["settings"]
    assert s["source"] == "detector" and s["weights"] == str(original_weights) and len(s["weights_sha256"]) >= 12
    assert (s["min_face_size"], s["factor"], s["thresholds"]) == (20.0, 0.709, [0.6, 0.7, 0.7])
    assert 0.0 <= rep["ap50"] <= 1.0 and rep["num_images_evaluated"] == 5
    assert_png(tmp_path / "run" / "pr_curve.png")
    jsonl = tmp_path / "run" / "detections.jsonl"
    assert len(jsonl.read_text().splitlines()) == 5
    again = evaluate_detection_set([dlib_dir / "testing.xml"], "dlib", dlib_dir, out_dir=tmp_path / "again", detections=jsonl, **quiet())
    assert outcome_ok(again)
    assert again.report["ap50"] == pytest.approx(rep["ap50"], abs=1e-6)


def test_explicit_settings_override_the_preset(original_weights):
    from mtcnn.detect import build_detector

    det = build_detector(weights=original_weights, preset="wider", min_face=20, device="cpu")
    assert (det.config.min_face_size, det.config.factor, det.config.thresholds) == (20.0, 0.79, (0.5, 0.5, 0.3))


# --------------------------------------------------------------------------------------------
# WIDER FACE and FDDB protocols
# --------------------------------------------------------------------------------------------


def test_wider_official_ap_from_ground_truth_detections(tmp_path):
    from mtcnn.config import data_root
    from mtcnn.eval.detection import load_wider_ground_truth

    gt_dir = data_root() / "wider_face" / "eval_tools" / "ground_truth"
    bbx = data_root() / "wider_face" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    if not (gt_dir / "wider_face_val.mat").is_file() or not bbx.is_file():
        pytest.skip(f"WIDER FACE annotations not found in {data_root()}")
    gt = load_wider_ground_truth(gt_dir)
    rng = np.random.default_rng(0)
    items = []
    for e, i, event, name in gt.iter_images():
        # one detection per distinct box with non-negative size (the official code cannot
        # recall a duplicated box twice, nor a box of negative width)
        boxes = gt.boxes[e][i]
        _, first = np.unique(boxes, axis=0, return_index=True)
        keep = np.zeros(len(boxes), bool)
        keep[first] = True
        keep &= (boxes[:, 2:] >= 0).all(axis=1)
        items.append((f"{event}/{name}.jpg", gt.boxes_xyxy(e, i)[keep], rng.random(int(keep.sum())), None))
    dets = write_jsonl(tmp_path / "wider.jsonl", items)
    images = tmp_path / "WIDER_val" / "images"  # not there: detections come from the file
    out = evaluate_detection_set([bbx], "wider", images, out_dir=tmp_path / "out", detections=dets, wider_gt=gt_dir, **quiet())
    assert outcome_ok(out)
    w = out.report["wider"]
    assert w["complete"] and w["num_images"] == 3226
    assert w["easy"] == pytest.approx(1.0, abs=1e-12) and w["medium"] == pytest.approx(1.0, abs=1e-12)
    assert w["hard"] == pytest.approx(1.0 - 2 / 31958, abs=1e-12)
    assert_png(tmp_path / "out" / "wider_pr_curve.png")
    assert_png(tmp_path / "out" / "pr_curve.png")
    # a subset is evaluated against its own images only, and flagged as not comparable
    sub = evaluate_detection_set([bbx], "wider", images, out_dir=tmp_path / "sub", detections=dets, wider_gt=gt_dir, limit=40, **quiet())
    assert outcome_ok(sub)
    assert sub.report["wider"]["num_images"] == 40 and not sub.report["wider"]["complete"]
    assert "not comparable" in sub.report["wider"]["note"]
    assert sub.report["wider"]["easy"] == pytest.approx(1.0, abs=1e-12)


def test_fddb_roc_from_ellipse_boxes(tmp_path):
    from mtcnn.config import data_root

    fold = data_root() / "fddb" / "FDDB-folds" / "FDDB-fold-01-ellipseList.txt"
    if not fold.is_file():
        pytest.skip(f"FDDB folds not found in {data_root()}")
    records = read_annotations(fold, "fddb")
    root = fold.parent.parent / "originalPics"
    items = [(r.path.relative_to(root).as_posix(), r.boxes, np.full(r.num_faces, 0.9), None) for r in records]
    items[0] = (items[0][0], np.vstack([items[0][1], [[0, 0, 20, 20]]]), np.array([0.9] * records[0].num_faces + [0.1]), None)
    dets = write_jsonl(tmp_path / "fddb.jsonl", items)
    out = evaluate_detection_set([fold], "fddb", None, out_dir=tmp_path / "out", detections=dets, **quiet())
    assert outcome_ok(out)
    f = out.report["fddb"]
    assert f["num_faces"] == sum(r.num_faces for r in records)
    assert f["tpr_at_2000_fp_discrete"] == 1.0
    # a bounding box covers its ellipse with IoU about pi/4
    assert 0.7 < f["tpr_at_2000_fp_continuous"] < 0.82
    assert f["tpr_at_fp_discrete"]["0"] == 1.0
    assert_png(tmp_path / "out" / "roc.png")


# --------------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------------


def test_landmark_nme_by_hand(tmp_path):
    # face A: box width 100, eyes 40 apart; face B: box width 80, eyes 50 apart; face C: no detection
    a_pts = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    b_pts = np.array([[210, 10], [260, 10], [235, 30], [215, 50], [255, 50]], float)
    c_pts = a_pts + 300
    a_box, b_box, c_box = [0, 0, 100, 100], [195, 0, 275, 80], [300, 300, 400, 400]
    lines = [f"img1.jpg {' '.join(map(str, a_box))} {' '.join(map(str, a_pts.ravel()))}",
             f"img1.jpg {' '.join(map(str, b_box))} {' '.join(map(str, b_pts.ravel()))}",
             f"img2.jpg {' '.join(map(str, c_box))} {' '.join(map(str, c_pts.ravel()))}"]  # fmt: skip
    ann = tmp_path / "faces.txt"
    ann.write_text("\n".join(lines) + "\n")
    a_pred = a_pts + [3, 4]  # every point 5 px off: 5/40 = 0.125 (inter-ocular), 5/100 = 0.05 (box)
    b_pred = b_pts.copy()
    b_pred[2] += [6, 8]  # nose 10 px off: 10/50 = 0.2, 10/80 = 0.125
    # detections: B and A slightly shifted boxes, plus a stray one; image 2 has only a far-away box
    dets = write_jsonl(tmp_path / "dets.jsonl", [
        ("img1.jpg", [[197, 2, 277, 82], [2, 1, 102, 101], [500, 500, 520, 520]], [0.9, 0.95, 0.7],
         [b_pred, a_pred, np.zeros((5, 2))]),
        ("img2.jpg", [[0, 0, 50, 50]], [0.99], [np.zeros((5, 2))]),
    ])  # fmt: skip
    out = evaluate_landmark_set([ann], "list", tmp_path, out_dir=tmp_path / "out", detections=dets, **quiet())
    assert outcome_ok(out)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (rep["num_faces"], rep["num_matched"], rep["num_unmatched"]) == (3, 2, 1)
    assert rep["unmatched"][0]["image"] == str(tmp_path / "img2.jpg") and rep["unmatched"][0]["best_iou"] == 0.0
    io, bw = rep["inter_ocular"], rep["box_width"]
    assert io["nme"] == pytest.approx((5 * 0.125 + 0.2) / 10)
    assert bw["nme"] == pytest.approx((5 * 0.05 + 0.125) / 10)
    assert io["per_point_nme"]["left_eye"] == pytest.approx(0.0625)
    assert io["per_point_nme"]["nose"] == pytest.approx((0.125 + 0.2) / 2)
    assert bw["per_point_nme"]["nose"] == pytest.approx((0.05 + 0.125) / 2)
    # per-face mean errors: A 0.125 / 0.05, B 0.04 / 0.025 -> only A fails at 0.10 (inter-ocular)
    assert io["failure_rate"] == pytest.approx(0.5) and bw["failure_rate"] == 0.0
    assert io["failure_rate_with_unmatched"] == pytest.approx(2 / 3)
    assert bw["failure_rate_with_unmatched"] == pytest.approx(1 / 3)
    assert_png(tmp_path / "out" / "ced.png")


def test_landmarks_68_point_annotations_are_reduced_to_5(dlib_dir, tmp_path):
    xml = dlib_dir / "testing_with_face_landmarks.xml"
    records = read_annotations(xml, "dlib")
    items = [(r.path.name, r.boxes, np.ones(r.num_faces), landmarks_68_to_5(r.landmarks)) for r in records]
    dets = write_jsonl(tmp_path / "dets.jsonl", items)
    out = evaluate_landmark_set([xml], "dlib", dlib_dir, out_dir=tmp_path / "out", detections=dets, **quiet())
    assert outcome_ok(out)
    assert out.report["num_matched"] == sum(r.num_faces for r in records) and out.report["num_unmatched"] == 0
    assert out.report["inter_ocular"]["nme"] == pytest.approx(0.0, abs=1e-5)
    assert out.report["box_width"]["failure_rate"] == 0.0


def test_error_log_is_one_line(capsys):
    log = ErrorLog()
    log("a.jpg: file\nnot found")
    assert capsys.readouterr().err == "error: a.jpg: file not found\n" and len(log) == 1


def test_flat_layout_missing_images_and_hashed_split(tmp_path, capsys):
    """WIDER-style event paths read from one flat folder, absent photos left out with one counted
    line, and the hashed split picks the same photos as the training configs' split_rule: hashed."""
    from mtcnn.data.annotations import split_by_hash

    flat = tmp_path / "flat"
    flat.mkdir()
    names = [f"{k}_Parade_photo_{k}" for k in range(12)]
    lines = []
    for k, name in enumerate(names):
        lines += [f"0--Parade/{name}.jpg", "1", f"{4 + k} 6 20 24 0 0 0 0 0 0"]
        if k % 4 != 3:  # every fourth photo is absent
            cv2.imwrite(str(flat / f"{name}.jpg"), np.full((48, 64, 3), 90, np.uint8))
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(lines) + "\n")
    present = [n for k, n in enumerate(names) if k % 4 != 3]
    items = [(f"{n}.jpg", [[4 + names.index(n), 6, 24 + names.index(n), 30]], [0.9], None) for n in present]
    dets = write_jsonl(tmp_path / "dets.jsonl", items)
    options = {"images_layout": "flat", "missing_images": "skip"}
    out = evaluate_detection_set([gt], "wider", flat, out_dir=tmp_path / "all", detections=dets,
                                 reader_options=options, **quiet())
    assert outcome_ok(out)
    assert out.report["num_images_evaluated"] == 9 and out.report["ap50"] == 1.0
    assert "3 of 12 annotated images are absent and left out" in capsys.readouterr().err
    # without skip, the absent photos are errors, named
    bad = evaluate_detection_set([gt], "wider", flat, out_dir=tmp_path / "bad", detections=dets,
                                 reader_options={"images_layout": "flat"}, **quiet())
    assert bad.exit_code == 1
    val = evaluate_detection_set([gt], "wider", flat, out_dir=tmp_path / "val", detections=dets, reader_options=options,
                                 split="val", split_rule="hashed", **quiet())
    assert outcome_ok(val)
    records = read_annotations(gt, "wider", flat)
    expected = sorted(r.path.name for r in split_by_hash(records, "val") if r.path.stem in present)
    assert 0 < len(expected) < 9 and val.report["num_images_evaluated"] == len(expected)
