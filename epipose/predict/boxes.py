"""The crop square (x0, y0, size) of ``epipose predict``: from a person box by the crop convention
(``epipose.predict_options.CropConvention``), the whole frame, its checks, sparse boxes interpolated
over a video, and what the square implies when the camera is unknown: the pinhole and the root depth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from epipose.camera import Camera
from epipose.predict_options import CROP, DEFAULT_FOCAL_FACTOR, CropConvention, PredictError


def person_crop_box(bbox: tuple[float, float, float, float], convention: CropConvention = CROP
                    ) -> tuple[float, float, float]:
    """A person box (x0, y0, x1, y1) → the training crops' square (x0, y0, size): side max(w, h) /
    ``convention.person_fraction``, centred ``convention.centre_shift`` × the side above the box centre."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    size = max(x1 - x0, y1 - y0) / convention.person_fraction
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - convention.centre_shift * size
    return cx - size / 2.0, cy - size / 2.0, size


MIN_INSIDE = 0.5        # a person box with less of its area inside the image is refused


def clip_person_box(bbox: tuple[float, float, float, float], width: int, height: int, where: str
                    ) -> tuple[float, float, float, float]:
    """A person box (x0, y0, x1, y1) clipped to the image; refused (``PredictError``) when not finite or
    when less than ``MIN_INSIDE`` of its area lies inside the image (a box in other coordinates, another
    image's box, a typo): the person is where the image shows them."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    text = f"{where}: the person box {x0:g},{y0:g},{x1:g},{y1:g}"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise PredictError(f"{text} is not a box (x1 > x0, y1 > y0, finite)")
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    inside = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0) / ((x1 - x0) * (y1 - y0))
    if inside < MIN_INSIDE:
        raise PredictError(f"{text} lies {'mostly ' if inside > 0 else ''}outside the {width}x{height} image "
                           f"({100 * inside:.0f}% of it inside; at least {100 * MIN_INSIDE:.0f}% needed)")
    return cx0, cy0, cx1, cy1


def whole_frame_box(width: int, height: int) -> tuple[float, float, float]:
    """The whole frame as the person crop: the square of side max(W, H) centred on it."""
    size = float(max(width, height))
    return (width - size) / 2.0, (height - size) / 2.0, size


def check_box(box: tuple[float, float, float], width: int, height: int, where: str) -> None:
    """The crop square must be finite, non-empty and overlap the image."""
    x0, y0, size = box
    if not all(math.isfinite(v) for v in box) or size <= 1.0:
        raise PredictError(f"{where}: bad person box (crop square x0={x0:g}, y0={y0:g}, size={size:g})")
    if x0 >= width or y0 >= height or x0 + size <= 0 or y0 + size <= 0:
        raise PredictError(f"{where}: the person box (crop square x0={x0:.1f}, y0={y0:.1f}, size={size:.1f}) "
                           f"lies outside the {width}x{height} image")


def interpolate_box(rows: pd.DataFrame, frame: int) -> np.ndarray:
    """One input's box rows (``frame`` + box columns) → its box at ``frame``: the row's own, else linear
    between the nearest boxed frames before and after it, else the nearest one (before the first /
    after the last). Sparse boxes (every 10th frame, a few keyframes) are enough for a video."""
    rows = rows.sort_values("frame")
    cols = [c for c in rows.columns if c not in ("source", "frame")]
    frames = rows["frame"].to_numpy(np.float64)
    return np.array([np.interp(frame, frames, rows[c].to_numpy(np.float64)) for c in cols])


# --- the camera and the scale ---------------------------------------------------------------------------
def default_camera(width: int, height: int, focal: float | None = None, name: str = "") -> Camera:
    """The documented pinhole for uncalibrated images: focal (px) or 1.15 × max side, centred, no distortion."""
    f = float(focal) if focal is not None else DEFAULT_FOCAL_FACTOR * max(width, height)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera(K, name=name)


def root_depth_from_box(focal: float, size: np.ndarray, box_mm: float) -> np.ndarray:
    """Z_root (mm) = focal × box_mm / crop side (px): the crop is the projection of a box_mm square."""
    return float(focal) * float(box_mm) / np.asarray(size, dtype=np.float64)
