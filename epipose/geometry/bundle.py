"""Robust bundle adjustment of camera poses and 3D joints (scipy ``least_squares``, sparse Jacobian).

Residuals are reprojection errors in pixels of the ideal (undistorted) image, each weighted by
its observation's confidence: r = f_v · w · (π(R_v X + t_v) − x). The gauge (a similarity) is
fixed by holding the reference camera at the identity and the length of one other camera's
translation (its direction stays free: two tangent-plane parameters), so the result is in the
units of the initial reconstruction; the metric scale comes later from bone lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits


def rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) → rotation matrices (..., 3, 3)."""
    w = np.asarray(w, dtype=np.float64)
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = np.zeros(w.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = w[..., 2], -w[..., 1], w[..., 0]
    small = th < 1e-8
    ths = np.where(small, 1.0, th)
    a = np.where(small, 1.0 - th ** 2 / 6.0, np.sin(ths) / ths)
    b = np.where(small, 0.5 - th ** 2 / 24.0, (1.0 - np.cos(ths)) / ths ** 2)
    return np.eye(3) + a * K + b * (K @ K)


def _skew(v: np.ndarray) -> np.ndarray:
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return K


def left_jacobian(w: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobian: d(exp([w]x) y)/dw = -[exp([w]x) y]x · J_l(w)."""
    w = np.asarray(w, dtype=np.float64)
    th = float(np.linalg.norm(w))
    K = _skew(w)
    if th < 1e-8:
        return np.eye(3) + 0.5 * K + K @ K / 6.0
    return np.eye(3) + (1.0 - np.cos(th)) / th ** 2 * K + (th - np.sin(th)) / th ** 3 * (K @ K)


@dataclass(frozen=True)
class BundleResult:
    R: np.ndarray            # (V, 3, 3)
    t: np.ndarray            # (V, 3)
    points: np.ndarray       # (P, 3)
    rms_px_initial: float    # confidence-weighted RMS reprojection error before / after
    rms_px: float
    median_px: float         # median unweighted reprojection error after
    n_observations: int
    nfev: int
    message: str


class _Layout:
    def __init__(self, R0, t0, n_points, fixed, scale_cam):
        self.R0, self.t0 = np.asarray(R0, np.float64), np.asarray(t0, np.float64)
        self.V = len(self.R0)
        self.fixed, self.scale_cam = fixed, scale_cam
        self.cols: dict[int, tuple[slice, slice]] = {}
        k = 0
        for v in range(self.V):
            if v == fixed:
                continue
            nt = 2 if v == scale_cam else 3
            self.cols[v] = (slice(k, k + 3), slice(k + 3, k + 3 + nt))
            k += 3 + nt
        self.n_cam = k
        self.n_points = n_points
        d0 = self.t0[scale_cam]
        self.norm0 = float(np.linalg.norm(d0))
        d0 = d0 / self.norm0
        helper = np.eye(3)[np.argmin(np.abs(d0))]
        e1 = np.cross(d0, helper)
        e1 /= np.linalg.norm(e1)
        self.tangent = (d0, e1, np.cross(d0, e1))

    def pack(self, X0: np.ndarray) -> np.ndarray:
        p = np.zeros(self.n_cam + 3 * self.n_points)
        for v, (_, ts) in self.cols.items():
            if v != self.scale_cam:
                p[ts] = self.t0[v]
        p[self.n_cam:] = X0.ravel()
        return p

    def cameras(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = self.R0.copy()
        t = self.t0.copy()
        for v, (rs, ts) in self.cols.items():
            R[v] = rodrigues(p[rs]) @ self.R0[v]
            if v == self.scale_cam:
                d0, e1, e2 = self.tangent
                d = d0 + p[ts][0] * e1 + p[ts][1] * e2
                t[v] = self.norm0 * d / np.linalg.norm(d)
            else:
                t[v] = p[ts]
        return R, t

    def points(self, p: np.ndarray) -> np.ndarray:
        return p[self.n_cam:].reshape(-1, 3)


@dataclass(frozen=True)
class _Observations:
    """The observations sorted by camera, with each camera's slice and each one's residual scale."""

    x: np.ndarray          # (M, 2) normalised
    w: np.ndarray          # (M,)
    cam: np.ndarray        # (M,)
    pt: np.ndarray         # (M,)
    bounds: np.ndarray     # (V + 1,): camera v's observations are [bounds[v], bounds[v + 1])
    scale: np.ndarray      # (M, 1): weight × focal (normalised units → weighted px)

    @classmethod
    def sorted(cls, x, w, cam, pt, focal, n_cameras: int) -> "_Observations":
        x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
        cam, pt = np.asarray(cam, dtype=np.int64), np.asarray(pt, dtype=np.int64)
        order = np.argsort(cam, kind="stable")
        x, w, cam, pt = x[order], w[order], cam[order], pt[order]
        scale = (w * np.asarray(focal, dtype=np.float64)[cam])[:, None]
        return cls(x, w, cam, pt, np.searchsorted(cam, np.arange(n_cameras + 1)), scale)

    def of_camera(self, v: int) -> slice:
        return slice(self.bounds[v], self.bounds[v + 1])


def _residuals(p: np.ndarray, lay: _Layout, obs: _Observations) -> np.ndarray:
    """Weighted reprojection errors (2M,) in px of the ideal image (as aniposelib's ``_error_fun_bundle``)."""
    R, t = lay.cameras(p)
    X = lay.points(p)
    out = np.empty((len(obs.x), 2))
    for v in range(lay.V):
        s = obs.of_camera(v)
        if s.start == s.stop:
            continue
        Xc = X[obs.pt[s]] @ R[v].T + t[v]
        out[s] = Xc[:, :2] / Xc[:, 2:3]
    out -= obs.x
    out *= obs.scale
    return out.ravel()


@dataclass(frozen=True)
class _Sparsity:
    """The Jacobian's fixed CSR structure (as aniposelib's ``_jac_sparsity_bundle``): per observation
    (2 rows) its camera's rotation (3) and translation (3, or 2 for the scale camera) columns, then
    its point's 3 columns."""

    indices: np.ndarray
    indptr: np.ndarray
    starts: np.ndarray     # (M, 2): where each observation's two rows start in ``indices``
    shape: tuple[int, int]


def _jacobian_sparsity(lay: _Layout, obs: _Observations) -> _Sparsity:
    m = len(obs.x)
    ncam_cols = np.zeros(m, dtype=np.int64)
    cam_cols = np.zeros((m, 6), dtype=np.int64)
    for v, (rs, ts) in lay.cols.items():
        sel = obs.cam == v
        cc = np.r_[np.arange(rs.start, rs.stop), np.arange(ts.start, ts.stop)]
        ncam_cols[sel] = len(cc)
        cam_cols[sel, : len(cc)] = cc
    row_nnz = ncam_cols + 3
    indptr = np.r_[0, np.cumsum(np.repeat(row_nnz, 2))]
    indices = np.empty(indptr[-1], dtype=np.int64)
    starts = indptr[:-1].reshape(m, 2)
    pc = lay.n_cam + 3 * obs.pt[:, None] + np.arange(3)[None, :]
    for k in (5, 6, 0):        # group observations by their number of camera columns
        sel = np.flatnonzero(ncam_cols == k)
        if len(sel):
            cols_k = np.concatenate([cam_cols[sel, :k], pc[sel]], axis=1)
            for r in (0, 1):
                indices[starts[sel, r][:, None] + np.arange(cols_k.shape[1])[None, :]] = cols_k
    return _Sparsity(indices, indptr, starts, (2 * m, lay.n_cam + 3 * lay.n_points))


def _camera_blocks(p: np.ndarray, lay: _Layout, v: int, Xp: np.ndarray, R: np.ndarray, A: np.ndarray) -> list:
    """d(residual)/d(camera v's rotation, translation) for its observations of points ``Xp``;
    ``A`` (n, 2, 3) = d(residual)/d(camera-frame point)."""
    rs, ts = lay.cols[v]
    # d(exp([w]x) R0 X)/dw = -[R X]x J_l(w)
    RX = Xp @ R[v].T
    dw = -A @ _skew(RX) @ left_jacobian(p[rs])
    if v != lay.scale_cam:
        return [dw, A]
    d0, e1, e2 = lay.tangent
    d = d0 + p[ts][0] * e1 + p[ts][1] * e2
    nd = np.linalg.norm(d)
    P = lay.norm0 * (np.eye(3) - np.outer(d, d) / nd ** 2) / nd
    return [dw, A @ (P @ np.stack([e1, e2], axis=1))]


def _jacobian(p: np.ndarray, lay: _Layout, obs: _Observations, sp: _Sparsity) -> csr_matrix:
    """The analytic Jacobian of ``_residuals`` in the ``_Sparsity`` layout."""
    R, t = lay.cameras(p)
    X = lay.points(p)
    data = np.empty(sp.indptr[-1])
    for v in range(lay.V):
        s = obs.of_camera(v)
        if s.start == s.stop:
            continue
        Xp = X[obs.pt[s]]
        Xc = Xp @ R[v].T + t[v]
        iz = 1.0 / Xc[:, 2]
        sc = obs.scale[s, 0]
        A = np.zeros((len(Xc), 2, 3))
        A[:, 0, 0] = sc * iz
        A[:, 1, 1] = sc * iz
        A[:, 0, 2] = -sc * Xc[:, 0] * iz * iz
        A[:, 1, 2] = -sc * Xc[:, 1] * iz * iz
        blocks = [A @ R[v]]                                   # d/dX
        if v in lay.cols:
            blocks = _camera_blocks(p, lay, v, Xp, R, A) + blocks
        blk = np.concatenate(blocks, axis=2)                    # (n, 2, k+3)
        rows = np.arange(s.start, s.stop)
        for r in (0, 1):
            data[sp.starts[rows, r][:, None] + np.arange(blk.shape[2])[None, :]] = blk[:, r, :]
    return csr_matrix((data, sp.indices, sp.indptr), shape=sp.shape)


def bundle_adjust(x: np.ndarray, w: np.ndarray, cam: np.ndarray, pt: np.ndarray, R0: np.ndarray, t0: np.ndarray,
                  X0: np.ndarray, focal: np.ndarray, *, fixed: int, scale_cam: int, loss: str = "soft_l1",
                  f_scale_px: float = 3.0, max_nfev: int = 50) -> BundleResult:
    """Refine cameras (R0, t0: (V, 3, 3), (V, 3)) and points X0 (P, 3) on observations x (M, 2) (normalised)
    of point ``pt`` (M,) in camera ``cam`` (M,) with weights ``w`` (M,)."""
    if fixed == scale_cam:
        raise ValueError("the scale camera must differ from the fixed reference camera")
    lay = _Layout(R0, t0, len(X0), fixed, scale_cam)
    obs = _Observations.sorted(x, w, cam, pt, focal, lay.V)
    sparsity = _jacobian_sparsity(lay, obs)
    p0 = lay.pack(np.asarray(X0, dtype=np.float64))
    r0 = _residuals(p0, lay, obs)
    # least_squares' LSMR makes thousands of BLAS calls on long vectors; multithreaded OpenBLAS
    # turns each into a spin-wait on a busy machine (measured: 52 s instead of 5 s).
    with threadpool_limits(limits=1, user_api="blas"):
        sol = least_squares(lambda p: _residuals(p, lay, obs), p0, jac=lambda p: _jacobian(p, lay, obs, sparsity),
                            loss=loss, f_scale=f_scale_px, max_nfev=max_nfev, x_scale="jac", method="trf",
                            tr_solver="lsmr", xtol=1e-8, ftol=1e-8, gtol=1e-8)
    R, t = lay.cameras(sol.x)
    r1 = sol.fun.reshape(-1, 2)
    w = obs.w
    err = np.linalg.norm(r1, axis=1) / np.where(w > 0, w, 1.0)
    wsum = float((w * w).sum()) or 1.0
    return BundleResult(R, t, lay.points(sol.x).copy(),
                        float(np.sqrt((r0 ** 2).sum() / wsum)), float(np.sqrt((r1 ** 2).sum() / wsum)),
                        float(np.median(err)) if len(err) else float("nan"), len(obs.x), int(sol.nfev),
                        str(sol.message))
