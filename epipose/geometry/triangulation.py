"""Multi-view triangulation with known cameras, vectorised over points (frames × joints).

Conventions: observations are *ideal normalised* image coordinates ``x`` (N, V, 2) (undistorted,
``K⁻¹·pixel``), cameras are world→camera rotations ``R`` (V, 3, 3) and translations ``t`` (V, 3),
``f`` (V,) the focal lengths in px that turn normalised errors into pixels, and ``w`` (N, V)
per-observation residual weights (the detector's confidence; 0 = not used).

- ``dlt``: the confidence-weighted linear DLT over all views. ``method="svd"`` is the textbook
  homogeneous solution (batched SVD of the stacked 2V×4 systems); ``method="lstsq"`` solves the
  same equations with the homogeneous coordinate fixed to 1 ("Linear-LS", Hartley & Sturm 1997)
  through closed-form 3×3 normal equations assembled by one matrix product — ~20× faster.
- ``view_ransac``: RANSAC over views. Hypotheses are all view pairs (few, so enumerated: exact
  and deterministic), each scored by the views whose reprojection error is under a px threshold;
  points whose all-view fit already has every view under the threshold skip the hypotheses
  (no hypothesis could find more support).
- ``refine_points``: Gauss–Newton on the weighted reprojection error (px), per point.
- ``find_swaps``: left/right-swapped legs or arms in a view, by comparing a view's 2D and its
  mirrored 2D against the other views' consensus.
- ``triangulate_poses``: all of it for (T, V, J) pose arrays.
- ``triangulation_angles``: how well the views constrain each point (its widest ray angle).

Internally arrays are view-major ((V, N) rows, points (3, N)) so that every elementwise pass
runs over long contiguous rows and sums over views are a few vector additions. The private helpers
say which layout they take: ``_*_cm`` ("columns") work on flat point columns — observations (V, N),
points (3, N) with N = frames × joints —, ``_*_vm`` ("view-major poses") on (V, T, J) observation
arrays and (3, T, J) points that keep the frame and joint axes (the swap check needs the joints).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from epipose import skeleton

_CHUNK = 8192  # points per block: keeps the elementwise passes in cache

# Left/right groups checked independently for swaps: legs and arms (pairs of skeleton.FLIP_PAIRS).
SWAP_GROUPS: tuple[tuple[int, ...], ...] = (
    tuple(sorted({j for pair in skeleton.FLIP_PAIRS[:3] for j in pair})),
    tuple(sorted({j for pair in skeleton.FLIP_PAIRS[3:] for j in pair})),
)


# --- linear triangulation ------------------------------------------------------------------
def dlt_basis(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4V, 10) basis mapping per-view features [w², w²x, w²y, w²(x²+y²)] to the normal equations.

    Columns: the 6 unique entries of M = Σ aaᵀ+bbᵀ (00, 01, 02, 11, 12, 22), the 3 of the right-hand
    side r = Σ a c + b d, and Σ c² + d², for the DLT rows a·X = c, b·X = d of every view
    (a = x r₃ − r₁, c = t₁ − x t₃, b = y r₃ − r₂, d = t₂ − y t₃; rᵢ the rows of R).
    """
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    iu = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])
    rows = []
    for Rv, tv in zip(R, t):
        r1, r2, r3 = Rv
        t1, t2, t3 = tv
        s31 = np.outer(r3, r1) + np.outer(r1, r3)
        s32 = np.outer(r3, r2) + np.outer(r2, r3)
        rows.append(np.concatenate([(np.outer(r1, r1) + np.outer(r2, r2))[iu], -(t1 * r1 + t2 * r2), [t1 * t1 + t2 * t2]]))
        rows.append(np.concatenate([-s31[iu], t1 * r3 + t3 * r1, [-2.0 * t1 * t3]]))
        rows.append(np.concatenate([-s32[iu], t2 * r3 + t3 * r2, [-2.0 * t2 * t3]]))
        rows.append(np.concatenate([np.outer(r3, r3)[iu], -t3 * r3, [t3 * t3]]))
    return np.asarray(rows)


