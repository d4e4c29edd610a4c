"""Evaluate the landmark zoo on its test splits and write the figures the README quotes.

* :func:`evaluate_kp68` — 68-point models on udacity68 ``test`` (770 faces, crop = the points'
  extent + 10 %): NME (outer eye corners), failure rate, CED AUC, parameters, file size and
  faces per second; one CED plot for all models, mosaics of the best and worst 100 faces each.
  Optionally also on the 300-W hashed validation split (:func:`w300_sources` ``"val"``: 402 faces of
  the training sets on disk, cropped the same way; never the 300-W test sets): the same figures
  plus the median NME, under the key ``w300_val`` of ``kp68_results.json``, CED plot ``ced_68_300w.png``.
* :func:`evaluate_mobilenet_cascade` — the MobileNet-V2 cascade on CNN_FacePoint ``test``
  (3,466 faces, the annotated boxes): the 5-point table (per-point error / box width, failures,
  inter-ocular NME) for level 1 and level 2, and faces per second on whole images (the
  detector's path: crop + level 1 + crop + level 2). Optionally also on the 300-W hashed validation
  split reduced to five points (:func:`w300_sources` ``"val", five=True``: each face's tight box derived
  from its points, as the 5-point training sources cut them): error / inter-ocular (eye-centre)
  distance, mean, median and share of faces over 0.10, level 1 and the cascade, under the key
  ``w300_val`` of ``mobilenet_results.json``, CED plot ``ced_mobilenet_300w.png``.
* Every model's error also by head pose (``pose``: |roll| and |yaw proxy| bins of the ground truth,
  :func:`mtcnn.eval.landmarks.pose_breakdown`), with one pose CED plot per model (per level).

Speeds are faces per CPU-second with one thread (process time, so other jobs on a shared machine do
not distort them); they are indicative, not benchmarks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from mtcnn.config.data import SourceConfig
from mtcnn.data.face_crops import FaceCrops, from_reference
from mtcnn.eval.keypoints import (
    FIVE_POINT_HEADER, best_and_worst, face_mosaic, five_point_row, report_5, report_68, write_png,
)
from mtcnn.eval.landmarks import pose_breakdown
from mtcnn.eval.plots import plot_ced, plot_pose_ced
from mtcnn.io import read_image_rgb
from mtcnn.landmark_models import KeypointModel, MobileNetCascade, load_landmark_model


def _params(*nets) -> int:
    return int(sum(p.numel() for n in nets for p in n.parameters()))


def _faces_per_second(fn, faces: int, repeats: int = 3) -> float:
    """Faces per CPU-second of this process (one thread): wall time is unreliable on a shared machine."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return faces / max(best, 1e-9)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


#: the 300-W training sets as the data pipeline reads them (all 68 points, 0-based); the test sets are never read
W300_FOLDERS = (("300w_lfpw", "{w300}/lfpw/trainset"), ("300w_helen", "{w300}/helen/trainset"), ("300w_afw", "{w300}/afw/afw"))
W300_KEY = "w300_val"


def w300_sources(split: str, five: bool = False) -> list[SourceConfig]:
    """The three 300-W training folders, ``split`` (train / val) of their hashed split (as
    ``train_kp68_v2.yaml``; LFPW's public copy lacks 6 images, which are skipped). ``five``: the
    project's five points with the tight box derived from them (``points: five, boxes: from_points``,
    as ``train_mobilenet_l1_v2.yaml``'s sources)."""
    extra = {"points": "five", "boxes": "from_points"} if five else {}
    return [SourceConfig(name=name, format="pts68", path=path, split=split, split_rule="hashed", missing_images="skip",
                         **extra)
            for name, path in W300_FOLDERS]


def _kp68_report(model: KeypointModel, crops: FaceCrops):
    pred_ref = model.predict_crops(crops).numpy()
    pred_px, gt_px = crops.image_points(pred_ref), crops.image_points(crops.points.numpy())
    rep = report_68(pred_px, gt_px)
    pose = pose_breakdown(rep.sample_errors, gt_px, rep.normaliser, rep.failure_threshold)
    return pred_ref, rep, pose


