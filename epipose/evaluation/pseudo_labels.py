"""triangulate's pseudo-labels against the ground truth: their accuracy and where their error comes from.

The truth of a pseudo3d table's rows comes from a ground-truth source with the dataset's methods
(``H36MDataset``, or ``epipose.data.targets.GroundTruth``) through ``targets.truth_of_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from epipose import metrics, skeleton
from epipose.data.pose_tables import to_dense
from epipose.data.targets import GroundTruth, truth_of_rows
from epipose.io import json_float

REPROJ_BINS_PX = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0, np.inf)


@dataclass(frozen=True)
class LabelsVsGT:
    """The pseudo-labels beside their ground truth, one row per frame (F, 16, ...), NaN where missing."""

    pred: np.ndarray            # (F, J, 3) mm, camera frame
    target: np.ndarray          # (F, J, 3) mm
    reproj: np.ndarray          # (F, J) px
    n_views: np.ndarray         # (F, J)
    missing: int                # frames without ground truth

    @property
    def rel_err(self) -> np.ndarray:
        """(F, J) pelvis-relative joint error, mm (NaN where either side or the pelvis is missing)."""
        return np.linalg.norm(metrics.root_relative(self.pred) - metrics.root_relative(self.target), axis=-1)

    @property
    def scored(self) -> np.ndarray:
        """(F, J) the non-root joints with a finite pelvis-relative error."""
        return np.isfinite(self.rel_err) & (np.arange(self.pred.shape[1]) != skeleton.PELVIS)


def labels_vs_gt(table: pd.DataFrame, truth: GroundTruth) -> LabelsVsGT:
    """A pseudo3d table's rows beside their ground truth in each camera's frame (rows of sequences
    without it, or past the end of its poses, are ``missing``)."""
    keys, vals = to_dense(table, ["x", "y", "z", "reproj_err", "n_views"])
    vals = vals.astype(np.float64)
    gt = truth_of_rows(keys, truth)
    return LabelsVsGT(vals[..., :3], gt.pose, vals[..., 3], vals[..., 4], int((~gt.found).sum()))


def label_accuracy(lv: LabelsVsGT) -> dict:
    """The accuracy of ``lv``'s pseudo-labels (see ``evaluate_against_gt``)."""
    pred, target = lv.pred, lv.target
    complete = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(target).all(axis=(1, 2))
    if not complete.any():
        return {"frames_evaluated": 0, "frames_without_gt": lv.missing}
    P, G = pred[complete], target[complete]
    Pr, Gr = metrics.root_relative(P), metrics.root_relative(G)
    any_joint = np.isfinite(pred).all(-1) & np.isfinite(target).all(-1)
    scored = lv.scored
    return {
        "frames_evaluated": int(complete.sum()),
        "frames_without_gt": int(lv.missing),
        "mpjpe_mm": json_float(metrics.mpjpe(Pr, Gr), 3),
        "mpjpe_15j_mm": json_float(metrics.mpjpe(metrics.non_root(Pr), metrics.non_root(Gr)), 3),
        "mpjpe_15j_mm_all_triangulated": json_float(lv.rel_err[scored].mean(), 3) if scored.any() else None,
        "joints_scored_all_triangulated": int(scored.sum()),
        "n_mpjpe_mm": json_float(metrics.n_mpjpe(Pr, Gr), 3),
        "p_mpjpe_mm": json_float(metrics.p_mpjpe(P, G), 3),
        "mpjpe_absolute_mm": json_float(metrics.mpjpe(P, G), 3),
        "joint_error_absolute_mm_all_triangulated": json_float(
            np.linalg.norm(pred[any_joint] - target[any_joint], axis=-1).mean(), 3),
        "pck3d_150_pct": json_float(metrics.pck3d(Pr, Gr), 3),
        "auc_pct": json_float(metrics.auc(Pr, Gr), 3),
    }


def evaluate_against_gt(table: pd.DataFrame, truth: GroundTruth) -> dict:
    """Pseudo-label accuracy against ``truth`` (see ``labels_vs_gt``).

    Complete frames (all 16 joints triangulated) with ground truth are scored: MPJPE, N-MPJPE and
    P-MPJPE (pelvis-relative), absolute MPJPE (camera frame, not root-centred), PCK3D@150 and AUC —
    over the 16 joints, the root (0 after centring) included, as evaluate and the seed's code;
    ``mpjpe_15j_mm`` over the 15 others (16/15 of ``mpjpe_mm``). Complete frames can be a small, easy
    sample (a joint the 2D network is unsure of is often missing), so
    ``mpjpe_15j_mm_all_triangulated`` scores every triangulated non-root joint of every frame whose
    pelvis was triangulated (pelvis-relative).
    """
    if not len(table):
        return {"frames_evaluated": 0}
    return label_accuracy(labels_vs_gt(table, truth))


def error_tables(lv: LabelsVsGT | None) -> dict[str, pd.DataFrame]:
    """Where the pseudo-labels' error comes from: the pelvis-relative joint error (non-root joints) by
    the number of views a joint was triangulated from, and by its row's reprojection error (bins
    ``REPROJ_BINS_PX``; ``reproj_px`` is the median reprojection error in the bin). Without ground
    truth (``lv`` None) the tables are empty."""
    if lv is None:
        e, views, reproj = np.zeros(0), np.zeros(0, dtype=int), np.zeros(0)
    else:
        ok = lv.scored
        e, views, reproj = lv.rel_err[ok], lv.n_views[ok].astype(int), lv.reproj[ok]

    def stats(e: np.ndarray, groups: np.ndarray, values: list) -> pd.DataFrame:
        rows = [(v, float(e[groups == v].mean()), float(np.median(e[groups == v])), int((groups == v).sum()))
                for v in values if (groups == v).any()]
        return pd.DataFrame(rows, columns=["x", "mean_error_mm", "median_error_mm", "joints"])

    by_views = stats(e, views, sorted(set(views.tolist()))).rename(columns={"x": "views"})
    edges = np.asarray(REPROJ_BINS_PX)
    finite = np.isfinite(reproj)
    bins = np.digitize(reproj[finite], edges[1:-1])
    by_reproj = stats(e[finite], bins, list(range(len(edges) - 1)))
    by_reproj.insert(1, "bin_px", [f"{edges[b]:g}-{edges[b + 1]:g}" for b in by_reproj["x"]])
    by_reproj["x"] = [float(np.median(reproj[finite][bins == b])) for b in by_reproj["x"]]
    return {"pseudo3d_error_by_views": by_views, "pseudo3d_error_by_reproj": by_reproj.rename(columns={"x": "reproj_px"})}


def score_pseudo_labels(table: pd.DataFrame, truth: GroundTruth | None) -> tuple[dict | None, dict[str, pd.DataFrame]]:
    """For triangulate's report: the labels' accuracy (``evaluate_against_gt``; None without ``truth``)
    and the error tables (``error_tables``; empty without ``truth``), the truth read once."""
    if truth is None:
        return None, error_tables(None)
    if not len(table):
        return {"frames_evaluated": 0}, error_tables(None)
    lv = labels_vs_gt(table, truth)
    return label_accuracy(lv), error_tables(lv)
