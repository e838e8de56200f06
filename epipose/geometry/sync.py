"""Time offsets between cameras from the 2D poses alone: cameras started by hand are not synchronised.

A camera ``v`` whose frame ``f`` shows the moment the reference camera shows in frame ``f - d`` is
``d`` frames late. Its correspondences with the reference camera fit one essential matrix only when
they are paired at the right offset: paired at another one, the person has moved between the two
views and the points leave the epipolar lines. ``estimate_offset`` tries every whole offset in
``[-max_offset, max_offset]`` on the pooled correspondences of all actions (the swap-immune centre
joints and left/right midpoints, ``relative_pose.swap_invariant_points``) and scores each by the share
of them one essential matrix fits (``offset_cost``: the MSAC cost of their epipolar distances at the
stage's threshold), averaged over the camera's pairs with every other camera (``estimate_offsets``).
The best offset is taken when it fits clearly better than none (``decide_offset``); two offsets far
apart that fit alike leave it ambiguous, and the stage drops the subject. Measured on simulated
detections (2 px noise, 10 fps, ``tests/test_sync.py``): offsets of 0–10 frames recovered exactly; on
the default data (synchronised, real detections) every offset 0, the nearest other offset at least 6%
costlier. Between whole frames, ``subframe`` places the minimum of the cost curve (free: from the
costs at the best offset and its neighbours; it scatters within ±0.25 frame on synchronised real
detections, so the stage adds it only beyond ``triangulate.sync_subframe``), and ``shift_frames``
interpolates a camera's rows between its frames. Frame rates that differ are not estimated
(extract_frames refuses videos of one recording whose frame rates differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from epipose.geometry.relative_pose import METHODS, swap_invariant_points


@dataclass(frozen=True)
class Offset:
    """A camera's estimated offset against the reference (frames of the table; positive: it is late)."""

    frames: int
    costs: dict[int, float]      # offset → the epipolar cost of the correspondences paired at it (lower: better)
    gain: float                  # how much better the offset fits than none: cost(0) / cost(offset) − 1
    ambiguous: bool              # another offset two or more steps away fits nearly as well
    fraction: float = 0.0        # where between the whole offsets the cost curve's minimum lies (``subframe``)

    def total(self, min_fraction: float) -> float:
        """The offset to correct, frames: the whole one plus its fraction when that is ``min_fraction`` × the
        spacing or more (below it the fraction is noise; ``min_fraction`` ≥ 0.5: whole frames only)."""
        return self.frames + (self.fraction if abs(self.fraction) >= min_fraction * self.step and min_fraction < 0.5
                              else 0.0)

    @property
    def step(self) -> int:
        ds = sorted(self.costs)
        return int(np.min(np.diff(ds))) if len(ds) > 1 else 1


