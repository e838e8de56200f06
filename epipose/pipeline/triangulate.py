"""The triangulate stage's science: a pose2d table → a pseudo3d table, its metadata and a report.

Per subject (the cameras are static per subject, so all its actions are pooled), in one of three
modes (``Mode``, from the params ``extrinsics`` and ``relative_pose``):
- ``known`` (``extrinsics: known``): each camera's own K, distortion and cameras.json extrinsics;
  robust triangulation of every frame (view-RANSAC, left/right swap correction, Gauss–Newton).
- ``estimated/pooled`` (default, the paper's self-supervised setting; cameras.json extrinsics are
  ignored except to *report* errors): the cameras estimated once per subject (pairwise essential
  matrices from all frames + bundle adjustment on a subsample of frames), then every frame
  triangulated with them exactly as in known mode; the metric scale from the bone-length prior.
- ``estimated/per_frame``: EpipolarPose's per-frame essential matrix and scale.

Each mode is one solver (``_solve_known``, ``_solve_pooled``, ``_solve_per_frame``) that returns a
``Solution`` — the points, the cameras that see them, its report entries and what it counted — or
why the subject was ``Dropped``; ``_triangulate_subject`` turns it into the subject's typed
``SubjectResult`` (status, diagnostics, counts, its labels and cameras), and the report, the Parquet
metadata, the recovered rig and the rig figure are made from those results. The multi-view arrays
are ``epipose.data.multiview``; the geometry ``epipose.geometry``; every comparison with the truth
(report only) ``epipose.evaluation``.

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

import dataclasses
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Rig, load_rig, save_rig
from epipose.data.h36m import H36MDataset
from epipose.data.multiview import SubjectViews, enlarge_skeletons
from epipose.data.pose_tables import (KEYS, PSEUDO3D_SCHEMA, PSEUDO3D_VALUES, SUBJECT_STATUS_KEY, from_dense,
                                     read_pose2d, sort_rows, write_pseudo3d)
from epipose.evaluation.cameras import camera_error_summary, camera_errors
from epipose.evaluation.pseudo_labels import score_pseudo_labels
from epipose.evaluation.truth import truth_as_detections
from epipose.geometry import triangulation as tri
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.scale import bone_length_scale
from epipose.geometry.selfcalib import estimate_cameras_pooled, triangulate_per_frame
from epipose.geometry.sync import estimate_offsets, shift_frames
from epipose.io import atomic_path, json_float, read_parquet_metadata
from epipose.params import ParamError, in_range, load_section
from epipose.stage import Folder, Runtime, StageResult
from epipose.viz import RigView, rig_topview, save_figure

log = logging.getLogger(__name__)
META_PREFIX = "epipose.triangulate."


class Mode(Enum):
    """How a subject's cameras are obtained (params ``extrinsics`` and ``relative_pose``)."""

    KNOWN = "known"                          # cameras.json's extrinsics
    POOLED = "estimated/pooled"              # estimated once per subject from all its frames
    PER_FRAME = "estimated/per_frame"        # estimated in every frame (EpipolarPose)

    @property
    def label(self) -> str:
        """The subject report's ``extrinsics``."""
        return {"known": "known", "estimated/pooled": "estimated (pooled)",
                "estimated/per_frame": "estimated (per_frame)"}[self.value]

    @property
    def static(self) -> bool:
        """One rig per subject (not a camera pose per frame)."""
        return self is not Mode.PER_FRAME


HUMAN_BONE_MM = (50.0, 700.0)     # any adult's or child's bone of the 16-joint skeleton, in mm


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
    sync_max_offset: int = in_range(0, 1000, default=3)          # cameras' time offsets searched, in frames of
    #                                                  the table (0: off); corrected before triangulating
    sync_min_gain: float = in_range(0.0, 10.0, default=0.2)      # an offset must fit this much better than none
    sync_subframe: float = in_range(0.0, 1.0, default=0.35)      # a fraction of a frame is added to the offset when
    #                                                  the cost curve puts it this far (× the spacing) or more from the
    #                                                  whole offset (on synchronised real detections: within ±0.25);
    #                                                  ≥ 0.5: whole frames only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.skeleton_scale != "auto" and not 0.5 <= float(self.skeleton_scale) <= 1.5:
            raise ParamError(f"param triangulate.skeleton_scale: expected auto or a ratio in [0.5, 1.5], "
                             f"got {self.skeleton_scale!r}")
        bones = self.bone_lengths_mm
        if len(bones) != len(skeleton.BONES) or not all(b > 0 for b in bones):
            raise ParamError(f"param triangulate.bone_lengths_mm: expected {len(skeleton.BONES)} positive lengths "
                             f"in skeleton.BONES order ({', '.join(skeleton.BONE_NAMES)}), got {bones!r}")
        lo, hi = HUMAN_BONE_MM
        outside = {n: b for n, b in zip(skeleton.BONE_NAMES, bones) if not lo <= b <= hi}
        if outside:      # metres, cm or inches: every label silently scaled wrong
            raise ParamError(f"param triangulate.bone_lengths_mm: {outside} are not a person's bones in mm (each "
                             f"within [{lo:g}, {hi:g}]); wrong units?")

    @property
    def mode(self) -> Mode:
        return Mode.KNOWN if self.extrinsics == "known" else Mode(f"estimated/{self.relative_pose}")

    def triangulation(self) -> dict:
        return dict(threshold_px=self.view_ransac_px, min_views=self.min_views, ransac=True,
                    refine_iterations=self.refine_iterations, swap_detection=self.swap_detection,
                    swap_ratio=self.swap_ratio)


