"""Typed training configuration (SPEC §3, §4, §11), validated by :mod:`mtcnn.config`.

``train_{pnet,rnet,onet}.yaml`` (shipped in ``mtcnn/config/defaults/``) are checked against :class:`TrainConfig`; a
``key=value`` override such as ``optim.lr=0.01`` goes through the same checks, so an unknown
key (``optim.lrr``) fails with a "did you mean" and a ratio outside ``[0, 1]``
(``loss.ohem_keep_ratio=1.5``) with the range, before any work starts.

Defaults left as ``null`` depend on the net: ``epochs`` (P 30 / R 22 / O 22),
``val.threshold`` (the detector's stage threshold: P 0.6, R 0.7, O 0.7) and
``loss.weights`` (cls : box : landmark = 1 : 0.5 : 0.5 for P/R, 1 : 0.5 : 1 for O);
:meth:`TrainConfig.resolved` fills them in. ``steps_per_epoch: null`` means
``ceil(training samples / batch_size)`` (SPEC §4: boundaries = epoch · N / 384 steps).

:class:`LandmarkTrainConfig` is the schema of a landmark-regression run (any registered net with a
landmark head, any number of points; :mod:`mtcnn.training.landmark_task`). Both share the
optimiser, checkpoint, log and debug sections.

Fine-tuning (every run config, :class:`RunConfig`): ``init`` names the weights a run starts from
(``default``: the shipped ones, ``original``, or a path) and ``freeze`` keeps layers fixed for the
first steps; see :mod:`mtcnn.training.finetune`.

Paths may use the ``{gen}`` and ``{data}`` placeholders of :func:`mtcnn.config.paths.resolve_path`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from mtcnn.config.core import bounded

DEFAULT_EPOCHS = {"pnet": 30, "rnet": 22, "onet": 22}
# SPEC §11 detector thresholds 0.6 / 0.7 / 0.7.
DEFAULT_VAL_THRESHOLD = {"pnet": 0.6, "rnet": 0.7, "onet": 0.7}
# SPEC §3: cls : box : landmark.
DEFAULT_LOSS_WEIGHTS = {"pnet": (1.0, 0.5, 0.5), "rnet": (1.0, 0.5, 0.5), "onet": (1.0, 0.5, 1.0)}


@dataclass
class KindFiles:
    """Per-kind file lists that replace ``train`` / ``val`` for that kind (null: use the main list).

    Example: landmark samples generated into their own file,
    ``landmark: ["{gen}/samples/landmark12_train.h5"]``.
    """

    pos: list[str] | None = None
    part: list[str] | None = None
    neg: list[str] | None = None
    landmark: list[str] | None = None


@dataclass
class Composition:
    """Samples of each kind per (global) batch; all null = ``composition_for(net, batch_size)``."""

    pos: int | None = bounded(None, 0, None)
    part: int | None = bounded(None, 0, None)
    neg: int | None = bounded(None, 0, None)
    landmark: int | None = bounded(None, 0, None)


@dataclass
class OversampleRule:
    """Draw the samples cut from source images whose path matches ``pattern`` (shell-style,
    e.g. ``"*/face_mask/*"``) ``factor`` times as often (a source too rare in the mix)."""

    pattern: str
    factor: int = bounded(2, 1, 1000, help="times each matching sample is drawn per cycle of its kind")


@dataclass
class DataSection:
    """Sample files (HDF5 written by :class:`mtcnn.data.h5.SampleWriter`) and loader settings.

    Every kind's rows are concatenated across the files listed (in order); a kind listed in
    ``train_by_kind`` / ``val_by_kind`` is read only from those files.
    """

    train: str | list[str] = field(default_factory=lambda: ["{gen}/samples/pnet_train.h5"])
    val: str | list[str] | None = field(default_factory=lambda: ["{gen}/samples/pnet_val.h5"])
    train_by_kind: KindFiles = field(default_factory=KindFiles)
    val_by_kind: KindFiles = field(default_factory=KindFiles)
    composition: Composition = field(default_factory=Composition)
    num_workers: int = bounded(2, 0, 64, help="DataLoader worker processes per rank")
    cache_mb: int = bounded(
        1024, 0, None, help="hold the training samples in RAM when they take at most this many MiB (0: never)"
    )
    flip: bool = True
    color_jitter: bool = True
    grayscale_prob: float = bounded(0.0, 0.0, 1.0, help="chance a sample is turned grey (grey / infrared photos)")
    blur_prob: float = bounded(0.0, 0.0, 1.0, help="chance a sample is blurred (out-of-focus, upscaled faces)")
    mask_prob: float = bounded(0.0, 0.0, 1.0, help="chance a positive or part sample gets a synthetic face mask (masked faces)")
    occlusion_prob: float = bounded(0.0, 0.0, 1.0, help="chance a sample gets a rectangle of 10-35 % of its area in a "
                                    "flat colour or noise (hands, objects; landmark samples: never over their points)")
    motion_blur_prob: float = bounded(0.0, 0.0, 1.0, help="chance of a motion blur 3-7 px long at 24 px, any angle (shake, movement)")
    noise_prob: float = bounded(0.0, 0.0, 1.0, help="chance of Gaussian sensor noise, sigma 2-12 grey levels (low light)")
    tone_prob: float = bounded(0.0, 0.0, 1.0, help="chance of low contrast (x0.3-1) and a gamma of 0.5-2 (haze, faded scans)")
    resample_prob: float = bounded(0.0, 0.0, 1.0, help="chance a sample is shrunk 2-4x and enlarged back (small, soft faces)")
    jpeg_prob: float = bounded(0.0, 0.0, 1.0, help="chance a sample is JPEG-compressed at quality 10-60 (web photos)")
    oversample: list[OversampleRule] = field(default_factory=list)


@dataclass
class OptimSection:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = bounded(0.001, 0.0, 10.0, help="base learning rate (SPEC §4: 0.001)")
    momentum: float = bounded(0.9, 0.0, 1.0, help="SGD momentum")
    nesterov: bool = False
    betas: tuple[float, float] = bounded((0.9, 0.999), 0.0, 1.0, help="Adam betas ([S]: 0.8, 0.999)")
    weight_decay: float = bounded(0.0005, 0.0, 1.0, help="L2 on conv/linear weights only")
    lr_boundaries: list[int] = bounded([6, 14, 20], 0, None, help="epochs where the LR is multiplied by lr_gamma")
    lr_gamma: float = bounded(0.1, 0.0, 1.0)


@dataclass
class LossWeights:
    """Task weights; a null weight takes the net's SPEC §3 default."""

    cls: float | None = bounded(None, 0.0, None)
    box: float | None = bounded(None, 0.0, None)
    landmark: float | None = bounded(None, 0.0, None)


