"""One training loop for every model; tasks say what differs (see :mod:`mtcnn.training.task`).

* :mod:`.loop` — :class:`Trainer`, :func:`train` (device, DDP, AMP, exact resume, logging);
* :mod:`.mtcnn_task` — P/R/O-Net multi-task objective with OHEM; :mod:`.validation` its metrics;
* :mod:`.landmark_task` — landmark regression (L1 / L2 / wing / adaptive wing, any points);
* :mod:`.finetune` — ``init`` (start from trained weights) and ``freeze``;
* :mod:`.distributed`, :mod:`.optim`, :mod:`.curves` — the shared pieces.
"""

from mtcnn.training.curves import plot_training_curves, read_metrics
from mtcnn.training.loop import Trainer, task_for, train
from mtcnn.training.optim import PiecewiseLR, build_optimizer, parameter_groups
from mtcnn.training.task import BatchLoader, Task

__all__ = [
    "BatchLoader", "PiecewiseLR", "Task", "Trainer", "build_optimizer", "parameter_groups", "plot_training_curves",
    "read_metrics", "task_for", "train",
]