# --- what a subject yields ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    """What one subject (or one step of it) adds to the report's totals."""

    dropped: dict[str, int] = field(default_factory=dict)   # rows dropped, by reason
    marked_rows: int = 0                  # rows kept untriangulated (n_views 0)
    unusable_observations: int = 0        # present but NaN or below min_conf
    joints_few_views: int = 0             # (frame, joint) with fewer than min_views usable views
    outlier_observations: int = 0         # usable but not used for a triangulated joint
    swaps: int = 0                        # left/right groups corrected
    inlier_err_sum: float = 0.0           # reprojection error of the inliers, px
    inlier_err_n: int = 0
    reregistered: int = 0                 # subjects whose cameras were re-registered

    @classmethod
    def dropping(cls, reason: str, n: int) -> "Counts":
        return cls({reason: int(n)} if n else {})

    def __add__(self, other: "Counts") -> "Counts":
        dropped = dict(self.dropped)
        for reason, n in other.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        numbers = [f.name for f in dataclasses.fields(self) if f.name != "dropped"]
        return Counts(dropped, **{k: getattr(self, k) + getattr(other, k) for k in numbers})


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
    reference: str | None = None    # the camera at the world's origin (estimated cameras)
    diagnostics: dict = field(default_factory=dict)     # the solver's entries of the subject's report
    counts: Counts = field(default_factory=Counts)      # what the solver counted (rows it dropped, ...)


@dataclass(frozen=True)
class Dropped:
    """A subject that yields no pseudo-label: the report's counter and status, the log line, and what
    the solver found and counted before it gave up."""

    counter: str
    status: str
    message: str
    diagnostics: dict = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True)
class SubjectLabels:
    """A subject's pseudo-labels and the cameras they were triangulated with."""

    table: pd.DataFrame             # its pseudo3d rows
    cameras: CameraGroup            # the cameras used (intrinsics only for per-frame cameras), in the reconstruction's world
    reference_camera: str | None    # the camera at the world's origin (estimated cameras)
    timestamps: pd.DataFrame        # T rows: action, frame
    points: np.ndarray              # (T, J, 3) world points, mm


@dataclass(frozen=True)
class SubjectResult:
    """One subject's outcome: ``status`` ("ok" or "dropped: ..."), its report entries, what it adds to the
    totals, its cameras' errors against the true ones (None without them) and its labels (None: dropped)."""

    status: str
    diagnostics: dict
    counts: Counts
    camera_errors: dict | None = None
    labels: SubjectLabels | None = None

    @property
    def report(self) -> dict:
        """The subject's entry in the report (JSON-ready)."""
        errors = {"camera_errors": self.camera_errors} if self.camera_errors is not None else {}
        return {**self.diagnostics, **errors, "status": self.status}


@dataclass(frozen=True)
class TriangulationOutput:
    table: pd.DataFrame                       # the pseudo3d table (schema order, sorted)
    metadata: dict[str, str]                  # Parquet file metadata
    report: dict                              # metrics (JSON-ready)
    subjects: dict[str, SubjectResult]        # per subject, sorted
    mode: Mode

    @property
    def cameras(self) -> dict[str, CameraGroup]:
        """Per labelled subject: the cameras used, in the reconstruction's world (mm)."""
        return {s: r.labels.cameras for s, r in self.subjects.items() if r.labels is not None}

    @property
    def points(self) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
        """Per labelled subject: timestamps, (T, J, 3) world points (mm)."""
        return {s: (r.labels.timestamps, r.labels.points) for s, r in self.subjects.items() if r.labels is not None}


