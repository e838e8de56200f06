"""The options, defaults, crop convention and error of ``epipose predict``, without its heavy imports
(torch, OpenCV): the command line (``epipose.__main__``) builds its parser and ``--help`` from them in
a blink. The crop convention lives here rather than in ``epipose.predict.boxes`` (which applies it)
because ``--person-fraction``'s default comes from it, and importing that package loads torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_FOCAL_FACTOR = 1.15     # focal = this × the larger image side (Human3.6M's field of view)
# An input whose mean joint confidence is below this is flagged (log and figure): the default model
# gives 0.32-0.45 on 95% of its test crops (1st percentile 0.28), 0.15 on a real photograph
# (matplotlib's grace_hopper.jpg), 0.13 on noise, 0.02 on a blank image.
WARN_CONF = 0.25
EXPORTS = ("csv", "json")


@dataclass(frozen=True)
class CropConvention:
    """How predict frames a person as the 3D network's training crops did, and what a crop's side means.

    ``person_fraction``: a person box's longer side (tight around the person, head top to feet) over
    the crop square's side; ``centre_shift``: the crop centre lies this × its side *above* the person
    box's centre. Both are medians measured with the person's extent from the ground-truth joints, on
    the default synthetic data's crops of each kind (``benchmarks/boxes.py``), and follow the params
    that cut them: ``gt_convention``, ``auto_convention``.

    ``box_mm``: the crop side at the pelvis, mm (``frames.box_mm``): a crop of side s px puts the
    pelvis at depth focal × box_mm / s. Exact for the ``gt`` crops (the projection of a box_mm square
    around the ground-truth pelvis); the ``auto`` crops (``epipose.data.boxes``, cut from the person's
    silhouette) match them only approximately (README, "The person boxes").

    Not the same quantities as ``frames.person_fraction`` / ``frames.centre_shift`` (0.95, -0.07):
    those frame a background-subtracted silhouette (hair, soles, shadow) by its tallest height over
    ``frames.box_window_s``. A model says how its training crops were cut (its meta ``crop``, from the
    frames' crop.json: ``frames.boxes`` and its params); predict takes that kind's convention.
    """

    person_fraction: float = 0.799
    centre_shift: float = 0.041
    box_mm: float = 2000.0


# How a tight person box (the projected joints' extent) sits in each kind of training crop: medians on the
# default data, 7,128 frames of 22 people (benchmarks/boxes.py: person_fraction 0.799 and centre_shift 0.041
# for gt crops at frames.box_mm 2000, 0.819 and 0.039 for auto crops at frames.person_fraction 0.95 and
# centre_shift -0.07), as quantities that do not depend on those params:
GT_PERSON_MM = 1598.0              # gt crops: the box's longer side, mm at the pelvis (0.799 x 2000)
GT_CENTRE_MM = 82.0                # ... its centre this far below the pelvis (the crop centre; 0.041 x 2000)
AUTO_PERSON_PER_HEIGHT = 0.862     # auto crops: the box's longer side / the tallest silhouette's height (0.819 / 0.95)
AUTO_CENTRE_PER_HEIGHT = -0.0326   # ... (box centre - silhouette centre) / that height (0.039 = -0.0326 x 0.95 + 0.07)


def gt_convention(box_mm: float = 2000.0) -> CropConvention:
    """``frames.boxes: gt`` crops of side ``box_mm`` at the pelvis."""
    return CropConvention(GT_PERSON_MM / box_mm, GT_CENTRE_MM / box_mm, box_mm)


def auto_convention(person_fraction: float = 0.95, centre_shift: float = -0.07, box_mm: float = 2000.0
                    ) -> CropConvention:
    """``frames.boxes: auto`` crops cut with ``frames.person_fraction`` and ``frames.centre_shift``."""
    return CropConvention(AUTO_PERSON_PER_HEIGHT * person_fraction,
                          AUTO_CENTRE_PER_HEIGHT * person_fraction - centre_shift, box_mm)


CROP = gt_convention()   # a model that does not say how its crops were cut: the paper's (gt) crops'


def crop_convention(meta: dict) -> tuple[CropConvention, str]:
    """The convention of a model's training crops (its meta ``crop``, written by train_3d from the frames'
    crop.json: ``frames.boxes`` and the params that cut them) → (convention, where it came from)."""
    crop = meta.get("crop") or {}
    box_mm = float(crop.get("box_mm") or meta.get("box_mm") or CROP.box_mm)
    if crop.get("boxes") == "gt":
        return gt_convention(box_mm), f"the model's training crops (frames.boxes: gt, box_mm {box_mm:g})"
    if crop.get("boxes") == "auto":
        return (auto_convention(float(crop["person_fraction"]), float(crop["centre_shift"]), box_mm),
                "the model's training crops (frames.boxes: auto, person_fraction {person_fraction:g}, centre_shift "
                "{centre_shift:g})".format(**crop))
    return gt_convention(box_mm), "gt crops (the model does not say how its crops were cut)"


class PredictError(ValueError):
    """A bad input, box, option or model for ``epipose predict`` (the message names it)."""


@dataclass(frozen=True)
class PredictOptions:
    focal: float | None = None           # px; default DEFAULT_FOCAL_FACTOR × the larger image side
    root_depth_mm: float | None = None   # default: from the crop size (epipose.predict's doc)
    batch_size: int = 32
    flip_test: bool = True
    amp: str = "auto"                    # auto (bf16/fp16 on CUDA) | bf16 | fp16 | none
    smooth: float = 0.0                  # Gaussian sigma over time in frames (videos); 0 = off
    figures: bool = True                 # PNG per image, MP4 per video
    progress: bool = True
    kpt_thr: float = 0.0                 # figures: joints with a lower confidence are not drawn
    warn_conf: float = WARN_CONF         # an input whose mean joint confidence is lower is flagged
    export: tuple[str, ...] = ()         # also write predictions.csv / predictions.json

    def __post_init__(self):
        if self.focal is not None and not (math.isfinite(self.focal) and self.focal > 0):
            raise PredictError(f"--focal {self.focal}: must be a positive number of pixels")
        if self.root_depth_mm is not None and not (math.isfinite(self.root_depth_mm) and self.root_depth_mm > 0):
            raise PredictError(f"--root-depth {self.root_depth_mm}: must be a positive depth in mm")
        if self.batch_size < 1:
            raise PredictError(f"--batch-size {self.batch_size}: must be at least 1")
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise PredictError(f"--smooth {self.smooth}: must be a sigma >= 0 (frames)")
        for name, value in (("--kpt-thr", self.kpt_thr), ("--warn-conf", self.warn_conf)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise PredictError(f"{name} {value}: must be a confidence in [0, 1]")
        bad = sorted(set(self.export) - set(EXPORTS))
        if bad:
            raise PredictError(f"--export {bad}: one of {list(EXPORTS)}")
