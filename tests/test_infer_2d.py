import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from torch import nn

from epipose import skeleton
from epipose.pipeline import infer_2d as infer2d
from epipose.evaluation.pose2d import ErrorStats
from epipose.camera import Rig
from epipose.data.crop import crop_to_original
from epipose.data import frames as fr
from epipose.io import read_parquet_metadata
from epipose.data.pose_tables import POSE2D_SCHEMA, read_pose2d, sort_rows
from epipose.pipeline.infer_2d import Infer2DParams, run_infer_2d
from epipose.models.pose_net import PoseNetConfig
from mpii_fixture import make_mpii
from pose2d_fixture import CROP, FRAMES, dot_position, make_h36m_with_shards, tiny_pose_net

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rig(real_rig):
    return Rig({c: real_rig.intrinsics[c] for c in ("54138969", "55011271")},
               {s: {c: real_rig.extrinsics[s][c] for c in ("54138969", "55011271")} for s in ("S1", "S9")})


class DotNet(nn.Module):
    """A stand-in network that 'detects' the bright blob: every joint at its intensity centroid."""

    def __init__(self, input_size=64):
        super().__init__()
        self.config = PoseNetConfig(input_size=input_size)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        intensity = x.float().sum(1)
        lo, hi = intensity.amin((1, 2), keepdim=True), intensity.amax((1, 2), keepdim=True)
        w = (intensity - lo - 0.2 * (hi - lo)).clamp_min(0)        # the blob above 20% of its height
        w = w / w.sum((1, 2), keepdim=True)
        ys, xs = torch.meshgrid(torch.arange(x.shape[2], dtype=torch.float32),
                                torch.arange(x.shape[3], dtype=torch.float32), indexing="ij")
        xy = torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], -1)
        j = skeleton.NUM_JOINTS
        return {"xy": xy[:, None].expand(-1, j, -1), "conf": torch.full((x.shape[0], j), 0.5), "z": torch.zeros(x.shape[0], j)}


@pytest.mark.parametrize("flip_test", [False, True])
def test_a_point_in_the_crop_maps_back_to_its_original_pixel(tmp_path, rig, monkeypatch, flip_test):
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig, subjects=("S1",), actions=("Walking 1",))
    monkeypatch.setattr(infer2d, "load_pose_net", lambda path, num_joints, map_location: (DotNet(64), {}))
    monkeypatch.setattr(infer2d, "fuse_for_inference", lambda model: model)
    out = tmp_path / "pose2d.parquet"
    run_infer_2d(frames_root, tmp_path / "unused.pt", out, Infer2DParams(batch_size=3, flip_test=flip_test),
                 progress=False)
    df = read_pose2d(out)
    for cam in ("54138969", "55011271"):
        shard = fr.read_shard(fr.shard_path(frames_root, "S1", "Walking 1", cam)).sort_values("frame")
        for i, row in enumerate(shard.itertuples()):
            expected = crop_to_original(np.array(dot_position(i), float), row.x0, row.y0, row.size, CROP)
            got = df[(df.camera == cam) & (df.frame == row.frame) & (df.joint == "l_wrist")][["u", "v"]].to_numpy()[0]
            assert got == pytest.approx(expected, abs=0.1 * row.size / CROP)     # a tenth of a crop pixel


