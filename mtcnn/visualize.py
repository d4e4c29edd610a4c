"""Drawing detections on images (boxes, scores, landmarks: five in colours, any other number as dots)."""

from __future__ import annotations

import cv2
import numpy as np

from mtcnn.structures import Detections

# One colour per landmark: eyes, nose, mouth corners (RGB).
LANDMARK_COLOURS = ((0, 255, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (255, 255, 0))
DENSE_POINT_COLOUR = (255, 64, 64)


def draw_detections(image: np.ndarray, detections: Detections, box_colour=(0, 255, 0), labels=None) -> np.ndarray:
    """A copy of RGB ``image`` with each face's box, score and landmarks drawn; ``labels`` (one
    string per face, e.g. track ids) are written before the scores."""
    canvas = np.ascontiguousarray(image.copy())
    scale = max(1, round(max(canvas.shape[:2]) / 640))
    boxes = detections.boxes.detach().cpu().numpy()
    scores = detections.scores.detach().cpu().numpy()
    landmarks = detections.landmarks.detach().cpu().numpy()
    labels = [""] * len(boxes) if labels is None else [f"{label} " for label in labels]
    for box, score, points, label in zip(boxes, scores, landmarks, labels):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), box_colour, scale)
        cv2.putText(canvas, f"{label}{score:.2f}", (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, box_colour, scale)
        if len(points) == len(LANDMARK_COLOURS):
            for (x, y), colour in zip(points, LANDMARK_COLOURS):
                cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * scale, colour, -1)
        else:  # e.g. 68 points: small dots, one colour
            for x, y in points:
                cv2.circle(canvas, (int(round(x)), int(round(y))), scale, DENSE_POINT_COLOUR, -1)
    return canvas
