"""Pinhole cameras with OpenCV's 5-coefficient lens distortion, and the cameras.json rig file.

Conventions (Human3.6M's): world→camera ``Xc = R @ Xw + t`` in millimetres; pixels follow
OpenCV (x right, y down, origin at the centre of the top-left pixel); distortion
``[k1, k2, p1, p2, k3]``. Every method is vectorised over leading axes of its point arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from epipose.io import atomic_path

_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)


@dataclass(frozen=True)
class Camera:
    """One calibrated camera. ``R``/``t`` default to the identity (camera frame = world frame)."""

    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, dtype=np.float64).reshape(3, 3))
        d = np.zeros(5)
        given = np.asarray(self.dist, dtype=np.float64).ravel()
        if given.size > 5:
            raise ValueError(f"camera {self.name!r}: expected at most 5 distortion coefficients, got {given.size}")
        d[: given.size] = given
        object.__setattr__(self, "dist", d)
        object.__setattr__(self, "R", np.asarray(self.R, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "t", np.asarray(self.t, dtype=np.float64).reshape(3))

    # --- frames -------------------------------------------------------------------------
    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    def world_to_camera(self, Xw: np.ndarray) -> np.ndarray:
        return np.asarray(Xw, dtype=np.float64) @ self.R.T + self.t

    def camera_to_world(self, Xc: np.ndarray) -> np.ndarray:
        return (np.asarray(Xc, dtype=np.float64) - self.t) @ self.R

    # --- lens ---------------------------------------------------------------------------
    def distort_normalized(self, xn: np.ndarray) -> np.ndarray:
        """Ideal normalised coordinates (..., 2) → distorted normalised coordinates."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xn[..., 0], xn[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def normalized_to_pixels(self, xn: np.ndarray, distort: bool = True) -> np.ndarray:
        """Normalised coordinates (..., 2) → pixels, through the lens unless ``distort=False``."""
        xd = self.distort_normalized(xn) if distort else np.asarray(xn, dtype=np.float64)
        K = self.K
        u = K[0, 0] * xd[..., 0] + K[0, 1] * xd[..., 1] + K[0, 2]
        v = K[1, 1] * xd[..., 1] + K[1, 2]
        return np.stack([u, v], axis=-1)

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (..., 2) → ideal normalised coordinates (..., 2); NaN stays NaN."""
        uv = np.asarray(uv, dtype=np.float64)
        flat = uv.reshape(-1, 1, 2)
        out = np.full(flat.shape, np.nan)
        ok = np.isfinite(flat).all(axis=-1)[:, 0]
        if ok.any():
            out[ok] = cv2.undistortPointsIter(flat[ok], self.K, self.dist, None, None, _UNDISTORT_CRITERIA)
        return out.reshape(uv.shape)

    # --- projection ---------------------------------------------------------------------
    def project_camera(self, Xc: np.ndarray, distort: bool = True) -> np.ndarray:
        """Camera-frame points (..., 3) → pixels (..., 2)."""
        Xc = np.asarray(Xc, dtype=np.float64)
        return self.normalized_to_pixels(Xc[..., :2] / Xc[..., 2:3], distort=distort)

    def project(self, Xw: np.ndarray, distort: bool = True) -> np.ndarray:
        """World points (..., 3) → pixels (..., 2)."""
        return self.project_camera(self.world_to_camera(Xw), distort=distort)

    def with_extrinsics(self, R: np.ndarray, t: np.ndarray) -> "Camera":
        return Camera(self.K, self.dist, R, t, self.name)


@dataclass(frozen=True)
class Rig:
    """The contents of a cameras.json: per-camera intrinsics, per-subject extrinsics."""

    intrinsics: dict[str, tuple[np.ndarray, np.ndarray]]
    extrinsics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    source: str = "<memory>"

    @property
    def camera_names(self) -> list[str]:
        return sorted(self.intrinsics)

    def intrinsic_camera(self, cam: str) -> Camera:
        """The camera with its intrinsics only (identity extrinsics)."""
        if cam not in self.intrinsics:
            raise KeyError(f"{self.source}: camera {cam!r} not in intrinsics (have {self.camera_names})")
        K, dist = self.intrinsics[cam]
        return Camera(K, dist, name=cam)

    def intrinsic_cameras(self, names) -> list[Camera]:
        """``intrinsic_camera`` of each name of ``names`` (e.g. a frame table's camera column), one
        shared object per distinct camera."""
        names = list(names)
        cams = {name: self.intrinsic_camera(name) for name in dict.fromkeys(names)}
        return [cams[c] for c in names]

    def has_extrinsics(self, subject: str, cam: str) -> bool:
        return cam in self.extrinsics.get(subject, {})

    def camera(self, subject: str, cam: str) -> Camera:
        """The fully calibrated camera ``cam`` as placed for ``subject``."""
        base = self.intrinsic_camera(cam)
        if subject not in self.extrinsics:
            raise KeyError(f"{self.source}: subject {subject!r} not in extrinsics (have {sorted(self.extrinsics)})")
        if cam not in self.extrinsics[subject]:
            raise KeyError(f"{self.source}: camera {cam!r} has no extrinsics for subject {subject!r}")
        R, t = self.extrinsics[subject][cam]
        return base.with_extrinsics(R, t)

    def cameras(self, subject: str) -> dict[str, Camera]:
        return {c: self.camera(subject, c) for c in sorted(self.extrinsics.get(subject, {}))}


def _matrix(value, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not numeric ({exc})") from None
    if arr.size != int(np.prod(shape)) or not np.isfinite(arr).all():
        raise ValueError(f"{where}: expected {shape} finite numbers, got shape {arr.shape}")
    return arr.reshape(shape)


def _check_intrinsics(K: np.ndarray, where: str) -> None:
    """A pinhole K: positive focal lengths, a positive principal point, last row (0, 0, 1)."""
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"{where}: focal lengths must be positive, got fx {K[0, 0]:g}, fy {K[1, 1]:g}")
    if not (K[0, 2] > 0 and K[1, 2] > 0):
        raise ValueError(f"{where}: the principal point must lie inside the image, got ({K[0, 2]:g}, {K[1, 2]:g})")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise ValueError(f"{where}: not a camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")


def _check_rotation(R: np.ndarray, where: str) -> None:
    """A rotation: orthonormal rows, determinant +1 (not a reflection)."""
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4:
        raise ValueError(f"{where}: not a rotation (R·Rᵀ differs from the identity by "
                         f"{np.abs(R @ R.T - np.eye(3)).max():.3g})")
    if np.linalg.det(R) < 0:
        raise ValueError(f"{where}: determinant −1, a reflection, not a rotation")


def _object(value, where: str) -> dict:
    """A JSON object (camera id → ..., subject → ..., or a camera's fields), else one clear error."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object ({{...}}), got {type(value).__name__} {value!r:.40}")
    return value


def load_rig(path: str | Path) -> Rig:
    """Read a cameras.json (the camera-parameters.json schema of the Human3.6M community). ``extrinsics``
    is optional: a rig of known intrinsics only (a user's own cameras) is a valid rig."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"cameras file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "intrinsics" not in data:
        raise ValueError(f"{path}: expected the top-level key 'intrinsics' (and, optionally, 'extrinsics')")
    intr = {}
    for cam, v in _object(data["intrinsics"], f"{path}: intrinsics").items():
        where = f"{path}: intrinsics[{cam!r}]"
        if "calibration_matrix" not in _object(v, where):
            raise ValueError(f"{where}: missing 'calibration_matrix'")
        dist = _matrix(v.get("distortion", [0.0] * 5), (5,), f"{where}.distortion ([k1, k2, p1, p2, k3])")
        K = _matrix(v["calibration_matrix"], (3, 3), f"{where}.calibration_matrix")
        _check_intrinsics(K, f"{where}.calibration_matrix")
        intr[str(cam)] = (K, dist)
    extr: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for subj, cams in _object(data.get("extrinsics") or {}, f"{path}: extrinsics").items():
        extr[str(subj)] = {}
        for cam, v in _object(cams, f"{path}: extrinsics[{subj!r}]").items():
            where = f"{path}: extrinsics[{subj!r}][{cam!r}]"
            if "R" not in _object(v, where) or "t" not in v:
                raise ValueError(f"{where}: missing 'R' or 't'")
            R = _matrix(v["R"], (3, 3), f"{where}.R")
            _check_rotation(R, f"{where}.R")
            extr[str(subj)][str(cam)] = (R, _matrix(v["t"], (3,), f"{where}.t"))
    if not intr:
        raise ValueError(f"{path}: no camera under 'intrinsics'")
    return Rig(intr, extr, source=str(path))


def rig_to_json(rig: Rig) -> dict:
    return {
        "intrinsics": {
            cam: {"calibration_matrix": K.tolist(), "distortion": dist.tolist()}
            for cam, (K, dist) in sorted(rig.intrinsics.items())
        },
        "extrinsics": {
            subj: {cam: {"R": R.tolist(), "t": t.reshape(3, 1).tolist()} for cam, (R, t) in sorted(cams.items())}
            for subj, cams in sorted(rig.extrinsics.items())
        },
    }


def save_rig(rig: Rig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(rig_to_json(rig), indent=1) + "\n")


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> tuple[np.ndarray, np.ndarray]:
    """World→camera (R, t) for a camera at ``center`` looking at ``target`` (OpenCV axes: y down)."""
    center = np.asarray(center, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center
