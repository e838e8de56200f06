"""train_3d: targets, masks, augmentation of depth, training on a handful of frames, inference, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from epipose import skeleton
from epipose.camera import load_rig
from epipose.data.transforms import AugmentParams, augment_batch
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig
from epipose.models.codec import decode_pose
from epipose.models.inference import infer_3d
from epipose.data.targets import Targets, pseudo3d_targets
from epipose.pipeline.train_3d import (Train3DParams, encode_targets, init_from_2d, predict_frames, smooth_l1_3d, summary,
                                       train_3d)
from epipose.data.pose_tables import SUBJECT_STATUS_KEY, key_groups, read_pred3d, write_pred3d, write_pseudo3d
from epipose.data.frames import load_frames
from epipose.models.pose_net import load_pose3d
from pose2d_fixture import tiny_pose_net
from pose3d_fixture import CROP, FRAMES, gt_table, make_root, small_rig, write_table

NO_AUG = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)
TINY_MODEL = ModelParams(backbone=18, input_size=32, backbone_stages=4, deconv_layers=3, deconv_channels=8,
                         depth_bins=8)


@pytest.fixture
def data(tmp_path, real_rig):
    rig = small_rig(real_rig)
    h36m, frames_root = make_root(tmp_path, rig)
    pseudo = write_table(gt_table(h36m, ("S1",), noise_mm=5.0), tmp_path / "pseudo3d.parquet")
    return h36m, frames_root, pseudo, load_rig(h36m / "cameras.json")


def _pose2d(path, input_size=32, num_joints=16):
    """A tiny 2D network in the paper's layout (PoseNetConfig's defaults: 4 ResNet stages, 3 deconvolutions)."""
    return tiny_pose_net(path, num_joints, input_size, backbone_stages=4, deconv_layers=3)


def test_targets_decode_back_to_the_pseudo_labels(data):
    h36m, frames_root, pseudo, rig = data
    cache = load_frames(frames_root, ["S1"], progress=False)
    assert len(cache) == 2 * 2 * len(FRAMES) and cache.crop_size == CROP
    targets = pseudo3d_targets(cache.keys, pseudo)
    assert targets.valid.all()
    uvd, valid = encode_targets(cache, targets, rig, 2000.0)
    assert uvd.dtype == np.float32 and valid.all()
    # Depth targets are pelvis-relative over 2000 mm; the pelvis's own is 0.
    assert np.all(uvd[:, skeleton.PELVIS, 2] == 0)
    rel = (targets.pose_cam[..., 2] - targets.pose_cam[:, skeleton.PELVIS, None, 2]) / 2000.0
    np.testing.assert_allclose(uvd[..., 2], rel, atol=1e-6)
    for (_, _, cam), idx in key_groups(cache.keys).items():
        back = decode_pose(uvd[idx].astype(np.float64), rig.intrinsic_camera(cam), cache.boxes[idx], CROP,
                           targets.root_depth[idx])
        np.testing.assert_allclose(back, targets.pose_cam[idx], atol=0.05)     # mm (float32 targets)


def test_masks_drop_invalid_joints(data, tmp_path):
    h36m, frames_root, _, rig = data
    df = gt_table(h36m, ("S1",))
    first = (df.action == "Greeting") & (df.camera == "54138969") & (df.frame == FRAMES[1])
    second = (df.action == "Greeting") & (df.camera == "54138969") & (df.frame == FRAMES[2])
    df.loc[first & (df.joint == "l_wrist"), "x"] = np.nan          # not triangulated
    df.loc[first & (df.joint == "r_knee"), "n_views"] = 1          # from one view only
    df.loc[first & (df.joint == "head_top"), "reproj_err"] = 50.0  # bad reprojection
    df.loc[second & (df.joint == "pelvis"), "z"] = np.nan          # no pelvis: no depth reference
    df = df[~((df.action == "Walking 1") & (df.frame == FRAMES[3]))]   # a frame without any row
    path = write_table(df, tmp_path / "masked.parquet")
    cache = load_frames(frames_root, ["S1"], progress=False)
    targets = pseudo3d_targets(cache.keys, path, min_views=2, max_reproj_err=10.0)
    keys = cache.keys
    row = lambda action, cam, frame: int(np.flatnonzero((keys.action == action) & (keys.camera == cam)  # noqa: E731
                                                        & (keys.frame == frame))[0])
    r1, r2 = row("Greeting", "54138969", FRAMES[1]), row("Greeting", "54138969", FRAMES[2])
    bad = {skeleton.JOINT_INDEX[j] for j in ("l_wrist", "r_knee", "head_top")}
    assert [j for j in range(16) if not targets.valid[r1, j]] == sorted(bad)
    assert not targets.valid[r2].any() and np.isnan(targets.root_depth[r2])
    for cam in ("54138969", "55011271"):
        assert not targets.valid[row("Walking 1", cam, FRAMES[3])].any()
    assert targets.valid.sum() == 16 * len(keys) - 3 - 16 - 2 * 16
    # Without the reprojection threshold the head is kept.
    assert pseudo3d_targets(cache.keys, path, min_views=2, max_reproj_err=0.0).valid[r1].sum() == 14

    # The loss does not see masked joints, whatever their targets hold.
    uvd, valid = encode_targets(cache, targets, rig, 2000.0)
    assert not valid[r1, sorted(bad)].any() and np.all(uvd[r1, sorted(bad)] == 0)
    g = torch.Generator().manual_seed(0)
    xy, z = torch.rand(4, 16, 2, generator=g) * 64, torch.rand(4, 16, generator=g) - 0.5
    tgt = torch.from_numpy(uvd[[r1, r2, 0, 1]])
    v = torch.from_numpy(valid[[r1, r2, 0, 1]])
    loss, _ = smooth_l1_3d(xy, z, tgt, v, 64, 0.02)
    garbage = tgt.clone()
    garbage[~v] = 1e4
    assert smooth_l1_3d(xy, z, garbage, v, 64, 0.02)[0] == loss
    garbage[0, 0, 0] += 1.0                      # a valid joint does change it
    assert smooth_l1_3d(xy, z, garbage, v, 64, 0.02)[0] != loss


def test_flip_mirrors_x_swaps_joints_and_keeps_depth():
    aug = AugmentParams(scale=0, rotation=0, translate=0, flip=True, color=0, occlusion_prob=0)
    b, j = 32, 16
    g = torch.Generator().manual_seed(1)
    joints = torch.cat([20 + torch.rand(b, j, 2, generator=g) * 24, torch.rand(b, j, 1, generator=g) - 0.5], -1)
    images = torch.zeros(b, 3, 64, 64, dtype=torch.uint8)
    out, pts, vis = augment_batch(images, joints, torch.ones(b, j, dtype=torch.bool), 64.0, 64, aug,
                                  torch.Generator().manual_seed(5))
    perm = list(skeleton.FLIP_PERM)
    flipped = 0
    for i in range(b):
        if torch.allclose(pts[i], joints[i], atol=1e-4):
            continue
        flipped += 1
        torch.testing.assert_close(pts[i, :, 2], joints[i, perm, 2])                 # depth: swapped, not negated
        torch.testing.assert_close(pts[i, :, 0], 63.0 - joints[i, perm, 0], atol=1e-4, rtol=0)
        torch.testing.assert_close(pts[i, :, 1], joints[i, perm, 1], atol=1e-4, rtol=0)
    assert 5 < flipped < b - 5


@pytest.mark.slow
def test_train_3d_on_a_handful_of_frames_lowers_its_loss(data, tmp_path):
    h36m, frames_root, pseudo, rig = data
    pose2d = _pose2d(tmp_path / "pose2d.pt")
    p = Train3DParams(mpii_share=0.0, epochs=4, batch_size=8, lr=5e-3, amp="none", channels_last=False, subjects=["S1"],
                      fit_frames=8, eval_batch_size=16, log_every=1, warmup_steps=0, schedule="step", lr_steps=[],
                      threads=2)
    run = train_3d(frames_root, pose2d, rig, TINY_MODEL, p, NO_AUG, tmp_path / "ckpt", pseudo3d_path=pseudo,
                   progress=False)
    losses = [h["train_loss"] for h in run.fit.history]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < 0.9 * losses[0]
    fits = [h["fit_mpjpe_mm"] for h in run.fit.history]
    assert fits[-1] < fits[0]
    # The starting point is the 2D network: the same 2D output, depth uniform (z = 0).
    net = init_from_2d(pose2d, TINY_MODEL)
    x = torch.randn(2, 3, 32, 32)
    net2d = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=32))
    net2d.load_state_dict(torch.load(pose2d, weights_only=True)["state_dict"])
    with torch.no_grad():
        o3, o2 = net.eval()(x), net2d.eval()(x)
    torch.testing.assert_close(o3["xy"], o2["xy"], atol=1e-3, rtol=0)
    assert o3["z"].abs().max() < 1e-5

    # Predictions on the training frames, back-projected at the labels' root depth, round-trip the table.
    pred = predict_frames(run.fit.model, run.cache, rig, run.targets.root_depth, 2000.0, batch_size=16, amp="none",
                          channels_last=False, progress=False)
    np.testing.assert_allclose(pred["pose_cam"][:, skeleton.PELVIS, 2], run.targets.root_depth, rtol=1e-6)
    write_pred3d(tmp_path / "pred.parquet", run.cache.keys, pred["pose_cam"], pred["conf"])
    keys, pose, conf = read_pred3d(tmp_path / "pred.parquet")
    assert keys.equals(run.cache.keys)
    np.testing.assert_allclose(pose, pred["pose_cam"], rtol=1e-5, atol=1e-2)


class BlobNet(nn.Module):
    """A stand-in 3D network: every joint at the intensity centroid of the input, depth = joint index / 100."""

    def __init__(self, input_size=48):
        super().__init__()
        self.config = PoseNetConfig(input_size=input_size, depth_bins=4)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        w = (x.float().sum(1) - x.float().sum(1).amin((1, 2), keepdim=True)).clamp_min(0)
        w = w / w.sum((1, 2), keepdim=True)
        ys, xs = torch.meshgrid(torch.arange(x.shape[2], dtype=torch.float32),
                                torch.arange(x.shape[3], dtype=torch.float32), indexing="ij")
        xy = torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], -1)
        j = skeleton.NUM_JOINTS
        z = (torch.arange(j, dtype=torch.float32) / 100.0).expand(x.shape[0], j)
        return {"xy": xy[:, None].expand(-1, j, -1), "z": z, "conf": torch.full((x.shape[0], j), 0.5)}


@pytest.mark.parametrize("flip_test", [False, True])
def test_inference_maps_crops_back_and_unflips(real_rig, flip_test):
    size = 80
    yy, xx = np.mgrid[:size, :size]
    centres = np.array([[20.0, 55.0], [47.5, 31.0], [60.0, 12.5]])
    crops = np.stack([np.repeat((200 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / 8.0))[..., None], 3, -1)
                      for u, v in centres]).round().astype(np.uint8)
    cam = small_rig(real_rig).intrinsic_camera("54138969")
    boxes = np.array([[100.0, 50.0, 400.0], [300.0, 200.0, 320.0], [0.0, 0.0, 640.0]])
    out = infer_3d(BlobNet(), crops, boxes, cam, np.array([4000.0, 5000.0, 6000.0]), batch_size=2,
                   flip_test=flip_test, amp="none", channels_last=False)
    np.testing.assert_allclose(out["uvd"][:, 0, :2], centres, atol=0.15)          # crop pixels
    z = np.arange(16) / 100.0
    expected_z = (z + z[list(skeleton.FLIP_PERM)]) / 2 if flip_test else z         # un-flipped: slots swapped back
    np.testing.assert_allclose(out["uvd"][:, :, 2], np.broadcast_to(expected_z, (3, 16)), atol=1e-6)
    np.testing.assert_allclose(out["uv"][:, 0], boxes[:, :2] + centres * boxes[:, 2:] / size, atol=0.15 * 8)
    rel = out["uvd"] - np.array([0.0, 0.0, 1.0]) * out["uvd"][:, skeleton.PELVIS : skeleton.PELVIS + 1, 2:]
    np.testing.assert_allclose(out["pose_cam"], decode_pose(rel, cam, boxes, size, [4000.0, 5000.0, 6000.0]))
    np.testing.assert_allclose(out["pose_cam"][:, skeleton.PELVIS, 2], [4000, 5000, 6000])     # at the root depth


def test_a_subject_triangulate_dropped_is_left_out_with_a_warning_naming_why(data, tmp_path, caplog):
    h36m, frames_root, _, rig = data
    status = {"S1": "ok", "S9": "dropped: self-calibration inconsistent"}
    pseudo = tmp_path / "pseudo3d.parquet"
    write_pseudo3d(gt_table(h36m, ("S1",)), pseudo, metadata={SUBJECT_STATUS_KEY: json.dumps(status)})
    pose2d = _pose2d(tmp_path / "pose2d.pt")
    p = Train3DParams(mpii_share=0.0, epochs=1, batch_size=8, amp="none", channels_last=False, subjects=["S1", "S9"],
                      fit_frames=0, threads=1)
    with caplog.at_level(logging.WARNING):
        run = train_3d(frames_root, pose2d, rig, TINY_MODEL, p, NO_AUG, tmp_path / "ckpt", pseudo3d_path=pseudo,
                       progress=False)
    assert set(run.cache.keys["subject"]) == {"S1"} and run.info["subjects_left_out"] == {"S9": status["S9"]}
    assert "no pseudo-labels for S9 (triangulate: dropped: self-calibration inconsistent)" in caplog.text
    assert summary({**run.info, "train_target_mpjpe_mm": 1.0, "final_train_loss": 0.1})["subjects_left_out"] == 1
    # every subject dropped: nothing to train on, one line naming them and why
    write_pseudo3d(gt_table(h36m, ("S1",)).iloc[:0], pseudo, metadata={SUBJECT_STATUS_KEY: json.dumps(
        {"S1": "dropped: cameras could not be estimated", "S9": status["S9"]})})
    with pytest.raises(ValueError, match=r"pseudo3d.parquet: no pseudo-labels for any subject of param "
                                         r"train_3d.subjects: S1 dropped: cameras could not be estimated; S9 dropped"):
        train_3d(frames_root, pose2d, rig, TINY_MODEL, p, NO_AUG, tmp_path / "ckpt2", pseudo3d_path=pseudo,
                 progress=False)


def test_bad_inputs_give_clear_errors(data, tmp_path):
    h36m, frames_root, pseudo, rig = data
    pose2d = _pose2d(tmp_path / "pose2d.pt")
    p = Train3DParams(mpii_share=0.0, epochs=1, batch_size=4, amp="none", channels_last=False, subjects=["S1", "S9"])
    args = (frames_root, pose2d, rig, TINY_MODEL, p, NO_AUG, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        train_3d(*args, pseudo3d_path=tmp_path / "missing.parquet", progress=False)
    with pytest.raises(ValueError, match=r"pseudo3d.parquet: no pseudo-labels for subject\(s\) \['S9'\] of the training frames \(param train_3d.subjects\)"):
        train_3d(*args, pseudo3d_path=pseudo, progress=False)
    with pytest.raises(ValueError, match="no pseudo-label table"):
        train_3d(*args, progress=False)
    with pytest.raises(FileNotFoundError, match=r"no frame shards for subject\(s\) \['S7'\]"):
        load_frames(frames_root, ["S1", "S7"], progress=False)
    bad_joints = _pose2d(tmp_path / "pose2d_15.pt", num_joints=15)
    with pytest.raises(ValueError, match="pose2d_15.pt: the checkpoint predicts 15 joints but param model.num_joints is 16"):
        init_from_2d(bad_joints, TINY_MODEL)
    with pytest.raises(ValueError, match="pose2d.pt: the 2D network has input_size 32 but param model.input_size is 96"):
        init_from_2d(pose2d, dataclasses.replace(TINY_MODEL, input_size=96))
    with pytest.raises(ValueError, match="pose2d.pt: not a 3D network"):
        load_pose3d(pose2d)
    with pytest.raises(ValueError, match="no valid pseudo-label.*min_views"):
        pseudo3d_targets(load_frames(frames_root, ["S1"], progress=False).keys, pseudo, min_views=5)
