"""The 2D heatmap head (Simple Baselines; ``epipose.models.heatmap_codec``, ``pretrain_2d.head: heatmap``)."""

from __future__ import annotations

import numpy as np
import torch

from epipose.data.transforms import AugmentParams
from epipose.models import heatmap_codec
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig, load_pose_net, save_pose_net
from epipose.pipeline.pretrain_2d import Loss2D, Pretrain2DParams, build_cache, evaluate_pckh
from epipose.pipeline.train_3d import init_from_2d
from epipose.train import TensorSet, fit
from mpii_fixture import make_mpii

NO_AUG = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)


def test_targets_decode_to_their_joints_within_a_quarter_cell():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 16, 2, generator=g) * 80 + 8                 # input px; 96 px, stride 4: 24 cells
    visible = torch.rand(64, 16, generator=g) > 0.2
    target, weight = heatmap_codec.encode(xy, visible, 24, 4.0, 1.0)
    cells, conf = heatmap_codec.decode(target)
    err = (cells - heatmap_codec.to_cells(xy, 4.0)).abs()
    assert err.max() <= 0.25 + 1e-6 and err.mean() < 0.15             # argmax alone: up to 0.5, mean 0.25
    assert torch.equal(weight.bool(), visible) and (conf > 0.6).all()
    assert heatmap_codec.loss(target, target, weight) == 0
    outside = heatmap_codec.encode(torch.tensor([[[-40.0, 10.0]]]), torch.ones(1, 1), 24, 4.0, 1.0)[1]
    assert outside.item() == 0                                         # a joint off the heatmap trains nothing


def test_a_heatmap_network_learns_a_handful_of_images_and_starts_a_3d_network(tmp_path):
    root = make_mpii(tmp_path / "mpii", n_train=8, n_valid=1, seed=2)
    p = Pretrain2DParams(epochs=1, batch_size=8, lr=1e-3, schedule="step", lr_steps=[], warmup_steps=0, amp="none",
                         bn_recalib_batches=2, flip_test=False, head="heatmap", heatmap_sigma=1.0)
    cache = build_cache(root, "train", 64, p)
    torch.manual_seed(0)
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=16, input_size=64, head="heatmap"))
    before = evaluate_pckh(model, cache, flip_test=False)
    data = TensorSet(images=cache.images.repeat(40, 1, 1, 1), joints=cache.joints.repeat(40, 1, 1),
                     visible=cache.visible.repeat(40, 1))
    losses = []

    def loss_fn(m, batch, gen):
        loss, logs = Loss2D(cache.src_box, 64, NO_AUG, head="heatmap", heatmap_sigma=1.0)(m, batch, gen)
        losses.append(loss.item())
        return loss, logs

    result = fit(model, data, loss_fn, p, tmp_path / "ck", progress=False)
    after = evaluate_pckh(result.model, cache, flip_test=False)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert after["pckh@0.5"] > before["pckh@0.5"] + 20
    save_pose_net(result.model, tmp_path / "pose2d.pt")
    loaded, _ = load_pose_net(tmp_path / "pose2d.pt")
    assert loaded.config.head == "heatmap"
    net3d = init_from_2d(tmp_path / "pose2d.pt", ModelParams(input_size=64, backbone_stages=4, deconv_layers=3,
                                                             deconv_channels=16, depth_bins=8))
    assert net3d.config.head == "integral" and net3d.final.weight.shape[0] == 16 * 8


def test_the_integral_head_keeps_its_files_and_fingerprints():
    from epipose.io import content_hash

    assert "head" not in PoseNetConfig().to_dict() and PoseNetConfig(head="heatmap").to_dict()["head"] == "heatmap"
    assert content_hash(Pretrain2DParams()) != content_hash(Pretrain2DParams(head="heatmap"))