def evaluate_kp68(models: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, load_test, mosaics: bool = True,
                  load_w300_val=None) -> dict:
    """``models``: label → weights file; ``load_test(spec)`` returns that net's test :class:`FaceCrops`;
    ``load_w300_val(spec)`` (optional) the 300-W validation faces, reported under ``results["w300_val"]``."""
    if load_w300_val is not None and W300_KEY in models:
        raise ValueError(f"a model label cannot be {W300_KEY!r} (the key of the 300-W results)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, curves, w300, w300_curves, w300_faces = {}, {}, {}, {}, 0
    for label, path in models.items():
        model = load_landmark_model(path)
        if not isinstance(model, KeypointModel) or model.num_landmarks != 68:
            raise ValueError(f"{path}: not a 68-point model")
        crops: FaceCrops = load_test(model.spec)
        pred_ref, rep, pose = _kp68_report(model, crops)
        batch = crops.subset(np.arange(min(256, len(crops))))
        fps = _faces_per_second(lambda: model.predict_crops(batch), len(batch))
        results[label] = {
            "weights": str(path), "net": model.spec.name, "params": _params(model.net),
            "file_bytes": Path(path).stat().st_size, "faces_per_second_1_thread": round(fps, 1),
            **rep.to_dict(curves=False), "median_nme": float(np.median(rep.sample_errors)), "pose": pose.to_dict(),
        }
        if load_w300_val is not None:
            faces: FaceCrops = load_w300_val(model.spec)
            _, wrep, wpose = _kp68_report(model, faces)
            w300[label] = {"weights": str(path), **wrep.to_dict(curves=False),
                           "median_nme": float(np.median(wrep.sample_errors)), "pose": wpose.to_dict()}
            w300_curves[f"{label} (NME {wrep.nme:.4f})"] = (wrep.ced_x, wrep.ced_y)
            w300_faces = len(faces)
        curves[f"{label} (NME {rep.nme:.4f})"] = (rep.ced_x, rep.ced_y)
        plot_pose_ced(pose, f"udacity68 test, {label}: 68-point NME (outer eye corners) by head pose",
                      {"faces": len(crops)}, out / f"{label}_ced_pose.png")
        if mosaics:
            errors = rep.sample_errors
            best, worst = best_and_worst(errors, 100)
            write_png(out / f"{label}_best100.png", face_mosaic(crops, pred_ref, best, errors))
            write_png(out / f"{label}_worst100.png", face_mosaic(crops, pred_ref, worst, errors))
    plot_ced(curves, "udacity68 test: 68-point NME (outer eye corners)", {"faces": len(crops)}, out / "ced_68.png")
    if load_w300_val is not None:
        plot_ced(w300_curves, "300-W training sets, hashed validation split: 68-point NME (outer eye corners)",
                 {"faces": w300_faces}, out / "ced_68_300w.png")
        results[W300_KEY] = w300
    _write_json(out / "kp68_results.json", results)
    return results


def _whole_image_speed(cascade: MobileNetCascade, crops: FaceCrops, count: int = 200) -> float:
    """Faces per second of the detector path on ``count`` test images (one face each)."""
    paths = crops.paths[:count]
    images = [torch.from_numpy(read_image_rgb(p)).permute(2, 0, 1) for p in paths]
    boxes = torch.from_numpy(crops.ref_boxes[: len(paths)]).float()
    index = torch.arange(len(paths))
    return _faces_per_second(lambda: cascade.predict(images, boxes, index), len(paths))


def _mobilenet_w300(cascade: MobileNetCascade, faces: FaceCrops, out: Path) -> dict:
    """Both levels on the 300-W validation faces (5 points, reference = the box from the points):
    error / inter-ocular distance, the box-width figure beside it, pose breakdown, one CED plot."""
    p1, p2 = cascade.predict_crops(faces)
    boxes = faces.ref_boxes.astype(np.float64)
    gt = from_reference(faces.points.double().numpy(), boxes)
    result, curves = {}, {}
    for level, pred in ((1, p1), (2, p2)):
        reps = report_5(from_reference(pred.double().numpy(), boxes), gt, boxes)
        io = reps["inter_ocular"]
        pose = pose_breakdown(io.sample_errors, gt, "inter-ocular", io.failure_threshold)
        result[f"level{level}"] = {**io.to_dict(curves=False), "median_nme": float(np.median(io.sample_errors)),
                                   "box_width_nme": float(reps["box_width"].nme), "pose": pose.to_dict()}
        curves[f"level {level} (NME {io.nme:.4f})"] = (io.ced_x, io.ced_y)
    plot_ced(curves, "300-W validation split: MobileNet-V2 cascade (error / inter-ocular)", {"faces": len(faces)},
             out / "ced_mobilenet_300w.png")
    return result


def evaluate_mobilenet_cascade(path: str | os.PathLike, out_dir: str | os.PathLike, test: FaceCrops,
                               w300_val: FaceCrops | None = None) -> dict:
    """The 5-point table rows of both levels on ``test`` (CNN_FacePoint test crops); with ``w300_val``
    (the 300-W validation faces cut for the cascade) also its figures there, ``result["w300_val"]``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cascade = load_landmark_model(path)
    if not isinstance(cascade, MobileNetCascade):
        raise ValueError(f"{path}: not a MobileNet-V2 cascade")
    p1, p2 = cascade.predict_crops(test)
    boxes = test.ref_boxes.astype(np.float64)
    gt = from_reference(test.points.double().numpy(), boxes)
    result, rows, curves = {}, [], {}
    for level, pred in ((1, p1), (2, p2)):
        reps = report_5(from_reference(pred.double().numpy(), boxes), gt, boxes)
        pose = pose_breakdown(reps["box_width"].sample_errors, gt, "box-width", reps["box_width"].failure_threshold)
        result[f"level{level}"] = {**{k: r.to_dict(curves=False) for k, r in reps.items()}, "pose": pose.to_dict()}
        plot_pose_ced(pose, f"CNN_FacePoint test: MobileNet-V2 cascade level {level}, error / box width by head pose",
                      {"faces": len(test)}, out / f"ced_pose_mobilenet_level{level}.png", x_max=0.1)
        rows.append(five_point_row(f"MobileNet-V2 cascade, level {level}", reps))
        curves[f"level {level}"] = (reps["box_width"].ced_x, reps["box_width"].ced_y)
    state_bytes = sum(t.numel() * 4 for n in (cascade.level1, cascade.level2) for t in n.state_dict().values()
                      if t.is_floating_point())
    result.update({
        "weights": str(path), "faces": len(test), "params": _params(cascade.level1, cascade.level2),
        "float32_bytes": state_bytes, "file_bytes": Path(path).stat().st_size,
        "faces_per_second_1_thread": round(_whole_image_speed(cascade, test), 1),
        "table": "\n".join([FIVE_POINT_HEADER, *rows]),
    })
    if w300_val is not None:
        result[W300_KEY] = _mobilenet_w300(cascade, w300_val, out)
    plot_ced(curves, "CNN_FacePoint test: MobileNet-V2 cascade (error / box width)", {"faces": len(test)},
             out / "ced_mobilenet.png")
    _write_json(out / "mobilenet_results.json", result)
    return result


def evaluate_kp68_with_detector(model_path: str | os.PathLike, detector, test: FaceCrops, match_iou: float = 0.3,
                                passes: int = 2) -> dict:
    """68 points from the detector's boxes instead of the annotations' extent.

    Each test face is matched to the detection of highest IoU with its reference square (the
    points' extent + 10 %); the model runs on that detection's box, then ``passes − 1`` times on
    the square around its own points. NME over the matched faces; unmatched faces are counted.
    """
    from mtcnn.ops.boxes import box_iou

    model = load_landmark_model(model_path, passes=passes)
    gt = test.image_points(test.points.numpy())
    pred = np.full_like(gt, np.nan)
    paths = sorted(set(test.paths))
    by_path = {p: [i for i, q in enumerate(test.paths) if q == p] for p in paths}
    for path in paths:
        image = read_image_rgb(path)
        det = detector.detect(image)[0]
        for i in by_path[path]:
            if len(det) == 0:
                continue
            iou = box_iou(torch.from_numpy(test.ref_boxes[i : i + 1]).float(), det.boxes)[0]
            best = int(iou.argmax())
            if float(iou[best]) >= match_iou:
                tensor = torch.from_numpy(image).permute(2, 0, 1)
                pred[i] = model.predict([tensor], det.boxes[best : best + 1], torch.zeros(1, dtype=torch.long))[0].numpy()
    matched = np.isfinite(pred).all(axis=(1, 2))
    rep = report_68(pred[matched], gt[matched])
    pose = pose_breakdown(rep.sample_errors, gt[matched], rep.normaliser, rep.failure_threshold)
    return {"weights": str(model_path), "passes": passes, "faces": len(test), "matched": int(matched.sum()),
            "match_iou": match_iou, **rep.to_dict(curves=False), "pose": pose.to_dict()}


def fit_detector_box_adapter(detector, records, reference: str, expand: float, match_iou: float = 0.3) -> dict:
    """Offsets that move the detector's boxes onto the boxes a landmark model was trained on
    (:func:`mtcnn.data.face_crops.reference_boxes` with ``reference`` / ``expand``: the annotated box
    for the 5-point models, the points' extent + 10 % for the 68-point ones): the median per side,
    in fractions of the detector box (:func:`mtcnn.cascade.fit_box_adapter`), over every annotated
    face a detection overlaps at IoU ≥ ``match_iou``. Fit it on training faces, never on the faces
    the model is evaluated on."""
    from mtcnn.cascade import fit_box_adapter
    from mtcnn.data.face_crops import reference_boxes
    from mtcnn.io import read_image_rgb
    from mtcnn.ops.boxes import box_iou

    found, wanted, faces = [], [], 0
    for rec in records:
        if rec.num_faces == 0:
            continue
        target = torch.from_numpy(reference_boxes(rec, reference, expand)).float()
        faces += len(target)
        dets = detector.detect(read_image_rgb(rec.path))[0]
        if len(dets) == 0:
            continue
        iou = box_iou(target, dets.boxes.float())
        best, k = iou.max(dim=1)
        hit = best >= match_iou
        found.append(dets.boxes.float()[k[hit]])
        wanted.append(target[hit])
    if not found:
        raise ValueError(f"no detection overlaps any of the {faces} faces at IoU >= {match_iou}")
    det_boxes, targets = torch.cat(found), torch.cat(wanted)
    offsets = fit_box_adapter(det_boxes.double(), targets.double())
    return {"offsets": [round(v, 5) for v in offsets], "faces": faces, "matched": int(len(det_boxes)),
            "reference": reference, "expand": expand}
