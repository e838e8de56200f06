"""Known-camera triangulation: DLT (both solvers), view-RANSAC, refinement, swaps, lens, bundle Jacobian, scale."""

import cv2
import numpy as np
import pytest
from scipy.optimize._numdiff import approx_derivative

from epipose import skeleton
from epipose.geometry import bundle
from epipose.geometry import triangulation as tri
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.lens import undistort_normalized
from epipose.geometry.scale import bone_length_scale
from epipose.synth.simulate2d import NoiseModel, apply_noise, project_views
from triangulation_fixture import make_rig, motions


@pytest.fixture(scope="module")
def scene():
    rig = make_rig(("S1",))
    group = CameraGroup.from_rig(rig, "S1", sorted(rig.intrinsics))
    poses = motions(("S1",), ("Walking 1", "Greeting 1"), n_frames=100)
    P = np.concatenate(list(poses.values()))
    return group, P, project_views(P, group.cameras)


def test_undistort_matches_opencv(scene):
    group, _, uv = scene
    for v, cam in enumerate(group.cameras):
        ours = undistort_normalized(cam, uv[:, v])
        assert np.abs(ours - cam.undistort_points(uv[:, v])).max() < 1e-10
    nan = undistort_normalized(group.cameras[0], np.array([[np.nan, 1.0], [500.0, 500.0]]))
    assert np.isnan(nan[0]).all() and np.isfinite(nan[1]).all()


@pytest.mark.parametrize("method", ["lstsq", "svd"])
def test_dlt_exact_with_distortion(scene, method):
    group, P, uv = scene
    x = group.undistort(uv).transpose(0, 2, 1, 3).reshape(-1, 4, 2)
    X = tri.dlt(x, np.ones(x.shape[:2]), group.R, group.t, method=method)
    assert np.abs(X - P.reshape(-1, 3)).max() < 1e-6


def test_dlt_agrees_with_opencv_two_views(scene):
    group, P, uv = scene
    x = group.undistort(uv)[:, :2].transpose(0, 2, 1, 3).reshape(-1, 2, 2)
    rng = np.random.default_rng(0)
    x = x + rng.normal(0, 2e-3, x.shape)
    ours = tri.dlt(x, np.ones(x.shape[:2]), group.R[:2], group.t[:2], method="svd")
    P0 = np.hstack([group.R[0], group.t[0][:, None]])
    P1 = np.hstack([group.R[1], group.t[1][:, None]])
    h = cv2.triangulatePoints(P0, P1, x[:, 0].T, x[:, 1].T)
    diff = np.linalg.norm(ours - (h[:3] / h[3]).T, axis=-1)
    # the same equations; only the row scaling differs (ours conditions the translations), so
    # with noise the two least-squares solutions differ by a small fraction of the error (~7 mm)
    assert diff.mean() < 0.1 and diff.max() < 2.0


def test_weights_and_missing_views(scene):
    group, P, uv = scene
    x = group.undistort(uv).transpose(0, 2, 1, 3).reshape(-1, 4, 2)
    bad = x.copy()
    bad[:, 3] += 0.05                                      # view 3 ~57 px off everywhere
    w = np.ones(x.shape[:2])
    w[:, 3] = 0.0                                          # ... but unused: exact again
    assert np.abs(tri.dlt(bad, w, group.R, group.t) - P.reshape(-1, 3)).max() < 1e-6
    w1 = np.zeros(x.shape[:2])
    w1[:, 0] = 1.0                                         # one view: not triangulable
    assert np.isnan(tri.dlt(x, w1, group.R, group.t)).all()
    nan = x.copy()
    nan[:, 1:3] = np.nan                                   # NaN views are ignored
    assert np.abs(tri.dlt(nan, np.ones(x.shape[:2]), group.R, group.t) - P.reshape(-1, 3)).max() < 1e-6


def test_view_ransac_rejects_outlier_view(scene):
    group, P, uv = scene
    rng = np.random.default_rng(1)
    x = group.undistort(uv + rng.normal(0, 1.0, uv.shape)).transpose(0, 2, 1, 3).reshape(-1, 4, 2)
    out_view = rng.integers(0, 4, len(x))
    x[np.arange(len(x)), out_view] += rng.choice([-1, 1], (len(x), 2)) * 0.06     # ~70 px per axis
    w = np.ones(x.shape[:2])
    plain = tri.dlt(x, w, group.R, group.t)
    inl, X = tri.view_ransac(x, w, group.R, group.t, group.focal, threshold_px=15.0)
    assert not inl[np.arange(len(x)), out_view].any()
    assert inl.sum(1).min() == 3
    err_plain = np.linalg.norm(plain - P.reshape(-1, 3), axis=-1).mean()
    err = np.linalg.norm(X - P.reshape(-1, 3), axis=-1).mean()
    assert err < 10.0 and err_plain > 5 * err


def test_refinement_lowers_reprojection_error(scene):
    group, P, uv = scene
    rng = np.random.default_rng(2)
    x = group.undistort(uv + rng.normal(0, 3.0, uv.shape)).transpose(0, 2, 1, 3).reshape(-1, 4, 2)
    w = rng.uniform(0.3, 1.0, x.shape[:2])
    X0 = tri.dlt(x, w, group.R, group.t)
    X1 = tri.refine_points(X0, x, w, group.R, group.t, group.focal, iterations=5)

    def cost(X):
        return ((tri.reprojection_errors(X, x, group.R, group.t, group.focal) * w) ** 2).sum(1)

    c0, c1 = cost(X0), cost(X1)
    assert (c1 <= c0 + 1e-9).all() and c1.sum() < 0.99 * c0.sum()
    # at the optimum the weighted gradient vanishes: one more step changes nothing
    X2 = tri.refine_points(X1, x, w, group.R, group.t, group.focal, iterations=1)
    assert np.abs(X2 - X1).max() < 1e-3


