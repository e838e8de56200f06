"""The triangulate stage's science: a pose2d table → a pseudo3d table, its metadata and a report.

Per subject (the cameras are static per subject, so all its actions are pooled):
- ``extrinsics: known``: each camera's own K, distortion and cameras.json extrinsics; robust
  triangulation of every frame (view-RANSAC, left/right swap correction, Gauss–Newton).
- ``extrinsics: estimated`` (default, the paper's self-supervised setting; cameras.json extrinsics
  are ignored except to *report* errors): ``relative_pose: pooled`` estimates the cameras once per
  subject (pairwise essential matrices from all frames + bundle adjustment on a subsample of
  frames) and then triangulates every frame with them exactly as in known mode;
  ``relative_pose: per_frame`` is EpipolarPose's per-frame essential matrix. The metric scale comes
  from the bone-length prior.

Each mode is one function (``_solve_known``, ``_solve_pooled``, ``_solve_per_frame``) that returns
a ``Solution`` — the points and the cameras that see them — or why the subject was ``Dropped``;
static cameras triangulate through ``CameraGroup.triangulate``; ``_rows`` turns a solution into the
subject's rows.

Output rows (docs/data-contracts.md): one per input (subject, action, camera, frame, joint) that
survives, with x, y, z in that camera's frame (mm, not root-centred), ``reproj_err`` (px, the
distance between the joint's projection and that row's own 2D) and ``n_views`` (the views used).
Rows are kept with NaN x, y, z, NaN reproj_err and ``n_views = 0`` for joints that could not be
triangulated (fewer than ``min_views`` consistent views) — a frame always keeps its 16 joint
rows. Whole frames are dropped when none of their joints was triangulated; cameras are dropped
when missing from cameras.json, without extrinsics (known mode), or not registered (estimated);
subjects when their cameras cannot be estimated, when the estimated cameras contradict a pair's
epipolar geometry even after re-registration (``selfcalib``; ``min_epipolar_agreement``), or when
the cameras see the person along nearly one line (``_check_geometry``;
``min_triangulation_angle_deg``). Everything dropped or marked is counted in the report and warned
about.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from epipose import metrics, skeleton
from epipose.camera import Camera, Rig, load_rig, save_rig
from epipose.data.h36m import H36MDataset
from epipose.data.pose_tables import (KEYS, POSE2D_VALUES, PSEUDO3D_SCHEMA, PSEUDO3D_VALUES, from_dense, read_pose2d,
                                     sort_rows, to_dense, write_pseudo3d)
from epipose.geometry import triangulation as tri
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.angles import angle_between_deg, rotation_angle_deg
from epipose.geometry.scale import bone_length_scale
from epipose.geometry.selfcalib import estimate_cameras_pooled, triangulate_per_frame
from epipose.io import atomic_path, read_parquet_metadata
from epipose.params import ParamError, in_range, load_section
from epipose.stage import Runtime, StageResult
from epipose.viz import rig_figure, save_figure

log = logging.getLogger(__name__)
META_PREFIX = "epipose.triangulate."


@dataclass(frozen=True)
class TriangulateParams:
    """Section ``triangulate`` of params.yaml."""

    input_2d: Literal["detections", "ground_truth"] = "detections"  # ground_truth: the projected 3D truth
    #                                                  (the paper's "2D GT" row: what better 2D would buy)
    skeleton_scale: float | Literal["auto"] = "auto"   # size of the detected 2D skeletons / the true ones: each
    #                                                  is enlarged about its centre by 1 / this (auto: the 2D network's
    #                                                  own, measured on its validation split; 1: no correction)
    extrinsics: Literal["estimated", "known"] = "estimated"
    relative_pose: Literal["pooled", "per_frame"] = "pooled"
    min_conf: float = in_range(0.0, 1.0, default=0.01)            # joints below are ignored
    min_views: int = in_range(2, 64, default=2)                   # consistent views needed per joint
    view_ransac_px: float = in_range(0.1, None, default=15.0)    # RANSAC-over-views inlier threshold
    refine_iterations: int = in_range(0, 100, default=1)         # Gauss–Newton steps per point (0: off)
    swap_detection: bool = True                                   # fix left/right-swapped legs/arms per view
    swap_ratio: float = in_range(0.0, 1.0, default=0.5)          # mirrored error must be below ratio × error
    essential_method: Literal["magsac", "lo_ransac"] = "lo_ransac"
    essential_points: Literal["swap_invariant", "joints"] = "swap_invariant"   # pooled: E + chaining points
    essential_px: float = in_range(0.1, None, default=4.0)       # essential-matrix inlier threshold
    essential_confidence: float = in_range(0.5, 0.999999, default=0.9999)
    essential_max_points: int = in_range(100, None, default=20000)  # correspondences per pair (pooled)
    min_pair_points: int = in_range(8, None, default=100)         # fewer: the pair is unusable
    min_inlier_ratio: float = in_range(0.0, 1.0, default=0.3)
    min_parallax_deg: float = in_range(0.0, 90.0, default=1.0)   # median ray angle below: degenerate pair
    min_epipolar_agreement: float = in_range(0.0, 1.0, default=0.85)   # estimated cameras must explain this share
    #                                                  of each pair's epipolar inliers, else re-register / drop the subject
    min_triangulation_angle_deg: float = in_range(0.0, 90.0, default=10.0)  # median widest ray angle per joint
    #                                                  below: cameras nearly collinear with the person, subject dropped
    ba_max_frames: int = in_range(10, None, default=400)          # frames per subject in bundle adjustment
    ba_iterations: int = in_range(1, None, default=100)           # max function evaluations per round
    ba_loss: Literal["soft_l1", "huber", "cauchy", "linear"] = "soft_l1"
    ba_f_scale_px: float = in_range(0.01, None, default=3.0)
    bone_lengths_mm: list[float] = field(default_factory=lambda: list(skeleton.MEAN_BONE_LENGTHS_MM))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.skeleton_scale != "auto" and not 0.5 <= float(self.skeleton_scale) <= 1.5:
            raise ParamError(f"param triangulate.skeleton_scale: expected auto or a ratio in [0.5, 1.5], "
                             f"got {self.skeleton_scale!r}")
        bones = self.bone_lengths_mm
        if len(bones) != len(skeleton.BONES) or not all(b > 0 for b in bones):
            raise ParamError(f"param triangulate.bone_lengths_mm: expected {len(skeleton.BONES)} positive lengths "
                             f"in skeleton.BONES order ({', '.join(skeleton.BONE_NAMES)}), got {bones!r}")

    @property
    def mode(self) -> str:
        return "known" if self.extrinsics == "known" else f"estimated/{self.relative_pose}"

    def triangulation(self) -> dict:
        return dict(threshold_px=self.view_ransac_px, min_views=self.min_views, ransac=True,
                    refine_iterations=self.refine_iterations, swap_detection=self.swap_detection,
                    swap_ratio=self.swap_ratio)


# --- one subject's views as arrays -----------------------------------------------------------------
@dataclass(frozen=True)
class SubjectViews:
    subject: str
    cameras: tuple[str, ...]       # V
    timestamps: pd.DataFrame       # T rows: action, frame (sorted)
    uv: np.ndarray                 # (T, V, J, 2) pixels, NaN where absent
    conf: np.ndarray               # (T, V, J), 0 where absent
    keys: pd.DataFrame             # one row per input (subject, action, camera, frame): + t, v indices

    @classmethod
    def from_table(cls, df: pd.DataFrame, cameras: list[str]) -> "SubjectViews":
        keys, values = to_dense(df, ["u", "v", "conf"])
        ts = keys[["action", "frame"]].drop_duplicates().sort_values(["action", "frame"]).reset_index(drop=True)
        t_index = pd.MultiIndex.from_frame(ts).get_indexer(pd.MultiIndex.from_frame(keys[["action", "frame"]]))
        v_index = keys["camera"].map({c: i for i, c in enumerate(cameras)}).to_numpy()
        T, V = len(ts), len(cameras)
        uv = np.full((T, V, skeleton.NUM_JOINTS, 2), np.nan)
        conf = np.zeros((T, V, skeleton.NUM_JOINTS))
        uv[t_index, v_index] = values[..., :2]
        conf[t_index, v_index] = np.nan_to_num(values[..., 2], nan=0.0)
        keys = keys.assign(t=t_index, v=v_index)
        return cls(str(df["subject"].iloc[0]), tuple(cameras), ts, uv, conf, keys)

    def weights(self, min_conf: float) -> np.ndarray:
        ok = np.isfinite(self.uv).all(-1) & np.isfinite(self.conf) & (self.conf >= min_conf) & (self.conf > 0)
        return np.where(ok, self.conf, 0.0)


@dataclass
class _Counts:
    dropped: dict[str, int] = field(default_factory=dict)
    marked_rows: int = 0
    unusable_observations: int = 0
    joints_few_views: int = 0
    outlier_observations: int = 0
    swaps: int = 0
    observations: int = 0
    inlier_err_sum: float = 0.0
    inlier_err_n: int = 0
    reregistered: int = 0

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)


@dataclass(frozen=True)
class TriangulationOutput:
    table: pd.DataFrame                       # the pseudo3d table (schema order, sorted)
    metadata: dict[str, str]                  # Parquet file metadata
    report: dict                              # metrics (JSON-ready)
    cameras: dict[str, CameraGroup]           # per subject: cameras used, in the reconstruction's world (mm)
    points: dict[str, tuple[pd.DataFrame, np.ndarray]]  # per subject: timestamps, (T, J, 3) world points (mm)


def _json_float(v: float | None, nd: int = 4):
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def camera_errors(est: CameraGroup, true: CameraGroup) -> dict:
    """Relative-pose errors of every camera pair: rotation (deg), translation direction (deg), baseline length (%)."""
    out: dict[str, dict] = {}
    for a in range(len(est)):
        for b in range(a + 1, len(est)):
            Re = est.R[b] @ est.R[a].T
            Rt = true.R[b] @ true.R[a].T
            te = est.t[b] - Re @ est.t[a]
            tt = true.t[b] - Rt @ true.t[a]
            out[f"{est.names[a]}-{est.names[b]}"] = {
                "rotation_deg": _json_float(rotation_angle_deg(Re @ Rt.T), 5),
                "translation_direction_deg": _json_float(angle_between_deg(te, tt), 5),
                "baseline_error_pct": _json_float(100.0 * (np.linalg.norm(te) / np.linalg.norm(tt) - 1.0), 3),
            }
    return out


def _summary(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "max": None, "n": 0}
    return {"mean": _json_float(v.mean(), 5), "max": _json_float(np.abs(v).max(), 5), "n": int(len(v))}


def triangulate_table(pose2d: pd.DataFrame, rig: Rig, params: TriangulateParams,
                      progress: Callable | None = None) -> TriangulationOutput:
    """The whole stage on tables: pose2d rows → pseudo3d rows (see the module docstring)."""
    counts = _Counts()
    df = sort_rows(pose2d)
    subjects_report: dict[str, dict] = {}
    parts: list[pd.DataFrame] = []
    groups: dict[str, CameraGroup] = {}
    points: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    subjects = sorted(df["subject"].unique()) if len(df) else []
    iterator = progress(subjects) if progress is not None else subjects
    for subject in iterator:
        sdf = df[df["subject"] == subject]
        rep: dict = {}
        out = _triangulate_subject(sdf, subject, rig, params, counts, rep)
        subjects_report[subject] = rep
        if out is not None:
            parts.append(out.table)
            groups[subject] = out.group
            points[subject] = (out.timestamps, out.points)
    cols = PSEUDO3D_SCHEMA.names
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    table = sort_rows(table[cols]) if len(table) else table[cols]
    table = table.astype({"frame": np.int32, "x": np.float32, "y": np.float32, "z": np.float32,
                          "reproj_err": np.float32, "n_views": np.int8})
    n_in = len(pose2d)
    triangulated = int((table["n_views"] > 0).sum()) if len(table) else 0
    all_rot = [e["rotation_deg"] for r in subjects_report.values() for e in r.get("camera_errors", {}).values()]
    all_tdir = [e["translation_direction_deg"] for r in subjects_report.values() for e in r.get("camera_errors", {}).values()]
    all_base = [e["baseline_error_pct"] for r in subjects_report.values() for e in r.get("camera_errors", {}).values()]
    finite_err = table["reproj_err"].to_numpy(np.float64) if len(table) else np.zeros(0)
    finite_err = finite_err[np.isfinite(finite_err)]
    report = {
        "mode": params.mode,
        "input_rows": n_in,
        "output_rows": int(len(table)),
        "triangulated_rows": triangulated,
        "coverage": _json_float(triangulated / n_in if n_in else 0.0, 6),
        "rows_dropped": dict(sorted(counts.dropped.items())),
        "rows_marked_untriangulated": counts.marked_rows,
        "observations_unusable": counts.unusable_observations,
        "joints_with_fewer_than_min_views": counts.joints_few_views,
        "observations_rejected_as_outliers": counts.outlier_observations,
        "swaps_corrected": counts.swaps,
        "subjects_dropped": sum(str(r.get("status", "")).startswith("dropped") for r in subjects_report.values()),
        "subjects_reregistered": counts.reregistered,
        "reproj_err_px": {
            "inliers_mean": _json_float(counts.inlier_err_sum / counts.inlier_err_n if counts.inlier_err_n else None),
            "rows_mean": _json_float(finite_err.mean() if len(finite_err) else None),
            "rows_median": _json_float(np.median(finite_err) if len(finite_err) else None),
        },
        "camera_rotation_error_deg": _summary(all_rot),
        "camera_translation_direction_error_deg": _summary(all_tdir),
        "camera_baseline_error_pct": _summary(all_base),
        "subjects": subjects_report,
    }
    metadata = _metadata(params, subjects_report, groups)
    return TriangulationOutput(table, metadata, report, groups, points)


# --- one subject -------------------------------------------------------------------------------------
@dataclass
class Solution:
    """One subject's reconstruction, whatever the mode: points and the cameras that see them."""

    X: np.ndarray                   # (T, J, 3) joints in the reconstruction's world frame, mm (NaN: not triangulated)
    R: np.ndarray                   # (T, V, 3, 3) world → camera, per frame (static cameras: the same every frame)
    t: np.ndarray                   # (T, V, 3) mm
    pose_ok: np.ndarray             # (T, V) bool: the camera's pose is known in that frame
    cam_ok: np.ndarray              # (V,) bool: the camera is used at all
    n_views: np.ndarray             # (T, J) views each joint was triangulated from
    inliers: np.ndarray             # (T, V, J) bool: observations used
    swaps: np.ndarray               # (T, V, G) bool: left/right groups mirrored in a view
    group: CameraGroup | None       # the static cameras used (None: per-frame cameras)


