"""The triangulate stage: exact recovery, camera recovery, robustness, bad input, output contract, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from triangulation_fixture import cameras, gt_lookup, make_rig, motions

from conftest import ROOT, write_params
from epipose.camera import Rig, save_rig
from epipose.data.h36m import write_pose_cdf
from epipose import metrics
from epipose.data.pose_tables import PSEUDO3D_SCHEMA, read_pseudo3d, to_dense, write_pose2d
from epipose.synth.simulate2d import NOISE_MODELS, simulate_pose2d
from epipose.geometry.camera_group import CameraGroup
from epipose.data.multiview import enlarge_skeletons
from epipose.evaluation.pseudo_labels import evaluate_against_gt
from epipose.pipeline.triangulate import TriangulateParams, skeleton_scale_for, triangulate_table
from epipose.params import ParamError
from epipose.geometry.angles import rotation_angle_deg
from epipose.geometry.relative_pose import estimate_pair
from epipose.io import read_parquet_metadata
from epipose.skeleton import H36M32_NAMES, MPII_FROM_H36M32

SUBJECTS = ("S1", "S5")


@pytest.fixture(scope="module")
def data():
    rig = make_rig(SUBJECTS)
    seqs = motions(SUBJECTS, ("Walking 1", "Greeting 1"), n_frames=120)
    cams = cameras(rig, SUBJECTS)
    return rig, seqs, cams


def _run(df, rig, **kw):
    return triangulate_table(df, rig, TriangulateParams(**kw))


def _rel_rotation_errors(out, rig, subject):
    est = out.cameras[subject]
    true = CameraGroup.from_rig(rig, subject, est.names)
    errs = []
    for a in range(len(est)):
        for b in range(a + 1, len(est)):
            errs.append(rotation_angle_deg((est.R[b] @ est.R[a].T) @ (true.R[b] @ true.R[a].T).T))
    return np.array(errs)


@pytest.mark.parametrize("mode", [dict(extrinsics="known"), dict()], ids=["known", "pooled"])
def test_exact_recovery_with_distortion(data, mode):
    rig, seqs, cams = data
    one = {k: v[:60] for k, v in seqs.items() if k[0] == "S1"}
    df, _ = simulate_pose2d(one, cams, NOISE_MODELS["exact"])
    out = _run(df, rig, **mode)
    gt = evaluate_against_gt(out.table, gt_lookup(one, cams))
    assert out.report["coverage"] == 1.0 and gt["frames_evaluated"] == len(df) // 16
    # pose2d stores float32 pixels (~3e-5 px steps): "exact" means to that precision
    assert gt["n_mpjpe_mm"] < 1e-3 and gt["p_mpjpe_mm"] < 1e-3
    assert out.report["reproj_err_px"]["rows_mean"] < 1e-3
    if mode:
        assert gt["mpjpe_absolute_mm"] < 1e-3          # metric, absolute, each camera's frame
    else:
        assert _rel_rotation_errors(out, rig, "S1").max() < 1e-4
        # the scale comes from the bone-length prior: within a few % of the truth
        assert abs(out.report["camera_baseline_error_pct"]["max"]) < 8.0


def test_per_frame_mode_on_exact_data(data):
    """EpipolarPose's per-frame estimate: right on most frames, but one frame's 16 joints make an
    ill-conditioned essential matrix (float32 pixel rounding alone moves it by ~0.02 deg)."""
    rig, seqs, cams = data
    one = {k: v[:60] for k, v in seqs.items() if k[0] == "S1"}
    df, _ = simulate_pose2d(one, cams, NOISE_MODELS["exact"])
    out = _run(df, rig, relative_pose="per_frame")
    keys, pred = to_dense(out.table, ["x", "y", "z"])
    gt = gt_lookup(one, cams)
    target = np.stack([gt.poses_mpii_camera(s, a, c)[f] for s, a, c, f in keys.itertuples(index=False)])
    err = metrics.n_mpjpe(metrics.root_relative(pred), metrics.root_relative(target), per_frame=True)
    assert np.median(err) < 1.0 and np.mean(err < 5.0) > 0.9
    assert out.report["subjects"]["S1"]["extrinsics"] == "estimated (per_frame)"


def test_pooled_recovers_cameras_under_noise(data):
    rig, seqs, cams = data
    df, _ = simulate_pose2d(seqs, cams, NOISE_MODELS["gauss2"], seed=1)
    pooled = _run(df, rig)
    known = _run(df, rig, extrinsics="known")
    for s in SUBJECTS:
        assert _rel_rotation_errors(pooled, rig, s).max() < 0.3
    assert pooled.report["camera_translation_direction_error_deg"]["max"] < 0.5
    assert abs(pooled.report["camera_baseline_error_pct"]["max"]) < 8.0
    gt = gt_lookup(seqs, cams)
    e_pooled = evaluate_against_gt(pooled.table, gt)
    e_known = evaluate_against_gt(known.table, gt)
    assert e_pooled["n_mpjpe_mm"] < 1.05 * e_known["n_mpjpe_mm"]
    assert e_known["mpjpe_absolute_mm"] < 15.0
    # metadata says how the extrinsics and the scale were obtained
    md = pooled.metadata
    assert "essential matrix" in md["epipose.triangulate.extrinsics"] and "bone-length prior" in md["epipose.triangulate.scale"]
    assert "cameras.json" in known.metadata["epipose.triangulate.extrinsics"]


def test_robust_to_outliers_and_confident_swaps(data):
    rig, seqs, cams = data
    df, pert = simulate_pose2d(seqs, cams, NOISE_MODELS["confident_swaps4"], seed=2)
    gt = gt_lookup(seqs, cams)
    pooled = _run(df, rig)
    known = _run(df, rig, extrinsics="known")
    plain = _run(df, rig, extrinsics="known", swap_detection=False, view_ransac_px=1e6, refine_iterations=0)
    e = {k: evaluate_against_gt(o.table, gt) for k, o in (("pooled", pooled), ("known", known), ("plain", plain))}
    assert e["known"]["n_mpjpe_mm"] < 0.7 * e["plain"]["n_mpjpe_mm"]
    assert e["pooled"]["n_mpjpe_mm"] < 1.05 * e["known"]["n_mpjpe_mm"]
    n_swapped = sum(int(p.swaps.sum()) for p in pert.values())
    assert known.report["swaps_corrected"] >= 0.8 * n_swapped          # legs and arms counted separately
    assert known.report["observations_rejected_as_outliers"] > 0
    for s in SUBJECTS:
        assert _rel_rotation_errors(pooled, rig, s).max() < 0.5


def test_bad_rows_are_marked_dropped_and_counted(data, caplog):
    rig, seqs, cams = data
    one = {k: v[:40] for k, v in seqs.items() if k[0] == "S1"}
    df, _ = simulate_pose2d(one, cams, NOISE_MODELS["gauss2"])
    df = df.copy()
    j = df["joint"] == "r_wrist"
    # r_wrist: NaN in cam_a, low confidence in cam_b and cam_c → seen by one view only
    df.loc[j & (df["camera"] == "cam_a"), ["u", "v"]] = np.nan
    df.loc[j & df["camera"].isin(["cam_b", "cam_c"]), "conf"] = 0.01
    # a frame where every joint is unusable
    dead = (df["action"] == "Walking 1") & (df["frame"] == 7)
    df.loc[dead, "conf"] = 0.0
    # a camera without video for one action (S11 "Directions" in the real data): its rows are absent
    df = df[~((df["camera"] == "cam_c") & (df["action"] == "Greeting 1"))]
    # a camera missing from cameras.json
    extra = df[df["camera"] == "cam_d"].copy()
    extra["camera"] = "cam_x"
    df = pd.concat([df, extra], ignore_index=True)
    with caplog.at_level("WARNING"):
        out = _run(df, rig, extrinsics="known")
    rep = out.report
    n_frames = 2 * 40                      # 40 of "Walking 1" (4 cameras), 40 of "Greeting 1" (3 cameras)
    assert rep["rows_dropped"]["camera_not_in_cameras_json"] == len(extra)
    assert rep["rows_dropped"]["frame_without_triangulated_joint"] == 4 * 16
    assert rep["rows_marked_untriangulated"] == 39 * 4 + 40 * 3               # r_wrist, in every camera's rows
    assert rep["joints_with_fewer_than_min_views"] == (n_frames - 1) + 16
    assert rep["observations_unusable"] == 40 * 3 + 40 * 2 + 16 * 4 - 3
    assert len(out.table) == (39 * 4 + 40 * 3) * 16
    t = out.table
    wrist = t[t["joint"] == "r_wrist"]
    assert wrist[["x", "y", "z", "reproj_err"]].isna().all().all() and (wrist["n_views"] == 0).all()
    assert t.loc[t["joint"] != "r_wrist", ["x", "y", "z"]].notna().all().all()
    assert rep["coverage"] == pytest.approx(len(t[t["n_views"] > 0]) / len(df))
    text = caplog.text
    assert "cam_x" in text and "untriangulated" in text and "no joint could be triangulated" in text


def test_degenerate_sequences_do_not_crash(data, caplog):
    rig, seqs, cams = data
    # S1: 3 frames only (too few correspondences for any pair); S5: fine
    short = {("S1", "Walking 1"): seqs[("S1", "Walking 1")][:3], ("S5", "Walking 1"): seqs[("S5", "Walking 1")][:60]}
    df, _ = simulate_pose2d(short, cams, NOISE_MODELS["gauss2"])
    with caplog.at_level("WARNING"):
        out = _run(df, rig)
    assert out.report["rows_dropped"]["subject_cameras_not_estimated"] == 3 * 4 * 16
    assert set(out.table["subject"]) == {"S5"} and "S1: cameras could not be estimated" in caplog.text
    # a camera 1 cm from another (tiny baseline) and a person who barely moves
    R, t = rig.extrinsics["S5"]["cam_a"]
    c = -R.T @ t + np.array([10.0, 0.0, 0.0])
    extr = {s: dict(v) for s, v in rig.extrinsics.items()}
    extr["S5"]["cam_b"] = (R, -R @ c)
    intr = dict(rig.intrinsics)
    intr["cam_b"] = rig.intrinsics["cam_a"]
    tiny = Rig(intr, extr)
    still = np.repeat(seqs[("S5", "Greeting 1")][:1], 80, axis=0)
    df2, _ = simulate_pose2d({("S5", "Greeting 1"): still}, cameras(tiny, ["S5"]), NOISE_MODELS["gauss2"])
    out2 = _run(df2, tiny)
    pairs = out2.report["subjects"]["S5"]["pairs"]
    # 1 cm: the decomposition puts most points behind a camera; either way the pair is unusable
    assert not pairs["cam_a-cam_b"]["usable"] and pairs["cam_a-cam_b"]["reason"]
    assert out2.report["coverage"] > 0.5          # the other cameras still triangulate
    assert out2.report["camera_rotation_error_deg"]["max"] < 1.0


def test_small_baseline_pair_is_degenerate(data):
    rig, seqs, _ = data
    a = rig.camera("S1", "cam_a")
    b = a.with_extrinsics(a.R, a.t - a.R @ np.array([100.0, 0.0, 0.0]))       # 10 cm to the side
    P = seqs[("S1", "Walking 1")].reshape(-1, 3)
    rng = np.random.default_rng(0)
    xa = a.undistort_points(a.project(P) + rng.normal(0, 2, (len(P), 2)))
    xb = b.undistort_points(b.project(P) + rng.normal(0, 2, (len(P), 2)))
    pose = estimate_pair(xa, xb, 4 / 1145)
    assert not pose.ok and "parallax" in pose.reason and pose.parallax_deg < 1.0
    far = a.with_extrinsics(a.R, a.t - a.R @ np.array([2000.0, 0.0, 0.0]))
    xf = far.undistort_points(far.project(P) + rng.normal(0, 2, (len(P), 2)))
    assert estimate_pair(xa, xf, 4 / 1145).ok


def test_output_schema_metadata_and_determinism(data, tmp_path):
    rig, seqs, cams = data
    one = {k: v[:50] for k, v in seqs.items()}
    df, _ = simulate_pose2d(one, cams, NOISE_MODELS["outliers_swaps4"], seed=3)
    root = tmp_path / "h36m"
    save_rig(rig, root / "cameras.json")
    for (s, a), poses in one.items():                 # ground truth as D3_Positions (MPII joints placed in the 32)
        p32 = np.zeros((len(poses), len(H36M32_NAMES), 3))
        p32[:, list(MPII_FROM_H36M32)] = poses
        write_pose_cdf(root / s / "MyPoseFeatures" / "D3_Positions" / f"{a}.cdf", p32)
    write_pose2d(df, tmp_path / "pose2d.parquet")
    write_params(tmp_path / "params.yaml", {"triangulate": {"ba_max_frames": 60}})
    outs = []
    for i in range(2):
        cmd = [sys.executable, str(ROOT / "stages" / "triangulate.py"), "--pose2d", str(tmp_path / "pose2d.parquet"),
               "--cameras", str(root / "cameras.json"), "--out", str(tmp_path / f"p{i}.parquet"),
               "--metrics", str(tmp_path / f"m{i}.json"), "--report", str(tmp_path / f"r{i}.json"), "--gt-root", str(root),
               "--params", str(tmp_path / "params.yaml")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append((tmp_path / f"p{i}.parquet").read_bytes())
    assert outs[0] == outs[1]                                            # byte-identical
    assert (tmp_path / "r0.json").read_bytes() == (tmp_path / "r1.json").read_bytes()
    assert pq.read_schema(tmp_path / "p0.parquet").remove_metadata() == PSEUDO3D_SCHEMA
    table = pd.read_parquet(tmp_path / "p0.parquet")
    assert list(table.columns) == PSEUDO3D_SCHEMA.names and len(read_pseudo3d(tmp_path / "p0.parquet")) == len(table)
    keys = ["subject", "action", "camera", "frame"]
    assert table[keys].drop_duplicates().merge(df[keys].drop_duplicates()).shape[0] == len(table) // 16
    md = read_parquet_metadata(tmp_path / "p0.parquet")
    assert {"epipose.triangulate.extrinsics", "epipose.triangulate.scale", "epipose.triangulate.params"} <= set(md)
    assert "S1" in json.loads(md["epipose.triangulate.estimated_cameras"])
    m = json.loads((tmp_path / "r0.json").read_text())
    assert m["ground_truth"]["frames_evaluated"] > 0 and m["ground_truth"]["n_mpjpe_mm"] < 60
    flat = json.loads((tmp_path / "m0.json").read_text())
    assert flat["pseudo3d.n_mpjpe"] == m["ground_truth"]["n_mpjpe_mm"] and flat["rig.subjects_dropped"] == 0
    assert flat["rig.rotation_error_deg"] == m["camera_rotation_error_deg"]["mean"]
    assert m["camera_rotation_error_deg"]["max"] < 1.0 and m["reproj_err_px"]["inliers_mean"] < 8
    # mm in each camera's frame: depth of the pelvis ~ the camera distance
    pelvis = table[(table["joint"] == "pelvis") & table["z"].notna()]
    assert 3000 < pelvis["z"].median() < 7000
    # triangulate.input_2d: ground_truth — the same rows from the projected truth: near-exact labels
    write_params(tmp_path / "params.yaml", {"triangulate": {"ba_max_frames": 60, "input_2d": "ground_truth"}})
    cmd[cmd.index("--report") + 1] = str(tmp_path / "r_gt2d.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "ground truth projected" in proc.stderr, proc.stderr[-3000:]
    gt2d = json.loads((tmp_path / "r_gt2d.json").read_text())["ground_truth"]
    assert gt2d["n_mpjpe_mm"] < 1.0 < m["ground_truth"]["n_mpjpe_mm"]


@pytest.mark.parametrize("breakage", ["missing_column", "unknown_joint", "not_parquet"])
def test_unusable_input_is_a_clear_error_and_writes_nothing(data, tmp_path, breakage):
    rig, seqs, cams = data
    df, _ = simulate_pose2d({("S1", "Walking 1"): seqs[("S1", "Walking 1")][:5]}, cams, NOISE_MODELS["exact"])
    path = tmp_path / "pose2d.parquet"
    if breakage == "missing_column":
        df.drop(columns="conf").to_parquet(path)
    elif breakage == "unknown_joint":
        df.assign(joint=df["joint"].replace("r_ankle", "RightFoot")).to_parquet(path)
    else:
        path.write_text("not a parquet file")
    save_rig(rig, tmp_path / "cameras.json")
    write_params(tmp_path / "params.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "triangulate.py"), "--pose2d", str(path),
                           "--cameras", str(tmp_path / "cameras.json"), "--out", str(tmp_path / "out.parquet"),
                           "--metrics", str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "m.json").exists()


def test_bad_param_names_the_key(data, tmp_path):
    write_params(tmp_path / "params.yaml", {"triangulate": {"bone_lengths_mm": [1, 2]}})
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "triangulate.py"), "--pose2d", "x.parquet",
                           "--cameras", "c.json", "--out", "o.parquet", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "triangulate.bone_lengths_mm" in proc.stderr



@pytest.mark.slow
def test_pooled_on_real_detector_output():
    """The default run's 2D detections of S7 and S11 (tests/data: the CPU-profile network on the
    synthetic videos) with their rig. Their errors are not Gaussian: wrists and ankles lie 5-9 px
    (median) off the true epipolar lines, torso joints 1-3 px. From all joints a wrong essential
    matrix outvotes the true one; the swap-invariant points (centre joints, left/right midpoints)
    keep every camera pair within a few degrees after bundle adjustment."""
    from epipose.camera import load_rig

    df = pd.read_parquet(ROOT / "tests/data/default_run_pose2d_S7_S11.parquet")
    rig = load_rig(ROOT / "tests/data/default_run_cameras_S7_S11.json")
    robust = _run(df, rig, min_conf=0.01)
    naive = _run(df, rig, min_conf=0.01, essential_points="joints", min_epipolar_agreement=0.0)
    for s in ("S7", "S11"):            # measured: max 5.7 and 3.3 deg; from the joints 28.7 and 176.5
        assert _rel_rotation_errors(robust, rig, s).max() < 8.0
        assert robust.report["subjects"][s]["status"] == "ok"
    assert _rel_rotation_errors(naive, rig, "S7").max() > 20.0
    assert _rel_rotation_errors(naive, rig, "S11").max() > 90.0
    # the self-calibration check (tests/test_selfcalib.py) catches those wrong cameras: no spanning tree
    # of pairs from all joints agrees with every pair (about half a pair's inliers), so both are refused
    checked = _run(df, rig, min_conf=0.01, essential_points="joints")
    for s in ("S7", "S11"):
        rep = checked.report["subjects"][s]
        assert rep["status"] == "dropped: self-calibration inconsistent"
        assert min(rep["epipolar_agreement"].values()) < 0.7
    assert len(checked.table) == 0 and checked.report["subjects_dropped"] == 2


def test_pseudo_label_accuracy_counts_incomplete_frames(data):
    """Complete frames alone can be a biased sample; mpjpe_15j_mm_all_triangulated scores every
    triangulated non-root joint; mpjpe_mm averages the 16 joints, the root's 0 included."""
    rig, seqs, cams = data
    one = {k: v[:40] for k, v in seqs.items() if k == ("S1", "Walking 1")}
    df, _ = simulate_pose2d(one, cams, NOISE_MODELS["exact"])
    table = _run(df, rig, extrinsics="known").table.copy()
    odd = (table["frame"] % 2 == 1).to_numpy()
    table.loc[odd & (table["joint"] == "head_top").to_numpy(), ["x", "y", "z"]] = np.nan   # missing in odd frames
    table.loc[odd & (table["joint"] == "l_wrist").to_numpy(), "x"] += 30.0                 # 30 mm off there
    e = evaluate_against_gt(table, gt_lookup(one, cams))
    n_rows = len(table) // 16                                                               # (camera, frame) rows
    assert e["frames_evaluated"] == n_rows // 2 and e["mpjpe_mm"] < 1e-3                     # blind to the wrist
    assert e["joints_scored_all_triangulated"] == n_rows * 15 - n_rows // 2
    assert e["mpjpe_15j_mm_all_triangulated"] == pytest.approx(30.0 * (n_rows // 2) / e["joints_scored_all_triangulated"],
                                                               rel=1e-3)
    # 15 vs 16 joints on a constructed case: every non-root joint 16 mm off → 16 and 15 mm
    shifted = table.copy()
    shifted.loc[shifted["joint"] != "pelvis", "y"] += 16.0
    e2 = evaluate_against_gt(shifted[~shifted["frame"].isin(table.loc[odd, "frame"])], gt_lookup(one, cams))
    assert e2["mpjpe_15j_mm"] == pytest.approx(16.0, abs=1e-3) and e2["mpjpe_mm"] == pytest.approx(15.0, abs=1e-3)


def test_skeleton_scale_corrects_shrunken_detections(data):
    """A 2D network that draws skeletons 5% small makes the bone-length prior put the cameras 5%
    too far apart (the default 2D network: 0.955 on its MPII validation split); enlarging the
    detections by the measured ratio (triangulate.skeleton_scale) gives back the exact data's rig."""
    rig, seqs, cams = data
    one = {k: v[:60] for k, v in seqs.items() if k[0] == "S1"}
    exact, _ = simulate_pose2d(one, cams, NOISE_MODELS["exact"])
    shrunk = enlarge_skeletons(exact, 1 / 0.95)                      # every view's skeleton at 95% of its size
    keys, a = to_dense(shrunk, ["u", "v"])
    _, b = to_dense(exact, ["u", "v"])
    assert metrics.skeleton_scale(a, b) == pytest.approx(0.95, abs=1e-5)

    def baseline_pct(df, **kw):
        return np.array([e["baseline_error_pct"] for e in _run(df, rig, **kw).report["subjects"]["S1"]
                         ["camera_errors"].values() if e["baseline_error_pct"] is not None])

    truth = baseline_pct(exact)                                       # the subject's size vs the prior
    biased = baseline_pct(shrunk, skeleton_scale=1.0)
    corrected = baseline_pct(enlarge_skeletons(shrunk, 0.95))
    assert np.all(biased - truth > 4.0)                               # ~ 1/0.95 - 1 = 5.3% long
    assert np.abs(corrected - truth).max() < 0.2
    gt = gt_lookup(one, cams)
    assert evaluate_against_gt(_run(enlarge_skeletons(shrunk, 0.95), rig).table, gt)["n_mpjpe_mm"] < 1e-2


def test_skeleton_scale_param(caplog):
    assert skeleton_scale_for(TriangulateParams(), {"skeleton_scale": "0.955"}) == 0.955
    assert skeleton_scale_for(TriangulateParams(skeleton_scale=1.0), {"skeleton_scale": "0.955"}) == 1.0
    assert skeleton_scale_for(TriangulateParams(input_2d="ground_truth"), {"skeleton_scale": "0.955"}) == 1.0
    with caplog.at_level("WARNING"):
        assert skeleton_scale_for(TriangulateParams(), {}) == 1.0
        assert skeleton_scale_for(TriangulateParams(), {"skeleton_scale": "0.1"}) == 1.0
    assert "does not say" in caplog.text and "implausible" in caplog.text
    with pytest.raises(ParamError, match="triangulate.skeleton_scale"):
        TriangulateParams(skeleton_scale=3.0)