@dataclass
class LossSection:
    ohem_keep_ratio: float = bounded(0.7, 0.0, 1.0, help="fraction of the hardest pos+neg kept (SPEC §3)")
    weights: LossWeights = field(default_factory=LossWeights)
    # SPEC §3's squared error has a gradient that fades as the points converge; l1 and wing
    # (in input pixels) keep pulling on the last few per cent. Validation reports the squared error.
    landmark_kind: Literal["l2", "l1", "wing"] = "l2"


@dataclass
class ValSection:
    enabled: bool = True
    every_epochs: int = bounded(1, 1, None)
    threshold: float | None = bounded(None, 0.0, 1.0, help="face-probability threshold; null: the stage's detector threshold")
    batch_size: int = bounded(2048, 1, None)
    max_per_kind: int | None = bounded(None, 1, None, help="validate on the first N samples of each kind")
    num_images: int = bounded(16, 0, 256, help="validation crops drawn to TensorBoard each epoch")


@dataclass
class CheckpointSection:
    every_steps: int = bounded(0, 0, None, help="also write last.pt every N steps (0: epoch ends only)")


@dataclass
class LogSection:
    tensorboard: bool = True
    every_steps: int = bounded(10, 1, None, help="TensorBoard scalars every N steps")
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass
class DebugSection:
    stop_after_steps: int | None = bounded(
        None, 1, None, help="write last.pt after this many steps, then hard-exit (os._exit(3)); for resume tests"
    )
    save_rank_weights: bool = False  # every rank writes <out>/rank<r>_weights.pt at the end (DDP tests)


