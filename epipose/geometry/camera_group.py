"""A set of cameras that see the same scene: projection and robust triangulation for all of them.

In the style of aniposelib's ``CameraGroup``, built on ``epipose.camera.Camera``. Pose arrays are
(T, V, J, ...) — frames, views (in ``names`` order), joints. Points live in the group's world
frame (the calibrated world with known extrinsics; the reference camera's frame with estimated
ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epipose.camera import Camera, Rig
from epipose.geometry import triangulation as tri
from epipose.geometry.lens import undistort_normalized, undistort_xy


@dataclass(frozen=True)
class CameraGroup:
    cameras: tuple[Camera, ...]

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("a camera group needs at least one camera")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_rig(cls, rig: Rig, subject: str, names: list[str] | tuple[str, ...], extrinsics: bool = True) -> "CameraGroup":
        """The cameras ``names`` of ``rig``: calibrated for ``subject``, or intrinsics only."""
        if extrinsics:
            return cls(tuple(rig.camera(subject, n) for n in names))
        return cls(tuple(rig.intrinsic_camera(n) for n in names))

    def with_extrinsics(self, R: np.ndarray, t: np.ndarray) -> "CameraGroup":
        return CameraGroup(tuple(c.with_extrinsics(Ri, ti) for c, Ri, ti in zip(self.cameras, R, t)))

    def subset(self, index: list[int] | np.ndarray) -> "CameraGroup":
        return CameraGroup(tuple(self.cameras[i] for i in index))

    # --- arrays ---------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def R(self) -> np.ndarray:
        return np.stack([c.R for c in self.cameras])

    @property
    def t(self) -> np.ndarray:
        return np.stack([c.t for c in self.cameras])

    @property
    def focal(self) -> np.ndarray:
        """Mean focal length per camera (px): converts normalised-image errors to pixels."""
        return np.array([(c.K[0, 0] + c.K[1, 1]) / 2.0 for c in self.cameras])

    def __len__(self) -> int:
        return len(self.cameras)

    # --- geometry -------------------------------------------------------------------------
    def undistort(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (T, V, ..., 2) → ideal normalised coordinates, per view's own K and distortion."""
        uv = np.asarray(uv, dtype=np.float64)
        out = np.empty(uv.shape)
        for v, cam in enumerate(self.cameras):
            out[:, v] = undistort_normalized(cam, uv[:, v])
        return out

    def to_cameras(self, X: np.ndarray) -> np.ndarray:
        """World points (T, J, 3) → every camera's frame (T, V, J, 3)."""
        X = np.asarray(X, dtype=np.float64)
        return np.stack([c.world_to_camera(X) for c in self.cameras], axis=1)

    def project(self, X: np.ndarray) -> np.ndarray:
        """World points (T, J, 3) → distorted pixels (T, V, J, 2)."""
        return np.stack([c.project(np.asarray(X, dtype=np.float64)) for c in self.cameras], axis=1)

    def reprojection_errors(self, X: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Pixel distance (T, V, J) between the projections of X (T, J, 3) and observed pixels uv (T, V, J, 2)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            proj = self.project(X)
            return np.linalg.norm(proj - np.asarray(uv, dtype=np.float64), axis=-1)

    def triangulate(self, uv: np.ndarray, conf: np.ndarray, *, min_conf: float = 0.0, normalized: bool = False,
                    **options) -> tri.PoseTriangulation:
        """Robust triangulation of (T, V, J, 2) pixels (or normalised coordinates) with (T, V, J) confidences.

        Observations that are NaN or below ``min_conf`` are ignored; ``options`` go to
        ``triangulation.triangulate_poses`` (threshold_px, min_views, ransac, refine_iterations,
        swap_detection, swap_ratio, method).
        """
        uv = np.asarray(uv, dtype=np.float64)
        T, V, J, _ = uv.shape
        xu, xv = np.empty((V, T, J)), np.empty((V, T, J))
        for v, cam in enumerate(self.cameras):
            if normalized:
                xu[v], xv[v] = uv[:, v, :, 0], uv[:, v, :, 1]
            else:
                xu[v], xv[v] = undistort_xy(cam, uv[:, v])
        conf = np.asarray(conf, dtype=np.float64).transpose(1, 0, 2)
        w = np.where((conf >= min_conf) & (conf > 0), conf, 0.0)
        return tri.triangulate_view_major(xu, xv, w, self.R, self.t, self.focal, **options)
