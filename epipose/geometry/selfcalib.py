"""Cameras without extrinsics: pooled self-calibration and EpipolarPose's per-frame estimate.

``estimate_cameras_pooled`` (default): the cameras are static within a recording, so each pair's
essential matrix is estimated from all confident correspondences of all frames of a subject,
the relative poses are chained into the reference camera's frame, and then all camera poses and
the joints of a subsample of frames are refined jointly by robust bundle adjustment (twice: once
with a loose view-RANSAC threshold from the initial cameras, once after re-triangulating with
the refined cameras, with left/right swaps corrected).

A wrong pair poisons every camera chained through it: points that barely span 3D (a short
recording of one movement) can fit a wrong essential matrix as well as the true one (on 40
frames of one walk, relative rotations came out 95–125° wrong with every pair "usable"). So the
chained cameras are checked against every pair's correspondences (``epipolar_agreement``); when
they contradict one (agreement below ``min_epipolar_agreement``), every spanning tree of the
usable pairs is chained, the one whose cameras agree best with all pairs is bundle-adjusted again
and kept if it agrees better (``CameraEstimate.reregistered``). ``CameraEstimate.consistent``
says whether the final cameras pass: the caller refuses an inconsistent subject.

``triangulate_per_frame`` (as in the paper): per frame and camera pair, the essential matrix
of that frame's joints, relative pose, triangulation; each pair's reconstruction gets its own
scale from the bone-length prior and the pairs are combined by a per-joint median.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from epipose.geometry import relative_pose as rp
from epipose.geometry import triangulation as tri
from epipose.geometry.bundle import BundleResult, bundle_adjust
from epipose.geometry.scale import bone_length_scale


class SelfCalibOptions(Protocol):
    """The options self-calibration reads (the triangulate stage passes its params section,
    ``epipose.pipeline.triangulate.TriangulateParams``, which documents each)."""

    essential_points: str          # swap_invariant | joints
    essential_px: float
    essential_method: str          # lo_ransac | magsac
    essential_confidence: float
    essential_max_points: int
    min_pair_points: int
    min_inlier_ratio: float
    min_parallax_deg: float
    min_epipolar_agreement: float
    view_ransac_px: float
    min_views: int
    swap_detection: bool
    swap_ratio: float
    ba_max_frames: int
    ba_iterations: int
    ba_loss: str
    ba_f_scale_px: float
    seed: int


@dataclass(frozen=True)
class CameraEstimate:
    R: np.ndarray                      # (V, 3, 3) reference frame → camera
    t: np.ndarray                      # (V, 3) in reconstruction units
    registered: np.ndarray             # (V,) bool
    reference: int
    scale_camera: int
    pairs: dict[tuple[int, int], rp.RelativePose]
    bundle: BundleResult | None
    notes: tuple[str, ...] = field(default=())
    agreement: dict[tuple[int, int], float] = field(default_factory=dict)   # per usable pair, final cameras
    reregistered: bool = False         # the strongest pairs' chain contradicted a pair: another tree was used
    consistent: bool = True            # every agreement >= min_epipolar_agreement

    @property
    def ok(self) -> bool:
        return int(self.registered.sum()) >= 2


def _ba_frames(valid: np.ndarray, max_frames: int) -> np.ndarray:
    """Evenly spaced frames with >= 8 joints seen by >= 2 views (deterministic)."""
    usable = np.flatnonzero(((valid.sum(1) >= 2).sum(-1)) >= 8)
    if len(usable) > max_frames:
        usable = usable[np.linspace(0, len(usable) - 1, max_frames).round().astype(np.int64)]
    return usable


def _observations(res: tri.PoseTriangulation, x: np.ndarray, w: np.ndarray):
    """Inlier observations of the triangulated points: arrays for bundle_adjust."""
    T, V, J, _ = x.shape
    ok = np.isfinite(res.points).all(-1)                       # (T, J)
    pid = np.full((T, J), -1)
    pid[ok] = np.arange(int(ok.sum()))
    use = res.inliers & ok[:, None, :] & (w > 0)               # (T, V, J)
    tt, vv, jj = np.nonzero(use)
    return x[tt, vv, jj], w[tt, vv, jj], vv, pid[tt, jj], res.points[ok]


def estimate_cameras_pooled(x: np.ndarray, w: np.ndarray, focal: np.ndarray, opts: SelfCalibOptions,
                            names: list[str] | tuple[str, ...] | None = None) -> CameraEstimate:
    """Cameras from (T, V, J, 2) normalised 2D with (T, V, J) confidences (0 = unusable)."""
    valid = w > 0
    # Essential matrices and chaining from swap-proof points (params: triangulate.essential_points);
    # the bundle adjustment below fits every joint, with swaps corrected.
    invariant = rp.swap_invariant_points(x, valid) if opts.essential_points == "swap_invariant" else None
    pairs = rp.pooled_pairs(x, valid, focal, invariant=invariant, threshold_px=opts.essential_px,
                            method=opts.essential_method, confidence=opts.essential_confidence,
                            max_points=opts.essential_max_points, min_points=opts.min_pair_points,
                            min_inlier_ratio=opts.min_inlier_ratio, min_parallax_deg=opts.min_parallax_deg,
                            seed=opts.seed)

    def agreement(R: np.ndarray, t: np.ndarray, registered: np.ndarray) -> dict[tuple[int, int], float]:
        return rp.epipolar_agreement(pairs, x, valid, focal, R, t, registered, threshold_px=opts.essential_px,
                                     max_points=opts.essential_max_points, invariant=invariant)

    chain = rp.chain_cameras(pairs, *(invariant or (x, valid)), focal, opts.view_ransac_px, names)
    est = _adjust(chain, x, w, focal, pairs, opts, agreement)
    if est.ok and not est.consistent:
        # a wrong pair in the chain: chain along the spanning tree that agrees best with all pairs
        retry = _adjust(_best_tree(pairs, invariant or (x, valid), focal, opts, names, agreement),
                        x, w, focal, pairs, opts, agreement)
        if retry.ok and min(retry.agreement.values(), default=1.0) > min(est.agreement.values(), default=1.0):
            est = replace(retry, reregistered=True)
    return est


def _adjust(chain: rp.ChainedCameras, x: np.ndarray, w: np.ndarray, focal: np.ndarray,
            pairs: dict[tuple[int, int], rp.RelativePose], opts: SelfCalibOptions, agreement) -> CameraEstimate:
    """Bundle-adjust the chained cameras and check them against every pair."""
    notes = list(chain.notes)
    if chain.registered.sum() < 2:
        return CameraEstimate(chain.R, chain.t, chain.registered, chain.reference, -1, pairs, None, tuple(notes))
    reg = np.flatnonzero(chain.registered)
    scale_cam = int(np.searchsorted(reg, chain.order[1]))
    R, t, bundle = _bundle_adjust(x, w, focal, chain, scale_cam, opts, notes)
    Rall, tall = chain.R.copy(), chain.t.copy()
    Rall[reg], tall[reg] = R, t
    agree = agreement(Rall, tall, chain.registered)
    consistent = min(agree.values(), default=1.0) >= opts.min_epipolar_agreement
    return CameraEstimate(Rall, tall, chain.registered, chain.reference, int(reg[scale_cam]), pairs, bundle,
                          tuple(notes), agree, False, consistent)


MAX_REGISTRATIONS = 256     # spanning trees tried when the strongest pairs' chain contradicts a pair


def _best_tree(pairs: dict[tuple[int, int], rp.RelativePose], points: tuple[np.ndarray, np.ndarray],
               focal: np.ndarray, opts: SelfCalibOptions, names, agreement) -> rp.ChainedCameras:
    """The cameras chained along the spanning tree of usable pairs that agrees best with all pairs
    (most cameras registered, then the highest mean agreement; ties: the first tree)."""
    xe, ve = points
    best, best_score = None, None
    for edges in rp.spanning_trees([k for k, p in pairs.items() if p.ok], xe.shape[1], MAX_REGISTRATIONS, opts.seed):
        cand = rp.chain_cameras(pairs, xe, ve, focal, opts.view_ransac_px, names, edges=edges)
        a = agreement(cand.R, cand.t, cand.registered)
        score = (int(cand.registered.sum()), float(np.mean(np.minimum(list(a.values()), 1.0))) if a else 0.0)
        if best_score is None or score > best_score:
            best, best_score = cand, score
    return best


def _bundle_adjust(x: np.ndarray, w: np.ndarray, focal: np.ndarray, chain: rp.ChainedCameras, scale_cam: int,
                   opts: SelfCalibOptions, notes: list[str]) -> tuple[np.ndarray, np.ndarray, BundleResult | None]:
    """Robust bundle adjustment of the registered cameras (reference fixed, ``scale_cam``'s baseline
    the unit) → their R, t and the last round's result."""
    valid = w > 0
    reg = np.flatnonzero(chain.registered)
    ref = int(np.searchsorted(reg, chain.reference))
    R, t = chain.R[reg], chain.t[reg]
    f = focal[reg]
    bundle = None
    # round 1: half the frames, a loose threshold around the initial cameras;
    # round 2: all the frames, the tight threshold with left/right swaps corrected
    for n_frames, threshold, swaps in ((max(opts.ba_max_frames // 2, 10), opts.view_ransac_px * 4.0, False),
                                       (opts.ba_max_frames, opts.view_ransac_px, opts.swap_detection)):
        frames = _ba_frames(valid[:, reg], n_frames)
        xs, ws = x[frames][:, reg], w[frames][:, reg]
        res = tri.triangulate_poses(xs, ws, R, t, f, threshold_px=threshold, min_views=opts.min_views,
                                    refine_iterations=3, swap_detection=swaps, swap_ratio=opts.swap_ratio)
        xr, wr = xs, ws
        if res.swaps.any():
            xr, wr = tri.apply_swaps(xs, res.swaps), tri.apply_swaps(ws, res.swaps)
        ox, ow, oc, op, X0 = _observations(res, xr, wr)
        if len(X0) < 8:
            notes.append("too few triangulated joints for bundle adjustment")
            break
        bundle = bundle_adjust(ox, ow, oc, op, R, t, X0, f, fixed=ref, scale_cam=scale_cam, loss=opts.ba_loss,
                               f_scale_px=opts.ba_f_scale_px, max_nfev=opts.ba_iterations)
        R, t = bundle.R, bundle.t
    return R, t, bundle


# --- EpipolarPose's per-frame estimate ----------------------------------------------------------
@dataclass(frozen=True)
class PerFrameResult:
    points: np.ndarray     # (T, J, 3) reference camera frame, mm (bone-length scale per frame and pair)
    R: np.ndarray          # (T, V, 3, 3) reference → camera, per frame
    t: np.ndarray          # (T, V, 3) mm
    ok: np.ndarray         # (T, V) bool: the camera's pose was estimated in that frame (reference: always)
    n_views: np.ndarray    # (T, J) int
    reference: int
    n_failed_pairs: int


def triangulate_per_frame(x: np.ndarray, w: np.ndarray, focal: np.ndarray, prior_mm, opts: SelfCalibOptions,
                          reference: int | None = None) -> PerFrameResult:
    """Per frame: for each camera c ≠ reference, E from that frame's joints → (R, t̂) → two-view
    triangulation → metric scale from bones; the pairs' reconstructions are combined by median."""
    T, V, J, _ = x.shape
    valid = w > 0
    ref = int(np.argmax(valid.sum(axis=(0, 2)))) if reference is None else reference
    R = np.tile(np.eye(3), (T, V, 1, 1))
    t = np.zeros((T, V, 3))
    ok = np.zeros((T, V), dtype=bool)
    ok[:, ref] = True
    per_pair = np.full((V, T, J, 3), np.nan)
    failed = 0
    for c in range(V):
        if c == ref:
            continue
        thr = opts.essential_px / float(np.sqrt(focal[ref] * focal[c]))
        for i in range(T):
            both = valid[i, ref] & valid[i, c]
            if both.sum() < 8:
                failed += 1
                continue
            pose = rp.per_frame_pair(x[i, ref, both], x[i, c, both], thr, method=opts.essential_method,
                                     confidence=opts.essential_confidence, seed=opts.seed,
                                     min_parallax_deg=opts.min_parallax_deg)
            if not pose.ok:
                failed += 1
                continue
            use = np.flatnonzero(both)[pose.inliers]
            ww = np.zeros((J, 2))
            ww[use] = np.stack([w[i, ref, use], w[i, c, use]], axis=-1)
            X = tri.dlt(np.stack([x[i, ref], x[i, c]], axis=1), ww, np.stack([np.eye(3), pose.R]),
                        np.stack([np.zeros(3), pose.t]))
            s = bone_length_scale(X[None], prior_mm).scale
            if not np.isfinite(s):
                failed += 1
                continue
            per_pair[c, i] = X * s
            R[i, c], t[i, c] = pose.R, pose.t * s
            ok[i, c] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN joints stay NaN
        points = np.nanmedian(per_pair, axis=0)
    counts = np.isfinite(per_pair).all(-1).sum(0)
    n_views = np.where(counts > 0, counts + 1, 0)
    return PerFrameResult(points, R, t, ok, n_views, ref, failed)
