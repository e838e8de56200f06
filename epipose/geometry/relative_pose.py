"""Relative camera poses from 2D joint correspondences, without extrinsics.

All points are ideal normalised coordinates (undistorted with each camera's own K and
distortion), so the essential matrix is estimated with K = I and a threshold of px / focal.

- ``estimate_pair``: the essential matrix of one camera pair (OpenCV USAC: MAGSAC++ or LO-RANSAC)
  and the relative pose by decomposition with the cheirality check (``cv2.recoverPose``), plus
  degeneracy checks (too few points, too few inliers, too little parallax).
- ``pooled_pairs``: every camera pair of a subject, from all confident correspondences of all
  frames (the cameras are static within a recording) — the default.
- ``swap_invariant_points``: the correspondences a left/right swap cannot corrupt (the centre-line
  joints and the midpoint of each left/right pair) — the default for the essential matrices. A
  midpoint also averages the errors of its two joints, and a real detector's limb ends are its
  least precise joints (on the default run wrists and ankles lie 5–9 px off the true epipolar
  lines, torso joints 1–3 px): from all joints a wrong essential matrix outvoted the true one for
  two of seven subjects (after bundle adjustment, relative rotations off by up to 29° and 177°);
  from these points, at most 5.7° and 3.3° (tests/test_triangulate_pipeline.py keeps that case).
  A pair whose points are nearly planar (a person who barely moves) falls back to the joints.
- ``per_frame_pair``: one frame's joints only, as in EpipolarPose (fragile: 16 points that span a
  small part of the image).
- ``chain_cameras``: bring the cameras into the reference camera's frame: rotations chained along
  the strongest pairs (or along given ones), translation scales from triangulated points.
- ``epipolar_agreement``: does a set of cameras agree with each pair's own epipolar geometry? A
  pair whose essential matrix was wrong (near-degenerate points fit a wrong one as well as the
  true one) corrupts every camera chained through it; the chained cameras then contradict the
  other pairs' correspondences. ``spanning_trees`` lists the other ways to chain them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations

import cv2
import numpy as np

from epipose import skeleton
from epipose.geometry import triangulation as tri
from epipose.geometry.angles import angle_between_deg


METHODS = {"magsac": cv2.USAC_MAGSAC, "lo_ransac": cv2.USAC_DEFAULT, "ransac": cv2.RANSAC}


@dataclass(frozen=True)
class RelativePose:
    """x_b ~ R x_a + t (camera a's frame → camera b's frame); t has unit norm."""

    R: np.ndarray
    t: np.ndarray
    n_points: int
    n_inliers: int
    parallax_deg: float
    ok: bool
    reason: str = ""
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    points: str = "joints"     # which correspondences: "joints" or "swap_invariant"

    def inverse(self) -> "RelativePose":
        return replace(self, R=self.R.T, t=-self.R.T @ self.t)


def _failed(n: int, reason: str) -> RelativePose:
    return RelativePose(np.eye(3), np.zeros(3), n, 0, 0.0, False, reason)


def estimate_pair(xa: np.ndarray, xb: np.ndarray, threshold: float, *, method: str = "magsac",
                  confidence: float = 0.9999, max_iters: int = 10000, seed: int = 0, min_points: int = 8,
                  min_inlier_ratio: float = 0.3, min_parallax_deg: float = 1.0,
                  min_thickness: float = 0.0) -> RelativePose:
    """Relative pose from (n, 2) normalised correspondences; ``threshold`` in normalised units.

    ``min_thickness``: the inliers' triangulated points must not be nearly planar (smallest over
    largest singular value of the centred points at least this): points on one plane leave the
    essential matrix ambiguous."""
    xa = np.ascontiguousarray(xa, dtype=np.float64).reshape(-1, 2)
    xb = np.ascontiguousarray(xb, dtype=np.float64).reshape(-1, 2)
    n = len(xa)
    if n < max(min_points, 5):
        return _failed(n, f"{n} correspondences (< {max(min_points, 5)})")
    cv2.setRNGSeed(seed)
    try:
        E, mask = cv2.findEssentialMat(xa, xb, np.eye(3), method=METHODS[method], prob=confidence,
                                       threshold=threshold, maxIters=max_iters)
    except cv2.error as exc:
        return _failed(n, f"findEssentialMat failed ({str(exc).strip().splitlines()[-1]})")
    if E is None or E.shape[0] < 3 or mask is None:
        return _failed(n, "no essential matrix found")
    E = E[:3]
    try:
        n_good, R, t, mask2 = cv2.recoverPose(E, xa, xb, np.eye(3), mask=mask.copy())
    except cv2.error as exc:
        return _failed(n, f"recoverPose failed ({str(exc).strip().splitlines()[-1]})")
    inl = mask2.ravel() > 0
    t = t.ravel()
    n_inl = int(inl.sum())
    if n_inl < max(min_points, 5) or n_inl < min_inlier_ratio * n:
        return RelativePose(R, t, n, n_inl, 0.0, False, f"{n_inl}/{n} inliers in front of both cameras", inl)
    # parallax: the angle between the two rays of each inlier, triangulated with this pose
    Rs = np.stack([np.eye(3), R])
    ts = np.stack([np.zeros(3), t])
    X = tri.dlt(np.stack([xa[inl], xb[inl]], axis=1), np.ones((n_inl, 2)), Rs, ts)
    c_b = -R.T @ t
    with np.errstate(invalid="ignore"):
        angle = angle_between_deg(X, X - c_b)
    par = float(np.nanmedian(angle)) if np.isfinite(angle).any() else 0.0
    if not par >= min_parallax_deg:
        return RelativePose(R, t, n, n_inl, par, False, f"median parallax {par:.2f} deg (< {min_parallax_deg})", inl)
    if min_thickness > 0:
        Xf = X[np.isfinite(X).all(-1)]
        sv = np.linalg.svd(Xf - Xf.mean(0), compute_uv=False) if len(Xf) >= 3 else np.zeros(3)
        thick = float(sv[2] / sv[0]) if sv[0] > 0 else 0.0
        if thick < min_thickness:
            return RelativePose(R, t, n, n_inl, par, False,
                                f"inlier points nearly planar (thickness {thick:.3f} < {min_thickness})", inl)
    return RelativePose(R, t, n, n_inl, par, True, "", inl)


def pair_points(x: np.ndarray, valid: np.ndarray, a: int, b: int, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correspondences of views a and b: x (T, V, J, 2), valid (T, V, J) → xa, xb (n, 2), flat (t·J + j) index.

    With ``max_points``, an evenly spaced (deterministic) subset over time.
    """
    both = valid[:, a] & valid[:, b]
    idx = np.flatnonzero(both.ravel())
    if max_points is not None and len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).round().astype(np.int64)]
    xa = x[:, a].reshape(-1, 2)[idx]
    xb = x[:, b].reshape(-1, 2)[idx]
    return xa, xb, idx