# --- the table -----------------------------------------------------------------------------------------
def triangulate_table(pose2d: pd.DataFrame, rig: Rig, params: TriangulateParams,
                      progress: Callable | None = None) -> TriangulationOutput:
    """The whole stage on tables: pose2d rows → pseudo3d rows (see the module docstring)."""
    df = sort_rows(pose2d)
    subjects = sorted(df["subject"].unique()) if len(df) else []
    iterator = progress(subjects) if progress is not None else subjects
    results = {s: _triangulate_subject(df[df["subject"] == s], s, rig, params) for s in iterator}
    cols = PSEUDO3D_SCHEMA.names
    parts = [r.labels.table for r in results.values() if r.labels is not None]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    table = sort_rows(table[cols]) if len(table) else table[cols]
    table = table.astype({"frame": np.int32, "x": np.float32, "y": np.float32, "z": np.float32,
                          "reproj_err": np.float32, "n_views": np.int8})
    report = _report(len(pose2d), table, results, params.mode)
    return TriangulationOutput(table, _metadata(params, results), report, results, params.mode)


def _report(input_rows: int, table: pd.DataFrame, subjects: dict[str, SubjectResult], mode: Mode) -> dict:
    total = sum((r.counts for r in subjects.values()), Counts())
    triangulated = int((table["n_views"] > 0).sum()) if len(table) else 0
    finite_err = table["reproj_err"].to_numpy(np.float64) if len(table) else np.zeros(0)
    finite_err = finite_err[np.isfinite(finite_err)]
    return {
        "mode": mode.value,
        "input_rows": input_rows,
        "output_rows": int(len(table)),
        "triangulated_rows": triangulated,
        "coverage": json_float(triangulated / input_rows if input_rows else 0.0, 6),
        "rows_dropped": dict(sorted(total.dropped.items())),
        "rows_marked_untriangulated": total.marked_rows,
        "observations_unusable": total.unusable_observations,
        "joints_with_fewer_than_min_views": total.joints_few_views,
        "observations_rejected_as_outliers": total.outlier_observations,
        "swaps_corrected": total.swaps,
        "subjects_dropped": sum(r.status.startswith("dropped") for r in subjects.values()),
        "cameras_time_shifted": sum(sum(d != 0 for d in r.report.get("sync", {}).get("offsets_frames", {}).values())
                                    for r in subjects.values()),
        "subjects_reregistered": total.reregistered,
        "reproj_err_px": {
            "inliers_mean": json_float(total.inlier_err_sum / total.inlier_err_n if total.inlier_err_n else None),
            "rows_mean": json_float(finite_err.mean() if len(finite_err) else None),
            "rows_median": json_float(np.median(finite_err) if len(finite_err) else None),
        },
        **camera_error_summary([r.camera_errors for r in subjects.values() if r.camera_errors is not None]),
        "subjects": {s: r.report for s, r in subjects.items()},
    }


# --- one subject -------------------------------------------------------------------------------------
def _triangulate_subject(sdf: pd.DataFrame, subject: str, rig: Rig, p: TriangulateParams) -> SubjectResult:
    """One subject's pseudo3d rows and cameras, or why it has none (counted, logged)."""
    cams, counts = _usable_cameras(sdf, subject, rig, p)
    if len(cams) < 2:
        n = int(sdf["camera"].isin(cams).sum())
        log.warning("%s: fewer than 2 usable cameras: %d rows dropped", subject, n)
        return SubjectResult("dropped: fewer than 2 usable cameras", {"cameras": cams},
                             counts + Counts.dropping("subject_fewer_than_2_cameras", n))
    sdf = sdf[sdf["camera"].isin(cams)]
    offsets, sync = _synchronise(sdf, subject, cams, rig, p)
    if sync.get("ambiguous"):
        n = len(sdf)
        log.warning("%s: the time offset of camera(s) %s is ambiguous (two offsets fit alike): %d rows dropped",
                    subject, sync["ambiguous"], n)
        return SubjectResult("dropped: camera time offsets ambiguous", {"cameras": cams, "sync": sync},
                             counts + Counts.dropping("subject_sync_ambiguous", n))
    sv = SubjectViews.from_table(shift_frames(sdf, offsets), cams)
    w = sv.weights(p.min_conf)
    present = sv.present()
    counts += Counts(unusable_observations=int((present[..., None] & (w == 0)).sum()),
                     joints_few_views=int(((w > 0).sum(1) < p.min_views).sum()))
    intr = CameraGroup.from_rig(rig, subject, cams, extrinsics=False)
    x = intr.undistort(sv.uv)
    if p.mode is Mode.KNOWN:
        sol = _solve_known(x, w, CameraGroup.from_rig(rig, subject, cams), p)
    elif p.mode is Mode.POOLED:
        sol = _solve_pooled(x, w, intr, sv, p)
    else:
        sol = _solve_per_frame(x, w, intr, present, subject, p)
    if not isinstance(sol, Dropped):
        sol = _check_geometry(sol, p)
    diagnostics = {"cameras": cams, **({"sync": sync} if sync else {}), **sol.diagnostics}
    if isinstance(sol, Dropped):
        n = len(sv.keys) * w.shape[2]
        log.warning("%s: %s: %d rows dropped", subject, sol.message, n)
        return SubjectResult(sol.status, diagnostics, counts + sol.counts + Counts.dropping(sol.counter, n))
    errors = None
    if p.mode is not Mode.KNOWN and all(rig.has_extrinsics(subject, c) for c in cams):   # report only
        errors = _camera_errors(sol, CameraGroup.from_rig(rig, subject, cams))
    table, row_err, row_counts = _rows(sv, sol, intr, p)
    table = shift_frames(table, offsets, sign=+1)           # each row back on its own camera's clock
    diagnostics.update(frames=int(len(sv.timestamps)), rows_out=int(len(table)), swaps_corrected=int(sol.swaps.sum()))
    labels = SubjectLabels(table, sol.group if sol.group is not None else intr, sol.reference, sv.timestamps, sol.X)
    counts += sol.counts + row_counts + _observation_counts(sv, w, sol, intr, row_err)
    return SubjectResult("ok", diagnostics, counts, errors, labels)


