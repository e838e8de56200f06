"""infer_2d's 2D error against the ground truth projected through each camera (lens included):
median / mean pixels overall and per joint, PCKh@0.5 (head size = 0.6 × the projected
head_top–upper_neck distance, as ``epipose.data.mpii``), for all, the training and the test subjects.
Streamed shard by shard with bounded memory: fixed-size histograms and counters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from epipose import skeleton
from epipose.data.h36m import TEST_SUBJECTS, H36MDataset
from epipose.data.mpii import HEAD_SIZE_FACTOR

HIST_MAX_PX = 2000.0
HIST_BIN_PX = 0.05


def projected_truth(dataset: H36MDataset, key: tuple[str, str, str], frames: np.ndarray) -> np.ndarray:
    """The truth of ``frames`` of the shard ``key`` (subject, action, camera) in its camera's original
    pixels: (F, 16, 2). A ValueError names the pose file where it ends before the last of ``frames``."""
    subject, action, camera = key
    poses = dataset.poses_mpii_camera(subject, action, camera)
    if frames.size and frames.max() >= len(poses):
        raise ValueError(f"{dataset.pose_path(subject, action)}: has {len(poses)} frames but shard "
                         f"{subject}/{action}.{camera} has frame {int(frames.max())}")
    return dataset.rig.camera(subject, camera).project_camera(poses[frames])


class ErrorStats:
    """Streaming 2D error statistics: per-joint histograms of pixel errors plus PCKh counters."""

    def __init__(self, num_joints: int = skeleton.NUM_JOINTS):
        self.bins = int(HIST_MAX_PX / HIST_BIN_PX)
        self.hist = np.zeros((num_joints, self.bins + 1), dtype=np.int64)    # last bin: ≥ HIST_MAX_PX
        self.sum = np.zeros(num_joints)
        self.pckh_ok = np.zeros(num_joints, dtype=np.int64)
        self.pckh_n = np.zeros(num_joints, dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        err = np.linalg.norm(pred - gt, axis=-1)                               # (F, J)
        idx = np.minimum((err / HIST_BIN_PX).astype(np.int64), self.bins)
        for j in range(err.shape[1]):
            self.hist[j] += np.bincount(idx[:, j], minlength=self.bins + 1)
        self.sum += err.sum(axis=0)
        head = HEAD_SIZE_FACTOR * np.linalg.norm(gt[:, skeleton.HEAD_TOP] - gt[:, skeleton.UPPER_NECK], axis=-1)
        self.pckh_ok += (err <= 0.5 * head[:, None]).sum(axis=0)
        self.pckh_n += err.shape[0]

    @property
    def count(self) -> int:
        return int(self.hist[0].sum())

    @staticmethod
    def _median(hist: np.ndarray) -> float:
        n = hist.sum()
        if n == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(hist), (n + 1) / 2.0))
        return (k + 0.5) * HIST_BIN_PX if k < len(hist) - 1 else HIST_MAX_PX

    def summary(self) -> dict:
        if self.count == 0:
            return {"frames": 0}
        names = skeleton.MPII_NAMES
        keep = [j for j in range(len(self.sum)) if j not in (skeleton.PELVIS, skeleton.THORAX)]
        return {
            "frames": self.count,
            "median_px": round(self._median(self.hist.sum(axis=0)), 3),
            "mean_px": round(float(self.sum.sum() / self.hist.sum()), 3),
            "pckh@0.5": round(float(100.0 * self.pckh_ok[keep].sum() / self.pckh_n[keep].sum()), 3),
            "per_joint_median_px": {names[j]: round(self._median(self.hist[j]), 3) for j in range(len(self.sum))},
            "per_joint_pckh@0.5": {names[j]: round(float(100.0 * self.pckh_ok[j] / self.pckh_n[j]), 3)
                                   for j in range(len(self.sum))},
        }


class Pose2DError:
    """The 2D error of the shards ``keys`` (subject, action, camera) under a Human3.6M-layout ``root``:
    ``add`` each shard's predictions as they come; shards without ground truth (no D3_Positions or
    extrinsics: ``without``) are left out. ``stats`` (all, train_subjects, test_subjects) can be
    summed over processes."""

    def __init__(self, root: str | Path, keys: list[tuple[str, str, str]], num_joints: int = skeleton.NUM_JOINTS):
        self.dataset = H36MDataset(root)
        self.shards = len(keys)
        self.without = [key for key in keys if not self.dataset.has_ground_truth(*key)]
        self._skip = set(self.without)
        self.stats = {"all": ErrorStats(num_joints), "train_subjects": ErrorStats(num_joints),
                      "test_subjects": ErrorStats(num_joints)}

    def add(self, key: tuple[str, str, str], frames: np.ndarray, uv: np.ndarray) -> None:
        """Shard ``key``'s predictions ``uv`` (F, J, 2) of ``frames``, in original pixels."""
        if key in self._skip:
            return
        gt = projected_truth(self.dataset, key, frames)
        self.stats["all"].add(uv, gt)
        self.stats["test_subjects" if key[0] in TEST_SUBJECTS else "train_subjects"].add(uv, gt)

    def report(self) -> dict:
        """The report's entries: ``shards_without_gt`` and, where any shard has ground truth, the error
        overall (its ``frames``: the frames scored) and of the training and the test subjects."""
        out: dict = {"shards_without_gt": len(self.without)}
        if len(self.without) < self.shards:
            out.update(self.stats["all"].summary())
            out["train_subjects"] = self.stats["train_subjects"].summary()
            out["test_subjects"] = self.stats["test_subjects"].summary()
        return out
