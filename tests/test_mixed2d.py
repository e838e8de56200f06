"""Mixed 2D supervision in train_3d (``train_3d.mpii_share``, Integral regression's MPII half-batches):
the stills train x, y only — never depth —, their sampling is seeded and split over processes, share 0
keeps today's batches and fingerprints, and the stage reports the stills it used."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from epipose.compute import ComputeParams, setup_runtime
from epipose.data.frames import load_frames
from epipose.data.transforms import AugmentParams
from epipose.io import content_hash
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig
from epipose.params import ParamError
from epipose.pipeline.train_3d import (Loss3D, Train3DConfig, Train3DParams, Train3DPaths, load_params,
                                       mpii_per_batch, run, smooth_l1_3d, smooth_l1_mixed, training_set)
from epipose.train import EpochBatchSampler, MixedBatchSampler, MixedSet, TensorSet, batch_sampler
from mpii_fixture import make_mpii
from pose2d_fixture import tiny_pose_net
from pose3d_fixture import gt_table, make_root, small_rig, write_table

NO_AUG = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)
TINY_MODEL = ModelParams(backbone=18, input_size=32, backbone_stages=4, deconv_layers=3, deconv_channels=8,
                         depth_bins=8)


# --- the loss --------------------------------------------------------------------------------------------
def test_a_mixed_batch_loss_equals_its_hand_computed_value():
    # Two samples, two joints, input 10 px, beta 0 (plain L1). Sample 0 is 3D, sample 1 a still whose
    # joint 1 is not visible. Terms (x/10, y/10, z): sample 0 joint 0: 0.1 + 0.2 + 0.3, joint 1:
    # 0.5 + 0 + 0.1; the still's joint 0: 0.3 + 0.4 (its depth 7 ≠ 0 not counted), joint 1: nothing.
    xy = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [100.0, 100.0]]])
    z = torch.tensor([[0.5, 0.0], [7.0, 7.0]])
    target = torch.tensor([[[0.0, 0.0, 0.2], [5.0, 0.0, -0.1]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    has_depth = torch.tensor([True, False])
    loss, logs = smooth_l1_mixed(xy, z, target, valid, has_depth, 10, 0.0)
    assert loss.item() == pytest.approx(1.9 / 8, abs=1e-7)                 # 8 coordinates counted
    assert logs["err_xy_px"].item() == pytest.approx((5**0.5 + 5.0) / 2, abs=1e-6)   # the 3D sample's joints
    assert logs["err_z"].item() == pytest.approx((0.3 + 0.1) / 2, abs=1e-7)
    assert logs["err_xy_mpii_px"].item() == pytest.approx(5.0, abs=1e-6)


def test_without_stills_the_mixed_loss_is_the_3d_loss():
    g = torch.Generator().manual_seed(0)
    xy, z = torch.rand(4, 16, 2, generator=g) * 32, torch.rand(4, 16, generator=g) - 0.5
    target = torch.cat([torch.rand(4, 16, 2, generator=g) * 32, torch.rand(4, 16, 1, generator=g) - 0.5], -1)
    valid = torch.rand(4, 16, generator=g) < 0.8
    mixed, mixed_logs = smooth_l1_mixed(xy, z, target, valid, torch.ones(4, dtype=torch.bool), 32, 0.02)
    plain, plain_logs = smooth_l1_3d(xy, z, target, valid, 32, 0.02)
    torch.testing.assert_close(mixed, plain)
    for k in ("err_xy_px", "err_z"):
        torch.testing.assert_close(mixed_logs[k], plain_logs[k])


class Recording(nn.Module):
    """A network whose outputs keep their gradients (the loss's gradient w.r.t. them is read after backward)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.out = net, None

    def forward(self, x):
        self.out = self.net(x)
        for v in self.out.values():
            if v.requires_grad:
                v.retain_grad()
        return self.out


@pytest.mark.parametrize("aug", [NO_AUG, AugmentParams()], ids=["plain", "augmented"])
def test_a_still_never_contributes_a_depth_gradient(aug):
    """Through Loss3D (augmentation, the network): the gradient w.r.t. the network's depth output is
    exactly zero on every still, not on the 3D samples; the stills' x, y get a gradient."""
    torch.manual_seed(0)
    net = Recording(PoseNet(PoseNetConfig(backbone=18, input_size=32, backbone_stages=4, deconv_layers=3,
                                          deconv_channels=8, depth_bins=8)))
    g = torch.Generator().manual_seed(1)
    b, j = 6, 16
    images = torch.randint(0, 256, (b, 3, 48, 48), dtype=torch.uint8, generator=g)
    target = torch.cat([8 + torch.rand(b, j, 2, generator=g) * 32, torch.rand(b, j, 1, generator=g) - 0.5], -1)
    target[3:, :, 2] = 0.0                                  # the stills: no depth
    valid = torch.ones(b, j, dtype=torch.bool)
    valid[4, :5] = False                                    # not visible
    has_depth = torch.tensor([True, True, True, False, False, False])
    loss, _ = Loss3D(48.0, 32, aug, 0.02, channels_last=False)(
        net, {"images": images, "target": target, "valid": valid, "has_depth": has_depth}, torch.Generator().manual_seed(2))
    loss.backward()
    gz, gxy = net.out["z"].grad, net.out["xy"].grad
    assert torch.count_nonzero(gz[3:]) == 0                 # exactly 0.0, not small
    assert (gz[:3].abs().sum(1) > 0).all()
    assert (gxy[3:].abs().sum((1, 2)) > 0).all()
    assert torch.count_nonzero(gxy[4, :5]) == 0 or not aug.flip   # invisible joints: no gradient (unflipped)


def test_a_batch_of_stills_only_gives_no_depth_gradient_at_all():
    xy = torch.rand(3, 16, 2, requires_grad=True)
    z = torch.rand(3, 16, requires_grad=True)
    target = torch.zeros(3, 16, 3)
    loss, logs = smooth_l1_mixed(xy * 32, z, target, torch.ones(3, 16, dtype=torch.bool),
                                 torch.zeros(3, dtype=torch.bool), 32, 0.02)
    loss.backward()
    assert torch.count_nonzero(z.grad) == 0 and torch.count_nonzero(xy.grad) == xy.numel()
    assert logs["err_z"].item() == 0.0 and logs["err_xy_px"].item() == 0.0      # no 3D sample: nothing measured


# --- the batches -------------------------------------------------------------------------------------------
def test_mixed_batches_are_seeded_split_over_ranks_and_cover_the_frames():
    n, n_extra, b, k = 40, 7, 8, 4
    batches = [list(MixedBatchSampler(n, n_extra, k, b, seed=3)) for _ in range(2)]
    assert batches[0] == batches[1] and len(batches[0]) == n // b          # seeded; the steps of share 0
    for batch in batches[0]:
        assert len(batch) == b and all(i < n for i in batch[: b - k]) and all(n <= i < n + n_extra for i in batch[b - k :])
    frames = [i for batch in batches[0] for i in batch[: b - k]]
    assert len(set(frames)) == len(frames)                                 # no frame twice within an epoch
    other = MixedBatchSampler(n, n_extra, k, b, seed=3)
    other.set_epoch(1)
    assert list(other) != batches[0]
    ranks = [list(MixedBatchSampler(n, n_extra, k, b, seed=3, rank=r, world_size=2)) for r in range(2)]
    for step, whole in enumerate(batches[0]):
        r0, r1 = ranks[0][step], ranks[1][step]
        assert len(r0) == len(r1) == b // 2 and sorted(r0 + r1) == sorted(whole)
        assert sum(i >= n for i in r0) == sum(i >= n for i in r1) == k // 2     # each rank its share of stills


def test_mixed_set_returns_each_index_from_its_part():
    a = TensorSet(x=torch.arange(5.0), has=torch.ones(5, dtype=torch.bool))
    b = TensorSet(x=torch.arange(100.0, 103.0), has=torch.zeros(3, dtype=torch.bool))
    got = MixedSet(a, b, 1).__getitems__([4, 6, 0, 5])
    assert got["x"].tolist() == [4.0, 101.0, 0.0, 100.0] and got["has"].tolist() == [True, False, True, False]


@pytest.fixture
def frames(tmp_path, real_rig):
    h36m, frames_root = make_root(tmp_path, small_rig(real_rig))
    return h36m, frames_root


def test_share_0_trains_on_exactly_todays_batches_and_fingerprint(frames):
    """At share 0: the frames alone (no has_depth key: the loss path of before), the sampler of before,
    and the params' hash as before the two new keys existed."""
    _, frames_root = frames
    cache = load_frames(frames_root, ["S1"], progress=False)
    uvd = np.random.default_rng(0).random((len(cache), 16, 3)).astype(np.float32)
    valid = np.ones((len(cache), 16), bool)
    p = Train3DParams(batch_size=4, mpii_share=0.0)
    dataset, signature, info = training_set(cache, uvd, valid, p, None, 1)
    assert isinstance(dataset, TensorSet) and set(dataset.tensors) == {"images", "target", "valid"}
    assert signature == {} and info == {}
    assert dataset.tensors["images"] is cache.images and np.array_equal(dataset.tensors["target"].numpy(), uvd)
    sampler = batch_sampler(dataset, 4, 0)
    assert type(sampler) is EpochBatchSampler and list(sampler) == list(EpochBatchSampler(len(cache), 4, 0))
    # the new params at the values that train as before they existed are left out of the fingerprint; any
    # other value — their defaults included — is in it (a changed default never resumes a stale checkpoint)
    new = {"mpii_share", "mpii_box_margin", "backbone_lr_factor", "gt_weight"}
    q = Train3DParams(batch_size=4, mpii_share=0.0, backbone_lr_factor=1.0)
    kept = [f for f in dataclasses.fields(q) if f.name not in new]
    before = dataclasses.make_dataclass("Train3DParams", [(f.name, f.type) for f in kept])
    assert content_hash(q) == content_hash(before(**{f.name: getattr(q, f.name) for f in kept}))
    assert content_hash(Train3DParams(batch_size=4)) != content_hash(q)
    assert content_hash(dataclasses.replace(q, backbone_lr_factor=0.3)) != content_hash(q)
    assert content_hash(dataclasses.replace(q, mpii_share=0.5)) != content_hash(q)


# --- the param ---------------------------------------------------------------------------------------------
def _params_with(tmp_path, **train_3d) -> str:
    params = yaml.safe_load(open("params.yaml"))
    params["train_3d"].update(train_3d)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.mark.parametrize("share, message", [
    (1.0, r"param train_3d\.mpii_share: 1\.0 of train_3d\.batch_size 16 is 16 MPII stills \(needs a share below 1"),
    (1.5, r"param train_3d\.mpii_share: 1\.5 is above the maximum 1\.0"),
    (-0.1, r"param train_3d\.mpii_share: -0\.1 is below the minimum 0\.0"),
    (0.02, r"param train_3d\.mpii_share: 0\.02 of train_3d\.batch_size 16 is 0 MPII stills"),
    (0.99, r"param train_3d\.mpii_share: 0\.99 of train_3d\.batch_size 16 is 16 MPII stills"),
])
def test_the_share_is_validated(tmp_path, share, message):
    with pytest.raises(ParamError, match=message) as err:
        load_params(_params_with(tmp_path, mpii_share=share))
    assert "\n" not in str(err.value)


def test_the_share_maps_to_stills_per_batch_and_splits_over_processes():
    assert mpii_per_batch(Train3DParams(batch_size=16, mpii_share=0.0)) == 0
    assert mpii_per_batch(Train3DParams(batch_size=16, mpii_share=0.5)) == 8
    assert mpii_per_batch(Train3DParams(batch_size=16, mpii_share=0.3)) == 5
    assert mpii_per_batch(Train3DParams(batch_size=16, mpii_share=0.5), nproc=2) == 8
    with pytest.raises(ParamError, match=r"param train_3d\.mpii_share: 5 stills \+ 11 frames per batch do not split "
                                         r"over compute\.nproc 2 processes"):
        mpii_per_batch(Train3DParams(batch_size=16, mpii_share=0.3), nproc=2)


# --- the stage -------------------------------------------------------------------------------------------
def _train(tmp_path, frames, mpii, share: float, name: str):
    h36m, frames_root = frames
    pseudo = tmp_path / "pseudo3d.parquet"
    if not pseudo.exists():
        write_table(gt_table(h36m, ("S1",), noise_mm=5.0), pseudo)
    pose2d = tmp_path / "pose2d.pt"
    if not pose2d.exists():
        tiny_pose_net(pose2d, 16, 32, backbone_stages=4, deconv_layers=3)
    p = Train3DParams(epochs=2, batch_size=8, amp="none", channels_last=False, subjects=["S1"], fit_frames=4,
                      eval_batch_size=16, log_every=1, warmup_steps=0, threads=2, pred_stride=4, mpii_share=share)
    config = Train3DConfig(ComputeParams(), TINY_MODEL, p, AugmentParams(), str(h36m), str(mpii))
    out = tmp_path / name
    paths = Train3DPaths(str(frames_root), str(pose2d), str(pseudo), str(out / "pose3d.pt"), str(out / "live"),
                         str(out / "ckpt"))
    return run(paths, config, setup_runtime(ComputeParams(), 2, progress=False)), out


@pytest.mark.slow
def test_train_3d_with_stills_runs_reports_them_and_is_deterministic(tmp_path, frames):
    mpii = make_mpii(tmp_path / "mpii", n_train=10, n_valid=2, image_size=96)
    mixed, out = _train(tmp_path, frames, mpii, 0.5, "a")
    n_frames = len(load_frames(frames[1], ["S1"], progress=False))
    steps = 2 * (n_frames // 8)
    assert {k: mixed.report[k] for k in ("mpii_share", "mpii_stills", "mpii_per_batch", "frames_per_batch",
                                         "mpii_samples_drawn")} == {
        "mpii_share": 0.5, "mpii_stills": 10, "mpii_per_batch": 4, "frames_per_batch": 4, "mpii_samples_drawn": 4 * steps}
    assert np.isfinite(mixed.report["final_train_loss"])
    logged = (out / "live/plots/metrics/train/err_xy_mpii_px.tsv").read_text().splitlines()
    assert len(logged) == 1 + steps
    again, out_b = _train(tmp_path, frames, mpii, 0.5, "b")
    a, b = torch.load(out / "pose3d.pt", weights_only=False), torch.load(out_b / "pose3d.pt", weights_only=False)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])   # same seed, same weights
    assert json.dumps(again.report, sort_keys=True) == json.dumps(mixed.report, sort_keys=True)
    plain, _ = _train(tmp_path, frames, mpii, 0.0, "c")
    assert not any(k.startswith(("mpii", "frames_per")) for k in plain.report)     # share 0: today's report