def _camera_errors(sol: Solution, truth: CameraGroup) -> dict:
    """The recovered cameras' relative-pose errors against ``truth`` (the same cameras, true extrinsics):
    of the registered ones for static cameras, per frame (median) for per-frame ones."""
    if sol.group is None:
        return camera_errors(sol.R, sol.t, sol.pose_ok, truth)
    reg = np.flatnonzero(sol.cam_ok)
    return camera_errors(sol.R[:1, reg], sol.t[:1, reg], sol.pose_ok[:1, reg], truth.subset(reg))


def _check_geometry(sol: Solution, p: TriangulateParams) -> Solution | Dropped:
    """Refuse a reconstruction whose cameras see the person along nearly one line: its depths are
    noise (the median over joints of the widest angle between two of the joint's rays is reported)."""
    angle = tri.triangulation_angles(sol.X, sol.R, sol.t, sol.inliers)
    median = float(np.nanmedian(angle)) if np.isfinite(angle).any() else 0.0
    diagnostics = {**sol.diagnostics, "triangulation_angle_deg": json_float(median, 3)}
    if median >= p.min_triangulation_angle_deg:
        return dataclasses.replace(sol, diagnostics=diagnostics)
    return Dropped("subject_cameras_nearly_collinear", "dropped: cameras nearly collinear with the person",
                   f"the cameras see the person along nearly one line (median triangulation angle {median:.1f} deg "
                   f"< triangulate.min_triangulation_angle_deg {p.min_triangulation_angle_deg:g}): depth unresolved",
                   diagnostics, sol.counts)


def _synchronise(sdf: pd.DataFrame, subject: str, cams: list[str], rig: Rig, p: TriangulateParams
                 ) -> tuple[dict[str, float], dict]:
    """Each camera's time offset against the first (``geometry.sync``: whole frames, plus a fraction where
    ``sync_subframe`` says), from the 2D poses pooled over the subject's actions → ({camera: frames late},
    the report's ``sync`` entry: {} when the search is off or every offset is 0; else the offsets, each
    one's gain and the ambiguous cameras). Non-zero offsets warn."""
    if p.sync_max_offset == 0 or len(cams) < 2:
        return {}, {}
    sv = SubjectViews.from_table(sdf, cams)
    intr = CameraGroup.from_rig(rig, subject, cams, extrinsics=False)
    x, valid = intr.undistort(sv.uv), sv.weights(p.min_conf) > 0
    focal = np.array([c.K[0, 0] for c in intr.cameras])
    by_view = estimate_offsets(x, valid, sv.timestamps, p.essential_px / np.sqrt(np.outer(focal, focal)),
                               p.sync_max_offset, p.sync_min_gain, seed=p.seed)
    found = {cams[v]: o for v, o in by_view.items()}
    total = {c: o.total(p.sync_subframe) for c, o in found.items()}
    offsets = {c: d for c, d in total.items() if d}
    ambiguous = [c for c, o in found.items() if o.ambiguous]
    if not offsets and not ambiguous:
        return {}, {}
    for c, d in offsets.items():
        why = (f"the 2D poses fit {100 * found[c].gain:.0f}% better so" if float(d).is_integer() else
               f"between whole frames: the minimum of the 2D poses' cost curve around {found[c].frames}")
        log.warning("%s: camera %s is %g frame(s) %s camera %s (%s): corrected",
                    subject, c, abs(d), "behind" if d > 0 else "ahead of", cams[0], why)
    return offsets, {"reference_camera": cams[0], "offsets_frames": {c: int(d) if float(d).is_integer() else d
                                                                      for c, d in total.items()},
                     "gain": {c: o.gain for c, o in found.items()}, "ambiguous": ambiguous}


