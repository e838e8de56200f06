"""Similarity (Procrustes) alignment of point sets, batched over leading axes.

``similarity_transform(A, B)`` finds s, R, t minimising Σ‖s·R·aᵢ + t − bᵢ‖² (Umeyama 1991, with the
reflection fix so R is a proper rotation); NaN points (or a given mask) are left out of the fit.
"""

from __future__ import annotations

import numpy as np


def similarity_transform(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                         scale: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., N, 3) point sets → s (...), R (..., 3, 3), t (..., 3) with target ≈ s·R·source + t."""
    A = np.asarray(source, dtype=np.float64)
    B = np.asarray(target, dtype=np.float64)
    if A.shape != B.shape or A.shape[-1] != 3:
        raise ValueError(f"source {A.shape} and target {B.shape} must both be (..., N, 3)")
    m = np.isfinite(A).all(-1) & np.isfinite(B).all(-1)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    wts = m.astype(np.float64)[..., None]
    n = np.maximum(wts.sum(-2), 1.0)                                   # (..., 1)
    A0 = np.where(m[..., None], A, 0.0)
    B0 = np.where(m[..., None], B, 0.0)
    mu_a = A0.sum(-2) / n
    mu_b = B0.sum(-2) / n
    Ac = (A0 - mu_a[..., None, :]) * wts
    Bc = (B0 - mu_b[..., None, :]) * wts
    C = np.swapaxes(Bc, -1, -2) @ Ac                                     # (..., 3, 3) Σ b aᵀ
    U, S, Vt = np.linalg.svd(C)
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    D = np.ones(S.shape)
    D[..., 2] = d
    R = (U * D[..., None, :]) @ Vt
    var_a = (Ac ** 2).sum(axis=(-1, -2))
    if scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (S * D).sum(-1) / var_a
    else:
        s = np.ones(var_a.shape)
    t = mu_b - s[..., None] * (R @ mu_a[..., None])[..., 0]
    few = m.sum(-1) < 3
    if np.any(few):
        s = np.where(few, np.nan, s)
    return s, R, t


def align(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, scale: bool = True) -> np.ndarray:
    """``source`` moved onto ``target`` by the best similarity (rigid if ``scale=False``) transform."""
    s, R, t = similarity_transform(source, target, mask, scale)
    A = np.asarray(source, dtype=np.float64)
    return s[..., None, None] * (A @ np.swapaxes(R, -1, -2)) + t[..., None, :]


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
