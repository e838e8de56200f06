"""The options, defaults and error of ``epipose predict``, without its heavy imports (torch, OpenCV):
the command line (``epipose.__main__``) builds its parser and ``--help`` from them in a blink."""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PERSON_FRACTION = 0.82          # the person's extent / crop side in the training crops (median)
PERSON_CENTRE_SHIFT = 0.04      # the crop centre lies this × its side above the person box's centre
DEFAULT_FOCAL_FACTOR = 1.15     # focal = this × the larger image side (Human3.6M's field of view)
DEFAULT_BOX_MM = 2000.0         # the frame shards' crop box (param frames.box_mm), if the model does not say
# An input whose mean joint confidence is below this is flagged (log and figure): the default model
# gives 0.32-0.45 on 95% of its test crops (1st percentile 0.28), 0.15 on a real photograph
# (matplotlib's grace_hopper.jpg), 0.13 on noise, 0.02 on a blank image.
WARN_CONF = 0.25
EXPORTS = ("csv", "json")


class PredictError(ValueError):
    """A bad input, box, option or model for ``epipose predict`` (the message names it)."""


@dataclass(frozen=True)
class PredictOptions:
    focal: float | None = None           # px; default DEFAULT_FOCAL_FACTOR × the larger image side
    root_depth_mm: float | None = None   # default: from the crop size (module doc)
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