def _usable_cameras(sdf: pd.DataFrame, subject: str, rig: Rig, p: TriangulateParams) -> tuple[list[str], Counts]:
    """The subject's cameras that cameras.json describes (with extrinsics, in known mode); the rows of
    the others are dropped and counted."""
    per_cam_rows = sdf.groupby("camera", sort=True).size()
    cams, counts = [], Counts()
    for c in per_cam_rows.index:
        if c not in rig.intrinsics:
            log.warning("%s: camera %s is not in %s: its %d rows are dropped", subject, c, rig.source, per_cam_rows[c])
            counts += Counts.dropping("camera_not_in_cameras_json", per_cam_rows[c])
        elif p.mode is Mode.KNOWN and not rig.has_extrinsics(subject, c):
            log.warning("%s: camera %s has no extrinsics for this subject in %s: its %d rows are dropped",
                        subject, c, rig.source, per_cam_rows[c])
            counts += Counts.dropping("camera_without_extrinsics", per_cam_rows[c])
        else:
            cams.append(c)
    return cams, counts


# --- the solvers ---------------------------------------------------------------------------------------
def _static(group: CameraGroup, T: int, res: tri.PoseTriangulation, cam_ok: np.ndarray | None = None,
            **kw) -> Solution:
    """A solution from static cameras: ``group`` (all V cameras), ``res`` triangulated with the ``cam_ok``
    ones; ``kw``: the solution's reference, diagnostics and counts."""
    V = len(group)
    cam_ok = np.ones(V, dtype=bool) if cam_ok is None else cam_ok
    reg = np.flatnonzero(cam_ok)
    inliers = np.zeros((T, V, res.inliers.shape[-1]), dtype=bool)
    inliers[:, reg] = res.inliers
    swaps = np.zeros((T, V, len(tri.SWAP_GROUPS)), dtype=bool)
    swaps[:, reg] = res.swaps
    return Solution(res.points, np.broadcast_to(group.R, (T, V, 3, 3)), np.broadcast_to(group.t, (T, V, 3)),
                    np.broadcast_to(cam_ok, (T, V)), cam_ok, res.n_views, inliers, swaps, group.subset(reg), **kw)


def _solve_known(x: np.ndarray, w: np.ndarray, group: CameraGroup, p: TriangulateParams) -> Solution:
    """``extrinsics: known``: every frame triangulated with cameras.json's cameras."""
    return _static(group, len(x), group.triangulate(x, w, normalized=True, **p.triangulation()),
                   diagnostics={"extrinsics": Mode.KNOWN.label})


def _pairs_report(est, cams: list[str]) -> dict:
    return {f"{cams[a]}-{cams[b]}": {
        "points": q.n_points, "correspondences": q.points, "inliers": q.n_inliers,
        "parallax_deg": json_float(q.parallax_deg, 3), "usable": q.ok,
        **({"reason": q.reason} if q.reason else {})} for (a, b), q in est.pairs.items()}


