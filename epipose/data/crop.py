"""The square person crop of the frame shards, as geometry: a crop pixel ``(u_c, v_c)`` of a square
``(x0, y0, size)`` resized to ``crop_size`` px is the original pixel ``u = x0 + u_c · size / crop_size``
(same for v), OpenCV pixel coordinates in both images (docs/data-contracts.md).
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_to_original(uv: np.ndarray, x0, y0, size, crop_size: int) -> np.ndarray:
    """Crop pixels (..., 2) → original-image pixels; box values broadcast over leading axes."""
    s = np.asarray(size, dtype=np.float64)[..., None] / crop_size
    origin = np.stack(np.broadcast_arrays(np.asarray(x0, np.float64), np.asarray(y0, np.float64)), axis=-1)
    return np.asarray(uv, dtype=np.float64) * s + origin


def original_to_crop(uv: np.ndarray, x0, y0, size, crop_size: int) -> np.ndarray:
    """Original-image pixels (..., 2) → crop pixels (inverse of ``crop_to_original``)."""
    s = crop_size / np.asarray(size, dtype=np.float64)[..., None]
    origin = np.stack(np.broadcast_arrays(np.asarray(x0, np.float64), np.asarray(y0, np.float64)), axis=-1)
    return (np.asarray(uv, dtype=np.float64) - origin) * s


def crop_image(image: np.ndarray, x0: float, y0: float, size: float, crop_size: int) -> np.ndarray:
    """Cut the square (x0, y0, size) out of ``image`` resized to ``crop_size``; black padding."""
    s = crop_size / size
    M = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, M, (crop_size, crop_size), flags=interp, borderMode=cv2.BORDER_CONSTANT)
