"""Reading images at the edge of the library: one place where files become RGB uint8 arrays.

Every failure raises :class:`ImageReadError` whose message is one line naming the file and the
problem, so command-line tools can print it and carry on with the next file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from mtcnn.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(InputError, OSError):
    """An image could not be turned into an RGB uint8 array; ``str(e)`` is a one-line message."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def to_rgb_uint8(image: np.ndarray, *, source: str = "<array>", channel_order: str = "rgb") -> np.ndarray:
    """Normalise an array to H×W×3 RGB uint8: grey is replicated, alpha dropped, 16-bit scaled."""
    if not isinstance(image, np.ndarray):
        raise ImageReadError(source, f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageReadError(source, f"expected an H×W, H×W×3 or H×W×4 image, got shape {tuple(image.shape)}")
    if image.dtype == np.uint16:
        # 16-bit PNGs: keep the most significant byte, as any 8-bit viewer would show them.
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 255):
            raise ImageReadError(source, "float image values must lie in [0, 255]")
        image = np.clip(np.nan_to_num(image), 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(source, f"unsupported pixel type {image.dtype}")
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 4:
        image = image[:, :, :3]
    if channel_order == "bgr":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H×W×3 RGB uint8, upright: a JPEG's EXIF orientation is applied
    (a phone photo stored sideways comes out as it is shown), see :func:`read_image_rgb_oriented`.

    Handles grey, 4-channel and 16-bit files. Raises :class:`ImageReadError` for a missing,
    unreadable or corrupt file.
    """
    return read_image_rgb_oriented(path)[0]


def read_image_rgb_oriented(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """:func:`read_image_rgb` and the EXIF orientation (1-8, 1 = stored upright) it applied."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from None
    if raw.size == 0:
        raise ImageReadError(path, "file is empty")
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)  # never rotates: the orientation is ours to apply
    if image is None:
        raise ImageReadError(path, "not a readable image (corrupt or unsupported format)")
    orientation = exif_orientation(raw[: 1 << 16].tobytes())
    image = to_rgb_uint8(image, source=str(path), channel_order="bgr")
    return np.ascontiguousarray(apply_orientation(image, orientation)), orientation


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The upright view of an H×W×C image stored with EXIF ``orientation`` (1-8)."""
    if orientation in (5, 6, 7, 8):
        image = image.transpose(1, 0, 2)
    flip_rows, flip_cols = {2: (False, True), 3: (True, True), 4: (True, False), 6: (False, True),
                            7: (True, True), 8: (True, False)}.get(orientation, (False, False))
    return image[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1-8) of an encoded JPEG; 1 when absent, unreadable or not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return 1
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no EXIF before the pixels
            return 1
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[i + 10 : i + 2 + length])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            value = int.from_bytes(entry[8:10], order)  # a SHORT sits at the start of the value field
            return value if 1 <= value <= 8 else 1
    return 1


def write_image_rgb(path: str | os.PathLike, image: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 image atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise ImageReadError(path, "could not encode image")
    tmp = path.with_name(f".{path.name}.tmp")
    buf.tofile(tmp)
    os.replace(tmp, path)


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand folders (sorted, non-recursive) into image files; files are kept as given."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
        else:
            out.append(p)
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_image_batches(
    paths: Sequence[str | os.PathLike], batch_size: int, on_error: Callable[[Path, ImageReadError], None],
    orientations: dict[Path, int] | None = None,
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Read ``paths`` in order as batches of up to ``batch_size`` (path, RGB image) pairs.

    ``orientations``, when given, receives the EXIF orientation applied to each image read.

    A file that cannot be read goes to ``on_error`` and is left out of its batch; empty batches
    are not yielded, so one bad file never stops the others.
    """
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start : start + batch_size]:
            try:
                image, orientation = read_image_rgb_oriented(path)
                batch.append((path, image))
                if orientations is not None:
                    orientations[path] = orientation
            except ImageReadError as e:
                on_error(path, e)
        if batch:
            yield batch