def swap_invariant_points(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, V, J, 2) points, (T, V, J) validity → the same for the C centre-line joints followed by
    the midpoints of the P left/right pairs (``skeleton.FLIP_PERM``): (T, V, C + P, ...).

    The midpoint of two projections is not exactly the projection of the 3D midpoint, but the
    difference is second order in the pair's depth difference over its distance (sub-pixel for a
    person metres away); bundle adjustment later fits the joints themselves."""
    perm = np.asarray(skeleton.FLIP_PERM)
    j = np.arange(len(perm))
    centre, left = j[perm == j], j[perm > j]
    right = perm[left]
    xs = np.concatenate([x[..., centre, :], 0.5 * (x[..., left, :] + x[..., right, :])], axis=-2)
    vs = np.concatenate([valid[..., centre], valid[..., left] & valid[..., right]], axis=-1)
    return xs, vs


def pooled_pairs(x: np.ndarray, valid: np.ndarray, focal: np.ndarray, *, threshold_px: float, method: str,
                 confidence: float, max_points: int, min_points: int, min_inlier_ratio: float,
                 min_parallax_deg: float, seed: int, invariant: tuple[np.ndarray, np.ndarray] | None = None,
                 min_thickness: float = 0.05) -> dict[tuple[int, int], RelativePose]:
    """Every view pair (a < b) from all confident correspondences of all frames.

    With ``invariant`` (``swap_invariant_points(x, valid)``), from those points; a pair whose
    points are nearly planar there (``min_thickness``: a person who barely moves has its centre
    line in one plane) or that fails otherwise is estimated from the joints instead.
    """
    out = {}
    for a, b in combinations(range(x.shape[1]), 2):
        thr = threshold_px / float(np.sqrt(focal[a] * focal[b]))
        kw = dict(method=method, confidence=confidence, seed=seed, min_points=min_points,
                  min_inlier_ratio=min_inlier_ratio, min_parallax_deg=min_parallax_deg)
        if invariant is not None:
            xa, xb, _ = pair_points(*invariant, a, b, max_points)
            pose = replace(estimate_pair(xa, xb, thr, min_thickness=min_thickness, **kw), points="swap_invariant")
            if pose.ok:
                out[(a, b)] = pose
                continue
        xa, xb, _ = pair_points(x, valid, a, b, max_points)
        out[(a, b)] = estimate_pair(xa, xb, thr, **kw)
    return out


def per_frame_pair(xa: np.ndarray, xb: np.ndarray, threshold: float, *, method: str, confidence: float,
                   seed: int, min_parallax_deg: float) -> RelativePose:
    """EpipolarPose's estimate: one frame's joints of a pair (needs >= 8 joints seen by both)."""
    return estimate_pair(xa, xb, threshold, method=method, confidence=confidence, seed=seed, max_iters=1000,
                         min_points=8, min_inlier_ratio=0.5, min_parallax_deg=min_parallax_deg)


# --- one frame for all cameras -------------------------------------------------------------------
@dataclass(frozen=True)
class ChainedCameras:
    R: np.ndarray           # (V, 3, 3) world (= reference camera) → camera
    t: np.ndarray           # (V, 3), in units of the first registered baseline
    registered: np.ndarray  # (V,) bool
    reference: int
    order: tuple[int, ...]  # registration order
    notes: tuple[str, ...]


def _edge(pairs: dict[tuple[int, int], RelativePose], a: int, b: int) -> RelativePose:
    """Pose of b relative to a, whichever way the pair was estimated."""
    return pairs[(a, b)] if (a, b) in pairs else pairs[(b, a)].inverse()


def chain_cameras(pairs: dict[tuple[int, int], RelativePose], x: np.ndarray, valid: np.ndarray, focal: np.ndarray,
                  threshold_px: float, names: list[str] | tuple[str, ...] | None = None,
                  edges: tuple[tuple[int, int], ...] | None = None) -> ChainedCameras:
    """Register cameras in the reference camera's frame from the usable pairwise poses (only
    those in ``edges`` if given, e.g. a spanning tree).

    The reference is the camera with the most inliers over its usable pairs; the first partner
    is its strongest pair (baseline = unit length); every further camera takes its rotation from
    its strongest pair to a registered camera and the length of that pair's translation from the
    2D–3D consistency of the joints triangulated so far (a robust median over points).
    """
    V = x.shape[1]
    names = list(names) if names is not None else [str(i) for i in range(V)]
    good = {k: p for k, p in pairs.items() if p.ok and (edges is None or k in edges)}
    R = np.tile(np.eye(3), (V, 1, 1))
    t = np.zeros((V, 3))
    registered = np.zeros(V, dtype=bool)
    notes: list[str] = []
    if not good:
        return ChainedCameras(R, t, registered, 0, (), ("no usable camera pair",))
    strength = np.zeros(V)
    for (a, b), p in good.items():
        strength[a] += p.n_inliers
        strength[b] += p.n_inliers
    ref = int(np.argmax(strength))
    registered[ref] = True
    order = [ref]
    # first partner: the strongest pair with the reference
    cands = [(p.n_inliers, -(b if a == ref else a)) for (a, b), p in good.items() if ref in (a, b)]
    if not cands:
        return ChainedCameras(R, t, registered, ref, tuple(order), ("reference camera has no usable pair",))
    first = -max(cands)[1]
    e = _edge(good, ref, first)
    R[first], t[first] = e.R, e.t / np.linalg.norm(e.t)
    registered[first] = True
    order.append(first)
    while True:
        best = None
        for (a, b), p in good.items():
            if registered[a] != registered[b]:
                k, c = (a, b) if registered[a] else (b, a)
                key = (p.n_inliers, -c, -k)
                if best is None or key > best[0]:
                    best = (key, k, c)
        if best is None:
            break
        _, k, c = best
        e = _edge(good, k, c)
        Rc = e.R @ R[k]
        base = e.R @ t[k]
        # points seen by c and triangulated by the registered cameras
        reg = np.flatnonzero(registered)
        T, _, J, _ = x.shape
        res = tri.triangulate_poses(x[:, reg], valid[:, reg].astype(np.float64), R[reg], t[reg], focal[reg],
                                    threshold_px=threshold_px * 4, refine_iterations=0, swap_detection=False)
        X = res.points.reshape(-1, 3)
        xc = x[:, c].reshape(-1, 2)
        use = np.isfinite(X).all(-1) & valid[:, c].ravel()
        if use.sum() < 8:
            notes.append(f"camera {names[c]}: too few triangulated joints to fix its translation")
            break
        h = np.concatenate([xc[use], np.ones((int(use.sum()), 1))], axis=1)
        p_ = X[use] @ Rc.T + base
        a_ = np.cross(h, p_)
        b_ = np.cross(h, np.broadcast_to(e.t, h.shape))
        bb = (b_ * b_).sum(-1)
        ok = bb > 1e-12
        s = np.median(-(a_[ok] * b_[ok]).sum(-1) / bb[ok])
        R[c], t[c] = Rc, base + s * e.t
        registered[c] = True
        order.append(c)
    for v in np.flatnonzero(~registered):
        notes.append(f"camera {names[v]}: no usable pair links it to the reference")
    return ChainedCameras(R, t, registered, ref, tuple(order), tuple(notes))


# --- do the cameras agree with every pair? -----------------------------------------------------------
def sampson_distance(xa: np.ndarray, xb: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n,) first-order distances of normalised correspondences (n, 2) to the epipolar geometry of
    x_b ~ R x_a + t (normalised units; multiply by the focal length for pixels)."""
    E = np.cross(np.asarray(t, dtype=np.float64), np.asarray(R, dtype=np.float64).T).T     # [t]x R
    ha = np.concatenate([xa, np.ones((len(xa), 1))], axis=1)
    hb = np.concatenate([xb, np.ones((len(xb), 1))], axis=1)
    Ea, Eb = ha @ E.T, hb @ E
    den = np.sqrt(Ea[:, 0] ** 2 + Ea[:, 1] ** 2 + Eb[:, 0] ** 2 + Eb[:, 1] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs((hb * Ea).sum(1)) / den


def epipolar_agreement(pairs: dict[tuple[int, int], RelativePose], x: np.ndarray, valid: np.ndarray,
                       focal: np.ndarray, R: np.ndarray, t: np.ndarray, registered: np.ndarray, *,
                       threshold_px: float, max_points: int,
                       invariant: tuple[np.ndarray, np.ndarray] | None = None) -> dict[tuple[int, int], float]:
    """For every usable pair of registered cameras: the share of its correspondences (the same ones
    its essential matrix came from) that the cameras' relative pose explains within
    ``threshold_px``, over the share its own estimate explains. About 1 when the cameras agree
    with the pair (noise moves it by a few per cent either way); well below 1 when they contradict it."""
    out = {}
    for (a, b), pose in pairs.items():
        if not (pose.ok and registered[a] and registered[b]):
            continue
        pts = invariant if pose.points == "swap_invariant" and invariant is not None else (x, valid)
        xa, xb, _ = pair_points(*pts, a, b, max_points)
        thr = threshold_px / float(np.sqrt(focal[a] * focal[b]))
        Rab = R[b] @ R[a].T
        tab = t[b] - Rab @ t[a]
        norm = float(np.linalg.norm(tab))
        own = int((sampson_distance(xa, xb, pose.R, pose.t) < thr).sum())
        rig = int((sampson_distance(xa, xb, Rab, tab / norm) < thr).sum()) if norm > 0 else 0
        out[(a, b)] = rig / own if own else 0.0
    return out


def spanning_trees(edges: list[tuple[int, int]], n_nodes: int, limit: int, seed: int = 0) -> list[tuple[tuple[int, int], ...]]:
    """Spanning trees of the graph (``n_nodes`` nodes, ``edges``; of its connected part when a node has no
    edge): all of them when there are at most ``limit`` edge subsets to try, otherwise up to ``limit``
    random ones (Kruskal on shuffled edges, seeded). Each is a sorted tuple of edges."""
    edges = sorted(edges)

    def tree(order) -> tuple[tuple[int, int], ...]:
        """Kruskal: the edges of ``order`` that close no cycle."""
        parent = list(range(n_nodes))

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i
        chosen = []
        for a, b in order:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[ra] = rb
                chosen.append((a, b))
        return tuple(sorted(chosen))

    size = len(tree(edges))                          # edges of a spanning forest (isolated nodes stay out)
    if size == 0:
        return []

    n_subsets = 1
    for i in range(size):                            # C(E, size), stopped early
        n_subsets = n_subsets * (len(edges) - i) // (i + 1)
        if n_subsets > limit:
            break
    if n_subsets <= limit:
        found = (tree(c) for c in combinations(edges, size))
    else:
        rng = np.random.default_rng(seed)
        found = (tree([edges[i] for i in rng.permutation(len(edges))]) for _ in range(limit))
    return list(dict.fromkeys(t for t in found if len(t) == size))