def _features(xu: np.ndarray, xv: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """(V, n) coordinates (0 where unused) and squared weights → (4V, n) DLT features."""
    V, n = w2.shape
    F = np.empty((V, 4, n))
    F[:, 0] = w2
    np.multiply(w2, xu, out=F[:, 1])
    np.multiply(w2, xv, out=F[:, 2])
    np.multiply(F[:, 1], xu, out=F[:, 3])
    F[:, 3] += F[:, 2] * xv
    return F.reshape(4 * V, n)


def _solve_sym3(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Closed-form solve of symmetric 3×3 systems: m (6, n) unique entries, r (3, n) → (3, n); NaN if singular."""
    m00, m01, m02, m11, m12, m22 = m
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    tr = np.abs(m00) + np.abs(m11) + np.abs(m22)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        inv[~(np.abs(det) > 1e-12 * tr * tr * tr)] = np.nan
        r0, r1, r2 = r
        return np.stack([(c00 * r0 + c01 * r1 + c02 * r2) * inv,
                         (c01 * r0 + c11 * r1 + c12 * r2) * inv,
                         (c02 * r0 + c12 * r1 + c22 * r2) * inv])


def _dlt_cm(xu: np.ndarray, xv: np.ndarray, w2: np.ndarray, BT: np.ndarray) -> np.ndarray:
    eq = BT @ _features(xu, xv, w2)
    return _solve_sym3(eq[:6], eq[6:9])


def _view_major(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, V, 2), (N, V) → xu, xv, w (V, N), with unusable observations zeroed (weight 0)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    ok = np.isfinite(x).all(-1) & (w > 0)
    w = np.where(ok, w, 0.0).T.copy()
    xu = np.where(ok, x[..., 0], 0.0).T.copy()
    xv = np.where(ok, x[..., 1], 0.0).T.copy()
    return xu, xv, w


def dlt(x: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray, method: str = "lstsq",
        min_views: int = 2) -> np.ndarray:
    """Confidence-weighted linear triangulation: (N, V, 2), (N, V) → (N, 3); NaN if < min_views."""
    xu, xv, wv = _view_major(x, w)
    used = (wv > 0).sum(0)
    if method == "lstsq":
        BT = dlt_basis(R, t).T.copy()
        out = np.empty((3, xu.shape[1]))
        for s in range(0, xu.shape[1], _CHUNK):
            sl = slice(s, s + _CHUNK)
            out[:, sl] = _dlt_cm(xu[:, sl], xv[:, sl], wv[:, sl] ** 2, BT)
        out = out.T
    elif method == "svd":
        out = _dlt_svd(xu, xv, wv, np.asarray(R, np.float64), np.asarray(t, np.float64))
    else:
        raise ValueError(f"unknown DLT method {method!r} (lstsq | svd)")
    out[used < min_views] = np.nan
    return out


def _dlt_svd(xu: np.ndarray, xv: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Homogeneous DLT: the right singular vector of the smallest singular value (batched SVD)."""
    scale = float(np.median(np.linalg.norm(t, axis=-1))) or 1.0   # conditioning: translations ~1
    P = np.concatenate([R, t[:, :, None] / scale], axis=2)            # (V, 3, 4)
    rows_u = (xu[:, :, None] * P[:, None, 2] - P[:, None, 0]) * w[:, :, None]   # (V, N, 4)
    rows_v = (xv[:, :, None] * P[:, None, 2] - P[:, None, 1]) * w[:, :, None]
    A = np.concatenate([rows_u, rows_v], axis=0).transpose(1, 0, 2)            # (N, 2V, 4)
    out = np.full((xu.shape[1], 3), np.nan)
    ok = (w > 0).sum(0) >= 2
    if ok.any():
        _, _, vh = np.linalg.svd(A[ok])
        h = vh[:, -1, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[ok] = h[:, :3] / h[:, 3:4] * scale
    return out


# --- reprojection ----------------------------------------------------------------------------
def _project_cm(X: np.ndarray, Rs: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (3, n) → normalised (V, n) x, y and depth z; Rs = R.reshape(3V, 3)."""
    V = len(t)
    Xc = (Rs @ X).reshape(V, 3, -1)
    Xc += t[:, :, None]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        iz = 1.0 / z
        return Xc[:, 0] * iz, Xc[:, 1] * iz, z


def _sq_err_px(X: np.ndarray, xu: np.ndarray, xv: np.ndarray, Rs: np.ndarray, t: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Squared reprojection errors (V, n) in px² (ideal image); inf behind a camera or for NaN points."""
    px, py, z = _project_cm(X, Rs, t)
    px -= xu
    py -= xv
    e2 = (px * px + py * py) * f2
    e2[~(z > 0)] = np.inf
    return e2


def project_normalized(X: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) → ideal normalised coordinates (N, V, 2) in every view, and depths (N, V)."""
    px, py, z = _project_cm(np.asarray(X, np.float64).T, np.asarray(R, np.float64).reshape(-1, 3), np.asarray(t, np.float64))
    return np.stack([px.T, py.T], axis=-1), z.T


def reprojection_errors(X: np.ndarray, x: np.ndarray, R: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(N, 3) points vs (N, V, 2) observations → (N, V) errors in px (ideal image); inf behind a camera."""
    xp, z = project_normalized(X, R, t)
    err = np.linalg.norm(xp - x, axis=-1) * np.asarray(f)
    return np.where(z > 0, err, np.inf)


def triangulation_angles(X: np.ndarray, R: np.ndarray, t: np.ndarray, used: np.ndarray) -> np.ndarray:
    """(T, J, 3) world points seen from cameras (T, V, 3, 3), (T, V, 3) by the ``used`` (T, V, J)
    views → (T, J) the widest angle (deg, 0–90) between the lines of two of a point's rays; NaN with
    fewer than two. Precision along a line falls as 1 / sin(angle), and two cameras facing each
    other (rays at 180°) are as blind to it as two in a row (0°): cameras nearly in line with the
    person give angles of a few degrees and depths that are mostly noise."""
    centres = -np.einsum("tvji,tvj->tvi", R, t)                           # C = -Rᵀt
    rays = np.asarray(X, np.float64)[:, None] - centres[:, :, None]       # (T, V, J, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    min_cos = np.full((rays.shape[0], rays.shape[2]), np.inf)
    for a, b in combinations(range(rays.shape[1]), 2):
        both = used[:, a] & used[:, b]
        cos = np.abs((rays[:, a] * rays[:, b]).sum(-1))                 # lines, not directions
        min_cos = np.where(both & (cos < min_cos), cos, min_cos)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(min_cos) & np.isfinite(X).all(-1), np.degrees(np.arccos(np.minimum(min_cos, 1.0))), np.nan)


# --- RANSAC over views -----------------------------------------------------------------------
class _Views:
    """Per-camera-set constants shared by the passes."""

    def __init__(self, R: np.ndarray, t: np.ndarray, f: np.ndarray):
        self.R = np.asarray(R, dtype=np.float64)
        self.t = np.asarray(t, dtype=np.float64)
        self.V = len(self.R)
        self.Rs = self.R.reshape(3 * self.V, 3)
        self.f2 = (np.asarray(f, dtype=np.float64) ** 2)[:, None]
        self.BT = dlt_basis(self.R, self.t).T.copy()
        self.pairs = list(combinations(range(self.V), 2))
        self.pair_BT = [dlt_basis(self.R[list(p)], self.t[list(p)]).T.copy() for p in self.pairs]
        self.KBT = _rotation_basis(self.R).T.copy()


def _ransac_cm(xu, xv, w, cam: _Views, threshold_px: float, min_views: int) -> tuple[np.ndarray, np.ndarray]:
    """View-major RANSAC over views: returns inliers (V, n) and the refit points (3, n)."""
    thr2 = threshold_px ** 2
    valid = w > 0
    nvalid = valid.sum(0)
    w2 = w * w
    X = _dlt_cm(xu, xv, w2, cam.BT)
    e2 = _sq_err_px(X, xu, xv, cam.Rs, cam.t, cam.f2)
    with np.errstate(invalid="ignore"):
        good = ((e2 < thr2) | ~valid).all(0) & (nvalid >= min_views)
    inl = valid & good
    hard = np.flatnonzero(~good & (nvalid >= 2))
    if len(hard):
        xh, yh, wh, vh = xu[:, hard], xv[:, hard], w[:, hard], valid[:, hard]
        best_score = np.full(len(hard), -1.0)
        best_inl = np.zeros((cam.V, len(hard)), dtype=bool)
        wsum = wh.sum(0) + 1e-12
        for (a, b), BT in zip(cam.pairs, cam.pair_BT):
            ab = [a, b]
            Xh = _dlt_cm(xh[ab], yh[ab], wh[ab] ** 2, BT)
            eh = _sq_err_px(Xh, xh, yh, cam.Rs, cam.t, cam.f2)
            with np.errstate(invalid="ignore"):
                ih = vh & (eh < thr2)
                quality = (np.where(ih, 1.0 - eh / thr2, 0.0) * wh).sum(0) / wsum
            score = np.where(vh[a] & vh[b], ih.sum(0) + quality, -1.0)
            better = score > best_score
            best_score = np.where(better, score, best_score)
            best_inl[:, better] = ih[:, better]
        best_inl &= best_inl.sum(0) >= min_views
        inl[:, hard] = best_inl
        X[:, hard] = _dlt_cm(xh, yh, np.where(best_inl, wh * wh, 0.0), cam.BT)
    inl &= inl.sum(0) >= min_views
    X[:, ~inl.any(0)] = np.nan
    return inl, X


def view_ransac(x: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray, f: np.ndarray,
                threshold_px: float, min_views: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Inlier views (N, V) bool and the weighted DLT on them (N, 3) (NaN where < min_views inliers).

    Every pair of usable views is a hypothesis; its support is the views reprojecting within
    ``threshold_px``; the best (most inliers, then the highest confidence-weighted MSAC quality)
    wins and the point is refitted on its inliers.
    """
    xu, xv, wv = _view_major(x, w)
    cam = _Views(R, t, np.asarray(f))
    n = xu.shape[1]
    inl = np.zeros((cam.V, n), dtype=bool)
    X = np.empty((3, n))
    for s in range(0, n, _CHUNK):
        sl = slice(s, s + _CHUNK)
        inl[:, sl], X[:, sl] = _ransac_cm(xu[:, sl], xv[:, sl], wv[:, sl], cam, threshold_px, min_views)
    return inl.T, X.T


# --- non-linear refinement -------------------------------------------------------------------
def _rotation_basis(R: np.ndarray) -> np.ndarray:
    """(5V, 9): maps the 5 non-zero unique entries of each view's camera-frame JᵀJ to Σ RᵀDR (world)."""
    idx = [(0, 0), (0, 2), (1, 1), (1, 2), (2, 2)]
    rows = []
    for Rv in R:
        for k, l in idx:
            m = np.outer(Rv[k], Rv[l])
            if k != l:
                m = m + m.T
            rows.append(m.ravel())
    return np.asarray(rows)


def _cost_cm(X, xu, xv, s, cam: _Views):
    px, py, z = _project_cm(X, cam.Rs, cam.t)
    ex, ey = px - xu, py - xv
    c = s * (ex * ex + ey * ey)
    c[(s > 0) & ~(z > 0)] = np.inf
    return c.sum(0), px, py, z, ex, ey


def _refine_cm(X: np.ndarray, xu, xv, w, cam: _Views, iterations: int) -> np.ndarray:
    """Gauss–Newton on Σ_v (f_v w_v)² ‖π(R_v X + t_v) − x_v‖², per point; steps kept only if they help."""
    V, n = w.shape
    X = X.copy()
    s = w * w * cam.f2
    active = np.isfinite(X).all(0) & ((s > 0).sum(0) >= 2)
    refined = active.copy()
    X0 = np.where(active, X, 0.0)
    cost, px, py, z, ex, ey = _cost_cm(X0, xu, xv, s, cam)
    for _ in range(iterations):
        with np.errstate(divide="ignore", invalid="ignore"):
            iz = 1.0 / z
            a = s * iz * iz
        a[~(z > 0)] = 0.0
        D = np.empty((V, 5, n))
        D[:, 0] = a
        np.multiply(-a, px, out=D[:, 1])
        D[:, 2] = a
        np.multiply(-a, py, out=D[:, 3])
        D[:, 4] = a * (px * px + py * py)
        H = cam.KBT @ D.reshape(5 * V, n)
        az = a * z
        G = np.empty((V, 3, n))
        np.multiply(az, ex, out=G[:, 0])
        np.multiply(az, ey, out=G[:, 1])
        G[:, 2] = -(G[:, 0] * px + G[:, 1] * py)
        g = cam.Rs.T @ G.reshape(3 * V, n)
        step = _solve_sym3(H[[0, 1, 2, 4, 5, 8]], g)
        Xn = X0 - np.where(np.isfinite(step), step, 0.0)
        new_cost, npx, npy, nz, nex, ney = _cost_cm(Xn, xu, xv, s, cam)
        with np.errstate(invalid="ignore"):
            take = active & (new_cost < cost)
        if not take.any():
            break
        np.copyto(X0, Xn, where=take)
        np.copyto(cost, new_cost, where=take)
        for old, new in ((px, npx), (py, npy), (z, nz), (ex, nex), (ey, ney)):
            np.copyto(old, new, where=take)
        active &= take
    np.copyto(X, X0, where=refined)
    return X


def refine_points(X: np.ndarray, x: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray,
                  f: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Gauss–Newton refinement of (N, 3) points on the weighted reprojection error of (N, V, 2) observations."""
    X = np.asarray(X, dtype=np.float64)
    if iterations <= 0 or not len(X):
        return X.copy()
    xu, xv, wv = _view_major(x, w)
    cam = _Views(R, t, np.asarray(f))
    out = np.empty((3, len(X)))
    for s in range(0, len(X), _CHUNK):
        sl = slice(s, s + _CHUNK)
        out[:, sl] = _refine_cm(X[sl].T, xu[:, sl], xv[:, sl], wv[:, sl], cam, iterations)
    return out.T


# --- left/right swaps --------------------------------------------------------------------------
def _swaps_vm(X: np.ndarray, xu: np.ndarray, xv: np.ndarray, valid: np.ndarray, cam: _Views,
              threshold_px: float, ratio: float) -> np.ndarray:
    """View-major swap test. X (3, T, J); xu, xv, valid (V, T, J) → (V, T, G) bool."""
    V, T, J = xu.shape
    px, py, z = _project_cm(X.reshape(3, -1), cam.Rs, cam.t)
    px, py, z = px.reshape(V, T, J), py.reshape(V, T, J), z.reshape(V, T, J)
    perm = list(skeleton.FLIP_PERM)
    f2 = cam.f2[:, :, None]
    usable = valid & valid[:, :, perm] & np.isfinite(X).all(0)[None] & (z > 0)
    out = np.zeros((V, T, len(SWAP_GROUPS)), dtype=bool)
    with np.errstate(invalid="ignore"):
        for g, joints in enumerate(SWAP_GROUPS):
            j = list(joints)
            jf = [perm[i] for i in j]
            u = usable[:, :, j]
            eo = np.sqrt(((xu[:, :, j] - px[:, :, j]) ** 2 + (xv[:, :, j] - py[:, :, j]) ** 2) * f2)
            ef = np.sqrt(((xu[:, :, jf] - px[:, :, j]) ** 2 + (xv[:, :, jf] - py[:, :, j]) ** 2) * f2)
            cnt = u.sum(-1)
            mo = np.where(u, eo, 0.0).sum(-1) / np.maximum(cnt, 1)
            mf = np.where(u, ef, 0.0).sum(-1) / np.maximum(cnt, 1)
            out[:, :, g] = (cnt >= 4) & (mo > threshold_px) & (mf < ratio * mo)
    return out


def find_swaps(X: np.ndarray, x: np.ndarray, valid: np.ndarray, R: np.ndarray, t: np.ndarray, f: np.ndarray,
               threshold_px: float, ratio: float = 0.5) -> np.ndarray:
    """Views whose legs or arms are left/right-swapped: (T, V, len(SWAP_GROUPS)) bool.

    X (T, J, 3) is the robust (consensus) triangulation, x (T, V, J, 2) the normalised 2D and
    valid (T, V, J) its usable mask. A group is swapped in a view when its mean reprojection
    error exceeds ``threshold_px`` and mirroring the view's left/right joints brings it below
    ``ratio`` times that.
    """
    cam = _Views(R, t, np.asarray(f))
    x = np.asarray(x, dtype=np.float64)
    out = _swaps_vm(np.asarray(X, np.float64).transpose(2, 0, 1), x[..., 0].transpose(1, 0, 2),
                    x[..., 1].transpose(1, 0, 2), np.asarray(valid).transpose(1, 0, 2), cam, threshold_px, ratio)
    return out.transpose(1, 0, 2)


def apply_swaps(values: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Mirror the swapped groups: values (T, V, J, ...) with flips (T, V, G) → a corrected copy."""
    out = np.array(values, copy=True)
    perm = np.asarray(skeleton.FLIP_PERM)
    for g, joints in enumerate(SWAP_GROUPS):
        tt, vv = np.nonzero(flips[:, :, g])
        if len(tt):
            j = np.asarray(joints)
            out[tt[:, None], vv[:, None], j[None, :]] = values[tt[:, None], vv[:, None], perm[j][None, :]]
    return out


# --- everything, for pose arrays ---------------------------------------------------------------
@dataclass(frozen=True)
class PoseTriangulation:
    """Result of ``triangulate_poses`` for T frames, V views and J joints."""

    points: np.ndarray     # (T, J, 3) world (reference) frame; NaN where not triangulated
    inliers: np.ndarray    # (T, V, J) bool: observations used in the final fit
    n_views: np.ndarray    # (T, J) int: number of inlier views (0 where not triangulated)
    swaps: np.ndarray      # (T, V, G) bool: left/right groups mirrored before the final fit


def triangulate_poses(x: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray, f: np.ndarray, *,
                      threshold_px: float = 15.0, min_views: int = 2, ransac: bool = True,
                      refine_iterations: int = 1, swap_detection: bool = True, swap_ratio: float = 0.5,
                      method: str = "lstsq") -> PoseTriangulation:
    """Robust triangulation of (T, V, J, 2) normalised 2D with (T, V, J) weights (0 = unusable).

    Pipeline: view-RANSAC (or all usable views) + weighted DLT; then, if ``swap_detection``,
    mirror the left/right groups of views that fit much better mirrored and redo those frames;
    then Gauss–Newton on the inliers. Joints with fewer than ``min_views`` inlier views get NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    return triangulate_view_major(x[..., 0].transpose(1, 0, 2), x[..., 1].transpose(1, 0, 2),
                                  np.asarray(w, np.float64).transpose(1, 0, 2), R, t, f, threshold_px=threshold_px,
                                  min_views=min_views, ransac=ransac, refine_iterations=refine_iterations,
                                  swap_detection=swap_detection, swap_ratio=swap_ratio, method=method)


def triangulate_view_major(xu: np.ndarray, xv: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray,
                           f: np.ndarray, *, threshold_px: float = 15.0, min_views: int = 2, ransac: bool = True,
                           refine_iterations: int = 1, swap_detection: bool = True, swap_ratio: float = 0.5,
                           method: str = "lstsq") -> PoseTriangulation:
    """``triangulate_poses`` on view-major arrays: normalised x, y and weights, each (V, T, J)."""
    V, T, J = w.shape
    ok = np.isfinite(xu) & np.isfinite(xv) & (w > 0)
    # private, zeroed copies (swap correction edits them)
    xu = np.where(ok, xu, 0.0)
    xv = np.where(ok, xv, 0.0)
    wv = np.where(ok, w, 0.0)
    cam = _Views(R, t, np.asarray(f))
    X = np.empty((3, T, J))
    inl = np.zeros((V, T, J), dtype=bool)

    def run(frames: slice | np.ndarray) -> None:
        a, b, c = xu[:, frames].reshape(V, -1), xv[:, frames].reshape(V, -1), wv[:, frames].reshape(V, -1)
        n = a.shape[1]
        Xs, Is = np.empty((3, n)), np.empty((V, n), dtype=bool)
        for s in range(0, n, _CHUNK):
            sl = slice(s, s + _CHUNK)
            if ransac:
                Is[:, sl], Xs[:, sl] = _ransac_cm(a[:, sl], b[:, sl], c[:, sl], cam, threshold_px, min_views)
            else:
                Is[:, sl] = c[:, sl] > 0
                Is[:, sl] &= Is[:, sl].sum(0) >= min_views
                Xs[:, sl] = _dlt_cm(a[:, sl], b[:, sl], c[:, sl] ** 2, cam.BT)
        if method != "lstsq":
            Xs = _dlt_svd(a, b, np.where(Is, c, 0.0), cam.R, cam.t).T
        nf = n // J
        X[:, frames] = Xs.reshape(3, nf, J)
        inl[:, frames] = Is.reshape(V, nf, J)

    run(slice(None))
    swaps = np.zeros((V, T, len(SWAP_GROUPS)), dtype=bool)
    if swap_detection and V >= 3:
        swaps = _swaps_vm(X, xu, xv, wv > 0, cam, threshold_px, swap_ratio)
        frames = np.flatnonzero(swaps.any(axis=(0, 2)))
        if len(frames):
            sw = swaps[:, frames].transpose(1, 0, 2)
            for arr in (xu, xv, wv):
                arr[:, frames] = apply_swaps(arr[:, frames].transpose(1, 0, 2), sw).transpose(1, 0, 2)
            run(frames)
    if refine_iterations > 0:
        Xf = X.reshape(3, -1)
        a, b = xu.reshape(V, -1), xv.reshape(V, -1)
        wi = np.where(inl, wv, 0.0).reshape(V, -1)
        for s in range(0, Xf.shape[1], _CHUNK):
            sl = slice(s, s + _CHUNK)
            Xf[:, sl] = _refine_cm(Xf[:, sl], a[:, sl], b[:, sl], wi[:, sl], cam, refine_iterations)
        X = Xf.reshape(3, T, J)
    n_views = inl.sum(0)
    bad = (n_views < min_views) | ~np.isfinite(X).all(0)
    X[:, bad] = np.nan
    inl &= ~bad[None]
    return PoseTriangulation(X.transpose(1, 2, 0).copy(), inl.transpose(1, 0, 2).copy(),
                             np.where(bad, 0, n_views).astype(np.int64), swaps.transpose(1, 0, 2).copy())
