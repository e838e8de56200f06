"""Pose metrics. 2D: PCK / PCKh (MPII protocol). 3D: MPJPE, N-MPJPE, P-MPJPE,
PCK3D, AUC, Pose Structure Score.

3D functions follow VideoPose3D's ``common/loss.py``: pure numpy, vectorised over frames, poses
(..., J, 3) in mm, no root-centring inside (use ``root_relative`` first for Protocol #1-style numbers).
P-MPJPE's Procrustes alignment: ``similarity_transform(A, B)`` finds s, R, t minimising
Σ‖s·R·aᵢ + t − bᵢ‖² (Umeyama 1991, with the reflection fix so R is a proper rotation); NaN points
(or a given mask) are left out of the fit.
"""

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


def skeleton_scale(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None = None) -> float:
    """How large a network draws skeletons: the median over samples (..., 16, C) of Σ predicted / Σ
    true bone lengths (2D or 3D, MPII order) over the bones whose two joints are visible. Below 1 when
    it draws them small; the median ignores the few samples with a wild joint."""
    pred_len = skeleton.bone_lengths(np.asarray(pred, np.float64))
    gt_len = skeleton.bone_lengths(np.asarray(gt, np.float64))
    ok = np.isfinite(pred_len) & np.isfinite(gt_len)
    if visible is not None:
        visible = np.asarray(visible, bool)
        ok &= visible[..., [a for a, _ in skeleton.BONES]] & visible[..., [b for _, b in skeleton.BONES]]
    total = np.where(ok, gt_len, 0.0).sum(-1)
    ratio = np.where(ok, pred_len, 0.0).sum(-1)[total > 0] / total[total > 0]
    return float(np.median(ratio)) if ratio.size else float("nan")


# --- Procrustes alignment ---------------------------------------------------------------------
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


# --- 3D --------------------------------------------------------------------------------------
def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[-1] != 3:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (..., J, 3)")
    return pred, gt


def root_relative(poses, root: int = skeleton.PELVIS):
    """Poses (..., J, 3) with the root joint moved to the origin (numpy: as float64; a torch tensor
    stays a tensor of its dtype)."""
    if not hasattr(poses, "detach"):
        poses = np.asarray(poses, dtype=np.float64)
    return poses - poses[..., root : root + 1, :]


def non_root(poses, root: int = skeleton.PELVIS):
    """The joints but the root (..., J-1, 3): after ``root_relative`` the root's error is 0 by
    construction, so averages over all J joints (the seed's convention) are (J-1)/J of these."""
    return np.delete(np.asarray(poses, dtype=np.float64), root, axis=-2)


def action_average(values: np.ndarray, actions: np.ndarray) -> float:
    """Mean over actions of the per-action mean of per-frame ``values`` (Human3.6M tables average
    per action first; a frame average weighs actions by their frame counts)."""
    values, actions = np.asarray(values, dtype=np.float64), np.asarray(actions)
    return float(np.mean([values[actions == a].mean() for a in np.unique(actions)]))


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error per joint (..., J)."""
    pred, gt = _pair(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1)


def masked_mpjpe(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Mean joint error over the joints where ``mask`` (..., J) holds and both are finite (NaN if none)."""
    err = np.linalg.norm(np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64), axis=-1)
    ok = mask & np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else float("nan")


def mpjpe(pred: np.ndarray, gt: np.ndarray, per_frame: bool = False):
    """Mean per-joint position error (mean over joints, then frames)."""
    e = joint_errors(pred, gt).mean(-1)
    return e if per_frame else float(e.mean())


def n_mpjpe(pred: np.ndarray, gt: np.ndarray, per_frame: bool = False):
    """MPJPE after scaling each prediction by the least-squares optimal factor (Rhodin et al. 2018)."""
    pred, gt = _pair(pred, gt)
    scale = (pred * gt).sum(axis=(-1, -2)) / (pred * pred).sum(axis=(-1, -2))
    return mpjpe(scale[..., None, None] * pred, gt, per_frame)


def p_mpjpe(pred: np.ndarray, gt: np.ndarray, per_frame: bool = False):
    """MPJPE after the optimal similarity (rotation, translation, scale) alignment of each prediction."""
    pred, gt = _pair(pred, gt)
    return mpjpe(align(pred, gt), gt, per_frame)


def pck3d(pred: np.ndarray, gt: np.ndarray, threshold: float = 150.0) -> float:
    """Percentage of joints within ``threshold`` mm."""
    return float(100.0 * (joint_errors(pred, gt) <= threshold).mean())


def pck3d_curve(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """PCK3D (%) at each of ``thresholds`` (mm): the curve whose mean over 0–150 mm is the AUC."""
    e = joint_errors(pred, gt).reshape(-1)
    return 100.0 * (e[:, None] <= np.asarray(thresholds, dtype=np.float64)[None, :]).mean(axis=0)


def auc(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """Area under the PCK3D curve over 0–150 mm (31 thresholds, 5 mm apart), in %."""
    thresholds = np.linspace(0.0, 150.0, 31) if thresholds is None else thresholds
    return float(pck3d_curve(pred, gt, thresholds).mean())


def per_joint_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean error of each joint over frames (J,) mm."""
    return joint_errors(pred, gt).reshape(-1, np.shape(pred)[-2]).mean(axis=0)


def normalise_poses(poses: np.ndarray, root: int = skeleton.PELVIS) -> np.ndarray:
    """(N, J, 3) → (N, 3J): root-centred and scaled to unit norm (the Pose Structure Score's space)."""
    p = root_relative(poses, root).reshape(len(poses), -1)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def fit_pose_clusters(gt_poses: np.ndarray, k: int = 50, seed: int = 0) -> np.ndarray:
    """k-means centroids (k, 3J) of normalised ground-truth poses (k-means++, deterministic for a seed)."""
    from scipy.cluster.vq import kmeans2

    data = normalise_poses(gt_poses)
    if len(data) < k:
        raise ValueError(f"k-means with k={k} needs at least {k} poses, got {len(data)}")
    centroids, _ = kmeans2(data, k, iter=50, minit="++", seed=np.random.default_rng(seed))
    return centroids


def pose_clusters(poses: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (N,) of each normalised pose."""
    d = normalise_poses(poses)
    return np.argmin(((d[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)


def pss(pred: np.ndarray, gt: np.ndarray, k: int = 50, centroids: np.ndarray | None = None, seed: int = 0) -> float:
    """Pose Structure Score PSS@k (introduced with EpipolarPose, Kocabas et al. 2019), in %: the
    fraction of frames whose prediction falls in the same k-means cluster of normalised poses as its
    ground truth. Clusters come from ``centroids`` (e.g. fitted on the training ground truth) or are
    fitted on ``gt``."""
    pred, gt = _pair(pred, gt)
    if centroids is None:
        centroids = fit_pose_clusters(gt, k, seed)
    return float(100.0 * (pose_clusters(pred, centroids) == pose_clusters(gt, centroids)).mean())