def test_pose2d_table_schema_order_and_metrics(tmp_path, rig):
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig)
    ckpt = tiny_pose_net(tmp_path / "m.pt")
    out = tmp_path / "pose2d.parquet"
    metrics = run_infer_2d(frames_root, ckpt, out, Infer2DParams(batch_size=5), gt_root=h36m, progress=False)
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(POSE2D_SCHEMA)
    df = read_pose2d(out)
    n_shards = 2 * 2 * 2
    assert len(df) == n_shards * len(FRAMES) * 16
    assert pq.ParquetFile(out).num_row_groups == n_shards            # streamed: one row group per shard
    pd.testing.assert_frame_equal(df, sort_rows(df))                  # canonical order (S1 < S9, "Greeting" < "Walking 1")
    assert df["subject"].iloc[0] == "S1" and df["action"].iloc[0] == "Greeting"
    assert ((df["conf"] >= 0) & (df["conf"] <= 1)).all() and np.isfinite(df[["u", "v"]].to_numpy()).all()
    assert metrics["frames"] == n_shards * len(FRAMES) and metrics["shards"] == n_shards
    assert metrics["train_subjects"]["frames"] == metrics["test_subjects"]["frames"] == n_shards // 2 * len(FRAMES)
    assert 0 < metrics["median_px"] < 1000 and set(metrics["per_joint_median_px"]) == set(skeleton.MPII_NAMES)
    # The error is measured against the projected ground truth: check one joint by hand.
    from epipose.data.h36m import H36MDataset

    ds = H36MDataset(h36m)
    gt = ds.rig.camera("S9", "55011271").project_camera(ds.poses_mpii_camera("S9", "Greeting", "55011271"))[FRAMES]
    sub = df[(df.subject == "S9") & (df.action == "Greeting") & (df.camera == "55011271")]
    pred = sub[["u", "v"]].to_numpy().reshape(len(FRAMES), 16, 2)
    stats = ErrorStats()
    stats.add(pred, gt)
    assert stats.summary()["mean_px"] == pytest.approx(np.linalg.norm(pred - gt, axis=-1).mean(), abs=1e-3)
    # Reruns are byte-identical (dvc.lock stays stable).
    out2 = tmp_path / "again.parquet"
    run_infer_2d(frames_root, ckpt, out2, Infer2DParams(batch_size=7), gt_root=h36m, progress=False)
    assert out.read_bytes() == out2.read_bytes()
    # Batches run across shards (5 and 7 split them anywhere; 1000 is one batch of all): same file.
    out3 = tmp_path / "one_batch.parquet"
    run_infer_2d(frames_root, ckpt, out3, Infer2DParams(batch_size=1000), gt_root=h36m, progress=False)
    assert out.read_bytes() == out3.read_bytes()


def test_error_stats_median():
    stats = ErrorStats()
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 500, (200, 16, 2))
    err = rng.uniform(0, 40, (200, 16))
    angle = rng.uniform(0, 2 * np.pi, (200, 16))
    pred = gt + np.stack([np.cos(angle), np.sin(angle)], -1) * err[..., None]
    stats.add(pred[:120], gt[:120])
    stats.add(pred[120:], gt[120:])
    s = stats.summary()
    assert s["frames"] == 200 and s["median_px"] == pytest.approx(np.median(err), abs=0.1)
    assert s["per_joint_median_px"]["r_ankle"] == pytest.approx(np.median(err[:, 0]), abs=0.1)


def test_bad_inputs_give_clear_errors(tmp_path, rig):
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig, subjects=("S1",), actions=("Walking 1",))
    out = tmp_path / "pose2d.parquet"
    p = Infer2DParams(batch_size=4)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run_infer_2d(frames_root, tmp_path / "missing.pt", out, p, progress=False)
    ckpt17 = tiny_pose_net(tmp_path / "j17.pt", num_joints=17)
    with pytest.raises(ValueError, match=r"j17.pt.*17 joints.*model.num_joints is 16"):
        run_infer_2d(frames_root, ckpt17, out, p, progress=False)
    ckpt = tiny_pose_net(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="model.num_joints is 17"):
        run_infer_2d(frames_root, ckpt, out, p, num_joints=17, progress=False)
    with pytest.raises(FileNotFoundError, match="frames folder not found"):
        run_infer_2d(tmp_path / "nowhere", ckpt, out, p, progress=False)
    bad = frames_root / "S1" / "Walking 1.58860488.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match="Walking 1.58860488.parquet"):
        run_infer_2d(frames_root, ckpt, out, p, progress=False)
    assert not out.exists()                                   # nothing half-written
    bad.unlink()
    shard = fr.read_shard(fr.shard_path(frames_root, "S1", "Walking 1", "55011271"))
    shard.loc[2, "jpeg"] = b"\xff\xd8 broken"
    fr.write_shard(fr.shard_path(frames_root, "S1", "Walking 1", "55011271"), shard["frame"].to_numpy(),
                   list(shard["jpeg"]), shard[["x0", "y0", "size"]].to_numpy())
    with pytest.raises(ValueError, match=rf"Walking 1.55011271.parquet: frame {shard.loc[2, 'frame']}: undecodable"):
        run_infer_2d(frames_root, ckpt, out, p, progress=False)
    assert not out.exists()


