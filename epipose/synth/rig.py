"""The synthetic camera rig: static cameras around the capture space, Human3.6M-like.

Intrinsics are fixed per camera; extrinsics are re-measured per subject with a small jitter,
as in the real Human3.6M calibration. Alternatively a given cameras.json is used as is
(param ``synth.cameras``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from epipose.camera import Rig, load_rig, look_at
from epipose.params import ParamError
from epipose.synth.config import RigParams, rng_for


def _rotation(rng: np.random.Generator, sigma_deg: float) -> np.ndarray:
    """A small random rotation (Rodrigues vector with ``sigma_deg`` per axis)."""
    r, _ = cv2.Rodrigues(np.radians(rng.normal(0.0, sigma_deg, 3)))
    return r


# The synthetic rig is stored rounded to these decimals (and rendered with exactly what is stored):
# far above the last-bit differences of sin/cos/exp/BLAS between CPUs (SIMD paths differ), so
# cameras.json has the same bytes on any machine.
RIG_DECIMALS = {"K": 6, "dist": 9, "R": 9, "t": 6}


def synthetic_rig(params: RigParams, subjects: list[str], image_size: int, seed: int) -> Rig:
    """Intrinsics per camera, extrinsics per (subject, camera), deterministic from ``seed``, rounded
    to ``RIG_DECIMALS``."""
    params.check()
    intr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    extr: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {s: {} for s in subjects}
    for i, cam in enumerate(params.camera_ids):
        rng = rng_for(seed, "rig", cam)
        f = params.focal_factor * image_size * (1 + rng.normal(0, params.focal_jitter))
        aspect = 1 + rng.normal(0, params.focal_jitter / 3)
        cx, cy = image_size / 2 - 0.5 + rng.normal(0, params.principal_jitter * image_size, 2)
        K = np.array([[f, 0.0, cx], [0.0, f * aspect, cy], [0.0, 0.0, 1.0]])
        dist = np.asarray(params.distortion, dtype=np.float64).copy()
        dist[:2] += rng.normal(0, params.distortion_jitter, 2)
        intr[cam] = (np.round(K, RIG_DECIMALS["K"]), np.round(dist, RIG_DECIMALS["dist"]))
        az = np.radians(params.azimuth_deg[i])
        base = np.array([params.distance_mm[i] * np.cos(az), params.distance_mm[i] * np.sin(az), params.height_mm[i]])
        for subject in subjects:
            srng = rng_for(seed, "rig", cam, subject)
            centre = base + srng.normal(0, params.position_jitter_mm, 3) * (1.0, 1.0, 0.3)
            R, _ = look_at(centre, np.array([0.0, 0.0, params.target_height_mm]))
            R = _rotation(srng, params.angle_jitter_deg) @ R
            extr[subject][cam] = (np.round(R, RIG_DECIMALS["R"]), np.round(-R @ centre, RIG_DECIMALS["t"]))
    return Rig(intr, extr, source="<synthetic rig>")


def load_given_rig(path: str | Path, subjects: list[str], image_size: int) -> Rig:
    """A cameras.json to render with (param ``synth.cameras``), checked against the params."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"param synth.cameras: cameras file not found: {path}")
    rig = load_rig(path)
    missing = [s for s in subjects if s not in rig.extrinsics]
    if missing:
        raise ParamError(f"param synth.cameras: {path} has no extrinsics for subjects {missing}")
    for cam, (K, _) in sorted(rig.intrinsics.items()):
        cx, cy = K[0, 2], K[1, 2]
        if not (0.35 * image_size < cx < 0.65 * image_size and 0.35 * image_size < cy < 0.65 * image_size):
            raise ParamError(
                f"param synth.image_size: {image_size} does not fit camera {cam} of {path} (principal point "
                f"{cx:.0f}, {cy:.0f}); set it to the width of that rig's images (about {2 * cx:.0f})")
    return rig