@dataclass(frozen=True)
class Dropped:
    """A subject that yields no pseudo-label: the report's counter and status, and the log line."""

    counter: str
    status: str
    message: str


@dataclass(frozen=True)
class SubjectOutput:
    table: pd.DataFrame             # its pseudo3d rows
    group: CameraGroup              # its cameras (intrinsics only for per-frame cameras)
    timestamps: pd.DataFrame        # T rows: action, frame
    points: np.ndarray              # (T, J, 3) world points, mm


def _triangulate_subject(sdf: pd.DataFrame, subject: str, rig: Rig, p: TriangulateParams, counts: _Counts,
                         rep: dict) -> SubjectOutput | None:
    """One subject's pseudo3d rows; None (with the reason counted and in ``rep``) if it has none."""
    cams = _usable_cameras(sdf, subject, rig, p, counts)
    rep["cameras"] = cams
    if len(cams) < 2:
        n = int(sdf["camera"].isin(cams).sum())
        log.warning("%s: fewer than 2 usable cameras: %d rows dropped", subject, n)
        counts.drop("subject_fewer_than_2_cameras", n)
        rep["status"] = "dropped: fewer than 2 usable cameras"
        return None
    sv = SubjectViews.from_table(sdf[sdf["camera"].isin(cams)], cams)
    w = sv.weights(p.min_conf)
    present = np.zeros(w.shape[:2], dtype=bool)
    present[sv.keys["t"].to_numpy(), sv.keys["v"].to_numpy()] = True
    counts.unusable_observations += int((present[..., None] & (w == 0)).sum())
    counts.joints_few_views += int(((w > 0).sum(1) < p.min_views).sum())
    intr = CameraGroup.from_rig(rig, subject, cams, extrinsics=False)
    x = intr.undistort(sv.uv)
    if p.extrinsics == "known":
        sol = _solve_known(x, w, CameraGroup.from_rig(rig, subject, cams), p, rep)
    elif p.relative_pose == "pooled":
        sol = _solve_pooled(x, w, intr, sv, p, counts, rep)
    else:
        sol = _solve_per_frame(x, w, intr, present, subject, p, counts, rep)
    if not isinstance(sol, Dropped):
        sol = _check_geometry(sol, p, rep)
    if isinstance(sol, Dropped):
        n = len(sv.keys) * w.shape[2]
        log.warning("%s: %s: %d rows dropped", subject, sol.message, n)
        counts.drop(sol.counter, n)
        rep["status"] = sol.status
        return None
    if p.extrinsics == "estimated" and all(rig.has_extrinsics(subject, c) for c in cams):   # report only
        truth = CameraGroup.from_rig(rig, subject, cams)
        rep["camera_errors"] = (camera_errors(sol.group, truth.subset(np.flatnonzero(sol.cam_ok)))
                                if sol.group is not None else _per_frame_camera_errors(sol.R, sol.t, sol.pose_ok, truth))
    table, row_err = _rows(sv, sol, intr, subject, p, counts)
    _count_observations(sv, w, sol, intr, row_err, counts)
    rep["frames"] = int(len(sv.timestamps))
    rep["rows_out"] = int(len(table))
    rep["swaps_corrected"] = int(sol.swaps.sum())
    rep["status"] = "ok"
    return SubjectOutput(table, sol.group if sol.group is not None else intr, sv.timestamps, sol.X)