def _solve_pooled(x: np.ndarray, w: np.ndarray, intr: CameraGroup, sv: SubjectViews,
                  p: TriangulateParams) -> Solution | Dropped:
    """``relative_pose: pooled``: the cameras estimated once from all frames, every frame triangulated
    with them, the metric scale from the bone-length prior."""
    cams = list(sv.cameras)
    est = estimate_cameras_pooled(x, w, intr.focal, p, cams)
    diag: dict = {"pairs": _pairs_report(est, cams)}
    if est.notes:
        diag["notes"] = list(est.notes)
        for note in est.notes:
            log.warning("%s: %s", sv.subject, note)
    if not est.ok:
        return Dropped("subject_cameras_not_estimated", "dropped: cameras could not be estimated",
                       "cameras could not be estimated (no usable camera pair)", diag)
    diag["epipolar_agreement"] = {f"{cams[a]}-{cams[b]}": json_float(v) for (a, b), v in est.agreement.items()}
    worst = min(est.agreement, key=est.agreement.get) if est.agreement else None
    counts = Counts()
    if est.reregistered:
        counts = Counts(reregistered=1)
        diag["reregistered"] = True
        log.warning("%s: the cameras chained from the strongest pairs contradicted another pair's epipolar geometry; "
                    "re-registered along the pairs that agree best (worst agreement now %.2f, pair %s-%s)",
                    sv.subject, est.agreement.get(worst, 1.0), *(cams[i] for i in worst or (0, 0)))
    if not est.consistent:
        a, b = worst
        return Dropped("subject_cameras_inconsistent", "dropped: self-calibration inconsistent",
                       f"self-calibration failed: the estimated cameras explain only {est.agreement[worst]:.0%} of "
                       f"pair {cams[a]}-{cams[b]}'s epipolar inliers (< triangulate.min_epipolar_agreement "
                       f"{p.min_epipolar_agreement:g})", diag, counts)
    for v in np.flatnonzero(~est.registered):
        n = int((sv.keys["v"] == v).sum()) * x.shape[2]
        log.warning("%s: camera %s could not be registered: its %d rows are dropped", sv.subject, cams[v], n)
        counts += Counts.dropping("camera_not_registered", n)
    reg = np.flatnonzero(est.registered)
    unit = intr.with_extrinsics(est.R, est.t).subset(reg)
    res = unit.triangulate(x[:, reg], w[:, reg], normalized=True, **p.triangulation())
    sc = bone_length_scale(res.points, p.bone_lengths_mm)
    if not np.isfinite(sc.scale):
        return Dropped("subject_scale_unknown", "dropped: metric scale unknown",
                       "no bone could be measured, metric scale unknown", diag, counts)
    R_full = np.tile(np.eye(3), (len(cams), 1, 1))
    t_full = np.zeros((len(cams), 3))
    R_full[reg], t_full[reg] = est.R[reg], est.t[reg] * sc.scale
    res = tri.PoseTriangulation(res.points * sc.scale, res.inliers, res.n_views, res.swaps)
    diag.update({"extrinsics": Mode.POOLED.label, "reference_camera": cams[est.reference],
                 "scale_mm_per_unit": json_float(sc.scale, 6)})
    if est.bundle is not None:
        b = est.bundle
        diag["bundle_adjustment"] = {"observations": b.n_observations, "rms_px_initial": json_float(b.rms_px_initial),
                                     "rms_px": json_float(b.rms_px), "median_px": json_float(b.median_px),
                                     "nfev": b.nfev, "message": b.message}
    return _static(intr.with_extrinsics(R_full, t_full), len(x), res, est.registered.copy(),
                   reference=cams[est.reference], diagnostics=diag, counts=counts)


def _solve_per_frame(x: np.ndarray, w: np.ndarray, intr: CameraGroup, present: np.ndarray, subject: str,
                     p: TriangulateParams) -> Solution:
    """``relative_pose: per_frame`` (EpipolarPose): each frame's own relative poses and scale."""
    T, V, J = w.shape
    pf = triangulate_per_frame(x, w, intr.focal, p.bone_lengths_mm, p)
    inliers = (w > 0) & pf.ok[..., None] & (pf.n_views > 0)[:, None, :]
    reference = intr.names[pf.reference]
    diag = {"extrinsics": Mode.PER_FRAME.label, "reference_camera": reference, "failed_frame_pairs": pf.n_failed_pairs}
    n = int((present & ~pf.ok).sum()) * J
    if n:
        log.warning("%s: %d rows dropped where the camera's pose could not be estimated in that frame", subject, n)
    return Solution(pf.points, pf.R, pf.t, pf.ok, np.ones(V, dtype=bool), pf.n_views, inliers,
                    np.zeros((T, V, len(tri.SWAP_GROUPS)), dtype=bool), None, reference, diag,
                    Counts.dropping("camera_pose_not_estimated_in_frame", n))


# --- a solution's rows and statistics ---------------------------------------------------------------------
def _rows(sv: SubjectViews, sol: Solution, intr: CameraGroup, p: TriangulateParams
          ) -> tuple[pd.DataFrame, np.ndarray, Counts]:
    """The pseudo3d rows of the kept (camera, frame) inputs: each joint in that camera's frame, its
    reprojection error against the row's own 2D and the views it was triangulated from → (rows, the
    finite reprojection errors of the triangulated joints' rows, the rows dropped and marked)."""
    J = sol.X.shape[1]
    has_point = np.isfinite(sol.X).all(-1)                          # (T, J)
    frame_ok = has_point.any(-1)
    tk, vk = sv.keys["t"].to_numpy(), sv.keys["v"].to_numpy()
    keep = sol.cam_ok[vk] & sol.pose_ok[tk, vk]
    lost_frames = keep & ~frame_ok[tk]
    counts = Counts()
    if lost_frames.any():
        n = int(lost_frames.sum()) * J
        log.warning("%s: %d rows dropped: frames in which no joint could be triangulated", sv.subject, n)
        counts = Counts.dropping("frame_without_triangulated_joint", n)
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
                    sv.subject, marked, p.min_views)
    table = from_dense(sv.keys.loc[keep, KEYS].reset_index(drop=True), values, PSEUDO3D_VALUES)
    return table, reproj[np.isfinite(reproj) & (nv > 0)], counts + Counts(marked_rows=marked)


