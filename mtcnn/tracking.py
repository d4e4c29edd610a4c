"""Face tracking over video frames: the full cascade now and then, O-Net alone in between.

:class:`FaceTracker` runs the full P/R/O-Net cascade on the first frame, every ``every``-th
frame after it and on every frame a scene cut is detected (:class:`SceneCutDetector`). On the
frames between, each tracked face's box, moved by its last displacement (and grown by
``margin``, 0 by default), is re-scored and re-fitted by O-Net alone
(:func:`mtcnn.stages.score_onet`), all faces in one batch: a face O-Net scores below
``keep_threshold`` is dropped, overlapping faces are merged by the detector's O-Net NMS, and
new faces appear at the next full pass. A full pass's faces inherit the ids of the tracks they
overlap (IoU ≥ ``match_iou``, one-to-one by the Hungarian method) and the others get new ids;
a track it misses goes on as between full passes for up to ``patience`` full passes (a face
the cascade finds on one frame and not the next is not dropped and renumbered). A scene cut
ends every track. With ``lookback`` L the tracker hands each frame out L frames late, and a
face a full pass finds is followed back by O-Net into the held frames (up to the last cut):
a face that came into view between full passes is reported from its first frames.

Landmarks are smoothed per track by One-Euro filters (:class:`mtcnn.smoothing.LandmarkSmoothing`);
boxes and scores are O-Net's own. :func:`track` is the iterator form. R-Net before O-Net on the tracked
boxes was tried and lost faces (coverage of per-frame detection's faces 94.7 % against 97.4 %
on the sitcom clip of ``benchmarks/bench_tracking.py``), so O-Net runs alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mtcnn.ops.boxes import batched_nms, box_iou
from mtcnn.stages import Candidates, score_onet
from mtcnn.smoothing import LandmarkFilter, LandmarkSmoothing
from mtcnn.structures import Detections


class SceneCutDetector:
    """Flags a frame whose 32×18 thumbnail differs from the previous frame's by more than
    ``threshold`` grey levels (0..255) on average over its pixels and channels.

    Measured on real clips (``benchmarks/bench_tracking.py``): hard cuts 23–65, the fastest
    in-shot motion (a person crossing close to the camera) 17, steady shots under 3. A false
    cut costs a full cascade pass and new ids; the thumbnail costs ~0.1 ms per 640×360 frame.
    """

    def __init__(self, threshold: float = 20.0, size: tuple[int, int] = (32, 18)):
        self.threshold = threshold
        self.size = size
        self._previous: torch.Tensor | None = None
        self.last_difference = 0.0

    def reset(self) -> None:
        self._previous = None

    def thumbnail(self, image: torch.Tensor) -> torch.Tensor:
        """``[3, H, W]`` frame -> float ``[3, h, w]`` area-averaged thumbnail on the CPU."""
        w, h = self.size
        if image.device.type == "cpu" and image.dtype == torch.uint8:
            small = cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (w, h), interpolation=cv2.INTER_AREA)
            return torch.from_numpy(small.reshape(h, w, -1)).permute(2, 0, 1).float()
        return F.adaptive_avg_pool2d(image[None].float(), (h, w))[0].cpu()

    def __call__(self, image: torch.Tensor) -> bool:
        """Whether ``image`` (``[3, H, W]``) starts a new shot; the first frame does not."""
        small = self.thumbnail(image)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            self.last_difference = 0.0
            return False
        self.last_difference = float((small - previous).abs().mean())
        return self.last_difference > self.threshold


@dataclass(frozen=True)
class TrackedFrame:
    """One frame's tracked faces.

    index:         the frame's number in the stream.
    faces:         boxes, scores, landmarks (smoothed when the tracker smooths), ordered by id;
                   between full passes the score is O-Net's on the re-fitted box, which may lie
                   below the detector's threshold (down to the tracker's ``keep_threshold``).
    ids:           long ``[N]``: each face's track id, stable while the face is tracked.
    raw_landmarks: ``[N, K, 2]`` landmarks before smoothing.
    full:          the full cascade ran on this frame (else O-Net re-fitted the tracked faces).
    cut:           a scene cut was detected at this frame.
    ms:            the tracker's time on this frame in milliseconds (with ``lookback``, the
                   frame whose full pass found a face also pays for following it back).
    image:         the frame as it was given.
    """

    index: int
    faces: Detections
    ids: torch.Tensor
    raw_landmarks: torch.Tensor
    full: bool
    cut: bool
    ms: float
    image: object = None

    def __len__(self) -> int:
        return len(self.faces)

    def to_records(self) -> list[dict]:
        """The faces as in the detect CLI's JSON, each with its ``"id"`` first."""
        return [{"id": int(i), **r} for i, r in zip(self.ids.tolist(), self.faces.to_records())]


