"""Person boxes from the videos alone: no ground truth, no extrinsics.

The cameras are static and one person is filmed, so the person is what differs from the empty room:

1. ``background``: per camera, the per-pixel median of frames sampled evenly over all of that
   camera's videos of the recording (a subject's session). Over many videos the person stands on
   any one pixel in fewer than half of the frames even when it barely moves within a video (a
   single short video's median keeps a person who stands still). Computed at a reduced
   resolution (``WORK_SIDE`` px on the longer side): a box needs no more, and memory stays small.
2. ``silhouette_extent``: per frame, pixels farther than ``threshold`` (max over RGB) from the
   background, opened to remove compression noise; the largest connected region and the regions
   near it are the person; its extent ``x0, y0, x1, y1`` in original pixels (NaN when nothing is
   found).
3. ``square_crops``: the extents smoothed over time, frames without a person filled from their
   neighbours, and turned into the square crop ``x0, y0, size`` of the frame shards: the side
   follows the tallest silhouette of a short time window over ``person_fraction``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter

log = logging.getLogger(__name__)

WORK_SIDE = 320            # px, the longer image side at which backgrounds and silhouettes are computed
MIN_AREA_FRACTION = 2e-4   # of the image: smaller foreground regions are noise
NEAR_FRACTION = 0.5        # regions this close to the person's region (× its size) belong to it


def work_scale(width: int, height: int) -> float:
    return min(1.0, WORK_SIDE / max(width, height))


def reduce(image: np.ndarray, scale: float) -> np.ndarray:
    """The image at the working resolution."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def background(frames: list[np.ndarray]) -> np.ndarray:
    """The per-pixel median of frames (all of one camera, at the working resolution); an odd count
    makes the median one of the frames' values, computed without leaving uint8."""
    if not frames:
        raise ValueError("no frames to model the background with")
    stack = np.stack(frames[: len(frames) - (1 - len(frames) % 2)])
    k = len(stack) // 2
    return np.partition(stack, k, axis=0)[k]


def silhouette_extent(image: np.ndarray, bg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """The person's extent ``(x0, y0, x1, y1)`` in original pixels (pixel edges), NaN if none found.

    ``image``: the original frame; ``bg``: its camera's background at the working resolution.
    """
    small = reduce(image, scale)
    diff = cv2.absdiff(small, bg).max(axis=-1)
    mask = (diff > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if n <= 1 or areas.max() < MIN_AREA_FRACTION * mask.size:
        return np.full(4, np.nan)
    boxes = np.stack([stats[1:, 0], stats[1:, 1], stats[1:, 0] + stats[1:, 2], stats[1:, 1] + stats[1:, 3]], 1)
    main = int(np.argmax(areas))
    x0, y0, x1, y1 = boxes[main].astype(np.float64)
    margin = NEAR_FRACTION * max(x1 - x0, y1 - y0)
    near = ((boxes[:, 0] < x1 + margin) & (boxes[:, 2] > x0 - margin) & (boxes[:, 1] < y1 + margin)
            & (boxes[:, 3] > y0 - margin) & (areas >= MIN_AREA_FRACTION * mask.size))
    ext = np.array([boxes[near, 0].min(), boxes[near, 1].min(), boxes[near, 2].max(), boxes[near, 3].max()],
                   dtype=np.float64)
    return ext / scale


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Rows (F, C) with NaN filled by linear interpolation over the row index (constant at the ends)."""
    values = np.array(values, dtype=np.float64)
    ok = np.isfinite(values).all(axis=1)
    if not ok.any():
        return values
    idx = np.arange(len(values))
    for c in range(values.shape[1]):
        values[:, c] = np.interp(idx, idx[ok], values[ok, c])
    return values


def square_crops(extents: np.ndarray, person_fraction: float, centre_shift: float, smooth: int,
                 size_window: int) -> np.ndarray:
    """Per-frame person extents (F, 4) → square crops (F, 3) ``x0, y0, size``.

    Frames without a person take their neighbours' values (linear interpolation). The centre is
    smoothed by a running median of ``smooth`` frames; the side follows the *tallest* silhouette
    (after that median) within ``size_window`` frames — a posture can only make a person shorter
    than standing, so sitting or bending does not shrink the crop, while walking towards or away
    from the camera still changes it — divided by ``person_fraction`` (the standing silhouette's
    height over the crop side). The crop's centre is ``centre_shift`` × its side below the
    silhouette's centre (negative: above; the paper's crops centre on the pelvis).
    """
    centre = np.stack([(extents[:, 0] + extents[:, 2]) / 2, (extents[:, 1] + extents[:, 3]) / 2], axis=1)
    height = (extents[:, 3] - extents[:, 1])[:, None]
    track = fill_missing(np.concatenate([centre, height], axis=1))
    if smooth > 1 and len(track) > 1:
        track = median_filter(track, size=(smooth, 1), mode="nearest")
    tall = maximum_filter1d(track[:, 2], size=max(1, size_window), mode="nearest") if size_window > 1 else track[:, 2]
    size = tall / person_fraction
    cy = track[:, 1] + centre_shift * size
    return np.stack([track[:, 0] - size / 2, cy - size / 2, size], axis=1)