def _observation_counts(sv: SubjectViews, w: np.ndarray, sol: Solution, intr: CameraGroup,
                        row_err: np.ndarray) -> Counts:
    """Observation statistics over the kept cameras: outliers, swaps, the inliers' reprojection error
    (per-frame cameras: ``row_err``, the rows' own)."""
    has_point = np.isfinite(sol.X).all(-1)
    valid = (w > 0) & sol.cam_ok[None, :, None]
    if sol.group is not None:
        uv_fixed = tri.apply_swaps(sv.uv, sol.swaps) if sol.swaps.any() else sv.uv
        use = sol.inliers & has_point[:, None, :]
        full = CameraGroup(tuple(intr.cameras[i].with_extrinsics(sol.R[0, i], sol.t[0, i])
                                 for i in range(len(sv.cameras))))
        e = full.reprojection_errors(np.where(has_point[..., None], sol.X, 0.0), uv_fixed)[use]
    else:
        e = row_err
    e = e[np.isfinite(e)]
    return Counts(outlier_observations=int((valid & ~sol.inliers & has_point[:, None, :]).sum()),
                  swaps=int(sol.swaps.sum()), inlier_err_sum=float(e.sum()), inlier_err_n=int(len(e)))


# --- what the stage writes besides the table -----------------------------------------------------------
def _metadata(p: TriangulateParams, subjects: dict[str, SubjectResult]) -> dict[str, str]:
    prior = ", ".join(f"{n} {v:g}" for n, v in zip(skeleton.BONE_NAMES, p.bone_lengths_mm))
    if p.mode is Mode.KNOWN:
        extr = "known: each camera's extrinsics (R, t) for the subject from cameras.json"
        scale = "metric from the calibration: cameras.json translations are in mm"
    elif p.mode is Mode.POOLED:
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
    if p.mode is Mode.POOLED:
        for s, r in subjects.items():
            if r.labels is not None:
                g = r.labels.cameras
                cams[s] = {"reference_camera": r.labels.reference_camera,
                           "cameras": {n: {"R": np.round(c.R, 9).tolist(), "t_mm": np.round(c.t, 6).tolist()}
                                       for n, c in zip(g.names, g.cameras)}}
    md = {
        "extrinsics": extr,
        "scale": scale,
        "mode": p.mode.value,
        "params": json.dumps(asdict(p), sort_keys=True),
        "rows": ("x, y, z: the joint in the row's camera frame, mm, not root-centred; n_views: views used "
                 "(0 with NaN x/y/z/reproj_err: not triangulated); reproj_err: px distance between the "
                 "joint's projection and the row's own 2D (NaN where that 2D was missing)"),
    }
    if cams:
        md["estimated_cameras"] = json.dumps(cams, sort_keys=True)
    md = {META_PREFIX + k: v for k, v in md.items()}
    md[SUBJECT_STATUS_KEY] = json.dumps({s: r.status for s, r in subjects.items()}, sort_keys=True)
    return md


def recovered_rig(out: TriangulationOutput, rig: Rig) -> Rig:
    """The cameras the pseudo-labels were triangulated with, as a cameras.json ``Rig``: every camera's
    intrinsics as given and, per subject, each used camera's ``R, t`` — with ``extrinsics: estimated``
    (pooled) the self-calibrated ones, in the reference camera's frame (the report's
    ``reference_camera``: identity there), metric (mm) from the bone-length prior; with ``known`` the
    given ones. Per-frame estimates have no single camera pose: intrinsics only."""
    extrinsics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    if out.mode.static:
        for subject, group in sorted(out.cameras.items()):
            extrinsics[subject] = {name: (np.round(cam.R, 9), np.round(cam.t, 6))
                                   for name, cam in zip(group.names, group.cameras)}
    return Rig(dict(rig.intrinsics), extrinsics, source="triangulate")


def rig_views(out: TriangulationOutput, rig: Rig) -> dict[str, RigView]:
    """Per subject with static cameras, its recovered cameras for ``viz.rig_topview``: with the true
    ones where cameras.json has the extrinsics of all of them (the recovered rig placed through the
    true pose of its reference camera)."""
    views = {}
    for subject, r in out.subjects.items():
        if r.labels is None or not out.mode.static:
            continue
        g = r.labels.cameras
        known = all(rig.has_extrinsics(subject, n) for n in g.names)
        ref = r.labels.reference_camera
        views[subject] = RigView(g.names, g.R, g.t, r.labels.points[:, skeleton.PELVIS],
                                 tuple(rig.camera(subject, n) for n in g.names) if known else None,
                                 rig.camera(subject, ref) if known and ref is not None else None)
    return views