def _check_geometry(sol: Solution, p: TriangulateParams, rep: dict) -> Solution | Dropped:
    """Refuse a reconstruction whose cameras see the person along nearly one line: its depths are
    noise (the median over joints of the widest angle between two of the joint's rays is reported)."""
    angle = tri.triangulation_angles(sol.X, sol.R, sol.t, sol.inliers)
    median = float(np.nanmedian(angle)) if np.isfinite(angle).any() else 0.0
    rep["triangulation_angle_deg"] = _json_float(median, 3)
    if median >= p.min_triangulation_angle_deg:
        return sol
    return Dropped("subject_cameras_nearly_collinear", "dropped: cameras nearly collinear with the person",
                   f"the cameras see the person along nearly one line (median triangulation angle {median:.1f} deg "
                   f"< triangulate.min_triangulation_angle_deg {p.min_triangulation_angle_deg:g}): depth unresolved")


def _usable_cameras(sdf: pd.DataFrame, subject: str, rig: Rig, p: TriangulateParams, counts: _Counts) -> list[str]:
    """The subject's cameras that cameras.json describes (with extrinsics, in known mode); the rows of
    the others are dropped and counted."""
    per_cam_rows = sdf.groupby("camera", sort=True).size()
    cams = []
    for c in per_cam_rows.index:
        if c not in rig.intrinsics:
            log.warning("%s: camera %s is not in %s: its %d rows are dropped", subject, c, rig.source, per_cam_rows[c])
            counts.drop("camera_not_in_cameras_json", per_cam_rows[c])
        elif p.extrinsics == "known" and not rig.has_extrinsics(subject, c):
            log.warning("%s: camera %s has no extrinsics for this subject in %s: its %d rows are dropped",
                        subject, c, rig.source, per_cam_rows[c])
            counts.drop("camera_without_extrinsics", per_cam_rows[c])
        else:
            cams.append(c)
    return cams


