"""EXIF orientation is applied when reading, checked against OpenCV's own EXIF-aware decoder."""

import json

import cv2
import numpy as np
import pytest

from mtcnn.io import exif_orientation, read_image_rgb, read_image_rgb_oriented


def jpeg_with_orientation(image_bgr: np.ndarray, orientation: int, big_endian: bool = True) -> bytes:
    """A JPEG whose APP1 segment holds one EXIF tag: Orientation (0x0112, SHORT)."""
    order = "big" if big_endian else "little"
    u16 = lambda v: v.to_bytes(2, order)  # noqa: E731
    u32 = lambda v: v.to_bytes(4, order)  # noqa: E731
    tiff = (b"MM" if big_endian else b"II") + u16(42) + u32(8) + u16(1)
    tiff += u16(0x0112) + u16(3) + u32(1) + u16(orientation) + u16(0) + u32(0)
    app1 = b"Exif\x00\x00" + tiff
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = encoded.tobytes()
    return data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_opencv(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    image = cv2.GaussianBlur(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), (0, 0), 3)
    image[:8, :16] = (0, 0, 255)  # an asymmetric mark: any wrong flip or turn moves it
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(jpeg_with_orientation(image, orientation, big_endian=orientation % 2 == 0))
    got, applied = read_image_rgb_oriented(path)
    assert applied == orientation
    reference = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]  # OpenCV applies EXIF orientation here
    np.testing.assert_array_equal(got, reference)
    assert got.shape[:2] == ((40, 64) if orientation <= 4 else (64, 40))


def test_no_exif_and_not_jpeg():
    assert exif_orientation(b"\x89PNG\r\n") == 1
    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert exif_orientation(encoded.tobytes()) == 1


def test_detect_json_says_which_orientation_was_applied(tmp_path, capsys):
    import torch

    from mtcnn.commands.detect import main as detect_main
    from mtcnn.nets import build_net
    from mtcnn.weights import NET_NAMES, save_bundle

    torch.manual_seed(0)
    save_bundle({n: build_net(n) for n in NET_NAMES}, tmp_path / "w.pt")
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg_with_orientation(np.zeros((30, 50, 3), np.uint8), 6))
    assert read_image_rgb(path).shape == (50, 30, 3)
    out = tmp_path / "o.jsonl"
    assert detect_main([str(path), "--weights", str(tmp_path / "w.pt"), "--json", str(out), "--device", "cpu"]) == 0
    record = json.loads(out.read_text())
    assert record["exif_orientation"] == 6 and (record["width"], record["height"]) == (30, 50)


def test_sideways_phone_photo_finds_the_upright_faces(shared_data, original_weights, tmp_path):
    import torch

    from mtcnn.detector import MTCNN

    photo = shared_data / "dlib_faces" / "bald_guys.jpg"
    if not photo.is_file():
        pytest.skip("needs dlib_faces/bald_guys.jpg")
    upright = read_image_rgb(photo)
    stored = np.ascontiguousarray(np.rot90(upright, 1)[:, :, ::-1])  # as a camera held sideways stores it
    path = tmp_path / "sideways.jpg"
    path.write_bytes(jpeg_with_orientation(stored, 6))
    detector = MTCNN(weights=original_weights, device="cpu")
    got = detector.detect(read_image_rgb(path))[0]
    reference = detector.detect(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy())[0]  # OpenCV turns it upright
    sideways = detector.detect(stored[:, :, ::-1].copy())[0]  # what ignoring the orientation used to give
    assert len(got) >= 3 and torch.equal(got.boxes, reference.boxes)
    assert len(sideways) < len(got)