def test_swaps_detected_and_corrected(scene):
    group, P, uv = scene
    rng = np.random.default_rng(3)
    noisy, conf, pert = apply_noise(uv, NoiseModel("swaps", sigma_px=1.0, swap_rate=0.1, confident_swaps=True), rng)
    res = group.triangulate(noisy, conf, threshold_px=15.0, swap_detection=True)
    # a swapped view is corrected in (almost) all frames where the mirror is visible at all
    found = res.swaps.any(-1)
    lateral = np.linalg.norm(uv[..., 2, :] - uv[..., 3, :], axis=-1) > 20       # hips > 20 px apart
    # with 2 of 4 views swapped in a frame the geometry is ambiguous (either pair may be the mirrored one)
    target = pert.swaps & lateral & (pert.swaps.sum(1) == 1)[:, None]
    assert (found & target).sum() >= 0.9 * target.sum()
    assert (found & ~pert.swaps).sum() <= 0.01 * found.size
    off = tri.triangulate_poses(group.undistort(noisy), conf, group.R, group.t, group.focal, swap_detection=False)
    err_on = np.nanmean(np.linalg.norm(res.points - P, axis=-1))
    err_off = np.nanmean(np.linalg.norm(off.points - P, axis=-1))
    assert err_on < err_off


def test_triangulate_poses_marks_joints_without_views(scene):
    group, P, uv = scene
    conf = np.ones(uv.shape[:3])
    conf[:5, 1:, 0] = 0.0                       # r_ankle seen by one view only in 5 frames
    conf[5, :, :] = 0.0                         # frame 5: nothing
    res = group.triangulate(uv, conf, min_conf=0.1)
    assert np.isnan(res.points[:5, 0]).all() and (res.n_views[:5, 0] == 0).all()
    assert np.isnan(res.points[5]).all()
    assert np.abs(res.points[6:] - P[6:]).max() < 1e-6
    assert (res.n_views[6:] == 4).all()


def test_bundle_jacobian_matches_finite_differences(monkeypatch):
    rng = np.random.default_rng(1)
    V, n = 3, 20
    R0 = bundle.rodrigues(rng.normal(0, 0.3, (V, 3)))
    t0 = rng.normal(0, 0.3, (V, 3)) + [0, 0, 5]
    X0 = rng.normal(0, 0.5, (n, 3))
    cam, pt = np.repeat(np.arange(V), n), np.tile(np.arange(n), V)
    Xc = np.einsum("mij,mj->mi", R0[cam], X0[pt]) + t0[cam]
    x = Xc[:, :2] / Xc[:, 2:] + rng.normal(0, 0.01, (len(cam), 2))
    captured = {}

    def fake(fun, x0, jac=None, **kw):
        captured.update(fun=fun, jac=jac, x0=x0)
        raise StopIteration

    monkeypatch.setattr(bundle, "least_squares", fake)
    with pytest.raises(StopIteration):
        bundle.bundle_adjust(x, rng.uniform(0.5, 1, len(cam)), cam, pt, R0, t0, X0, np.array([1000.0, 1100, 900]),
                             fixed=0, scale_cam=1)
    p = captured["x0"] + rng.normal(0, 0.05, captured["x0"].shape)
    Ja = captured["jac"](p).toarray()
    Jn = approx_derivative(captured["fun"], p, method="3-point")
    assert np.abs(Ja - Jn).max() < 1e-6 * np.abs(Jn).max()


def test_bone_length_scale_realistic_proportions():
    # random bodies (±5 % size, ±3 % per bone) in arbitrary units: the prior gives mm within a few %
    for seed in range(4):
        seqs = motions(("S1",), ("Walking 1",), n_frames=60, seed=seed)
        P = seqs[("S1", "Walking 1")]
        true_units = 0.00123                          # reconstruction units per mm
        est = bone_length_scale(P * true_units, skeleton.MEAN_BONE_LENGTHS_MM)
        assert est.scale * true_units == pytest.approx(1.0, abs=0.08)
    P[:10, 0] = np.nan                                 # missing joints do not matter
    assert np.isfinite(bone_length_scale(P, skeleton.MEAN_BONE_LENGTHS_MM).scale)
    assert np.isnan(bone_length_scale(np.full((3, 16, 3), np.nan), skeleton.MEAN_BONE_LENGTHS_MM).scale)


def test_swap_invariant_points_ignore_left_right_swaps():
    from epipose import skeleton
    from epipose.geometry.relative_pose import swap_invariant_points

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 16, 2))
    valid = rng.random((5, 3, 16)) > 0.2
    xs, vs = swap_invariant_points(x, valid)
    perm = list(skeleton.FLIP_PERM)
    xs2, vs2 = swap_invariant_points(x[..., perm, :], valid[..., perm])
    assert xs.shape == (5, 3, 4 + 6, 2) and np.allclose(xs, xs2) and (vs == vs2).all()
    # centre joints first (pelvis, thorax, upper_neck, head_top), then the pair midpoints (r/l ankle first)
    assert np.allclose(xs[..., 0, :], x[..., skeleton.PELVIS, :])
    assert np.allclose(xs[..., 4, :], 0.5 * (x[..., 0, :] + x[..., 5, :]))
    assert (vs[..., 4] == (valid[..., 0] & valid[..., 5])).all()