@dataclass
class FreezeSection:
    """Layers kept fixed at the start of a run (fine-tuning, :mod:`mtcnn.training.finetune`):
    parameter-name prefixes of the net (``body.0``, ``cls``, ``features``) or ``trunk`` (every
    layer but the heads), for the first ``steps`` optimiser steps (null: the whole run)."""

    layers: list[str] = field(default_factory=list)
    steps: int | None = bounded(None, 1, None, help="optimiser steps the layers stay frozen; null: the whole run")


@dataclass
class RunConfig:
    """What every training run has, whatever its task (the training loop reads these)."""

    net: str = "pnet"
    out: str = "{runs}/pnet"
    seed: int = bounded(0, 0, None)
    # The weights the net starts from (mtcnn.training.finetune): null = random initialisation;
    # default = the shipped weights of this net; original = the converted original MTCNN weights
    # (P/R/O-Net); or a checkpoint, bundle, last.pt or run folder path ({runs}, {gen} ... allowed).
    init: str | None = None
    freeze: FreezeSection = field(default_factory=FreezeSection)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    threads: int | None = bounded(None, 1, 1024, help="torch CPU threads per process; null: torch default")
    amp: bool = True  # automatic mixed precision on CUDA (never on CPU)
    # bfloat16 autocast of the forward pass on a CPU (AVX-512 BF16 / AMX); losses, gradients' master
    # copies and validation stay float32. O-Net, 1 thread: 1.36x alone, 2.2x with channels_last.
    cpu_bf16: bool = False
    # NHWC model and batches: oneDNN's fast convolution layout on a CPU (O-Net, 1 thread: 1.6x).
    channels_last: bool = False
    steps_per_epoch: int | None = bounded(None, 1, None)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    debug: DebugSection = field(default_factory=DebugSection)

    def __post_init__(self) -> None:
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r} must be auto, cpu, cuda or cuda:N")
        bounds = list(self.optim.lr_boundaries)
        if bounds != sorted(bounds):
            raise ValueError(f"optim.lr_boundaries={bounds} must be increasing")
        if not self.data.train:  # every concrete run config has a data section
            raise ValueError("data.train must name at least one sample file")


@dataclass
class TrainConfig(RunConfig):
    """One training run of one MTCNN net. See the module docstring for the net-dependent defaults."""

    net: Literal["pnet", "rnet", "onet"] = "pnet"
    epochs: int | None = bounded(None, 1, None)
    batch_size: int = bounded(384, 6, None, help="global batch (split evenly across DDP ranks)")
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    val: ValSection = field(default_factory=ValSection)

    def resolved(self) -> TrainConfig:
        """A copy with the net-dependent nulls filled in (what the run actually uses)."""
        c = dataclasses.replace(self)
        if c.epochs is None:
            c.epochs = DEFAULT_EPOCHS[c.net]
        val = dataclasses.replace(c.val)
        if val.threshold is None:
            val.threshold = DEFAULT_VAL_THRESHOLD[c.net]
        c.val = val
        defaults = DEFAULT_LOSS_WEIGHTS[c.net]
        w = c.loss.weights
        c.loss = dataclasses.replace(c.loss, weights=LossWeights(
            cls=defaults[0] if w.cls is None else w.cls,
            box=defaults[1] if w.box is None else w.box,
            landmark=defaults[2] if w.landmark is None else w.landmark,
        ))
        return c


