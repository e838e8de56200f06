"""Self-calibration that fails or cannot work is detected: re-registered, or the subject refused.

Cases (2D simulated from procedural motion through real Human3.6M cameras, σ 2 px):
- 40 frames of one walk: the essential matrices of three of six camera pairs come out wrong but
  "usable" (the points barely span 3D), and the cameras chained from the strongest pairs were
  96° off after bundle adjustment. Detected by the pairs' epipolar agreement, re-registered.
- a focal length 40% short in cameras.json: no set of cameras agrees with every pair → refused.
- two cameras nearly in line with the person: their relative pose is recovered, but depth is not
  → refused (triangulation angle); four cameras of which two are in line: fine.
"""

from __future__ import annotations

import json
import logging
from itertools import combinations

import numpy as np
import pytest

from conftest import ROOT
from epipose.camera import Camera, Rig, load_rig, look_at
from epipose.geometry import relative_pose as rp
from epipose.geometry.angles import rotation_angle_deg
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.triangulation import triangulation_angles
from epipose.data.pose_tables import SUBJECT_STATUS_KEY
from epipose.evaluation.pseudo_labels import evaluate_against_gt
from epipose.pipeline.triangulate import TriangulateParams, triangulate_table
from epipose.synth.simulate2d import NOISE_MODELS, camera_frame_truth, procedural_motions, simulate_pose2d

H36M = ROOT / "resources" / "h36m" / "camera-parameters.json"
SUBJECTS = ["S1", "S5", "S6", "S7", "S8", "S9", "S11"]      # the motion of a subject depends on its index


def _max_rotation_error(out, rig, subject) -> float:
    est = out.cameras[subject]
    true = CameraGroup.from_rig(rig, subject, est.names)
    return max(rotation_angle_deg((est.R[b] @ est.R[a].T) @ (true.R[b] @ true.R[a].T).T)
               for a, b in combinations(range(len(est)), 2))


@pytest.fixture(scope="module")
def h36m():
    return load_rig(H36M)


def _simulate(rig, subject, actions, n_frames, motion_seed, noise_seed):
    """One subject's 2D and ground truth (the noise is drawn for all subjects of the rig, as the benchmark does)."""
    subjects = [s for s in SUBJECTS if s in rig.extrinsics]
    seqs = procedural_motions(subjects if len(subjects) > 1 else SUBJECTS, actions, n_frames, motion_seed)
    seqs = {k: v for k, v in seqs.items() if k[0] in subjects}
    cams = {s: rig.cameras(s) for s in subjects}
    df, _ = simulate_pose2d(seqs, cams, NOISE_MODELS["gauss2"], seed=noise_seed)
    return df[df["subject"] == subject], camera_frame_truth(seqs, cams)


def test_a_wrong_pair_in_the_chain_is_detected_and_reregistered(h36m, caplog):
    df, gt = _simulate(h36m, "S8", ["Walking 1"], 40, motion_seed=0, noise_seed=1)
    unchecked = triangulate_table(df, h36m, TriangulateParams(min_epipolar_agreement=0.0))
    assert _max_rotation_error(unchecked, h36m, "S8") > 45.0          # the failure is real without the check
    rep = unchecked.report["subjects"]["S8"]
    assert rep["status"] == "ok" and min(rep["epipolar_agreement"].values()) < 0.6
    with caplog.at_level(logging.WARNING):
        out = triangulate_table(df, h36m, TriangulateParams())
    rep = out.report["subjects"]["S8"]
    assert rep["status"] == "ok" and rep["reregistered"] and out.report["subjects_reregistered"] == 1
    assert min(rep["epipolar_agreement"].values()) > 0.95
    assert "S8: the cameras chained from the strongest pairs contradicted" in caplog.text
    assert _max_rotation_error(out, h36m, "S8") < 2.0
    assert evaluate_against_gt(out.table, gt)["n_mpjpe_mm"] < 40.0
    assert evaluate_against_gt(unchecked.table, gt)["n_mpjpe_mm"] > 100.0


