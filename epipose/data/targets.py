"""3D labels of frames for the 3D stages: the triangulated pseudo-labels or the ground truth.

``Targets`` holds, for the frames of some keys (subject, action, camera, frame), each joint's
position in that camera's frame (mm) and whether it may be trained on or scored.
``pseudo3d_targets`` reads them from ``data/pseudo3d.parquet`` (masking joints seen by too few
views or reprojecting badly), ``gt_targets`` from a ground-truth source such as a Human3.6M-layout
root's D3_Positions (``epipose.data.h36m.H36MDataset``) through ``truth_of_rows``, which
``epipose.evaluation`` shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from epipose import skeleton
from epipose.data.pose_tables import PSEUDO3D_VALUES, key_groups, read_pseudo3d, row_lookup, to_dense

log = logging.getLogger(__name__)

TargetSource = Literal["pseudo3d", "gt"]      # triangulated pseudo-labels (self-supervised) | ground truth


class GroundTruth(Protocol):
    """A source of ground-truth poses, e.g. ``epipose.data.h36m.H36MDataset``."""

    def poses_mpii_camera(self, subject: str, action: str, camera: str) -> np.ndarray:
        """(N, 16, 3) MPII joints in that camera's frame, mm, one per frame of the sequence."""

    def pose_path(self, subject: str, action: str) -> Path:
        """The file the poses come from (for error messages)."""

    def has_ground_truth(self, subject: str, action: str, camera: str) -> bool:
        """Whether poses of (subject, action) in camera's frame exist."""


@dataclass
class Targets:
    """3D labels of a cache's frames: camera-frame mm and which joints may be trained on."""

    pose_cam: np.ndarray       # (N, J, 3) float64, NaN where there is no label
    valid: np.ndarray          # (N, J) bool
    source: str

    @property
    def root_depth(self) -> np.ndarray:
        """(N,) the pelvis depth in mm (NaN where the pelvis has no valid label)."""
        return np.where(self.valid[:, skeleton.PELVIS], self.pose_cam[:, skeleton.PELVIS, 2], np.nan)


def pseudo3d_targets(keys: pd.DataFrame, path: str | Path, min_views: int = 2, max_reproj_err: float = 0.0,
                     section: str = "train_3d", frames_of: str = "the training frames (param train_3d.subjects)"
                     ) -> Targets:
    """Labels from ``data/pseudo3d.parquet`` (x, y, z in each camera's frame, mm).

    A joint is valid when its x, y, z are finite, z > 0, ``n_views >= min_views``, its
    ``reproj_err <= max_reproj_err`` (when > 0), and its frame's pelvis is valid (depths are
    pelvis-relative). Frames without rows are invalid; a subject of ``keys`` without any row is an
    error (``frames_of`` says where the frames come from; ``section`` names the params section).
    """
    table_keys, values = to_dense(read_pseudo3d(path), PSEUDO3D_VALUES)
    labelled = set(table_keys["subject"].unique())
    missing = sorted(set(keys["subject"]) - labelled, key=lambda s: (len(s), s))
    if missing:
        raise ValueError(f"{path}: no pseudo-labels for subject(s) {missing} of {frames_of}; "
                         f"the table has {sorted(labelled)}")
    idx = row_lookup(keys, table_keys)
    n = len(keys)
    pose = np.full((n, skeleton.NUM_JOINTS, 3), np.nan)
    n_views = np.zeros((n, skeleton.NUM_JOINTS))
    reproj = np.full((n, skeleton.NUM_JOINTS), np.nan)
    hit = idx >= 0
    pose[hit] = values[idx[hit], :, 0:3]
    reproj[hit] = values[idx[hit], :, 3]
    n_views[hit] = values[idx[hit], :, 4]
    valid = np.isfinite(pose).all(-1) & (pose[..., 2] > 0) & (n_views >= min_views)
    if max_reproj_err > 0:
        with np.errstate(invalid="ignore"):
            valid &= reproj <= max_reproj_err
    valid &= valid[:, skeleton.PELVIS : skeleton.PELVIS + 1]
    if not valid.any():
        raise ValueError(f"{path}: no valid pseudo-label for the {n} frames "
                         f"(check params {section}.min_views / {section}.max_reproj_err)")
    log.info("%s: labels for %d of %d frames, %.1f%% of the joints valid", path, int(hit.sum()), n,
             100.0 * valid.mean())
    return Targets(pose, valid, "pseudo3d")


class NoGroundTruth(ValueError):
    """None of the frames has ground truth: a stage that needs it cannot run on this data."""


