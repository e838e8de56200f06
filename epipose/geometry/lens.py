"""Fast, vectorised lens undistortion (OpenCV's 5-coefficient model).

``Camera.undistort_points`` calls ``cv2.undistortPointsIter`` (≈0.45 µs a point); the
triangulation's hot path undistorts every observation, so here Newton's method runs on whole
arrays at once and converges to the same root (to ~1e-15). It starts from one fixed-point step
(``x_d / radial(x_d)``), takes two Newton steps on everything and continues only on the points
whose last step was not yet negligible; points that still do not converge (extreme distortion far
off-centre) fall back to ``cv2.undistortPointsIter``.
"""

from __future__ import annotations

import numpy as np

from epipose.camera import Camera

_STEP_TOL = 1e-7    # a Newton step this small leaves an error ~ step² ≈ 1e-14 (quadratic convergence)


def _newton(x, y, xd, yd, k1, k2, k3, p1, p2, iterations):
    """Newton steps on distort(x, y) = (xd, yd); returns x, y and the size of the last step."""
    step = np.full(x.shape, np.inf)
    for _ in range(iterations):
        x2, y2, xy = x * x, y * y, x * y
        r2 = x2 + y2
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        fx = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x2) - xd
        fy = y * radial + p1 * (r2 + 2.0 * y2) + 2.0 * p2 * xy - yd
        dr = 2.0 * (k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2))          # 2 · d(radial)/d(r²)
        a = radial + x2 * dr + 2.0 * p1 * y + 6.0 * p2 * x
        b = xy * dr + 2.0 * p1 * x + 2.0 * p2 * y
        d = radial + y2 * dr + 6.0 * p1 * y + 2.0 * p2 * x
        inv = 1.0 / (a * d - b * b)
        dx = (d * fx - b * fy) * inv
        dy = (a * fy - b * fx) * inv
        x = x - dx
        y = y - dy
        step = np.abs(dx) + np.abs(dy)
    return x, y, step


def undistort_normalized(camera: Camera, uv: np.ndarray) -> np.ndarray:
    """Distorted pixels (..., 2) → ideal normalised coordinates (..., 2); NaN stays NaN."""
    return np.stack(undistort_xy(camera, uv), axis=-1)


def undistort_xy(camera: Camera, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distorted pixels (..., 2) → ideal normalised x and y, each (...)."""
    uv = np.asarray(uv, dtype=np.float64)
    K = camera.K
    yd = (uv[..., 1] - K[1, 2]) / K[1, 1]
    xd = (uv[..., 0] - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    if not np.any(camera.dist):
        return xd, yd
    k1, k2, p1, p2, k3 = camera.dist
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r2 = xd * xd + yd * yd
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        x, y, step = _newton(xd / radial, yd / radial, xd, yd, k1, k2, k3, p1, p2, 2)
        todo = np.flatnonzero(~(step < _STEP_TOL) & np.isfinite(xd) & np.isfinite(yd))
        if len(todo):
            xs, ys, st = _newton(x.flat[todo], y.flat[todo], xd.flat[todo], yd.flat[todo], k1, k2, k3, p1, p2, 10)
            x.flat[todo], y.flat[todo] = xs, ys
            ok = np.isfinite(xs) & np.isfinite(ys) & (st < _STEP_TOL)
            back = camera.distort_normalized(np.stack([xs, ys], axis=-1))
            ok &= (np.abs(back[:, 0] - xd.flat[todo]) < 1e-12) & (np.abs(back[:, 1] - yd.flat[todo]) < 1e-12)
            bad = todo[~ok]
            if len(bad):
                fixed = camera.undistort_points(uv.reshape(-1, 2)[bad])
                x.flat[bad], y.flat[bad] = fixed[:, 0], fixed[:, 1]
    return x, y
