"""3D pose metrics against hand-computed cases (known offsets, scales, rotations)."""

import numpy as np
import pytest

from epipose import metrics
from epipose.metrics import align, similarity_transform


def _poses(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 300, size=(n, 16, 3))


def _rot_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_mpjpe_constant_offset():
    gt = _poses()
    pred = gt + np.array([30.0, 40.0, 0.0])          # every joint 50 mm off
    assert metrics.mpjpe(pred, gt) == pytest.approx(50.0)
    assert np.allclose(metrics.mpjpe(pred, gt, per_frame=True), 50.0)


def test_mpjpe_hand_computed():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 10.0]]])
    assert metrics.mpjpe(pred, gt) == pytest.approx(7.5)          # (5 + 10) / 2
    assert metrics.pck3d(pred, gt, threshold=6.0) == pytest.approx(50.0)
    # AUC over thresholds 0, 5, 10: PCK 0 %, 50 %, 100 %
    assert metrics.auc(pred, gt, thresholds=np.array([0.0, 5.0, 10.0])) == pytest.approx(50.0)


def test_n_mpjpe_removes_scale_only():
    gt = _poses()
    assert metrics.n_mpjpe(1.7 * gt, gt) == pytest.approx(0.0, abs=1e-9)
    # optimal scale of pred = [1, 0, 0] for gt = [2, 0, 0] is 2: error 0; a rotation is not removed
    gt1 = np.array([[[2.0, 0, 0], [0, 2.0, 0]]])
    pred1 = np.array([[[0, 1.0, 0], [1.0, 0, 0]]])                # swapped: <p,g> = 0 → scale 0
    assert metrics.n_mpjpe(pred1, gt1) == pytest.approx(2.0)
    rotated = gt @ _rot_z(90).T
    assert metrics.n_mpjpe(rotated, gt) > 10.0


def test_p_mpjpe_removes_similarity():
    gt = _poses()
    pred = 0.5 * gt @ _rot_z(33).T + np.array([100.0, -20.0, 5.0])
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-8)
    assert metrics.mpjpe(pred, gt) > 50.0
    # a reflection is not a rotation: Procrustes must not undo it
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert metrics.p_mpjpe(mirrored, gt) > 10.0


def test_similarity_transform_recovers_parameters():
    A = _poses(3)
    R = _rot_z(-70) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    B = 2.5 * A @ R.T + np.array([1.0, 2.0, 3.0])
    s, Rh, t = similarity_transform(A, B)
    assert np.allclose(s, 2.5) and np.allclose(Rh, R) and np.allclose(t, [1.0, 2.0, 3.0])
    assert np.allclose(align(A, B), B)


def test_pss_same_and_different_clusters():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 300, size=(3, 16, 3))
    gt = np.concatenate([b + rng.normal(0, 5, size=(20, 16, 3)) for b in base])    # 3 tight clusters
    assert metrics.pss(gt * 1.3, gt, k=3) == pytest.approx(100.0)              # scale-free: same clusters
    # predictions that are the next cluster's pose: never the same cluster
    shifted = np.concatenate([gt[20:], gt[:20]])
    assert metrics.pss(shifted, gt, k=3) == pytest.approx(0.0)
    centroids = metrics.fit_pose_clusters(gt, 3)
    assert metrics.pss(gt, gt, centroids=centroids) == pytest.approx(100.0)


def test_metrics_check_shapes():
    with pytest.raises(ValueError):
        metrics.mpjpe(np.zeros((2, 16, 3)), np.zeros((2, 15, 3)))


def test_skeleton_scale_of_shrunken_skeletons():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (20, 16, 2))
    centre = gt.mean(1, keepdims=True)
    shrunk = centre + 0.9 * (gt - centre)
    assert metrics.skeleton_scale(shrunk, gt) == pytest.approx(0.9)
    assert metrics.skeleton_scale(gt, gt) == pytest.approx(1.0)
    # bones with an invisible joint do not count: a wild wrist (joint 15) outside the visible set
    wild = shrunk.copy()
    wild[:, 15] += 5000.0
    visible = np.ones((20, 16), bool)
    visible[:, 15] = False
    assert metrics.skeleton_scale(wild, gt, visible) == pytest.approx(0.9)
    assert metrics.skeleton_scale(wild, gt) > 1.5
    # the median over samples: three wild (visible) wrists do not move it; samples without a visible bone do not count
    wild[3:, 15] = shrunk[3:, 15]
    visible[:] = True
    visible[3:6, :] = False
    assert metrics.skeleton_scale(wild, gt, visible) == pytest.approx(0.9)
    assert np.isnan(metrics.skeleton_scale(wild, gt, np.zeros((20, 16), bool)))