def _static(group: CameraGroup, T: int, res: tri.PoseTriangulation, cam_ok: np.ndarray | None = None) -> Solution:
    """A solution from static cameras: ``group`` (all V cameras), ``res`` triangulated with the ``cam_ok`` ones."""
    V = len(group)
    cam_ok = np.ones(V, dtype=bool) if cam_ok is None else cam_ok
    reg = np.flatnonzero(cam_ok)
    inliers = np.zeros((T, V, res.inliers.shape[-1]), dtype=bool)
    inliers[:, reg] = res.inliers
    swaps = np.zeros((T, V, len(tri.SWAP_GROUPS)), dtype=bool)
    swaps[:, reg] = res.swaps
    return Solution(res.points, np.broadcast_to(group.R, (T, V, 3, 3)), np.broadcast_to(group.t, (T, V, 3)),
                    np.broadcast_to(cam_ok, (T, V)), cam_ok, res.n_views, inliers, swaps, group.subset(reg))


def _solve_known(x: np.ndarray, w: np.ndarray, group: CameraGroup, p: TriangulateParams, rep: dict) -> Solution:
    """``extrinsics: known``: every frame triangulated with cameras.json's cameras."""
    rep["extrinsics"] = "known"
    return _static(group, len(x), group.triangulate(x, w, normalized=True, **p.triangulation()))


def _solve_pooled(x: np.ndarray, w: np.ndarray, intr: CameraGroup, sv: SubjectViews, p: TriangulateParams,
                  counts: _Counts, rep: dict) -> Solution | Dropped:
    """``relative_pose: pooled``: the cameras estimated once from all frames, every frame triangulated
    with them, the metric scale from the bone-length prior."""
    cams = list(sv.cameras)
    est = estimate_cameras_pooled(x, w, intr.focal, p, cams)
    rep["pairs"] = {f"{cams[a]}-{cams[b]}": {
        "points": q.n_points, "correspondences": q.points, "inliers": q.n_inliers,
        "parallax_deg": _json_float(q.parallax_deg, 3), "usable": q.ok,
        **({"reason": q.reason} if q.reason else {})} for (a, b), q in est.pairs.items()}
    if est.notes:
        rep["notes"] = list(est.notes)
        for note in est.notes:
            log.warning("%s: %s", sv.subject, note)
    if not est.ok:
        return Dropped("subject_cameras_not_estimated", "dropped: cameras could not be estimated",
                       "cameras could not be estimated (no usable camera pair)")
    rep["epipolar_agreement"] = {f"{cams[a]}-{cams[b]}": _json_float(v) for (a, b), v in est.agreement.items()}
    worst = min(est.agreement, key=est.agreement.get) if est.agreement else None
    if est.reregistered:
        counts.reregistered += 1
        rep["reregistered"] = True
        log.warning("%s: the cameras chained from the strongest pairs contradicted another pair's epipolar geometry; "
                    "re-registered along the pairs that agree best (worst agreement now %.2f, pair %s-%s)",
                    sv.subject, est.agreement.get(worst, 1.0), *(cams[i] for i in worst or (0, 0)))
    if not est.consistent:
        a, b = worst
        return Dropped("subject_cameras_inconsistent", "dropped: self-calibration inconsistent",
                       f"self-calibration failed: the estimated cameras explain only {est.agreement[worst]:.0%} of "
                       f"pair {cams[a]}-{cams[b]}'s epipolar inliers (< triangulate.min_epipolar_agreement "
                       f"{p.min_epipolar_agreement:g})")
    for v in np.flatnonzero(~est.registered):
        n = int((sv.keys["v"] == v).sum()) * x.shape[2]
        log.warning("%s: camera %s could not be registered: its %d rows are dropped", sv.subject, cams[v], n)
        counts.drop("camera_not_registered", n)
    reg = np.flatnonzero(est.registered)
    unit = intr.with_extrinsics(est.R, est.t).subset(reg)
    res = unit.triangulate(x[:, reg], w[:, reg], normalized=True, **p.triangulation())
    sc = bone_length_scale(res.points, p.bone_lengths_mm)
    if not np.isfinite(sc.scale):
        return Dropped("subject_scale_unknown", "dropped: metric scale unknown",
                       "no bone could be measured, metric scale unknown")
    R_full = np.tile(np.eye(3), (len(cams), 1, 1))
    t_full = np.zeros((len(cams), 3))
    R_full[reg], t_full[reg] = est.R[reg], est.t[reg] * sc.scale
    res = tri.PoseTriangulation(res.points * sc.scale, res.inliers, res.n_views, res.swaps)
    rep["extrinsics"] = "estimated (pooled)"
    rep["reference_camera"] = cams[est.reference]
    rep["scale_mm_per_unit"] = _json_float(sc.scale, 6)
    if est.bundle is not None:
        b = est.bundle
        rep["bundle_adjustment"] = {"observations": b.n_observations, "rms_px_initial": _json_float(b.rms_px_initial),
                                    "rms_px": _json_float(b.rms_px), "median_px": _json_float(b.median_px),
                                    "nfev": b.nfev, "message": b.message}
    return _static(intr.with_extrinsics(R_full, t_full), len(x), res, est.registered.copy())


