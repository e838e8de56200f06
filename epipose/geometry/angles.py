"""Angles between rotations and between directions, for comparing estimated cameras with true ones."""

from __future__ import annotations

import numpy as np


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle (degrees) of rotation matrices (..., 3, 3)."""
    tr = np.trace(np.asarray(R, dtype=np.float64), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between vectors (..., 3)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
