"""Trainable MTCNN: face detection and five-point alignment in PyTorch.

Box convention everywhere: ``(x1, y1, x2, y2)`` float, 0-based pixels, width = x2 - x1.
Landmarks: ``[N, 5, 2]`` (x, y) in the order left eye, right eye, nose, left mouth corner,
right mouth corner ("left" meaning the image's left).
"""

from mtcnn.structures import Detections, Label

__all__ = ["MTCNN", "Detections", "Label"]
__version__ = "0.1.0"


def __getattr__(name):
    # The detector pulls in torch.nn modules; keep `import mtcnn` cheap for data-only workers.
    if name == "MTCNN":
        from mtcnn.detector import MTCNN

        return MTCNN
    raise AttributeError(f"module 'mtcnn' has no attribute {name!r}")