def test_cameras_no_tree_can_reconcile_are_refused(h36m, caplog):
    df, _ = _simulate(h36m, "S9", ["Walking 1", "Directions 1"], 40, motion_seed=0, noise_seed=0)
    intr = dict(h36m.intrinsics)
    K, dist = intr["54138969"]
    K = K.copy()
    K[0, 0] *= 0.6                                                # a focal length 40% short in cameras.json
    K[1, 1] *= 0.6
    intr["54138969"] = (K, dist)
    with caplog.at_level(logging.WARNING):
        out = triangulate_table(df, Rig(intr, h36m.extrinsics), TriangulateParams())
    rep = out.report["subjects"]["S9"]
    assert rep["status"] == "dropped: self-calibration inconsistent"
    assert out.report["subjects_dropped"] == 1 and len(out.table) == 0
    # the table says why (train_3d leaves the subject out naming it)
    assert json.loads(out.metadata[SUBJECT_STATUS_KEY]) == {"S9": "dropped: self-calibration inconsistent"}
    assert out.report["rows_dropped"] == {"subject_cameras_inconsistent": len(df)}
    assert "S9: self-calibration failed" in caplog.text and "triangulate.min_epipolar_agreement" in caplog.text
    # the true focal length: the same 2D pass
    assert triangulate_table(df, h36m, TriangulateParams()).report["subjects"]["S9"]["status"] == "ok"


def _line_rig(azimuths_deg, distances_mm) -> Rig:
    """Cameras at the given azimuths and distances around the origin, all looking at the person."""
    K = np.array([[1150.0, 0.0, 500.0], [0.0, 1150.0, 500.0], [0.0, 0.0, 1.0]])
    names = [f"c{i}" for i in range(len(azimuths_deg))]
    extr = {}
    for n, az, d in zip(names, np.radians(azimuths_deg), distances_mm):
        extr[n] = look_at(np.array([d * np.cos(az), d * np.sin(az), 1500.0]), np.array([0.0, 0.0, 900.0]))
    return Rig({n: (K, np.zeros(5)) for n in names}, {"S1": extr})


@pytest.mark.slow
def test_cameras_nearly_in_line_with_the_person_are_refused(caplog):
    line = _line_rig([0.0, 1.0], [4000.0, 7000.0])               # the second behind the first
    df, _ = _simulate(line, "S1", ["Walking 1", "Greeting 1"], 40, motion_seed=0, noise_seed=0)
    unchecked = triangulate_table(df, line, TriangulateParams(min_triangulation_angle_deg=0.0))
    assert unchecked.report["camera_rotation_error_deg"]["max"] < 1.0      # the cameras are right ...
    gt = camera_frame_truth(procedural_motions(SUBJECTS, ["Walking 1", "Greeting 1"], 40, 0), {"S1": line.cameras("S1")})
    assert evaluate_against_gt(unchecked.table, gt)["n_mpjpe_mm"] > 150.0   # ... the depths are not
    with caplog.at_level(logging.WARNING):
        out = triangulate_table(df, line, TriangulateParams())
    rep = out.report["subjects"]["S1"]
    assert rep["status"] == "dropped: cameras nearly collinear with the person" and rep["triangulation_angle_deg"] < 10
    assert out.report["rows_dropped"] == {"subject_cameras_nearly_collinear": len(df)} and len(out.table) == 0
    assert "S1: the cameras see the person along nearly one line" in caplog.text
    # the same two plus two cameras at the side: triangulated, and well
    four = _line_rig([0.0, 1.0, 90.0, -120.0], [4000.0, 7000.0, 5000.0, 5000.0])
    df4, gt4 = _simulate(four, "S1", ["Walking 1", "Greeting 1"], 40, motion_seed=0, noise_seed=0)
    out4 = triangulate_table(df4, four, TriangulateParams())
    assert out4.report["subjects"]["S1"]["status"] == "ok" and out4.report["subjects"]["S1"]["triangulation_angle_deg"] > 45
    assert evaluate_against_gt(out4.table, gt4)["n_mpjpe_mm"] < 30.0