@dataclass
class _Faces:
    """Faces with their track state, one row each, on the detector's device."""

    ids: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    motion: torch.Tensor  # [T, 2] the box centre's last displacement per frame
    misses: torch.Tensor  # [T] consecutive full passes that did not find the face

    @classmethod
    def empty(cls, device, num_landmarks: int = 5) -> "_Faces":
        z = torch.zeros
        return cls(z((0,), dtype=torch.long, device=device), z((0, 4), device=device), z((0,), device=device),
                   z((0, num_landmarks, 2), device=device), z((0, 2), device=device), z((0,), dtype=torch.long, device=device))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def select(self, rows: torch.Tensor) -> "_Faces":
        return _Faces(*(getattr(self, f)[rows] for f in _FACE_FIELDS))

    def cat(self, other: "_Faces") -> "_Faces":
        if not len(other) or not len(self):  # the empty form may have another number of points
            return self if len(self) else other
        return _Faces(*(torch.cat([getattr(self, f), getattr(other, f)]) for f in _FACE_FIELDS))


_FACE_FIELDS = ("ids", "boxes", "scores", "landmarks", "motion", "misses")


@dataclass
class _Pending:
    """A processed frame not yet handed out (``lookback``): later full passes may add faces."""

    index: int
    image: object
    tensor: torch.Tensor
    faces: _Faces
    full: bool
    cut: bool
    ms: float


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) * 0.5