def paired_times(timestamps: pd.DataFrame, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of ``timestamps`` (action, frame) rows with row j = (same action, frame + d)."""
    index = pd.MultiIndex.from_frame(timestamps[["action", "frame"]])
    shifted = pd.MultiIndex.from_arrays([timestamps["action"], timestamps["frame"] + d])
    j = index.get_indexer(shifted)
    i = np.flatnonzero(j >= 0)
    return i, j[i]


def offset_cost(x: np.ndarray, valid: np.ndarray, ref: int, v: int, i: np.ndarray, j: np.ndarray,
                threshold: float, max_points: int, min_points: int = 50, seed: int = 0) -> float:
    """How badly one essential matrix explains the correspondences (reference at times ``i``, view ``v``
    at times ``j``; normalised coordinates ``x`` (T, V, P, 2), ``valid`` (T, V, P)): the MSAC cost,
    mean of min(d, threshold)² / threshold² over the points' symmetric epipolar distances d under the
    RANSAC fit — 0 for perfect points, 1 when none fits (or too few points)."""
    both = valid[i, ref] & valid[j, v]
    xa, xb = x[i, ref][both], x[j, v][both]
    if len(xa) < min_points:
        return 1.0
    if len(xa) > max_points:
        keep = np.linspace(0, len(xa) - 1, max_points).round().astype(np.int64)
        xa, xb = xa[keep], xb[keep]
    cv2.setRNGSeed(seed)
    try:
        E, mask = cv2.findEssentialMat(np.ascontiguousarray(xa), np.ascontiguousarray(xb), np.eye(3),
                                       method=METHODS["lo_ransac"], prob=0.9999, threshold=threshold,
                                       maxIters=10000)
    except cv2.error:
        return 1.0
    if E is None or mask is None:
        return 1.0
    E = E[:3]
    ha, hb = np.c_[xa, np.ones(len(xa))], np.c_[xb, np.ones(len(xb))]
    la, lb = ha @ E.T, hb @ E                      # epipolar lines of a's points in b, of b's points in a
    r = np.abs(np.einsum("ij,ij->i", hb, la))
    d = r * 0.5 * (1 / np.hypot(la[:, 0], la[:, 1]) + 1 / np.hypot(lb[:, 0], lb[:, 1]))
    return float(np.mean(np.minimum(d, threshold) ** 2)) / threshold ** 2


def frame_step(timestamps: pd.DataFrame) -> int:
    """The spacing of the table's frames (``frames.stride`` of the videos): offsets are multiples of it."""
    diffs = timestamps.groupby("action")["frame"].diff().dropna().to_numpy(np.int64)
    return int(np.gcd.reduce(diffs)) if len(diffs) and np.gcd.reduce(diffs) > 0 else 1


def estimate_offsets(x: np.ndarray, valid: np.ndarray, timestamps: pd.DataFrame, thresholds: np.ndarray,
                     max_steps: int, min_gain: float = 0.2, max_points: int = 5000, seed: int = 0,
                     rounds: int = 2) -> dict[int, Offset]:
    """Every view's offset against view 0 (see the module doc): ``x`` (T, V, J, 2) normalised coordinates,
    ``valid`` (T, V, J), ``timestamps`` the T (action, frame) rows, ``thresholds`` (V, V) the epipolar
    threshold of each pair (normalised). A view's cost at offset d is the mean over the other views u of
    the pair's cost at d − d_u (u's current offset; view 0's is 0): one badly conditioned pair does not
    decide, and ``rounds`` passes let the offsets settle. An offset must fit ``min_gain`` better than none
    (else 0: no evidence — a person who barely moves, whom an offset barely harms), and is ambiguous when
    one two or more steps away fits within ``min_gain`` of it; offsets are multiples of the frame spacing."""
    xs, vs = swap_invariant_points(x, valid)
    step, V = frame_step(timestamps), x.shape[1]
    pairs = {d: paired_times(timestamps, d) for d in range(-2 * max_steps * step, 2 * max_steps * step + 1, step)}
    cache: dict[tuple[int, int, int], float] = {}

    def pair_cost(u: int, v: int, d: int) -> float:      # v is d frames behind u
        if (u, v, d) not in cache:
            i, j = pairs[d]
            cache[(u, v, d)] = offset_cost(xs, vs, u, v, i, j, float(thresholds[u, v]), max_points, seed=seed)
        return cache[(u, v, d)]

    current = dict.fromkeys(range(V), 0)
    found: dict[int, Offset] = {}
    for _ in range(rounds):
        for v in range(1, V):
            costs = {k * step: float(np.mean([pair_cost(u, v, k * step - current[u]) for u in range(V) if u != v]))
                     for k in range(-max_steps, max_steps + 1)}
            found[v] = decide_offset(costs, step, min_gain)
            current[v] = found[v].frames
    return found


def decide_offset(costs: dict[int, float], step: int = 1, min_gain: float = 0.2) -> Offset:
    """The offset of least cost, unless it fits less than ``min_gain`` better than none (then 0); ambiguous
    when one ``2 × step`` or more frames from it costs less than ``1 + min_gain`` times as much."""
    best = min(costs, key=lambda d: (costs[d], abs(d)))
    gain = costs[0] / costs[best] - 1.0 if costs[best] > 0 else 0.0
    if gain < min_gain:
        best, gain = 0, 0.0
    far = [c for d, c in costs.items() if abs(d - best) >= 2 * step]
    ambiguous = best != 0 and bool(far) and min(far) < costs[best] * (1.0 + min_gain)
    return Offset(best, {d: round(c, 5) for d, c in costs.items()}, round(gain, 4), ambiguous,
                  round(subframe(costs, best, step, min_gain), 3))


def subframe(costs: dict[int, float], best: int, step: int, min_rise: float = 0.2) -> float:
    """Where the minimum of the cost curve lies between ``best`` and its neighbours, frames: the V (equal
    slopes, mirrored) through the three costs around it, as stereo matching's equiangular sub-pixel fit —
    the cost grows about linearly with the time between the paired views once a frame moves the person
    more than the detections' noise. Where it does not (the higher neighbour costs less than ``min_rise``
    more than the minimum: slow motion, a high frame rate) the curve is flat and its minimum noise: 0, as
    at the search's edge."""
    lo, mid, hi = costs.get(best - step), costs[best], costs.get(best + step)
    if lo is None or hi is None or max(lo, hi) < mid * (1.0 + min_rise):
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / (max(lo, hi) - mid), -0.5, 0.5)) * step


