"""WIDER FACE training photos as a source: the hashed split, the flat image layout of a partial copy,
absent images left out on request, and the official protocol's settings by face height."""

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn.config import data_root
from mtcnn.config.data import SourceConfig
from mtcnn.config.paths import resolve_path
from mtcnn.data.annotations import ImageAnnotation, split_by_hash
from mtcnn.data.generate import GenerationError, load_source
from mtcnn.eval.wider import HEIGHT_SETTINGS, wider_ground_truth_from_records


def _rec(name: str, boxes=None, ignore=None) -> ImageAnnotation:
    boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool)
    return ImageAnnotation(path=Path(name), boxes=boxes, landmarks=np.zeros((len(boxes), 0, 2)), ignore=ignore)


def test_split_by_hash_follows_crc32_of_the_file_name_alone():
    names = [f"0--Parade/0_Parade_{k}.jpg" for k in range(400)]
    recs = [_rec(n) for n in names]
    train = split_by_hash(recs, "train", 0.8)
    val = split_by_hash(recs, "val", 0.8)
    # An independent statement of the rule, per name.
    expected_val = [n for n in names if zlib.crc32(Path(n).name.encode()) / 2**32 >= 0.8]
    assert [str(r.path) for r in val] == expected_val
    assert len(train) + len(val) == len(recs) and not {r.path for r in train} & {r.path for r in val}
    assert 0.1 < len(val) / len(recs) < 0.3
    # The folder does not matter, and neither do the other records: a subset splits the same way.
    moved = [_rec("elsewhere/" + Path(n).name) for n in names[::3]]
    assert [r.path.name for r in split_by_hash(moved, "val", 0.8)] == [Path(n).name for n in names[::3] if n in expected_val]
    assert split_by_hash(recs, "val", 1.0) == [] and len(split_by_hash(recs, "train", 0.0)) == 0
    with pytest.raises(ValueError):
        split_by_hash(recs, "test")


def _wider_file(tmp_path: Path) -> Path:
    text = (
        "0--Parade/0_Parade_a.jpg\n1\n10 10 30 40 0 0 0 0 0 0\n"
        "1--Handshaking/1_Handshaking_b.jpg\n2\n5 5 20 20 0 0 0 0 0 0\n40 5 20 20 0 0 0 1 0 0\n"
        "2--Demonstration/2_Demonstration_c.jpg\n1\n0 0 8 8 0 0 0 0 0 0\n"
    )
    path = tmp_path / "wider_face_train_bbx_gt.txt"
    path.write_text(text)
    return path


def test_flat_layout_and_absent_images_skipped(tmp_path, capsys):
    gt = _wider_file(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0_Parade_a.jpg", "1_Handshaking_b.jpg"):  # the third photo is absent
        cv2.imwrite(str(photos / name), np.zeros((64, 64, 3), np.uint8))
    src = SourceConfig(name="w", format="wider", path=str(gt), images_root=str(photos), images_layout="flat",
                       missing_images="skip")
    recs = load_source(src)
    assert [r.path for r in recs] == [photos / "0_Parade_a.jpg", photos / "1_Handshaking_b.jpg"]
    np.testing.assert_array_equal(recs[1].boxes, [[5, 5, 25, 25], [40, 5, 60, 25]])
    np.testing.assert_array_equal(recs[1].ignore, [False, True])  # WIDER 'invalid'
    assert "1 of 3 annotated images are absent" in capsys.readouterr().err
    # Without the setting an absent image stays in (the generator then names it as unreadable).
    kept = load_source(SourceConfig(name="w", format="wider", path=str(gt), images_root=str(photos), images_layout="flat"))
    assert len(kept) == 3 and kept[2].path == photos / "2_Demonstration_c.jpg"


def test_missing_annotation_file_is_one_line(tmp_path):
    with pytest.raises(GenerationError, match="source 'w': .*absent.txt not found"):
        load_source(SourceConfig(name="w", format="wider", path=str(tmp_path / "absent.txt")))


def test_wider_placeholder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTCNN_WIDER", str(tmp_path))
    assert resolve_path("{wider}/train") == tmp_path / "train"


def test_settings_by_face_height_exact_case():
    # heights 60, 40, 20, 5 and an invalid 60: easy >= 51, medium >= 31, hard >= 11, never the invalid one
    boxes = [[0, 0, 50, 60], [0, 0, 30, 40], [0, 0, 20, 20], [0, 0, 5, 5], [100, 0, 150, 60]]
    rec = _rec("train/0_Parade_x.jpg", boxes, [False, False, False, False, True])
    gt = wider_ground_truth_from_records([rec])
    assert gt.events == ["train"] and gt.images == [["0_Parade_x"]]
    np.testing.assert_array_equal(gt.boxes[0][0][:2], [[0, 0, 50, 60], [0, 0, 30, 40]])  # x, y, w, h
    assert gt.keep["easy"][0][0].tolist() == [0]
    assert gt.keep["medium"][0][0].tolist() == [0, 1]
    assert gt.keep["hard"][0][0].tolist() == [0, 1, 2]


VAL_GT = data_root() / "wider_face" / "eval_tools" / "ground_truth"
VAL_TXT = data_root() / "wider_face" / "wider_face_split" / "wider_face_val_bbx_gt.txt"


@pytest.mark.data
@pytest.mark.skipif(not (VAL_GT.is_dir() and VAL_TXT.is_file()), reason="WIDER FACE annotations not in MTCNN_DATA")
def test_height_settings_reproduce_the_official_val_membership():
    """The cuts stand in for the EdgeBox-based keep lists on training photos; on validation, where the
    official lists exist, they must agree for nearly every face (docs/evaluation.md gives the figures)."""
    from mtcnn.data.wider import read_wider
    from mtcnn.eval.wider import load_wider_ground_truth

    official = load_wider_ground_truth(VAL_GT)
    ours = wider_ground_truth_from_records(read_wider(VAL_TXT, images_root="/nowhere"))
    index = {(e, name): (ei, ii) for ei, e in enumerate(ours.events) for ii, name in enumerate(ours.images[ei])}
    for setting, floor in (("easy", 0.995), ("medium", 0.99), ("hard", 0.975)):
        agree = total = 0
        for e, i, event, name in official.iter_images():
            ei, ii = index[(event, name)]
            m = official.boxes[e][i].shape[0]
            if ours.boxes[ei][ii].shape[0] != m:
                continue
            a = np.zeros(m, bool)
            a[official.keep[setting][e][i]] = True
            b = np.zeros(m, bool)
            b[ours.keep[setting][ei][ii]] = True
            agree += int((a == b).sum())
            total += m
        assert agree / total >= floor, (setting, agree / total, HEIGHT_SETTINGS)
