"""The evaluation protocol on constructed cases, and the evaluate stage's outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from epipose import skeleton
from epipose.camera import load_rig
from epipose.data.h36m import H36MDataset, read_pose_cdf, write_pose_cdf
from epipose.evaluation.pose3d import PCK_CURVE_MM, action_name, evaluate_predictions, pss_centroids
from epipose.pipeline.evaluate import EvaluateParams, figure_frames, results_markdown, summary, write_plots
from epipose.models.pose_net import PoseNet, PoseNetConfig, save_pose_net
from epipose.models.refiner import Refiner, save_refiner
from epipose.models.codec import encode_pose
from epipose.models.inference import infer_3d
from epipose.metrics import root_relative
from epipose.data.targets import gt_targets
from epipose.data.pose_tables import key_groups
from epipose.data.frames import load_frames
from pose3d_fixture import CROP, make_root, small_rig

ROOT = __import__("conftest").ROOT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from conftest import REAL_CAMERAS

    tmp = tmp_path_factory.mktemp("eval")
    rig = small_rig(load_rig(REAL_CAMERAS), subjects=("S1", "S9"))
    h36m, frames_root = make_root(tmp, rig)
    ds = H36MDataset(h36m)
    cache = load_frames(frames_root, ["S9"], progress=False)
    gt = gt_targets(cache.keys, ds).pose_cam
    centroids = pss_centroids(ds, [5, 10], 10000)
    return tmp, h36m, frames_root, ds, cache, gt, centroids


def test_perfect_prediction_back_projected_with_the_gt_root_depth_recovers_the_truth(world):
    _, _, _, ds, cache, gt, centroids = world
    rig = ds.rig
    pose = np.full(gt.shape, np.nan)
    for (_, _, cam), idx in key_groups(cache.keys).items():
        camera = rig.intrinsic_camera(cam)
        uvd = encode_pose(gt[idx], camera, cache.boxes[idx], CROP)      # what a perfect network outputs
        # The inference path's back-projection (the same one the evaluation uses).
        net = _ConstNet(uvd, CROP)
        out = infer_3d(net, cache.images[idx], cache.boxes[idx], camera, gt[idx, skeleton.PELVIS, 2], flip_test=False,
                       amp="none", channels_last=False, batch_size=len(idx))
        pose[idx] = out["pose_cam"]
    np.testing.assert_allclose(pose, gt, atol=1e-3)          # mm: exact up to float32 network outputs
    res = evaluate_predictions(cache.keys, {"perfect": root_relative(pose)}, root_relative(gt), centroids)["perfect"]
    assert res["mpjpe"] < 1e-3 and res["p_mpjpe"] < 1e-3 and res["pck3d"] == 100.0
    assert res["pss@5"] == 100.0 and res["pss@10"] == 100.0 and res["auc"] > 96.7


class _ConstNet(torch.nn.Module):
    """Returns given crop-pixel targets, mapped to the network input (a 'perfect' network for those crops)."""

    def __init__(self, uvd, crop):
        super().__init__()
        self.config = PoseNetConfig(input_size=32, depth_bins=2)
        self.uvd, self.crop = torch.from_numpy(uvd).float(), crop
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        xy = self.uvd[..., :2] * (32 / self.crop)     # center_batch maps crop px q → q · 32 / crop
        return {"xy": xy, "z": self.uvd[..., 2], "conf": torch.ones(self.uvd.shape[:2])}


def test_known_errors(world):
    _, _, _, _, cache, gt, centroids = world
    gt_rr = root_relative(gt)
    keys = cache.keys
    # Root-relative: a global offset of the prediction costs nothing.
    shifted = root_relative(gt + np.array([120.0, -40.0, 300.0]))
    # One joint 32 mm off: MPJPE = 32 / 16 = 2 mm.
    one = gt_rr.copy()
    one[:, skeleton.JOINT_INDEX["l_wrist"], 0] += 32.0
    # Scaled by 1.2: MPJPE = 0.2 · mean joint distance to the root; N-MPJPE and P-MPJPE ≈ 0.
    scaled = 1.2 * gt_rr
    # Rotated by 30° about the camera's y axis: P-MPJPE ≈ 0, MPJPE = mean chord length.
    a = np.radians(30.0)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rotated = gt_rr @ R.T
    res = evaluate_predictions(keys, {"shifted": shifted, "one": one, "scaled": scaled, "rotated": rotated}, gt_rr,
                               centroids)
    dist = np.linalg.norm(gt_rr, axis=-1)
    assert res["shifted"]["mpjpe"] == pytest.approx(0.0, abs=1e-9)
    assert res["one"]["mpjpe"] == pytest.approx(2.0, abs=1e-3)
    assert res["one"]["pck3d"] == 100.0
    assert res["scaled"]["mpjpe"] == pytest.approx(0.2 * dist.mean(), abs=1e-3)
    assert res["scaled"]["n_mpjpe"] < 1e-3 and res["scaled"]["p_mpjpe"] < 1e-3
    chord = 2 * np.sin(a / 2) * np.linalg.norm(gt_rr[..., [0, 2]], axis=-1)
    assert res["rotated"]["mpjpe"] == pytest.approx(chord.mean(), abs=1e-3)
    assert res["rotated"]["p_mpjpe"] < 1e-3
    # 200 mm off on every non-root joint: no joint within 150 mm but the root.
    far = gt_rr + np.where(np.arange(16)[None, :, None] == skeleton.PELVIS, 0.0, [200.0, 0.0, 0.0])
    r = evaluate_predictions(keys, {"far": far}, gt_rr, centroids)["far"]
    assert r["pck3d"] == pytest.approx(100 / 16, abs=1e-3) and r["mpjpe"] == pytest.approx(200 * 15 / 16, abs=1e-3)
    # the seed's 16 joints count the root (0 after root-centring); the 15 others are 200 mm off
    assert r["mpjpe_15j"] == pytest.approx(200.0, abs=1e-3)


def test_per_action_and_frame_averaged_overall(world):
    _, _, _, _, cache, gt, centroids = world
    gt_rr = root_relative(gt)
    keys = cache.keys.copy()
    assert action_name("Walking 1") == "Walking" and action_name("Greeting") == "Greeting"
    # Errors of 10 mm on every joint of "Walking 1" frames, 40 mm on "Greeting"; drop some Greeting frames
    # so that the overall (frame-averaged) differs from the mean of the action means.
    keep = ~((keys.action == "Greeting") & (keys.frame >= 12))
    keys, gt_rr = keys[keep].reset_index(drop=True), gt_rr[keep.to_numpy()]
    err = np.where((keys.action == "Walking 1").to_numpy()[:, None, None], 10.0, 40.0)
    direction = np.zeros((1, 16, 3))
    direction[..., 1] = 1.0
    pred = gt_rr + err * direction
    res = evaluate_predictions(keys, {"m": pred}, gt_rr, centroids)["m"]
    assert set(res["per_action"]) == {"Greeting", "Walking"}
    assert res["per_action"]["Walking"]["mpjpe"] == pytest.approx(10.0)
    assert res["per_action"]["Greeting"]["mpjpe"] == pytest.approx(40.0)
    n_w, n_g = res["per_action"]["Walking"]["frames"], res["per_action"]["Greeting"]["frames"]
    assert n_w != n_g and res["mpjpe"] == pytest.approx((10 * n_w + 40 * n_g) / (n_w + n_g))
    # Human3.6M tables average per action first: (10 + 40) / 2, whatever the frame counts
    assert res["action_averaged"]["mpjpe"] == pytest.approx(25.0) and res["action_averaged"]["mpjpe_15j"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="m: 1 test frames have non-finite predictions"):
        bad = pred.copy()
        bad[0, 3] = np.nan
        evaluate_predictions(keys, {"m": bad}, gt_rr, centroids)


LABELS = {"pose3d": "Self-supervised (pseudo-labels)", "pose3d_refined": "Self-supervised + refiner",
          "baseline_gt": "Fully supervised (ground truth)"}


def test_report_plots_and_summary(world, tmp_path):
    _, _, _, _, cache, gt, centroids = world
    gt_rr = root_relative(gt)
    noise = root_relative(np.random.default_rng(0).normal(scale=20.0, size=gt.shape))    # root-relative predictions
    preds = {"pose3d": gt_rr + 2 * noise, "pose3d_refined": gt_rr + 1.5 * noise, "baseline_gt": gt_rr + noise}
    res = evaluate_predictions(cache.keys, preds, gt_rr, centroids)
    paths = write_plots(res, tmp_path / "plots")
    tsv = pd.read_csv(paths["per_action"], sep="\t")
    assert len(tsv) == 3 * 3 and set(tsv.method) == set(preds)
    row = tsv[(tsv.action == "all") & (tsv.method == "pose3d")]
    assert row.mpjpe.item() == pytest.approx(res["pose3d"]["mpjpe"], abs=1e-3)
    joints = pd.read_csv(paths["per_joint"], sep="\t")
    assert len(joints) == 3 * 16 and joints[joints.joint == "pelvis"].mpjpe.eq(0).all()      # the root
    # per-joint means average to the MPJPE (16 joints, the root included, as the seed's code)
    assert joints[joints.method == "pose3d"].mpjpe.mean() == pytest.approx(res["pose3d"]["mpjpe"], abs=1e-2)
    curve = pd.read_csv(paths["pck3d_curve"], sep="\t")
    assert list(curve.columns) == ["threshold_mm", "pose3d", "pose3d_refined", "baseline_gt"]
    assert (np.diff(curve.pose3d) >= 0).all() and len(curve) == len(PCK_CURVE_MM)
    at150 = curve[curve.threshold_mm == 150.0]
    assert at150.baseline_gt.item() == pytest.approx(res["baseline_gt"]["pck3d"], abs=1e-2)
    assert curve[curve.threshold_mm <= 150].pose3d.mean() == pytest.approx(res["pose3d"]["auc"], abs=1e-2)
    # metrics: flat, stable names per role (whatever the networks were trained on)
    flat = summary(res)
    assert sorted(flat) == sorted(f"{r}.{k}" for r in preds for k in ("mpjpe", "mpjpe_15j", "n_mpjpe", "p_mpjpe", "pck3d", "auc"))
    assert flat["pose3d_refined.mpjpe"] == res["pose3d_refined"]["mpjpe"]
    info = {"subjects": ["S9"], "stride": 4, "frames": len(cache), "cameras": 2, "h36m_root": "data/raw/h36m",
            "figures": ["figures/a.png", "rig_topview.png"], "methods": LABELS, "pck_threshold_mm": 150.0}
    md = results_markdown(res, info)
    ratio = res["pose3d"]["mpjpe"] / res["baseline_gt"]["mpjpe"]
    assert f"**{ratio:.3f}**" in md and "76.6" in md and "51.8" in md and "60.5" in md and "PCK3D@150" in md
    # the paper column like for like: no-R/t self-supervision as N-MPJPE, ResNet-18 fully supervised
    row = {r: next(line for line in md.splitlines() if f"`{r}`" in line) for r in preds}
    assert "78.8 N-MPJPE (ResNet-50)" in row["pose3d"] and "63.0 MPJPE (ResNet-18)" in row["baseline_gt"]
    assert "mean of the actions" in md and "MPJPE 15 joints" in md
    assert "| Walking 1 |" not in md and "| Walking |" in md and "![a](figures/a.png)" in md
    assert "![rig_topview](rig_topview.png)" in md and "`pose3d_refined`" in md
    assert list(figure_frames(100, 4)) == [20, 40, 59, 79] and len(figure_frames(3, 10)) == 3
    # A collapsed prediction (every joint at the root) has no scale/Procrustes fit: None in JSON, "–" in the report.
    collapsed = evaluate_predictions(cache.keys, {"pose3d": np.zeros_like(gt_rr)}, gt_rr, centroids)
    assert collapsed["pose3d"]["p_mpjpe"] is None and collapsed["pose3d"]["mpjpe"] > 0
    json.dumps(collapsed, allow_nan=False)
    assert "| – |" in results_markdown(collapsed, {**info, "figures": [], "h36m_root": "x"})


@pytest.mark.slow
def test_evaluate_stage_end_to_end(world, tmp_path):
    """The stage on a random 3D network + refiner: every output, numbers consistent with each other."""
    _, h36m, frames_root, _, _, _, _ = world
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=32, depth_bins=4))
    torch.nn.init.normal_(net.final.weight, std=0.5)          # not every joint at the centre
    save_pose_net(net, tmp_path / "pose3d.pt", meta={"depth_range_mm": 2000.0, "target": "pseudo3d"})
    save_pose_net(net, tmp_path / "pose3d_gt.pt", meta={"depth_range_mm": 2000.0, "target": "gt"})
    ref = Refiner(width=16, blocks=1, residual=True)
    ref.eval()
    save_refiner(ref, tmp_path / "refiner.pt")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["h36m_root"] = str(h36m)
    params["evaluate"].update({"subjects": ["S9"], "stride": 8, "pss_k": [5], "figures": 2, "flip_test": True,
                               "amp": "none"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--frames", str(frames_root), "--model",
           str(tmp_path / "pose3d.pt"), "--refiner", str(tmp_path / "refiner.pt"), "--baseline",
           str(tmp_path / "pose3d_gt.pt"), "--metrics", str(out / "eval.json"), "--report", str(out / "report.json"),
           "--plots", str(out / "plots"), "--figures", str(out / "reports" / "figures"), "--markdown",
           str(out / "reports" / "results.md"), "--params", str(tmp_path / "params.yaml"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report) == sorted(["protocol", "pose3d", "pose3d_refined", "baseline_gt"])
    assert report["protocol"]["methods"] == LABELS
    assert report["protocol"]["frames"] == 2 * 2 * 3       # frames 0, 8, 16 of 2 actions × 2 cameras
    # The same network twice: identical numbers; the refiner changes them.
    assert report["baseline_gt"]["mpjpe"] == report["pose3d"]["mpjpe"]
    assert report["pose3d_refined"]["mpjpe"] != report["pose3d"]["mpjpe"]
    metrics = json.loads((out / "eval.json").read_text())
    assert len(metrics) == 18 and metrics["pose3d.mpjpe"] == report["pose3d"]["mpjpe"]
    pngs = sorted((out / "reports" / "figures").glob("*.png"))
    assert len(pngs) == 2 + 2 and all(p.stat().st_size > 10000 for p in pngs)       # examples, curves
    md = (out / "reports" / "results.md").read_text()
    assert all(f"figures/{p.name}" in md for p in pngs) and "Self-supervised + refiner" in md
    # Rerun: byte-identical outputs (deterministic evaluation).
    first = {p: p.read_bytes() for p in [out / "eval.json", out / "report.json", *(out / "plots").iterdir(), *pngs]}
    assert subprocess.run(cmd, capture_output=True, cwd=tmp_path).returncode == 0
    assert all(p.read_bytes() == b for p, b in first.items())
    # A wrong joint count in params is refused naming the file and the key.
    params["model"]["num_joints"] = 17
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "pose3d_gt.pt: the checkpoint predicts 16 joints but param model.num_joints is 17" in proc.stderr
    # NaN in a test subject's ground truth: one line naming the file, exit 2, nothing written
    params["model"]["num_joints"] = 16
    bad_root = tmp_path / "bad_root"
    shutil.copytree(h36m, bad_root)
    cdf = bad_root / "S9" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf"
    poses = read_pose_cdf(cdf)
    poses[3, 0, 1] = np.nan
    cdf.unlink()
    write_pose_cdf(cdf, poses)
    params["data"]["h36m_root"] = str(bad_root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(out)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        f"{cdf}: ground truth not finite at frame 3, joint Hip (1 frames)"), proc.stderr[-2000:]
    assert not out.exists() or not any(out.rglob("*"))


def test_the_refiner_is_evaluated_on_the_kind_of_input_it_was_trained_on(tmp_path):
    """train_refiner records whether its input predictions were flip-averaged (train_3d.flip_test);
    evaluate refuses another kind (evaluate.flip_test), naming both keys."""
    from epipose.data.pose_tables import write_pred3d
    from epipose.pipeline.evaluate import check_refiner_input
    from epipose.pipeline.train_refiner import refiner_data

    from epipose.data.pose_tables import PSEUDO3D_VALUES, from_dense, write_pseudo3d

    keys = pd.DataFrame({"subject": ["S1"], "action": ["Walking"], "camera": ["c"], "frame": [0]})
    pose = np.random.default_rng(0).normal(scale=200.0, size=(1, 16, 3)) + [0.0, 0.0, 4000.0]
    write_pred3d(tmp_path / "pred.parquet", keys, pose, np.ones((1, 16)), metadata={"flip_test": "False"})
    labels = np.concatenate([pose, np.zeros((1, 16, 1)), np.full((1, 16, 1), 4)], axis=-1)
    write_pseudo3d(from_dense(keys, labels, PSEUDO3D_VALUES), tmp_path / "pseudo3d.parquet")
    assert refiner_data(tmp_path / "pred.parquet", tmp_path / "pseudo3d.parquet").flip_test is False
    check_refiner_input({"input_flip_test": True}, True, "r.pt")
    check_refiner_input({}, False, "r.pt")              # a refiner that does not say: not checked
    with pytest.raises(ValueError, match="evaluate.flip_test is true but the refiner r.pt was trained on predictions "
                                         "with flip_test false .param train_3d.flip_test."):
        check_refiner_input({"input_flip_test": False}, True, "r.pt")


def test_seen_people_are_scored_only_on_purpose():
    """A network is scored on people it trained on (its file's subjects) only with evaluate.seen_subjects."""
    from epipose.params import ParamError
    from epipose.pipeline.evaluate import check_unseen

    meta = {"subjects": ["S1", "S5", "S12"]}
    check_unseen(meta, EvaluateParams(subjects=["S9", "S11"]), "m.pt")                 # unseen: scored
    check_unseen(meta, EvaluateParams(subjects=["S1", "S9"], seen_subjects=True), "m.pt")    # meant
    check_unseen({}, EvaluateParams(subjects=["S1"]), "old.pt")          # a file that does not say: nothing to check
    with pytest.raises(ParamError, match=r"param evaluate.subjects: \['S5'\] trained m.pt"):
        check_unseen(meta, EvaluateParams(subjects=["S9", "S5"]), "m.pt")
