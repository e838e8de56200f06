"""Pose metrics. 2D: PCK / PCKh (MPII protocol), pixel errors."""

from __future__ import annotations

import numpy as np

from epipose import skeleton

# MPII's total leaves out pelvis and thorax (they are nearly always right and would inflate it).
PCKH_EXCLUDED = (skeleton.PELVIS, skeleton.THORAX)


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray, threshold: float,
        names: tuple[str, ...] = skeleton.MPII_NAMES, exclude: tuple[int, ...] = PCKH_EXCLUDED) -> dict:
    """Percentage of correct keypoints: ``‖pred − gt‖ ≤ threshold × norm``.

    pred, gt (N, J, 2); visible (N, J) bool; norm (N,) per-instance normaliser (NaN = skip the
    instance). Returns ``{"total": %, "per_joint": {name: %}, "count": n}``; ``total`` is MPII's:
    the fraction of all counted (visible, non-excluded) joint instances that are correct —
    i.e. the per-joint values averaged with their visible counts as weights.
    Joints never visible get NaN per-joint values (and do not count in the total).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, J, 2)")
    norm = np.asarray(norm, dtype=np.float64)
    counted = np.asarray(visible, dtype=bool) & np.isfinite(norm)[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1)
    with np.errstate(invalid="ignore"):
        correct = (dist <= threshold * norm[:, None]) & counted
    n_vis = counted.sum(axis=0)
    n_ok = correct.sum(axis=0)
    per_joint = {}
    for j in range(pred.shape[1]):
        per_joint[names[j] if j < len(names) else str(j)] = float(100.0 * n_ok[j] / n_vis[j]) if n_vis[j] else float("nan")
    keep = np.ones(pred.shape[1], dtype=bool)
    keep[list(exclude)] = False
    total_n = int(n_vis[keep].sum())
    total = float(100.0 * n_ok[keep].sum() / total_n) if total_n else float("nan")
    return {"total": total, "per_joint": per_joint, "count": total_n}


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray, threshold: float = 0.5) -> dict:
    """PCKh@threshold (MPII protocol): normalised by the head size (see ``epipose.data.mpii``)."""
    return pck(pred, gt, visible, head_size, threshold)


def pixel_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Euclidean 2D errors (N, J) in the inputs' units; NaN where not visible."""
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    if visible is not None:
        err = np.where(visible, err, np.nan)
    return err
