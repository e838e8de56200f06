"""The evaluate stage's protocol against the ground truth (EpipolarPose, after Sun et al.'s integral
regression): the test frames and their truth in each camera's frame (``load_test_set``; its
pelvis depth back-projects the networks' outputs), the paper's metrics of root-relative predictions
(``evaluate_predictions``: MPJPE, N-MPJPE, P-MPJPE, PCK3D, AUC, PSS@k per action and overall,
frame-averaged and action-averaged; per joint; the PCK3D curve) and the PSS clusters of the training
subjects' truth (``pss_centroids``). The metric functions themselves are ``epipose.metrics``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from epipose import metrics as M
from epipose import skeleton
from epipose.data.frames import FrameCache
from epipose.data.h36m import TRAIN_SUBJECTS, H36MDataset, action_name
from epipose.data.targets import gt_targets
from epipose.metrics import root_relative

log = logging.getLogger(__name__)

ACTION_AVERAGED = {"mpjpe": lambda p, g: M.mpjpe(p, g, per_frame=True),
                   "mpjpe_15j": lambda p, g: M.mpjpe(M.non_root(p), M.non_root(g), per_frame=True),
                   "p_mpjpe": lambda p, g: M.p_mpjpe(p, g, per_frame=True)}
PCK_CURVE_MM = np.arange(0.0, 305.0, 5.0)                            # the PCK3D-vs-threshold plot


@dataclass
class TestSet:
    """The test frames with ground truth, their truth in each camera's frame and the PSS clusters."""

    cache: FrameCache
    gt_cam: np.ndarray          # (N, J, 3) mm in each camera's frame
    centroids: dict[int, np.ndarray]
    frames_without_gt: int = 0  # test frames left out: their sequence has no ground truth

    @property
    def gt_rr(self) -> np.ndarray:
        return root_relative(self.gt_cam)

    @property
    def root_depth(self) -> np.ndarray:
        return self.gt_cam[:, skeleton.PELVIS, 2]


def load_test_set(cache: FrameCache, dataset: H36MDataset, pss_k: list[int], pss_max_poses: int,
                  seed: int = 0) -> TestSet:
    """The test frames that have ground truth (sequences without it are left out, with a log line
    and their count in the protocol), their ground truth and the PSS clusters (``pss_centroids``)."""
    gt = gt_targets(cache.keys, dataset, what="the evaluation")
    scored = gt.valid.all(axis=1)
    if not scored.all():
        cache = cache.subset(np.flatnonzero(scored))
    centroids = pss_centroids(dataset, pss_k, pss_max_poses, seed, fallback=gt.pose_cam[scored])
    return TestSet(cache, gt.pose_cam[scored], centroids, int((~scored).sum()))


# --- the test set and the PSS clusters ------------------------------------------------------------------
def pss_centroids(dataset: H36MDataset, ks: list[int], max_poses: int, seed: int = 0,
                  fallback: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """k-means centroids of the training subjects' normalised ground-truth poses, in every camera's frame.

    Without training subjects under the root, ``fallback`` poses (e.g. the test ground truth) are used.
    """
    subjects = [s for s in TRAIN_SUBJECTS if s in dataset.subjects()]
    poses = []
    for subject in subjects:
        for action in dataset.actions(subject):
            world = skeleton.h36m32_to_mpii(dataset.poses_world(subject, action))
            for cam in dataset.rig.cameras(subject).values():
                poses.append(cam.world_to_camera(world))
    if poses:
        poses = np.concatenate(poses)
    elif fallback is not None:
        log.warning("%s: no training subject found; PSS clusters fitted on the test ground truth", dataset.root)
        poses = fallback
    else:
        raise ValueError(f"{dataset.root}: no training subject ({', '.join(TRAIN_SUBJECTS)}) for the PSS clusters")
    if len(poses) > max_poses:
        poses = poses[np.linspace(0, len(poses) - 1, max_poses).astype(int)]
    out = {}
    for k in ks:
        if len(poses) < k:
            raise ValueError(f"param evaluate.pss_k: k={k} needs at least {k} ground-truth poses, "
                             f"{dataset.root} gives {len(poses)}")
        out[k] = M.fit_pose_clusters(poses, k, seed)
    return out


# --- metrics ----------------------------------------------------------------------------------------------
def pose_metrics(pred_rr: np.ndarray, gt_rr: np.ndarray, centroids: dict[int, np.ndarray],
                 pck_threshold_mm: float = 150.0) -> dict[str, float]:
    """The paper's metrics for root-relative predictions and ground truth (N, J, 3) mm, over all J
    joints, the root included (its error is 0), as the seed's code; ``mpjpe_15j`` leaves the root out."""
    out = {
        "frames": int(len(pred_rr)),
        "mpjpe": M.mpjpe(pred_rr, gt_rr),
        "mpjpe_15j": M.mpjpe(M.non_root(pred_rr), M.non_root(gt_rr)),
        "n_mpjpe": M.n_mpjpe(pred_rr, gt_rr),
        "p_mpjpe": M.p_mpjpe(pred_rr, gt_rr),
        "pck3d": M.pck3d(pred_rr, gt_rr, pck_threshold_mm),
        "auc": M.auc(pred_rr, gt_rr),
    }
    for k, c in sorted(centroids.items()):
        out[f"pss@{k}"] = M.pss(pred_rr, gt_rr, k, centroids=c)
    return _finite(out)


def _finite(d: dict) -> dict:
    """Floats rounded to 3 decimals; degenerate predictions (e.g. every joint at the root) have no
    Procrustes/scale fit: None, not NaN, in JSON."""
    return {k: (round(v, 3) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in d.items()}


def evaluate_predictions(keys: pd.DataFrame, preds: dict[str, np.ndarray], gt_rr: np.ndarray,
                         centroids: dict[int, np.ndarray], pck_threshold_mm: float = 150.0) -> dict:
    """Per role: overall (frame-averaged, and ``action_averaged``: the mean of the per-action means,
    as Human3.6M tables), per-action and per-joint metrics of root-relative predictions, and the PCK3D
    curve (% at ``PCK_CURVE_MM``)."""
    actions = keys["action"].map(action_name).to_numpy()
    results = {}
    for method, pred in preds.items():
        if not np.isfinite(pred).all():
            bad = int((~np.isfinite(pred).all(axis=(1, 2))).sum())
            raise ValueError(f"{method}: {bad} test frames have non-finite predictions")
        res = pose_metrics(pred, gt_rr, centroids, pck_threshold_mm)
        res["per_action"] = {a: pose_metrics(pred[actions == a], gt_rr[actions == a], centroids, pck_threshold_mm)
                             for a in sorted(set(actions))}
        res["action_averaged"] = _finite({k: M.action_average(f(pred, gt_rr), actions) for k, f in ACTION_AVERAGED.items()})
        res["per_joint_mpjpe"] = {n: round(float(e), 3) for n, e in zip(skeleton.MPII_NAMES, M.per_joint_mpjpe(pred, gt_rr))}
        res["pck3d_curve"] = [round(float(v), 3) for v in M.pck3d_curve(pred, gt_rr, PCK_CURVE_MM)]
        results[method] = res
    return results
