"""The cascade's per-level report: a hand-computed oracle row, the README table line, and the
files of ``evaluate_cascade`` on a tiny list whose numbers are recomputed independently."""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from mtcnn.eval.cascade import evaluate_cascade, markdown_table, point_table

# Two faces: A (box 100 wide, eyes 40 apart) and B (A scaled ×2 and moved: 200 wide, eyes 80 apart).
GT_A = np.array([[30, 40], [70, 40], [50, 60], [35, 85], [65, 85]], dtype=np.float64)
GT = np.stack([GT_A, GT_A * 2 + 10])
BOXES = np.array([[0, 0, 100, 120], [10, 10, 210, 250]], dtype=np.float64)


def _oracle_prediction():
    pred = GT.copy()
    pred[0, 0] += (6, 9)  # A's left eye off by sqrt(117) px: 0.108 of the box, beyond 10 %
    pred[0, 1] += (3, 0)  # A's right eye off by 3 px: 0.03
    pred[1, 3] += (0, 12)  # B's left mouth corner off by 12 px: 0.06 of its 200-px box
    return pred


def test_point_table_against_hand_computed_errors():
    row = point_table(_oracle_prediction(), GT, BOXES)
    le = math.sqrt(117)
    assert row["faces"] == 2
    assert row["per_point_box"] == pytest.approx({"LE": le / 100 / 2, "RE": 0.03 / 2, "N": 0.0, "LM": 0.06 / 2, "RM": 0.0})
    assert row["mean_box"] == pytest.approx((le / 100 + 0.03 + 0.06) / 10)
    assert row["per_point_iod"] == pytest.approx({"LE": le / 40 / 2, "RE": 3 / 40 / 2, "N": 0.0, "LM": 12 / 80 / 2, "RM": 0.0})
    assert row["failure_5"] == {"LE": 0.5, "RE": 0.0, "N": 0.0, "LM": 0.5, "RM": 0.0}
    assert row["failure_5_mean"] == pytest.approx(0.2)
    assert row["failure_10"] == {"LE": 0.5, "RE": 0.0, "N": 0.0, "LM": 0.0, "RM": 0.0}
    assert row["failure_10_mean"] == pytest.approx(0.1)


def test_markdown_row_reports_mean_worst_point_and_both_failure_rates():
    line = markdown_table({"l3": point_table(_oracle_prediction(), GT, BOXES)}).splitlines()[-1]
    # err/IOD: (sqrt(117)/40 + 3/40 + 12/80) / 10 = 0.0495
    assert line == "| level 3 | 0.0198 | 0.0541 | 0.0150 | 0.0000 | 0.0300 | 0.0000 | 0.0495 | 20.0 % (50.0 %) | 10.00 % |"


def test_evaluate_cascade_writes_report_card_and_plot_matching_an_independent_run(tmp_path):
    from mtcnn.cascade import LandmarkCascade
    from mtcnn.detector import MTCNN
    from mtcnn.nets.cascade import CASCADE_NETS, build_cascade_net
    from mtcnn.stages import refine_landmarks

    g = np.random.default_rng(0)
    lines, images = [], []
    for k in range(3):
        image = cv2.GaussianBlur(g.integers(0, 256, (90, 80, 3), dtype=np.uint8), (7, 7), 0)
        cv2.imwrite(str(tmp_path / f"face{k}.jpg"), image[:, :, ::-1])
        images.append(cv2.imread(str(tmp_path / f"face{k}.jpg"))[:, :, ::-1])  # what the evaluator decodes
        left, top = 10 + k, 12 + 2 * k
        points = [left + 15, top + 20, left + 40, top + 21, left + 28, top + 35, left + 18, top + 50, left + 38, top + 50]
        lines.append(f"face{k}.jpg {left} {left + 55} {top} {top + 62} " + " ".join(map(str, points)))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")

    torch.manual_seed(0)
    cascade = LandmarkCascade({n: build_cascade_net(n) for n in CASCADE_NETS}).prepare()
    detector = MTCNN(device="cpu")
    report = evaluate_cascade(cascade, detector, tmp_path / "list.txt", tmp_path / "out", progress=False, log=lambda _: None)

    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"report.json", "report.md", "card.json", "ced_given_boxes.png"}
    assert set(report["given_boxes"]) == {"onet", "l1", "l2", "l3"} and report["num_faces"] == 3
    tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
    boxes = torch.tensor([[10 + k, 12 + 2 * k, 65 + k, 74 + 2 * k] for k in range(3)], dtype=torch.float32)
    levels = refine_landmarks(cascade, tensors, boxes, image_index=torch.arange(3))
    gt = np.array([[float(v) for v in line.split()[5:]] for line in lines]).reshape(3, 5, 2)
    for k in (1, 2, 3):
        expected = point_table(levels.level(k).numpy(), gt, boxes.numpy())
        assert report["given_boxes"][f"l{k}"]["mean_box"] == pytest.approx(expected["mean_box"], rel=1e-5)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["test"]["faces"] == 3
    assert card["test"]["given_boxes"]["level 3"]["mean_box"] == pytest.approx(report["given_boxes"]["l3"]["mean_box"], abs=1e-5)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["settings"]["cascade"]["precision"] == "float32"
