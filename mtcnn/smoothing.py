"""Smoothing of point tracks over time: the One-Euro filter (NumPy only, no torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroSettings:
    """Settings of the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012).

    min_cutoff: cutoff frequency in Hz of a still signal: lower removes more jitter and lags
                more on slow motion (at 30 fps, 1 Hz keeps 17 % of each new measurement).
    beta:       how fast the cutoff rises with speed: ``cutoff = min_cutoff + beta · speed``,
                speed in units of ``scale`` per second (see :class:`OneEuroFilter`); 0 is a
                plain first-order low-pass.
    d_cutoff:   cutoff in Hz of the speed estimate itself.

    The defaults are the paper's starting point; :class:`LandmarkSmoothing` holds the settings
    tuned for face landmarks.
    """

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    def __post_init__(self):
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"One-Euro settings need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {self}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass at ``cutoff`` Hz sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter of a signal of points ``[..., D]`` (e.g. a face's ``[K, 2]`` landmarks).

    Per sample at time ``t`` (seconds) with ``dt`` since the previous one::

        dx     = (x - x̂_prev) / dt
        dx̂     = α(d_cutoff) · dx + (1 - α(d_cutoff)) · dx̂_prev
        cutoff = min_cutoff + beta · |dx̂| / scale          (|·| over the last axis: per point)
        x̂      = α(cutoff) · x + (1 - α(cutoff)) · x̂_prev,    α(f) = 1 / (1 + 1 / (2π f dt))

    The first sample passes unchanged (dx̂ = 0). ``scale`` expresses speed in units of the
    signal's size (the face width for landmarks); 1 leaves it in signal units per second.
    """

    def __init__(self, settings: OneEuroSettings = OneEuroSettings()):
        self.settings = settings
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        s = self.settings
        dt = max(t - self.t, 1e-6)
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(s.d_cutoff, dt) * (dx - self.dx)
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) if x.ndim else np.abs(self.dx)
        alpha = _alpha(s.min_cutoff + s.beta * speed / max(scale, 1e-6), dt)
        self.x = self.x + alpha * (x - self.x)
        self.t = t
        return self.x.copy()


@dataclass(frozen=True)
class LandmarkSmoothing:
    """How a face's landmarks are smoothed: two One-Euro filters, ``position`` on the centroid of
    the points (where the face is) and ``shape`` on each point's offset from the centroid (what
    the face does: mouth, eyes, a turn of the head). Speeds are in face widths per second (the
    filters get the box width as ``scale``), so one setting serves faces of every size.

    A face moving across the frame moves its centroid, not its shape: the centroid's filter can
    follow fast (a high ``beta``) while the shape is smoothed hard, which one filter on the
    points cannot do. On the sitcom clip of ``benchmarks/bench_tracking.py`` (24 fps, O-Net
    points between full passes every 10 frames) these defaults cut the frame-to-frame motion of
    the points on still faces from 1.84 to 0.83 % of the eye distance, with the centroid of
    moving faces trailing by 0.47 frames; one filter on every point (0.5 Hz, beta 10) reached
    0.88 % with 0.60 frames of trail. ``position`` at 0.3 Hz: a still face's centroid keeps
    6 % of each new measurement at 30 fps; beta 15: a face crossing its width in a second is
    followed at 15.3 Hz (76 % kept).
    """

    position: OneEuroSettings = OneEuroSettings(min_cutoff=0.3, beta=15.0)
    shape: OneEuroSettings = OneEuroSettings(min_cutoff=0.2, beta=5.0)


class LandmarkFilter:
    """Smooths one face's points ``[K, 2]`` over time as :class:`LandmarkSmoothing` says."""

    def __init__(self, settings: LandmarkSmoothing = LandmarkSmoothing()):
        self.settings = settings
        self.position = OneEuroFilter(settings.position)
        self.shape = OneEuroFilter(settings.shape)

    def __call__(self, points, t: float, scale: float = 1.0) -> np.ndarray:
        """Smoothed ``points`` at time ``t`` (seconds); ``scale``: the face's width."""
        points = np.asarray(points, dtype=np.float64)
        centre = points.mean(axis=0, keepdims=True)
        return self.position(centre, t, scale) + self.shape(points - centre, t, scale)


__all__ = ["LandmarkFilter", "LandmarkSmoothing", "OneEuroFilter", "OneEuroSettings"]
