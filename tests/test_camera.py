import json

import cv2
import numpy as np
import pytest

from epipose.camera import Camera, Rig, load_rig, look_at, save_rig


def _points(rng, n=500):
    # A person-sized cloud 4-6 m in front of the real rig's centre (world z up, mm).
    return rng.uniform([-1500, -1500, 0], [1500, 1500, 1900], size=(n, 3))


def test_real_rig_loads(real_rig):
    cam = real_rig.camera("S1", "54138969")
    assert cam.K[0, 0] == pytest.approx(1145.0494, abs=1e-3)
    assert cam.dist[0] == pytest.approx(-0.2071, abs=1e-4)
    assert np.allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-6)
    assert real_rig.camera_names == ["54138969", "55011271", "58860488", "60457274"]
    # H36M cameras stand ~1.5-2 m high and 4-7 m from the capture centre.
    c = cam.center
    assert 3000 < np.linalg.norm(c[:2]) < 7000 and 1000 < c[2] < 2500


def test_projection_matches_opencv(real_rig):
    rng = np.random.default_rng(0)
    X = _points(rng)
    for subject in ("S1", "S9", "S11"):
        for cam in real_rig.cameras(subject).values():
            ours = cam.project(X)
            rvec, _ = cv2.Rodrigues(cam.R)
            ref, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rvec, cam.t, cam.K, cam.dist)
            assert np.abs(ours - ref.reshape(-1, 2)).max() < 1e-6


def test_undistort_inverts_distortion(real_rig):
    rng = np.random.default_rng(1)
    cam = real_rig.camera("S5", "60457274")
    Xc = cam.world_to_camera(_points(rng))
    xn = Xc[:, :2] / Xc[:, 2:]
    uv = cam.project_camera(Xc)
    back = cam.undistort_points(uv)
    assert np.abs(back - xn).max() < 1e-9
    ref = cv2.undistortPointsIter(uv.reshape(-1, 1, 2), cam.K, cam.dist, None, None,
                                  (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))
    assert np.abs(back - ref.reshape(-1, 2)).max() < 1e-12


def test_undistort_keeps_nan_and_shape():
    cam = Camera(np.array([[1000, 0, 500], [0, 1000, 500], [0, 0, 1.0]]), [-0.2, 0.1, 0.001, 0.0, 0.0])
    uv = np.array([[[500.0, 500.0], [np.nan, 3.0]], [[100.0, 900.0], [800.0, 200.0]]])
    out = cam.undistort_points(uv)
    assert out.shape == uv.shape
    assert np.isnan(out[0, 1]).all() and np.allclose(out[0, 0], 0.0)
    assert np.allclose(cam.normalized_to_pixels(out[1]), uv[1], atol=1e-8)


def test_world_camera_round_trip(real_rig):
    cam = real_rig.camera("S7", "55011271")
    X = _points(np.random.default_rng(2)).reshape(5, 100, 3)
    assert np.allclose(cam.camera_to_world(cam.world_to_camera(X)), X, atol=1e-9)
    assert np.allclose(cam.world_to_camera(cam.center), 0.0, atol=1e-6)


def test_rig_round_trip(tmp_path, real_rig):
    out = tmp_path / "cameras.json"
    save_rig(real_rig, out)
    again = load_rig(out)
    for subj in real_rig.extrinsics:
        for name, cam in real_rig.cameras(subj).items():
            other = again.camera(subj, name)
            assert np.array_equal(cam.K, other.K) and np.array_equal(cam.dist, other.dist)
            assert np.array_equal(cam.R, other.R) and np.array_equal(cam.t, other.t)
    assert json.loads(out.read_text())["extrinsics"]["S1"]["54138969"]["t"][0][0] == pytest.approx(-346.0508, abs=1e-3)


def test_look_at_points_camera_at_target():
    R, t = look_at(np.array([4000.0, 0, 1500]), np.array([0.0, 0, 900]))
    cam = Camera(np.diag([1150.0, 1150, 1]) + np.array([[0, 0, 500], [0, 0, 500], [0, 0, 0]]), R=R, t=t)
    assert np.allclose(cam.project(np.array([0.0, 0, 900])), [500, 500])
    # World up (z) maps to image up (smaller v).
    assert cam.project(np.array([0.0, 0, 1500]))[1] < 500


def test_missing_subject_or_camera_names_file(tmp_path, real_rig):
    out = tmp_path / "cams.json"
    save_rig(real_rig, out)
    rig = load_rig(out)
    with pytest.raises(KeyError, match=r"cams\.json.*subject 'S99'"):
        rig.camera("S99", "54138969")
    with pytest.raises(KeyError, match=r"cams\.json.*camera '123'"):
        rig.intrinsic_camera("123")


def test_intrinsics_only_is_a_rig_of_known_intrinsics(tmp_path):
    p = tmp_path / "cameras.json"
    p.write_text('{"intrinsics": {"cam0": {"calibration_matrix": [[1000, 0, 500], [0, 1000, 400], [0, 0, 1]]}}}')
    rig = load_rig(p)
    assert rig.camera_names == ["cam0"] and rig.extrinsics == {} and not rig.has_extrinsics("S1", "cam0")
    assert rig.intrinsic_camera("cam0").K[0, 0] == 1000


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('{"extrinsics": {}}', "top-level key 'intrinsics'"),
    ('{"intrinsics": {}}', "no camera under 'intrinsics'"),
    ('{"intrinsics": {"a": {"calibration_matrix": [[1, 0], [0, 1]]}}, "extrinsics": {}}', "calibration_matrix"),
    ('{"intrinsics": {}, "extrinsics": {"S1": {"a": {"R": [1, 2, 3]}}}}', "missing 'R' or 't'"),
    ('{"intrinsics": [1, 2]}', r"intrinsics: expected an object \(\{...\}\), got list"),
    ('{"intrinsics": {"a": "K"}}', r"intrinsics\['a'\]: expected an object"),
    ('{"intrinsics": {}, "extrinsics": {"S1": null}}', r"extrinsics\['S1'\]: expected an object \(\{...\}\), got NoneType"),
    ('{"intrinsics": {}, "extrinsics": {"S1": {"a": null}}}', r"extrinsics\['S1'\]\['a'\]: expected an object"),
    ('{"intrinsics": {"a": {"calibration_matrix": [[1000, 0, 500], [0, 1000, 500], [0, 0, 1]], "distortion": ["x", 0, 0, 0, 0]}}}',
     r"intrinsics\['a'\].distortion .*not numeric"),
])
def test_bad_cameras_json(tmp_path, content, match):
    p = tmp_path / "cameras.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_rig(p)
    with pytest.raises(FileNotFoundError, match="cameras file not found"):
        load_rig(tmp_path / "nope.json")
