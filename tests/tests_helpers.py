from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def bright_face_photo(path: Path, shape: tuple[int, int], boxes, fill: int, rng):
    """A dark noisy photo with each box painted ``fill`` (the synthetic 'faces' the generator and
    mining tests detect with random-weight nets), written to ``path``; returns its annotation
    (two-point-free, nothing ignored)."""
    import cv2
    import numpy as np

    from mtcnn.data.annotations import ImageAnnotation

    boxes = np.asarray(boxes, np.float32)
    image = rng.integers(0, 80, (*shape, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        image[y1:y2, x1:x2] = fill
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return ImageAnnotation(path=path, boxes=boxes, landmarks=np.zeros((len(boxes), 0, 2), np.float32),
                           ignore=np.zeros(len(boxes), bool))