def _solve_per_frame(x: np.ndarray, w: np.ndarray, intr: CameraGroup, present: np.ndarray, subject: str,
                     p: TriangulateParams, counts: _Counts, rep: dict) -> Solution:
    """``relative_pose: per_frame`` (EpipolarPose): each frame's own relative poses and scale."""
    T, V, J = w.shape
    pf = triangulate_per_frame(x, w, intr.focal, p.bone_lengths_mm, p)
    inliers = (w > 0) & pf.ok[..., None] & (pf.n_views > 0)[:, None, :]
    rep["extrinsics"] = "estimated (per_frame)"
    rep["reference_camera"] = intr.names[pf.reference]
    rep["failed_frame_pairs"] = pf.n_failed_pairs
    n = int((present & ~pf.ok).sum()) * J
    if n:
        log.warning("%s: %d rows dropped where the camera's pose could not be estimated in that frame", subject, n)
        counts.drop("camera_pose_not_estimated_in_frame", n)
    return Solution(pf.points, pf.R, pf.t, pf.ok, np.ones(V, dtype=bool), pf.n_views, inliers,
                    np.zeros((T, V, len(tri.SWAP_GROUPS)), dtype=bool), None)


def _rows(sv: SubjectViews, sol: Solution, intr: CameraGroup, subject: str, p: TriangulateParams,
          counts: _Counts) -> tuple[pd.DataFrame, np.ndarray]:
    """The pseudo3d rows of the kept (camera, frame) inputs: each joint in that camera's frame, its
    reprojection error against the row's own 2D and the views it was triangulated from → (rows, the
    finite reprojection errors of the triangulated joints' rows)."""
    J = sol.X.shape[1]
    has_point = np.isfinite(sol.X).all(-1)                          # (T, J)
    frame_ok = has_point.any(-1)
    tk, vk = sv.keys["t"].to_numpy(), sv.keys["v"].to_numpy()
    keep = sol.cam_ok[vk] & sol.pose_ok[tk, vk]
    lost_frames = keep & ~frame_ok[tk]
    if lost_frames.any():
        n = int(lost_frames.sum()) * J
        log.warning("%s: %d rows dropped: frames in which no joint could be triangulated", subject, n)
        counts.drop("frame_without_triangulated_joint", n)
    keep &= frame_ok[tk]
    tk, vk = tk[keep], vk[keep]
    Xc = np.einsum("fij,fkj->fki", sol.R[tk, vk], sol.X[tk]) + sol.t[tk, vk][:, None, :]   # (F, J, 3)
    reproj = np.full((len(tk), J), np.nan)
    for v in range(len(sv.cameras)):
        sel = vk == v
        if sel.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                pr = intr.cameras[v].project_camera(Xc[sel])
                reproj[sel] = np.linalg.norm(pr - sv.uv[tk[sel], v], axis=-1)
    nv = sol.n_views[tk].astype(np.int64)
    values = np.concatenate([Xc, reproj[..., None], nv[..., None]], axis=-1)
    marked = int((~has_point[tk]).sum())
    if marked:
        log.warning("%s: %d joint rows kept untriangulated (n_views=0, NaN x/y/z): fewer than %d consistent views",
                    subject, marked, p.min_views)
    counts.marked_rows += marked
    table = from_dense(sv.keys.loc[keep, KEYS].reset_index(drop=True), values, PSEUDO3D_VALUES)
    return table, reproj[np.isfinite(reproj) & (nv > 0)]


def _count_observations(sv: SubjectViews, w: np.ndarray, sol: Solution, intr: CameraGroup, row_err: np.ndarray,
                        counts: _Counts) -> None:
    """Observation statistics over the kept cameras: outliers, swaps, the inliers' reprojection error
    (per-frame cameras: ``row_err``, the rows' own)."""
    has_point = np.isfinite(sol.X).all(-1)
    valid = (w > 0) & sol.cam_ok[None, :, None]
    counts.observations += int(valid.sum())
    counts.outlier_observations += int((valid & ~sol.inliers & has_point[:, None, :]).sum())
    counts.swaps += int(sol.swaps.sum())
    if sol.group is not None:
        uv_fixed = tri.apply_swaps(sv.uv, sol.swaps) if sol.swaps.any() else sv.uv
        use = sol.inliers & has_point[:, None, :]
        full = CameraGroup(tuple(intr.cameras[i].with_extrinsics(sol.R[0, i], sol.t[0, i])
                                 for i in range(len(sv.cameras))))
        e = full.reprojection_errors(np.where(has_point[..., None], sol.X, 0.0), uv_fixed)[use]
    else:
        e = row_err
    e = e[np.isfinite(e)]
    counts.inlier_err_sum += float(e.sum())
    counts.inlier_err_n += int(len(e))


def _per_frame_camera_errors(Rt: np.ndarray, tt: np.ndarray, ok: np.ndarray, truth: CameraGroup) -> dict:
    """Per-frame cameras: per pair, the median over frames of the relative-pose errors."""
    T, V = ok.shape
    out = {}
    for a in range(V):
        for b in range(a + 1, V):
            sel = ok[:, a] & ok[:, b]
            if not sel.any():
                out[f"{truth.names[a]}-{truth.names[b]}"] = {"rotation_deg": None, "translation_direction_deg": None,
                                                              "baseline_error_pct": None}
                continue
            Re = Rt[sel, b] @ np.swapaxes(Rt[sel, a], -1, -2)
            te = tt[sel, b] - (Re @ tt[sel, a][..., None])[..., 0]
            Rtr = truth.R[b] @ truth.R[a].T
            ttr = truth.t[b] - Rtr @ truth.t[a]
            out[f"{truth.names[a]}-{truth.names[b]}"] = {
                "rotation_deg": _json_float(np.median(rotation_angle_deg(Re @ Rtr.T)), 5),
                "translation_direction_deg": _json_float(np.median(angle_between_deg(te, ttr[None])), 5),
                "baseline_error_pct": _json_float(100.0 * (np.median(np.linalg.norm(te, axis=-1)) / np.linalg.norm(ttr) - 1.0), 3),
            }
    return out


