"""Typed configs of the data-generation jobs: composite scenes, P-Net samples, landmark samples.

The YAML files ``scenes.yaml``, ``data_pnet.yaml`` and ``landmarks_aug.yaml`` (shipped in
``mtcnn/config/defaults/``) are checked against these dataclasses by
:func:`mtcnn.config.load_config` (unknown keys, wrong types and out-of-range values fail
before any work starts).

Paths may use the placeholders of :func:`mtcnn.config.paths.resolve_path` (``{data}``, ``{gen}``,
``{split}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mtcnn.config.core import bounded

__all__ = [
    "LandmarkAugConfig",
    "LandmarkDataConfig",
    "LandmarkPartConfig",
    "PNetDataConfig",
    "PNetSamplingConfig",
    "SceneConfig",
    "SourceConfig",
    "SplitSources",
    "WiderBoxConfig",
]


# ------------------------------------------------------------------------------------------
# shared pieces
# ------------------------------------------------------------------------------------------


@dataclass
class WiderBoxConfig:
    """How a tight CNN_FacePoint box (brows to chin, square) maps to a WIDER-style box.

    WIDER boxes include the forehead and are taller than wide. Measured on CNN_FacePoint train
    the eyes sit at 0.255 and the mouth corners at 0.766 of the tight box height and the eyes
    are 0.47 of its width apart; in WIDER FACE boxes with 5-point annotations (RetinaFace's
    WIDER train labels) the eyes sit at about 0.38-0.40, the mouth at about 0.75-0.77 and the
    eyes are about 0.40 of the width apart, with height/width about 1.2. The default maps the
    tight box ``(x1, y1, x2, y2)``, ``w = x2 - x1``, ``h = y2 - y1`` to
    ``(cx - widen*w/2, y1 - top*h, cx + widen*w/2, y2 + bottom*h)``: 1.15 w x 1.35 h, eyes at
    0.39 and mouth at 0.77 of the new height.
    """

    widen: float = bounded(1.15, 0.5, 3.0, help="new width / tight width, about the centre")
    top: float = bounded(0.27, -0.5, 2.0, help="extend the top upward by this fraction of h")
    bottom: float = bounded(0.08, -0.5, 2.0, help="extend the bottom downward by this fraction of h")


@dataclass
class SourceConfig:
    """One annotation source (any reader of :mod:`mtcnn.data.annotations`)."""

    name: str = ""
    format: str = "wider"  # one of annotations.ANNOTATION_FORMATS
    path: str = ""  # annotation file or folder; {data} / {gen} placeholders
    images_root: str | None = None  # default: the reader's own default
    landmarks_path: str | None = None  # WIDER landmark side file (scenes)
    split: Literal["all", "train", "val"] = "all"  # split_by_name on this source's records
    train_fraction: float = bounded(0.8, 0.0, 1.0)
    box_style: Literal["as_is", "wider_like"] = "as_is"  # wider_like: tight CNN_FacePoint boxes
    negatives_per_image: int | None = bounded(None, 0, None, help="override sampling.negatives_per_image")
    near_negatives_per_face: int | None = bounded(None, 0, None, help="override sampling.near_negatives_per_face")
    max_images: int | None = bounded(None, 0, None, help="use only the first N records (after the split)")
    # How ``split`` picks the validation images. name_order: the first train_fraction of the file
    # names are train (the data README's rule). hashed: an image is validation when the CRC-32 of
    # its file name falls in the last (1 - train_fraction) of the range, so the split of a photo
    # does not depend on which other photos are present (a partial copy of WIDER FACE, say) and
    # every event keeps about the same share.
    split_rule: Literal["name_order", "hashed"] = "name_order"
    # flat: the images lie in images_root under their file name only, whatever folders the
    # annotation names (the WIDER photos of the Crowd-Counting snapshot drop the event folders).
    images_layout: Literal["as_listed", "flat"] = "as_listed"
    # skip: annotated images that are absent are left out (counted in the log), for a partial copy of
    # a set whose annotation file lists every image; error (the default) treats a missing image as a mistake.
    missing_images: Literal["error", "skip"] = "error"
    # Labelling tools' exports (format coco / yolo; mtcnn.data.annotation_formats.read_coco / read_yolo):
    # classes: the category names (or ids) that are faces, null: every box; keypoints (coco): your
    # keypoint name -> ours (left_eye, right_eye, nose, left_mouth, right_mouth; "left" = the image's
    # left); unannotated: an image with no face box is left out (skip) or a face-free photo (negatives).
    classes: list[str] | None = None
    keypoints: dict[str, str] | None = None
    unannotated: Literal["skip", "negatives"] = "skip"
    sample_images: int | None = bounded(
        None, 0, None, help="use a random N of the records (after the split; seeded by the source's name): fine-tuning's replay")
    # five: the project's 5 points from any source: 68 iBUG points (csv68, dlib, pts68) reduced by
    # landmarks_68_to_5 (eye centres = means of 36-41 / 42-47, nose tip 30, mouth corners 48 / 54),
    # WebFaces' 4 points as 5 with NaN mouth corners (a missing point); as_is: the source's points.
    points: Literal["as_is", "five"] = "as_is"
    # from_points: each face with all 5 points gets the CNN_FacePoint-style tight box derived from them
    # (mtcnn.data.webfaces.boxes_from_five_points), for point-only sets whose boxes are the points'
    # extent (300-W, udacity68: a different framing); needs 5 points (points: five). as_is: the reader's.
    boxes: Literal["as_is", "from_points"] = "as_is"
    # Five (x, y) shifts that move this source's points onto CNN_FacePoint's definitions (300-W's eye
    # centres sit lower than CNN_FacePoint's pupils, its nose tip higher): in each face's own frame (x
    # along the eye line, y down the face), in eye distances; applied after `points: five` and before
    # `boxes: from_points`. Measure them with tools/measure_point_offsets.py (mtcnn.data.point_definitions).
    point_offsets: list[tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if self.point_offsets is not None:
            if len(self.point_offsets) != 5:
                raise ValueError(f"source '{self.name}': point_offsets needs 5 (x, y) pairs (LE, RE, N, LM, RM), got {len(self.point_offsets)}")
            if self.points != "five":
                raise ValueError(f"source '{self.name}': point_offsets moves the 5 points: set points: five")

    def reader_options(self) -> dict:
        """The reader keyword options this source sets (none for the formats that take none)."""
        options = {"classes": self.classes, "keypoints": self.keypoints}
        out = {k: v for k, v in options.items() if v is not None}
        if self.unannotated != "skip":
            out["unannotated"] = self.unannotated
        if self.format == "pts68":  # the reader itself skips (and counts) a .pts without its image
            out["missing_images"] = self.missing_images
        if self.format == "webfaces" and self.points == "five":
            out["five_points"] = True
        return out


@dataclass
class SplitSources:
    train: list[SourceConfig] = field(default_factory=list)
    val: list[SourceConfig] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# composite scenes
# ------------------------------------------------------------------------------------------


@dataclass
class SceneConfig:
    """Composite scenes: real CNN_FacePoint faces pasted onto face-free backgrounds."""

    seed: int = 0
    workers: int = bounded(2, 1, 256)
    split: Literal["train", "val"] = "train"
    num_scenes: int | None = bounded(None, 0, None, help="default: num_train or num_val by split")
    num_train: int = bounded(2000, 0, None)
    num_val: int = bounded(300, 0, None)
    out: str = "{gen}/scenes/{split}"
    backgrounds: str = "{data}/nonface_scenes"
    background_train_fraction: float = bounded(0.8, 0.0, 1.0, help="train = first 80% by file name")
    faces_train: str = "{data}/cnn_facepoint/trainImageList.txt"
    faces_val: str = "{data}/cnn_facepoint/testImageList.txt"
    canvas: tuple[int, int] | None = bounded((640, 480), 32, 8192, help="width, height; null keeps the original")
    background_zoom: tuple[float, float] = bounded((1.0, 1.3), 1.0, 4.0, help="extra zoom before the random crop")
    background_flip: float = bounded(0.5, 0.0, 1.0)
    faces_per_scene: tuple[int, int] = bounded((1, 15), 0, 200)
    min_face: float = bounded(12.0, 4.0, None, help="smallest pasted WIDER-box width, px")
    max_face_fraction: float = bounded(0.5, 0.01, 1.0, help="largest width / shorter canvas side")
    max_upscale: float = bounded(1.5, 1.0, 10.0, help="prefer source faces needing at most this upscale")
    context: float = bounded(1.7, 1.0, 3.0, help="source region pasted = WIDER box x this, clipped")
    mask_inner: float = bounded(1.0, 0.1, 2.0, help="alpha 1 inside this elliptic radius (box half-axes = 1)")
    mask_outer: float = bounded(1.55, 0.2, 3.0, help="alpha 0 beyond this elliptic radius")
    max_iou: float = bounded(0.2, 0.0, 1.0, help="reject placements with IoU above this vs earlier faces")
    max_cover: float = bounded(0.1, 0.0, 1.0, help="max overlap of a later paste and an earlier face box, over the smaller area")
    placement_attempts: int = bounded(30, 1, 10000)
    color_match: tuple[float, float] = bounded((0.2, 0.6), 0.0, 1.0, help="fraction of the lightness mean/std shift")
    color_match_ab: tuple[float, float] = bounded((0.0, 0.15), 0.0, 1.0, help="fraction of the a/b (chroma) shift")
    blur_match: bool = True
    blur_unit: float = bounded(0.5, 0.0, 5.0, help="blur sigma of a layer enlarged by s: unit * max(s, 1)")
    flip_prob: float = bounded(0.5, 0.0, 1.0)
    jpeg_quality: int = bounded(92, 10, 100)
    preview_scenes: int = bounded(6, 1, 64)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)

    def scenes_for_split(self) -> int:
        if self.num_scenes is not None:
            return self.num_scenes
        return self.num_train if self.split == "train" else self.num_val


# ------------------------------------------------------------------------------------------
# sample generation
# ------------------------------------------------------------------------------------------


@dataclass
class PNetSamplingConfig:
    """SPEC §1 PNet detection crops (IoU without the +1 pixel, SPEC §11)."""

    negatives_per_image: int = bounded(50, 0, None)
    near_negatives_per_face: int = bounded(5, 0, None, help="attempts per face")
    pos_part_attempts_per_face: int = bounded(20, 0, None)
    min_face: float = bounded(20.0, 1.0, None, help="skip faces with max(w, h) below this")
    min_negative_size: int = bounded(12, 1, None)
    neg_iou: float = bounded(0.3, 0.0, 1.0, help="negative: max IoU vs all faces below this")
    part_iou: float = bounded(0.4, 0.0, 1.0)
    pos_iou: float = bounded(0.65, 0.0, 1.0)
    shift: float = bounded(0.2, 0.0, 1.0, help="centre shift range as a fraction of w / h")
    size_range: tuple[float, float] = bounded((0.8, 1.25), 0.1, 4.0, help="crop side / min(w,h) .. / max(w,h)")
    negative_rounds: int = bounded(8, 1, 1000, help="bounded retries for random negatives")


@dataclass
class LandmarkAugConfig:
    """SPEC §1 landmark augmentation (gen_landmark_aug)."""

    min_face: float = bounded(40.0, 1.0, None, help="drop faces whose tight box max side is below this")
    include_gt_crop: bool = True
    crops_per_face: int = bounded(10, 0, None)
    crop_iou: float = bounded(0.65, 0.0, 1.0, help="keep random crops with IoU above this")
    shift: float = bounded(0.2, 0.0, 1.0)
    size_range: tuple[float, float] = bounded((0.8, 1.25), 0.1, 4.0)
    flip_prob: float = bounded(0.5, 0.0, 1.0)
    rotate_prob: float = bounded(0.5, 0.0, 1.0, help="probability of each of the +angle / -angle rotations")
    rotate_degrees: float = bounded(5.0, 0.0, 90.0)
    # fixed: exactly +/- rotate_degrees (SPEC §1); uniform: each rotation's size drawn in (0, rotate_degrees]
    rotate_mode: Literal["fixed", "uniform"] = "fixed"
    rotate_flip: bool = True  # add the flipped copy of each rotated crop (as SPEC §1)
    box_style: Literal["wider_like", "tight"] = "wider_like"


@dataclass
class LandmarkPartConfig:
    """Landmark samples written into the P-Net file (one file per stage: the loader reads one)."""

    enabled: bool = True
    sources: SplitSources = field(
        default_factory=lambda: SplitSources(
            train=[SourceConfig(name="cnn_facepoint", format="cnn_facepoint",
                                path="{data}/cnn_facepoint/trainImageList.txt")],
            val=[SourceConfig(name="cnn_facepoint", format="cnn_facepoint",
                              path="{data}/cnn_facepoint/testImageList.txt")],
        )
    )
    aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)


def _default_pnet_sources() -> SplitSources:
    scenes = "{gen}/scenes/%s/scenes_bbx_gt.txt"
    cnn = "{data}/cnn_facepoint/%sImageList.txt"
    voc = "{data}/face_mask/annotations"
    return SplitSources(
        train=[
            SourceConfig(name="scenes", format="wider", path=scenes % "train"),
            # LFW photos often show other, unannotated people: no random negatives from them.
            SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path=cnn % "train",
                         box_style="wider_like", negatives_per_image=0),
            SourceConfig(name="face_mask", format="voc", path=voc, split="train"),
        ],
        val=[
            SourceConfig(name="scenes", format="wider", path=scenes % "val"),
            SourceConfig(name="cnn_facepoint", format="cnn_facepoint", path=cnn % "test",
                         box_style="wider_like", negatives_per_image=0),
            SourceConfig(name="face_mask", format="voc", path=voc, split="val"),
        ],
    )


@dataclass
class PNetDataConfig:
    """gen_12net_data: P-Net pos/part/neg crops (+ landmark samples) into one HDF5 file."""

    seed: int = 0
    workers: int = bounded(2, 1, 256)
    chunk_images: int = bounded(16, 1, 10000, help="source images per worker task and per commit")
    size: int = bounded(12, 4, 512)
    out: str = "{gen}/samples"
    name: str = "pnet"  # -> <out>/<name>_<split>.h5
    max_bad_fraction: float = bounded(0.1, 0.0, 1.0, help="fail if more unreadable images than this")
    sources: SplitSources = field(default_factory=_default_pnet_sources)
    sampling: PNetSamplingConfig = field(default_factory=PNetSamplingConfig)
    landmarks: LandmarkPartConfig = field(default_factory=LandmarkPartConfig)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)


@dataclass
class LandmarkDataConfig:
    """gen_landmark_aug: landmark samples only, ``<out>/landmark<size>_<split>.h5``."""

    seed: int = 0
    workers: int = bounded(2, 1, 256)
    chunk_images: int = bounded(32, 1, 10000)
    size: int = bounded(12, 4, 512)
    out: str = "{gen}/samples"
    max_bad_fraction: float = bounded(0.1, 0.0, 1.0)
    sources: SplitSources = field(default_factory=lambda: LandmarkPartConfig().sources)
    aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)