@dataclass(frozen=True)
class RowsTruth:
    """The ground truth of rows keyed (subject, action, camera, frame), read once per sequence."""

    pose: np.ndarray                                    # (N, 16, 3) mm in each row's camera frame, NaN where none
    found: np.ndarray                                   # (N,) bool: the row has ground truth
    sequences: int                                      # sequences (subject, action, camera) among the rows
    without: list[tuple[str, str, str]]                 # those the source has no ground truth for
    short: dict[tuple[str, str, str], tuple[int, int]]  # those whose poses end before their last row: (poses, last frame)


def sequences_without_truth(keys: pd.DataFrame, dataset: GroundTruth) -> tuple[list[tuple[str, str, str]], int]:
    """The sequences (subject, action, camera) of ``keys`` that ``dataset`` has no ground truth for, sorted,
    and how many sequences there are."""
    groups = key_groups(keys)
    return [k for k in groups if not dataset.has_ground_truth(*k)], len(groups)


def truth_of_rows(keys: pd.DataFrame, dataset: GroundTruth) -> RowsTruth:
    """Each row's ground truth in its camera's frame (``dataset.poses_mpii_camera``), NaN for the rows
    of sequences without it and for frames past the end of their sequence's poses (both listed)."""
    pose = np.full((len(keys), skeleton.NUM_JOINTS, 3), np.nan)
    found = np.zeros(len(keys), dtype=bool)
    without, n_sequences = sequences_without_truth(keys, dataset)
    short = {}
    for key, idx in key_groups(keys).items():
        if key in without:
            continue
        gt = dataset.poses_mpii_camera(*key)
        frames = keys["frame"].to_numpy()[idx]
        ok = frames < len(gt)
        pose[idx[ok]] = gt[frames[ok]]
        found[idx[ok]] = True
        if not ok.all():
            short[key] = (len(gt), int(frames.max()))
    return RowsTruth(pose, found, n_sequences, without, short)


def gt_targets(keys: pd.DataFrame, dataset: GroundTruth, what: str = "this stage") -> Targets:
    """Labels from the ground truth (e.g. ``H36MDataset(root)``): every joint of a frame with ground
    truth valid. Sequences without it (a recording without D3_Positions or extrinsics) are left
    invalid with one log line; when none has any, ``NoGroundTruth`` says what is missing."""
    missing, n_sequences = sequences_without_truth(keys, dataset)
    if len(missing) == n_sequences:
        raise NoGroundTruth(f"{getattr(dataset, 'root', 'the data')}: no ground truth (D3_Positions and the "
                            f"subject's extrinsics in cameras.json) for any of the {len(keys)} frames that "
                            f"{what} needs it for; without ground truth run the self-supervised chain only: "
                            "`dvc repro train_refiner`")
    if missing:
        log.warning("%d of %d sequences have no ground truth (D3_Positions and extrinsics), e.g. %s: their "
                    "frames are left out", len(missing), n_sequences, " ".join(missing[0]))
    truth = truth_of_rows(keys, dataset)
    if truth.short:
        (subject, action, camera), (n, last) = min(truth.short.items())
        raise ValueError(f"{dataset.pose_path(subject, action)}: has {n} frames but shard "
                         f"{subject}/{action}.{camera} has frame {last}")
    return Targets(truth.pose, np.isfinite(truth.pose).all(-1), "gt")


def semi_supervised_targets(keys: pd.DataFrame, pseudo3d_path: str | Path, dataset: GroundTruth,
                            gt_subjects: list[str], min_views: int = 2, max_reproj_err: float = 0.0) -> Targets:
    """The frames of ``gt_subjects`` labelled with their ground truth (``gt_targets``), every other frame
    with its pseudo-label (``pseudo3d_targets``): the seed's semi-supervised setting (param
    train_3d.gt_subjects). No other frame's ground truth is read."""
    on_truth = keys["subject"].isin(gt_subjects).to_numpy()
    pose = np.full((len(keys), skeleton.NUM_JOINTS, 3), np.nan)
    valid = np.zeros((len(keys), skeleton.NUM_JOINTS), dtype=bool)
    for rows, label in ((~on_truth, "pseudo3d"), (on_truth, "gt")):
        if not rows.any():
            continue
        part = keys[rows].reset_index(drop=True)
        if label == "gt":
            part_targets = gt_targets(part, dataset, what="param train_3d.gt_subjects")
        else:
            part_targets = pseudo3d_targets(part, pseudo3d_path, min_views, max_reproj_err)
        pose[rows], valid[rows] = part_targets.pose_cam, part_targets.valid
    return Targets(pose, valid, "pseudo3d+gt")