@pytest.mark.slow
def test_stages_end_to_end(tmp_path, rig):
    """pretrain_2d then infer_2d as dvc runs them: scripts, params.yaml, outputs."""
    mpii = make_mpii(tmp_path / "mpii", n_train=16, n_valid=4)
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig, subjects=("S1",), actions=("Walking 1",))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(input_size=64, deconv_channels=8, backbone=18, pretrained=None)
    params["pretrain_2d"].update(epochs=2, batch_size=8, eval_batch_size=8)
    params["infer_2d"].update(batch_size=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}

    def run(*args):
        proc = subprocess.run([sys.executable, *map(str, args), "--no-progress"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    pretrain = (ROOT / "stages/pretrain_2d.py", "--mpii", mpii, "--out", "models/pose2d.pt", "--metrics",
                "metrics/pretrain_2d.json", "--report", "reports/pretrain_2d.json", "--live-dir", "dvclive/pretrain_2d",
                "--ckpt-dir", "models/pretrain_2d")
    run(*pretrain)
    m = json.loads((tmp_path / "reports/pretrain_2d.json").read_text())
    assert set(m["per_joint@0.5"]) == set(skeleton.MPII_NAMES) and m["pckh@0.1"] <= m["pckh@0.5"]
    correct = m["pckh@0.5"] * m["count"] / 100                  # a whole number of the valid images' joints
    assert 0 < m["count"] <= 4 * 16 and correct == pytest.approx(round(correct))
    assert m["train_images"] == 16 and m["valid_images"] == 4 and m["epochs"] == 2
    assert json.loads((tmp_path / "metrics/pretrain_2d.json").read_text()) == {
        "mpii.pckh@0.5": round(m["pckh@0.5"], 3), "mpii.pckh@0.1": round(m["pckh@0.1"], 3),
        "mpii.skeleton_scale": m["skeleton_scale"]}
    assert (tmp_path / "dvclive/pretrain_2d/plots/metrics/valid/pckh.tsv").exists()
    run(ROOT / "stages/infer_2d.py", "--frames", frames_root, "--model", "models/pose2d.pt", "--out",
        "data/pose2d.parquet", "--metrics", "metrics/infer_2d.json", "--report", "reports/infer_2d.json",
        "--gt-root", h36m)
    m2 = json.loads((tmp_path / "reports/infer_2d.json").read_text())
    assert m2["frames"] == 2 * len(FRAMES) and m2["median_px"] > 0
    flat = json.loads((tmp_path / "metrics/infer_2d.json").read_text())
    assert flat == {"pose2d.pckh@0.5": m2["pckh@0.5"], "pose2d.median_px": m2["median_px"]}
    assert len(read_pose2d(tmp_path / "data/pose2d.parquet")) == 2 * len(FRAMES) * 16
    # the network's own skeleton scale travels to triangulate in the table's metadata (0.0 here: the tiny
    # network draws all joints at one point in most crops)
    assert float(read_parquet_metadata(tmp_path / "data/pose2d.parquet")["skeleton_scale"]) == m["skeleton_scale"]
    # A rerun resumes the finished training from its checkpoint instead of training again.
    proc = run(*pretrain)
    assert "at epoch 2/2" in proc.stderr and "epoch 1/2:" not in proc.stderr