def _metadata(p: TriangulateParams, subjects: dict, groups: dict[str, CameraGroup]) -> dict[str, str]:
    prior = ", ".join(f"{n} {v:g}" for n, v in zip(skeleton.BONE_NAMES, p.bone_lengths_mm))
    if p.extrinsics == "known":
        extr = "known: each camera's extrinsics (R, t) for the subject from cameras.json"
        scale = "metric from the calibration: cameras.json translations are in mm"
    elif p.relative_pose == "pooled":
        extr = ("estimated without extrinsics (cameras.json R/t ignored), pooled per subject: essential matrix of "
                f"every camera pair from all confident joint correspondences of all frames (OpenCV "
                f"{'USAC_MAGSAC' if p.essential_method == 'magsac' else 'USAC_DEFAULT (LO-RANSAC)'}, normalised "
                "coordinates), relative poses by decomposition with the cheirality check, chained into the "
                f"reference camera's frame, then robust bundle adjustment ({p.ba_loss}) of all cameras and the "
                f"joints of up to {p.ba_max_frames} frames")
        scale = ("bone-length prior: scale = sum of prior bone lengths / sum of the subject's median triangulated "
                 f"bone lengths, per subject; prior (mm): {prior}")
    else:
        extr = ("estimated without extrinsics (cameras.json R/t ignored), per frame as in EpipolarPose: for each "
                "frame and camera pair, the essential matrix of that frame's joints, relative pose by "
                "decomposition with the cheirality check, two-view triangulation; pairs combined by median")
        scale = ("bone-length prior, per frame and camera pair: scale = sum of prior bone lengths / sum of the "
                 f"triangulated bone lengths; prior (mm): {prior}")
    cams = {}
    for s, g in sorted(groups.items()):
        if p.extrinsics == "estimated" and p.relative_pose == "pooled":
            cams[s] = {"reference_camera": subjects[s].get("reference_camera"),
                       "cameras": {n: {"R": np.round(c.R, 9).tolist(), "t_mm": np.round(c.t, 6).tolist()}
                                   for n, c in zip(g.names, g.cameras)}}
    md = {
        "extrinsics": extr,
        "scale": scale,
        "mode": p.mode,
        "params": json.dumps(asdict(p), sort_keys=True),
        "rows": ("x, y, z: the joint in the row's camera frame, mm, not root-centred; n_views: views used "
                 "(0 with NaN x/y/z/reproj_err: not triangulated); reproj_err: px distance between the "
                 "joint's projection and the row's own 2D (NaN where that 2D was missing)"),
    }
    if cams:
        md["estimated_cameras"] = json.dumps(cams, sort_keys=True)
    return {META_PREFIX + k: v for k, v in md.items()}


# --- the recovered rig ------------------------------------------------------------------------------
def recovered_rig(out: TriangulationOutput, rig: Rig, p: TriangulateParams) -> Rig:
    """The cameras the pseudo-labels were triangulated with, as a cameras.json ``Rig``: every camera's
    intrinsics as given and, per subject, each used camera's ``R, t`` — with ``extrinsics: estimated``
    (pooled) the self-calibrated ones, in the reference camera's frame (the report's
    ``reference_camera``: identity there), metric (mm) from the bone-length prior; with ``known`` the
    given ones. Per-frame estimates have no single camera pose: intrinsics only."""
    extrinsics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    if p.extrinsics == "known" or p.relative_pose == "pooled":
        for subject, group in sorted(out.cameras.items()):
            extrinsics[subject] = {name: (np.round(cam.R, 9), np.round(cam.t, 6))
                                   for name, cam in zip(group.names, group.cameras)}
    return Rig(dict(rig.intrinsics), extrinsics, source="triangulate")


def rig_panels(out: TriangulationOutput, rig: Rig) -> tuple[dict[str, dict], tuple[str, str]]:
    """Per subject with static cameras, the recovered cameras seen from above for ``viz.rig_figure``.

    Where cameras.json has every used camera's extrinsics, the recovered rig is placed through the
    true pose of its reference camera (no fitting: rotation, direction and scale errors all show)
    beside the true rig, on the world's ground plane (x, y; Human3.6M's z is up). Otherwise it is
    drawn in its reference camera's frame on the x–z plane (y points down)."""
    panels: dict[str, dict] = {}
    known = all(all(rig.has_extrinsics(s, n) for n in g.names) for s, g in out.cameras.items())
    for subject, group in sorted(out.cameras.items()):
        rep = out.report["subjects"].get(subject, {})
        if rep.get("extrinsics") == "estimated (per_frame)":
            continue                                                   # no single rig
        ref = rep.get("reference_camera") if rep.get("extrinsics") != "known" else None
        centres = np.einsum("vji,vj->vi", group.R, -group.t)           # -Rᵀ t
        dirs = group.R[:, 2, :]                                        # the optical axis, Rᵀ e_z
        _, pts = out.points.get(subject, (None, np.full((1, skeleton.NUM_JOINTS, 3), np.nan)))
        person = np.nanmean(pts[:, skeleton.PELVIS], axis=0) if np.isfinite(pts[:, skeleton.PELVIS]).any() else None
        true = None
        if known:
            truth = [rig.camera(subject, n) for n in group.names]
            if ref is not None:                                        # reference frame → world
                T = rig.camera(subject, ref)
                centres, dirs = (centres - T.t) @ T.R, dirs @ T.R
                person = None if person is None else (person - T.t) @ T.R
            true = (np.array([c.center for c in truth])[:, :2], np.array([c.R[2] for c in truth])[:, :2])
        axes = [0, 1] if known else [0, 2]
        panels[subject] = {"names": list(group.names), "est": (centres[:, axes], dirs[:, axes]), "true": true,
                         "person": None if person is None else person[axes]}
    return panels, (("x (mm)", "y (mm)") if known else ("x (mm)", "depth z (mm)"))


def summary(report: dict) -> dict[str, float | None]:
    """metrics/triangulate.json: the pseudo-labels' accuracy (with ground truth), coverage and
    reprojection error; the recovered rig's mean relative-pose errors (with true extrinsics)."""
    gt = report.get("ground_truth", {})
    out = {"pseudo3d.coverage": report["coverage"], "pseudo3d.reproj_px": report["reproj_err_px"]["rows_median"],
           "rig.subjects_dropped": report["subjects_dropped"]}
    if gt.get("frames_evaluated"):
        out.update({"pseudo3d.mpjpe": gt["mpjpe_mm"], "pseudo3d.mpjpe_15j": gt["mpjpe_15j_mm"], "pseudo3d.n_mpjpe": gt["n_mpjpe_mm"],
                    "pseudo3d.p_mpjpe": gt["p_mpjpe_mm"]})
    for key, name in (("camera_rotation_error_deg", "rig.rotation_error_deg"),
                      ("camera_translation_direction_error_deg", "rig.translation_direction_error_deg"),
                      ("camera_baseline_error_pct", "rig.baseline_error_pct")):
        if report[key]["n"]:
            out[name] = report[key]["mean"]
    return out