class FaceTracker:
    """Tracks faces over consecutive frames of one stream with ``detector`` (an
    :class:`~mtcnn.detector.MTCNN`); see the module doc for the method.

    every:          full cascade every ``every`` frames (and at scene cuts); 1 = every frame.
    margin:         a tracked box grows by this fraction of its width and height on each side
                    before O-Net re-fits it. O-Net was trained on tight crops: its score falls
                    fast with a margin (a face scoring 0.99 at 0 scored 0.4 at 0.1 and 0.01 at
                    0.2), so the default is 0 and each box is moved by its last displacement
                    (``predict``) instead.
    keep_threshold: the O-Net score a tracked face needs to stay (hysteresis: below the
                    detector's own O-Net threshold, which a face must pass to be found; None =
                    that threshold). One crop per face is scored where the full cascade scored
                    many around it and kept the best, so a real face's one score swings more.
    patience:       full passes in a row that may miss a tracked face before it is dropped; a
                    missed face stays only while O-Net keeps it (its score ≥ keep_threshold) and
                    it overlaps no face the full pass found. 0: the full pass alone decides.
    lookback:       frames held back before they are handed out (latency): a face a full pass
                    finds is followed back by O-Net through them (to the last scene cut), so a
                    face that appeared between full passes is reported from its first frames.
                    0 (default) hands each frame out at once; ``every - 1`` covers the gap.
    cut_threshold:  :class:`SceneCutDetector` threshold; None turns cut detection off.
    smoothing:      :class:`~mtcnn.smoothing.LandmarkSmoothing` of the landmarks, or None for
                    O-Net's own points.
    fps:            frame rate of the stream (the filter's time base).
    match_iou:      least IoU for a full pass's face to inherit a track's id.
    predict:        move each box by its last displacement before re-fitting.

    :meth:`push` takes frames in order (RGB uint8 ``H×W×3`` arrays or tensors) and returns the
    frames ready to hand out; :meth:`flush` the rest at the end; :meth:`update` is ``push``
    for ``lookback=0``, one frame in, one out.
    """

    def __init__(
        self,
        detector,
        *,
        every: int = 10,
        margin: float = 0.0,
        keep_threshold: float | None = 0.01,
        patience: int = 1,
        lookback: int = 0,
        cut_threshold: float | None = 20.0,
        smoothing: LandmarkSmoothing | None = LandmarkSmoothing(),
        fps: float = 30.0,
        match_iou: float = 0.3,
        predict: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, not {every}")
        if not 0 <= margin <= 1:
            raise ValueError(f"margin must lie in [0, 1], not {margin}")
        if patience < 0 or lookback < 0:
            raise ValueError(f"patience and lookback must be >= 0, not {patience} and {lookback}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, not {fps}")
        if getattr(detector, "rotation", None) is not None:
            raise ValueError(f"tracking follows upright faces: use a detector without rotation (not {detector.rotation!r})")
        self.detector = detector
        self.every = every
        self.margin = margin
        self.keep_threshold = detector.config.thresholds[2] if keep_threshold is None else keep_threshold
        self.patience = patience
        self.lookback = lookback
        self.cuts = SceneCutDetector(cut_threshold) if cut_threshold is not None else None
        self.smoothing = smoothing
        self.fps = fps
        self.match_iou = match_iou
        self.predict = predict
        self._next_id = 0
        self._pending: deque[_Pending] = deque()
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep counting up); frames held back are dropped."""
        self._faces: _Faces | None = None
        self._since_full = 0
        self._last_index = -1
        self._filters: dict[int, LandmarkFilter] = {}
        self._pending.clear()
        if self.cuts is not None:
            self.cuts.reset()

    def update(self, image, index: int | None = None) -> TrackedFrame:
        """Track faces into the next frame and return it (``lookback`` must be 0); ``index``
        (default: one more than the last) is the frame number, which times the smoothing
        (``index / fps`` seconds)."""
        if self.lookback:
            raise ValueError("update() hands out each frame at once: with lookback use push() and flush()")
        (frame,) = self.push(image, index)
        return frame

    @torch.inference_mode()
    def push(self, image, index: int | None = None) -> list[TrackedFrame]:
        """Track faces into the next frame; returns the frames now ready (oldest first): with
        ``lookback`` L, the frame L frames back."""
        t0 = time.perf_counter()
        index = self._last_index + 1 if index is None else index
        self._last_index = index
        (tensor,) = self.detector._to_tensors([image])
        cut = self.cuts(tensor) if self.cuts is not None else False
        faces = self._faces
        full = faces is None or cut or self._since_full + 1 >= self.every
        if faces is None or cut:
            faces = _Faces.empty(tensor.device)
        if full:
            faces, new = self._full_pass(tensor, faces)
        else:
            faces, new = self._follow(tensor, faces), None
        self._since_full = 0 if full else self._since_full + 1
        self._faces = faces
        if self.lookback and new is not None and len(new) and not cut:
            self._follow_back(faces.select(new))
        self._pending.append(_Pending(index, image, tensor, faces, full, cut, (time.perf_counter() - t0) * 1000))
        ready = []
        while len(self._pending) > self.lookback:
            ready.append(self._hand_out(self._pending.popleft()))
        return ready

    @torch.inference_mode()
    def flush(self) -> list[TrackedFrame]:
        """The frames still held back (``lookback``), oldest first."""
        ready = [self._hand_out(p) for p in self._pending]
        self._pending.clear()
        return ready

    def _full_pass(self, tensor: torch.Tensor, faces: _Faces) -> tuple[_Faces, torch.Tensor]:
        """The full cascade; its faces take the ids of the tracks they overlap (one-to-one),
        the others new ids; tracks it missed go on as in :meth:`_follow` within ``patience``.
        Returns the faces and the rows of the new ones."""
        found = self.detector.candidates([tensor])
        device = found.boxes.device
        n = len(found)
        ids = torch.full((n,), -1, dtype=torch.long, device=device)
        motion = torch.zeros((n, 2), device=device)
        missed = torch.zeros((0,), dtype=torch.long, device=device)
        if len(faces):
            rows = cols = torch.zeros((0,), dtype=torch.long, device=device)
            if n:
                from scipy.optimize import linear_sum_assignment

                iou = box_iou(self._predicted(faces), found.boxes).cpu().numpy()
                r, c = linear_sum_assignment(-iou)
                good = iou[r, c] >= self.match_iou
                rows, cols = torch.as_tensor(r[good], device=device), torch.as_tensor(c[good], device=device)
            ids[cols] = faces.ids[rows]
            motion[cols] = _centres(found.boxes[cols]) - _centres(faces.boxes[rows])
            unmatched = torch.ones(len(faces), dtype=torch.bool, device=device)
            unmatched[rows] = False
            missed = torch.nonzero(unmatched & (faces.misses < self.patience), as_tuple=True)[0]
        new = torch.nonzero(ids < 0, as_tuple=True)[0]
        ids[new] = torch.arange(self._next_id, self._next_id + len(new), device=device)
        self._next_id += len(new)
        result = _Faces(ids, found.boxes, found.scores, found.landmarks, motion, torch.zeros_like(ids))
        if len(missed):
            result = result.cat(self._refit(tensor, faces.select(missed), others=found.boxes, missed=True))
        return result, new

    def _follow(self, tensor: torch.Tensor, faces: _Faces) -> _Faces:
        """A frame between full passes: O-Net re-fits every tracked face, all in one batch."""
        return self._refit(tensor, faces) if len(faces) else faces

    def _follow_back(self, faces: _Faces) -> None:
        """Follow faces a full pass just found back through the held frames, newest first, to
        the last scene cut: each frame gets the faces O-Net keeps there (not overlapping its
        own faces); a face stops where O-Net drops it."""
        t0 = time.perf_counter()
        faces = _Faces(faces.ids, faces.boxes, faces.scores, faces.landmarks, torch.zeros_like(faces.motion), faces.misses)
        for frame in reversed(self._pending):
            faces = self._refit(frame.tensor, faces, others=frame.faces.boxes)
            if not len(faces):
                break
            frame.faces = frame.faces.cat(faces)
            if frame.cut:
                break
        if self._pending:
            self._pending[-1].ms += (time.perf_counter() - t0) * 1000

    def _predicted(self, faces: _Faces) -> torch.Tensor:
        return faces.boxes + faces.motion.repeat(1, 2) if self.predict else faces.boxes

    def _refit(self, tensor: torch.Tensor, faces: _Faces, others: torch.Tensor | None = None, missed: bool = False) -> _Faces:
        """O-Net on the (predicted, grown) boxes of ``faces``: the faces it keeps (score ≥
        keep_threshold, after NMS among them and against ``others``, boxes that take
        precedence), re-fitted, with their new displacements (and one more miss if ``missed``)."""
        cfg = self.detector.config
        boxes = self._predicted(faces)
        wh = (boxes[:, 2:] - boxes[:, :2]) * self.margin
        grown = torch.cat([boxes[:, :2] - wh, boxes[:, 2:] + wh], dim=1)
        image_index = torch.zeros((len(faces),), dtype=torch.long, device=boxes.device)
        candidates = Candidates(grown, faces.scores, image_index, faces.landmarks[:, :5])
        chunk = cfg.chunk_size or self.detector._chunk_sizes[1]
        passed, found = score_onet(self.detector.onet, [tensor], candidates, threshold=self.keep_threshold,
                                   chunk_size=chunk, mip_cache={})
        pool_boxes, pool_scores, offset = found.boxes, found.scores, 0
        if others is not None and len(others):
            # Faces already in the frame win any overlap (a score above every probability).
            offset = len(others)
            pool_boxes = torch.cat([others.to(found.boxes.device), found.boxes])
            pool_scores = torch.cat([torch.full((offset,), 2.0, device=found.boxes.device), found.scores])
        groups = torch.zeros(len(pool_boxes), dtype=torch.long, device=pool_boxes.device)
        keep = batched_nms(pool_boxes, pool_scores, groups, cfg.nms_onet, cfg.onet_nms_mode)
        keep = torch.sort(keep[keep >= offset] - offset).values
        found, rows = found.select(keep), passed[keep]
        model = self.detector.landmark_model
        if model is not None and len(found):
            points = model.predict([tensor], found.boxes, found.image_index, found.landmarks).to(found.boxes.device)
            found = Candidates(found.boxes, found.scores, found.image_index, points)
        motion = _centres(found.boxes) - _centres(faces.boxes[rows])
        return _Faces(faces.ids[rows], found.boxes, found.scores, found.landmarks, motion, faces.misses[rows] + int(missed))

    def _hand_out(self, frame: _Pending) -> TrackedFrame:
        """The frame as handed out: faces ordered by id, landmarks smoothed in frame order."""
        faces = frame.faces.select(torch.argsort(frame.faces.ids))
        ids = faces.ids.cpu()
        raw = faces.landmarks.float().cpu()
        smoothed = raw
        if self.smoothing is not None:
            t = frame.index / self.fps
            widths = (faces.boxes[:, 2] - faces.boxes[:, 0]).float().cpu().tolist()
            live = {}
            out = np.empty(raw.shape, dtype=np.float32)
            for k, (track_id, width) in enumerate(zip(ids.tolist(), widths)):
                filt = live[track_id] = self._filters.get(track_id) or LandmarkFilter(self.smoothing)
                out[k] = filt(raw[k].numpy(), t, scale=width)
            self._filters = live  # a track missing from a frame has ended: its filter goes
            smoothed = torch.from_numpy(out)
        detections = Detections(faces.boxes.float().cpu(), faces.scores.float().cpu(), smoothed)
        return TrackedFrame(frame.index, detections, ids, raw, frame.full, frame.cut, frame.ms, frame.image)


def track(frames: Iterable, detector, *, every: int = 10, lookback: int = 0, **options) -> Iterator[TrackedFrame]:
    """Track faces through ``frames`` (RGB uint8 ``H×W×3`` arrays or tensors, in order): one
    :class:`TrackedFrame` per frame, in order; with ``lookback`` L each comes L frames late
    (the tracker keeps a reference to the last L frames: yield a new array per frame).
    ``options`` are :class:`FaceTracker`'s (margin, keep_threshold, patience, cut_threshold,
    smoothing, fps, match_iou, predict).

    >>> for frame in track(frames, MTCNN(), every=10, fps=30):
    ...     frame.ids, frame.faces.boxes, frame.faces.landmarks
    """
    tracker = FaceTracker(detector, every=every, lookback=lookback, **options)
    for index, image in enumerate(frames):
        yield from tracker.push(image, index)
    yield from tracker.flush()


__all__ = ["FaceTracker", "SceneCutDetector", "TrackedFrame", "track"]