def test_triangulation_angles():
    # two cameras 5 m from the origin, 90° apart, and one facing the first
    cams = [look_at(np.array(c), np.zeros(3)) for c in ([5000.0, 0, 0], [0, 5000.0, 0], [-5000.0, 0, 0])]
    R, t = np.stack([c[0] for c in cams])[None], np.stack([c[1] for c in cams])[None]
    X = np.zeros((1, 2, 3))
    used = np.ones((1, 3, 2), dtype=bool)
    np.testing.assert_allclose(triangulation_angles(X, R, t, used), [[90.0, 90.0]])
    used[0, 1] = False                       # only the facing pair: rays on one line
    np.testing.assert_allclose(triangulation_angles(X, R, t, used), [[0.0, 0.0]], atol=1e-6)
    used[0, 0, 1] = False                    # one view left
    assert np.isnan(triangulation_angles(X, R, t, used)[0, 1])


def test_epipolar_agreement_and_spanning_trees():
    assert len(rp.spanning_trees(list(combinations(range(4), 2)), 4, 256)) == 16      # Cayley: 4^2
    assert len(rp.spanning_trees(list(combinations(range(5), 2)), 5, 256)) == 125
    assert rp.spanning_trees([(0, 1), (1, 2)], 4, 256) == [((0, 1), (1, 2))]         # camera 3 has no pair
    trees = rp.spanning_trees(list(combinations(range(8), 2)), 8, 50, seed=0)         # 8^6: sampled
    assert len(trees) == 50 and all(len(t) == 7 for t in trees)
    assert trees == rp.spanning_trees(list(combinations(range(8), 2)), 8, 50, seed=0)
    # three cameras seeing random points: the true cameras agree with every pair, a turned one does not
    rng = np.random.default_rng(0)
    X = rng.normal(0, 400, (200, 3)) + [0, 0, 900]
    cams = [look_at(np.array(c), np.array([0, 0, 900.0])) for c in ([4000.0, 0, 1500], [0, 4000.0, 1500], [-3000.0, -3000.0, 1500])]
    R, t = np.stack([c[0] for c in cams]), np.stack([c[1] for c in cams])
    Xc = np.einsum("vij,nj->nvi", R, X) + t
    x = (Xc[..., :2] / Xc[..., 2:] + rng.normal(0, 1 / 1150, Xc[..., :2].shape))[:, :, None]   # (T, V, J=1, 2)
    valid = np.ones(x.shape[:3], dtype=bool)
    focal = np.full(3, 1150.0)
    pairs = {(a, b): rp.estimate_pair(x[:, a, 0], x[:, b, 0], 4 / 1150, min_points=8) for a, b in combinations(range(3), 2)}
    assert all(p.ok for p in pairs.values())
    kw = dict(threshold_px=4.0, max_points=10000)
    agree = rp.epipolar_agreement(pairs, x, valid, focal, R, t, np.ones(3, dtype=bool), **kw)
    assert set(agree) == {(0, 1), (0, 2), (1, 2)} and min(agree.values()) > 0.97
    turned = R.copy()
    turned[2] = look_at(np.array([-3000.0, -3000.0, 1500]), np.array([0, 0, 900.0]))[0] @ \
        np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]])
    bad = rp.epipolar_agreement(pairs, x, valid, focal, turned, t, np.ones(3, dtype=bool), **kw)
    assert bad[(0, 1)] == agree[(0, 1)] and bad[(0, 2)] < 0.5 and bad[(1, 2)] < 0.5
    d = rp.sampson_distance(x[:, 0, 0], x[:, 1, 0], pairs[(0, 1)].R, pairs[(0, 1)].t) * 1150     # px, 1 px noise
    assert 0.3 < np.median(d) < 1.5