# --- ground truth ----------------------------------------------------------------------------------
def skeleton_scale_for(p: TriangulateParams, pose2d_metadata: dict[str, str]) -> float:
    """The detections' skeleton size relative to the truth: the param, or (auto) what the 2D network
    measured of itself and infer_2d carried into the table; 1 (no correction) for ground-truth 2D or
    a table that does not say."""
    if p.input_2d == "ground_truth":
        return 1.0
    if p.skeleton_scale != "auto":
        return float(p.skeleton_scale)
    value = pose2d_metadata.get("skeleton_scale")
    if value is None:
        log.warning("param triangulate.skeleton_scale: auto, but the 2D table does not say how large its network "
                    "draws skeletons (a 2D model from before the measurement?): no correction")
        return 1.0
    if not 0.5 <= float(value) <= 1.5:
        log.warning("param triangulate.skeleton_scale: auto, but the 2D network's measured skeleton scale %s is "
                    "implausible (not in [0.5, 1.5]: an untrained network?): no correction", value)
        return 1.0
    return float(value)


def enlarge_skeletons(pose2d: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Undo a 2D network's shrinking: every detected skeleton (one camera, one frame) enlarged about
    the mean of its joints by 1 / ``scale`` (``metrics.skeleton_scale`` of the network)."""
    if scale == 1.0 or not len(pose2d):
        return pose2d
    keys, values = to_dense(pose2d, POSE2D_VALUES)
    values = values.astype(np.float64)
    uv = values[..., :2]
    finite = np.isfinite(uv)
    centre = np.where(finite, uv, 0.0).sum(1, keepdims=True) / np.maximum(finite.sum(1, keepdims=True), 1)
    values[..., :2] = centre + (uv - centre) / scale
    return from_dense(keys, values.astype(np.float32), POSE2D_VALUES)


def ground_truth_2d(pose2d: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """``pose2d``'s rows with u, v replaced by the ground truth projected through the true cameras
    (lens included) and confidence 1 (``triangulate.input_2d: ground_truth``)."""
    gt = ground_truth_world(root)
    keys, values = to_dense(pose2d, POSE2D_VALUES)
    values = values.astype(np.float64)
    for (s, a, c), idx in keys.groupby(["subject", "action", "camera"], sort=True).indices.items():
        world, cam = gt(s, a, c)
        frames = keys["frame"].to_numpy()[idx]
        if world is None or (frames >= len(world)).any():
            raise ValueError(f"param triangulate.input_2d: ground_truth needs the poses and extrinsics of {s} {a!r} "
                             f"camera {c} under {root}")
        values[idx, :, :2] = cam.project(world[frames])
        values[idx, :, 2] = 1.0
    return from_dense(keys, values.astype(np.float32), POSE2D_VALUES)


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


def labels_vs_gt(table: pd.DataFrame, gt: Callable[[str, str, str], np.ndarray | None]) -> LabelsVsGT:
    """``gt(subject, action, camera)`` → (N, 16, 3) poses in that camera's frame (mm) or None."""
    keys, vals = to_dense(table, ["x", "y", "z", "reproj_err", "n_views"])
    vals = vals.astype(np.float64)
    target = np.full(vals[..., :3].shape, np.nan)
    missing = 0
    for (s, a, c), idx in keys.groupby(["subject", "action", "camera"], sort=True).indices.items():
        g = gt(s, a, c)
        if g is None:
            missing += len(idx)
            continue
        fr = keys["frame"].to_numpy()[idx]
        ok = fr < len(g)
        target[idx[ok]] = g[fr[ok]]
        missing += int((~ok).sum())
    return LabelsVsGT(vals[..., :3], target, vals[..., 3], vals[..., 4], missing)


def evaluate_against_gt(table: pd.DataFrame, gt: Callable[[str, str, str], np.ndarray | None]) -> dict:
    """Pseudo-label accuracy against ``gt`` (see ``labels_vs_gt``).

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
    lv = labels_vs_gt(table, gt)
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
        "mpjpe_mm": _json_float(metrics.mpjpe(Pr, Gr), 3),
        "mpjpe_15j_mm": _json_float(metrics.mpjpe(metrics.non_root(Pr), metrics.non_root(Gr)), 3),
        "mpjpe_15j_mm_all_triangulated": _json_float(lv.rel_err[scored].mean(), 3) if scored.any() else None,
        "joints_scored_all_triangulated": int(scored.sum()),
        "n_mpjpe_mm": _json_float(metrics.n_mpjpe(Pr, Gr), 3),
        "p_mpjpe_mm": _json_float(metrics.p_mpjpe(P, G), 3),
        "mpjpe_absolute_mm": _json_float(metrics.mpjpe(P, G), 3),
        "joint_error_absolute_mm_all_triangulated": _json_float(
            np.linalg.norm(pred[any_joint] - target[any_joint], axis=-1).mean(), 3),
        "pck3d_150_pct": _json_float(metrics.pck3d(Pr, Gr), 3),
        "auc_pct": _json_float(metrics.auc(Pr, Gr), 3),
    }


REPROJ_BINS_PX = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0, np.inf)


def error_tables(lv: LabelsVsGT | None) -> dict[str, pd.DataFrame]:
    """Where the pseudo-labels' error comes from: the pelvis-relative joint error (non-root joints) by
    the number of views a joint was triangulated from, and by its row's reprojection error (bins
    ``REPROJ_BINS_PX``; ``reproj_px`` is the median reprojection error in the bin). Without ground
    truth (``lv`` None) the tables are empty."""
    if lv is None:
        e, views, rep = np.zeros(0), np.zeros(0, dtype=int), np.zeros(0)
    else:
        ok = lv.scored
        e, views, rep = lv.rel_err[ok], lv.n_views[ok].astype(int), lv.reproj[ok]

    def stats(e: np.ndarray, groups: np.ndarray, values: list) -> pd.DataFrame:
        rows = [(v, float(e[groups == v].mean()), float(np.median(e[groups == v])), int((groups == v).sum()))
                for v in values if (groups == v).any()]
        return pd.DataFrame(rows, columns=["x", "mean_error_mm", "median_error_mm", "joints"])

    by_views = stats(e, views, sorted(set(views.tolist()))).rename(columns={"x": "views"})
    edges = np.asarray(REPROJ_BINS_PX)
    finite = np.isfinite(rep)
    bins = np.digitize(rep[finite], edges[1:-1])
    by_reproj = stats(e[finite], bins, list(range(len(edges) - 1)))
    by_reproj.insert(1, "bin_px", [f"{edges[b]:g}-{edges[b + 1]:g}" for b in by_reproj["x"]])
    by_reproj["x"] = [float(np.median(rep[finite][bins == b])) for b in by_reproj["x"]]
    return {"pseudo3d_error_by_views": by_views, "pseudo3d_error_by_reproj": by_reproj.rename(columns={"x": "reproj_px"})}


def ground_truth_world(root: str | Path) -> Callable[[str, str, str], tuple[np.ndarray | None, Camera | None]]:
    """``gt(subject, action, camera)`` → (the MPII joints in the world frame (N, 16, 3) mm, the true
    camera), (None, None) where the Human3.6M-layout ``root`` has no poses or extrinsics for it."""
    ds = H36MDataset(root)
    cache: dict = {}

    def gt(subject: str, action: str, camera: str):
        if not ds.pose_path(subject, action).exists() or not ds.rig.has_extrinsics(subject, camera):
            return None, None
        if (subject, action) not in cache:
            cache[(subject, action)] = skeleton.h36m32_to_mpii(ds.poses_world(subject, action))
        return cache[(subject, action)], ds.rig.camera(subject, camera)

    return gt


def ground_truth(root: str | Path) -> Callable[[str, str, str], np.ndarray | None]:
    """``gt(subject, action, camera)`` for ``evaluate_against_gt``: the MPII joints in that camera's
    frame (mm), None where the root has no poses or extrinsics for it."""
    world = ground_truth_world(root)

    def gt(subject: str, action: str, camera: str) -> np.ndarray | None:
        poses, cam = world(subject, action, camera)
        return None if poses is None else cam.world_to_camera(poses)

    return gt


# --- the stage -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TriangulatePaths:
    pose2d: str                       # the 2D poses (data/pose2d.parquet)
    cameras: str                      # cameras.json (intrinsics; extrinsics used only if known)
    out: str                          # the pseudo-labels (data/pseudo3d.parquet)
    cameras_out: str | None = None    # the cameras used, as a cameras.json (data/cameras_estimated.json)
    plots: str | None = None          # folder of the error tables (reports/plots)
    rig_figure: str | None = None     # the recovered cameras seen from above (reports/rig_topview.png)
    gt_root: str | None = None        # Human3.6M-layout root with D3_Positions: the labels' accuracy (report only)

    def outputs(self) -> list[str | None]:
        return [self.out, self.cameras_out, self.plots, self.rig_figure]


@dataclass(frozen=True)
class TriangulateConfig:
    triangulate: TriangulateParams


def load_params(path: str | Path = "params.yaml") -> TriangulateConfig:
    return TriangulateConfig(load_section(TriangulateParams, "triangulate", path))


def _read_inputs(paths: TriangulatePaths, p: TriangulateParams):
    """The rig, the 2D poses (ground truth or corrected detections, as the params say), the ground
    truth for the report (None without ``gt_root``) and the skeleton scale corrected."""
    rig = load_rig(paths.cameras)
    pose2d = read_pose2d(paths.pose2d)
    gt = ground_truth(paths.gt_root) if paths.gt_root else None
    if p.input_2d == "ground_truth":
        if not paths.gt_root:
            raise ParamError("param triangulate.input_2d: ground_truth needs --gt-root (the data root with D3_Positions)")
        pose2d = ground_truth_2d(pose2d, paths.gt_root)
        log.info("input_2d: ground truth projected into each camera (the 2D network's detections replaced)")
    scale = skeleton_scale_for(p, read_parquet_metadata(paths.pose2d))
    if scale != 1.0:
        pose2d = enlarge_skeletons(pose2d, scale)
        log.info("2D skeletons enlarged by 1 / %.4f (param triangulate.skeleton_scale: %s)", scale, p.skeleton_scale)
    return rig, pose2d, gt, scale


def run(paths: TriangulatePaths, params: TriangulateConfig, runtime: Runtime) -> StageResult:
    """pose2d → the pseudo-labels, the cameras used, the error tables and the rig figure written
    (nothing unless everything succeeded); the metrics and the report returned."""
    t0 = time.perf_counter()
    p = params.triangulate
    rig, pose2d, gt, skeleton_scale = _read_inputs(paths, p)
    log.info("%d rows from %s, mode %s", len(pose2d), paths.pose2d, p.mode)
    out = triangulate_table(pose2d, rig, p, progress=lambda xs: tqdm(xs, desc="subjects", file=sys.stderr,
                                                                     disable=not runtime.progress))
    report = {**out.report, "skeleton_scale": skeleton_scale}
    if gt is not None:
        report["ground_truth"] = evaluate_against_gt(out.table, gt)
    if not len(out.table):
        log.warning("no row could be triangulated: %s will be empty", paths.out)
    json.dumps(report, allow_nan=False)  # fail before writing anything
    write_pseudo3d(out.table, paths.out, out.metadata)
    if paths.cameras_out:
        save_rig(recovered_rig(out, rig, p), paths.cameras_out)
    if paths.plots:
        _write_error_tables(out.table, gt, paths.plots)
    if paths.rig_figure:
        _draw_rig(out, rig, paths.rig_figure)
    log.info("wrote %s: %d rows, coverage %.4f", paths.out, len(out.table), report["coverage"])
    outputs = [o for o in paths.outputs() if o]
    return StageResult(outputs, summary(report), report, {"seconds": round(time.perf_counter() - t0, 1)})


def _write_error_tables(table, gt, folder: str) -> None:
    tables = error_tables(labels_vs_gt(table, gt) if gt is not None and len(table) else None)
    for name, df in tables.items():
        with atomic_path(Path(folder) / f"{name}.tsv") as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.3f")


def _draw_rig(out: TriangulationOutput, rig: Rig, path: str) -> None:
    panels, axis_labels = rig_panels(out, rig)
    with atomic_path(path) as tmp:
        truth = any(p["true"] is not None for p in panels.values())
        title = "Recovered cameras from above (red ×)" + (
            ", the true ones (green ○)" if truth else ", in each subject's reference camera frame")
        save_figure(rig_figure(panels, title, axis_labels), tmp)