def shift_frames(df: pd.DataFrame, offsets: dict[str, float], sign: int = -1) -> pd.DataFrame:
    """Rows of a pose table moved in time by each camera's offset (frames; −1: onto the reference camera's
    clock, a row at frame g holding the camera's values at g + offset; +1: back onto its own, g holding
    g − offset's). Whole offsets move the rows' frame numbers; a fractional one interpolates the camera's
    values linearly between its two frames around that moment (``resample_camera``)."""
    if not any(offsets.values()):
        return df
    whole = {c: int(d) for c, d in offsets.items() if float(d) % _spacing(df, c) == 0}
    if any(whole.values()):
        shift = df["camera"].map(whole).fillna(0).astype(np.int64).to_numpy()
        df = df.assign(frame=(df["frame"].to_numpy(np.int64) + sign * shift).astype(df["frame"].dtype))
    for camera, d in offsets.items():
        if camera not in whole:
            df = resample_camera(df, camera, -sign * float(d))
    return df


def _spacing(df: pd.DataFrame, camera: str) -> int:
    return frame_step(df.loc[df["camera"] == camera, ["action", "frame"]].drop_duplicates())


def resample_camera(df: pd.DataFrame, camera: str, d: float) -> pd.DataFrame:
    """``camera``'s rows replaced by its values ``d`` frames later (any real d), interpolated linearly
    between the two rows (same subject, action and joint; the table's frame spacing apart) around each
    moment: float columns interpolated, integer ones (``n_views``) the smaller of the two; frames without
    both neighbours dropped. The rows keep the table's frame numbers."""
    mine = df["camera"] == camera
    rows = df[mine]
    step = _spacing(df, camera)
    k0 = int(np.floor(d / step)) * step
    a = (d - k0) / step
    keys = ["subject", "action", "joint"]
    index = pd.MultiIndex.from_frame(rows[keys].assign(frame=rows["frame"].astype(np.int64)))
    frames = rows["frame"].to_numpy(np.int64)
    lo = index.get_indexer(pd.MultiIndex.from_frame(rows[keys].assign(frame=frames + k0)))
    hi = index.get_indexer(pd.MultiIndex.from_frame(rows[keys].assign(frame=frames + k0 + step)))
    ok = (lo >= 0) & (hi >= 0)
    out = rows[ok].copy()
    lo_rows, hi_rows = rows.iloc[lo[ok]], rows.iloc[hi[ok]]
    for col in rows.columns.difference([*keys, "camera", "frame"]):
        x0, x1 = lo_rows[col].to_numpy(), hi_rows[col].to_numpy()
        if np.issubdtype(rows[col].dtype, np.floating):
            out[col] = ((1.0 - a) * x0.astype(np.float64) + a * x1.astype(np.float64)).astype(rows[col].dtype)
        else:
            out[col] = np.minimum(x0, x1)
    return pd.concat([df[~mine], out]).sort_values(["subject", "action", "camera", "frame"], kind="stable"
                                                   ).reset_index(drop=True)
