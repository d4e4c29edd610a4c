"""One training loop for every model; tasks say what differs (see :mod:`mtcnn.training.task`)."""

from mtcnn.training.task import BatchLoader, Task

__all__ = ["BatchLoader", "Task"]
