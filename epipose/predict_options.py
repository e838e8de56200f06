"""The options, defaults, crop convention and error of ``epipose predict``, without its heavy imports
(torch, OpenCV): the command line (``epipose.__main__``) builds its parser and ``--help`` from them in
a blink. The crop convention lives here rather than in ``epipose.predict.boxes`` (which applies it)
because ``--person-fraction``'s default comes from it, and importing that package loads torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    box's centre. Both are medians measured, with the person's extent from the ground-truth joints,
    on the paper's crops (``frames.boxes: gt``) of the default synthetic data.

    ``box_mm``: the crop side at the pelvis, mm (``frames.box_mm``): a crop of side s px puts the
    pelvis at depth focal × box_mm / s. Exact for the ``gt`` crops (the projection of a box_mm square
    around the ground-truth pelvis); the default ``frames.boxes: auto`` crops (``epipose.data.boxes``,
    cut from the person's silhouette) match them only approximately (README, "The person boxes").

    Not the same quantities as ``frames.person_fraction`` / ``frames.centre_shift`` (0.95, -0.07):
    those frame a background-subtracted silhouette (hair, soles, shadow) by its tallest height over
    ``frames.box_window_s``. The model files do not record any of these (the model's meta may carry a
    ``box_mm``, read where present); this is the one place predict keeps them.
    """

    person_fraction: float = 0.82
    centre_shift: float = 0.04
    box_mm: float = 2000.0


CROP = CropConvention()         # today's values: the CLI's --person-fraction default and the crop geometry


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