@dataclass
class LandmarkDataSection:
    """Landmark sample files: the ``landmark`` kind of sample files written by
    :class:`mtcnn.data.h5.SampleWriter` (crops of the net's input size, ``2 * num_landmarks``
    coordinates in 0..1 of the crop)."""

    train: str | list[str] = field(default_factory=lambda: ["{gen}/samples/landmark48_train.h5"])
    val: str | list[str] | None = None
    num_workers: int = bounded(2, 0, 64, help="DataLoader worker processes per rank")
    cache_mb: int = bounded(1024, 0, None, help="hold the training samples in RAM up to this many MiB (0: never)")
    flip: bool = False  # mirror with the 5-point left/right swap; only for 5-point nets
    color_jitter: bool = True


@dataclass
class LandmarkLossSection:
    """Point-error loss. Errors are multiplied by ``coordinate_scale`` (null: the net's input
    width in pixels) first, so the wing parameters keep their pixel meaning (Feng et al. 2018:
    w=10, epsilon=2; Wang et al. 2019: alpha=2.1, omega=14, epsilon=1, theta=0.5)."""

    kind: Literal["l1", "l2", "wing", "adaptive_wing"] = "wing"
    point_weights: list[float] | None = bounded(None, 0.0, None, help="one weight per point; null: all 1")
    coordinate_scale: float | None = bounded(None, 1e-6, None)
    wing_w: float = bounded(10.0, 1e-6, None)
    wing_epsilon: float = bounded(2.0, 1e-6, None)
    awing_alpha: float = bounded(2.1, 1.0, None)
    awing_omega: float = bounded(14.0, 1e-6, None)
    awing_epsilon: float = bounded(1.0, 1e-6, None)
    awing_theta: float = bounded(0.5, 1e-6, None)

    def shape_params(self) -> dict[str, float]:
        """The keyword arguments of :func:`mtcnn.losses.landmark_regression_loss` for ``kind``."""
        if self.kind == "wing":
            return {"w": self.wing_w, "epsilon": self.wing_epsilon}
        if self.kind == "adaptive_wing":
            return {"alpha": self.awing_alpha, "omega": self.awing_omega, "epsilon": self.awing_epsilon, "theta": self.awing_theta}
        return {}


@dataclass
class LandmarkValSection:
    enabled: bool = True
    every_epochs: int = bounded(1, 1, None)
    batch_size: int = bounded(2048, 1, None)
    max_samples: int | None = bounded(None, 1, None, help="validate on the first N samples")
    failure_nme: float = bounded(0.1, 0.0, None, help="a sample fails when its NME exceeds this")
    num_images: int = bounded(16, 0, 256, help="validation crops drawn to TensorBoard each epoch")


@dataclass
class LandmarkTrainConfig(RunConfig):
    """One landmark-regression run of a registered net (its spec gives input size, channels and
    number of points)."""

    net: str = "onet"
    out: str = "{runs}/landmarks"
    epochs: int = bounded(30, 1, None)
    batch_size: int = bounded(256, 1, None, help="global batch (split evenly across DDP ranks)")
    data: LandmarkDataSection = field(default_factory=LandmarkDataSection)
    loss: LandmarkLossSection = field(default_factory=LandmarkLossSection)
    val: LandmarkValSection = field(default_factory=LandmarkValSection)

    def resolved(self) -> LandmarkTrainConfig:
        return dataclasses.replace(self)


__all__ = [
    "CheckpointSection",
    "Composition",
    "DataSection",
    "DebugSection",
    "FreezeSection",
    "KindFiles",
    "LandmarkDataSection",
    "LandmarkLossSection",
    "LandmarkTrainConfig",
    "LandmarkValSection",
    "LogSection",
    "LossSection",
    "LossWeights",
    "OptimSection",
    "RunConfig",
    "TrainConfig",
    "ValSection",
]