def summary(report: dict) -> dict[str, float | None]:
    """metrics/triangulate.json: the pseudo-labels' accuracy (with ground truth), coverage and
    reprojection error; the recovered rig's mean relative-pose errors (with true extrinsics)."""
    gt = report.get("ground_truth", {})
    out = {"pseudo3d.coverage": report["coverage"], "pseudo3d.reproj_px": report["reproj_err_px"]["rows_median"],
           "rig.subjects_dropped": report["subjects_dropped"],
           "rig.cameras_time_shifted": report["cameras_time_shifted"]}
    if gt.get("frames_evaluated"):
        out.update({"pseudo3d.mpjpe": gt["mpjpe_mm"], "pseudo3d.mpjpe_15j": gt["mpjpe_15j_mm"], "pseudo3d.n_mpjpe": gt["n_mpjpe_mm"],
                    "pseudo3d.p_mpjpe": gt["p_mpjpe_mm"]})
    for key, name in (("camera_rotation_error_deg", "rig.rotation_error_deg"),
                      ("camera_translation_direction_error_deg", "rig.translation_direction_error_deg"),
                      ("camera_baseline_error_pct", "rig.baseline_error_pct")):
        if report[key]["n"]:
            out[name] = report[key]["mean"]
    return out


# --- the 2D input -----------------------------------------------------------------------------------------
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
        return [self.out, self.cameras_out, self.plots and Folder(self.plots), self.rig_figure]


@dataclass(frozen=True)
class TriangulateConfig:
    triangulate: TriangulateParams


def load_params(path: str | Path = "params.yaml") -> TriangulateConfig:
    return TriangulateConfig(load_section(TriangulateParams, "triangulate", path))


def _read_inputs(paths: TriangulatePaths, p: TriangulateParams) -> tuple[Rig, pd.DataFrame, H36MDataset | None, float]:
    """The rig, the 2D poses (the detections with their skeletons corrected, or the projected truth as
    ``input_2d`` says), the ground truth for the report (None without ``gt_root``) and the skeleton scale."""
    rig = load_rig(paths.cameras)
    pose2d = read_pose2d(paths.pose2d)
    truth = H36MDataset(paths.gt_root) if paths.gt_root else None
    if p.input_2d == "ground_truth":
        if truth is None:
            raise ParamError("param triangulate.input_2d: ground_truth needs --gt-root (the data root with D3_Positions)")
        pose2d = truth_as_detections(pose2d, truth)
        log.info("input_2d: ground truth projected into each camera (the 2D network's detections replaced)")
    scale = skeleton_scale_for(p, read_parquet_metadata(paths.pose2d))
    if scale != 1.0:
        pose2d = enlarge_skeletons(pose2d, scale)
        log.info("2D skeletons enlarged by 1 / %.4f (param triangulate.skeleton_scale: %s)", scale, p.skeleton_scale)
    return rig, pose2d, truth, scale


def run(paths: TriangulatePaths, params: TriangulateConfig, runtime: Runtime) -> StageResult:
    """pose2d → the pseudo-labels, the cameras used, the error tables and the rig figure written
    (nothing unless everything succeeded); the metrics and the report returned."""
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):      # many tiny BLAS calls: threads only contend
        report = _triangulate_stage(paths, params.triangulate, runtime.progress)
    outputs = [o for o in paths.outputs() if o]
    return StageResult(outputs, summary(report), report, {"seconds": round(time.perf_counter() - t0, 1)})


def _triangulate_stage(paths: TriangulatePaths, p: TriangulateParams, progress: bool) -> dict:
    rig, pose2d, truth, skeleton_scale = _read_inputs(paths, p)
    log.info("%d rows from %s, mode %s", len(pose2d), paths.pose2d, p.mode.value)
    out = triangulate_table(pose2d, rig, p, progress=lambda xs: tqdm(xs, desc="subjects", file=sys.stderr,
                                                                     disable=not progress))
    accuracy, error_tables = score_pseudo_labels(out.table, truth)            # report only
    report = {**out.report, "skeleton_scale": skeleton_scale}
    if accuracy is not None:
        report["ground_truth"] = accuracy
    if not len(out.table):
        log.warning("no row could be triangulated: %s will be empty", paths.out)
    json.dumps(report, allow_nan=False)  # fail before writing anything
    write_pseudo3d(out.table, paths.out, out.metadata)
    if paths.cameras_out:
        save_rig(recovered_rig(out, rig), paths.cameras_out)
    if paths.plots:
        for name, df in error_tables.items():
            with atomic_path(Path(paths.plots) / f"{name}.tsv") as tmp:
                df.to_csv(tmp, sep="\t", index=False, float_format="%.3f")
    if paths.rig_figure:
        with atomic_path(paths.rig_figure) as tmp:
            save_figure(rig_topview(rig_views(out, rig)), tmp)
    log.info("wrote %s: %d rows, coverage %.4f", paths.out, len(out.table), report["coverage"])
    return report
