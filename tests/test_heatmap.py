"""The 2D heatmap head (Simple Baselines; ``epipose.models.heatmap_codec``, ``pretrain_2d.head: heatmap``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epipose import skeleton
from epipose.models import heatmap_codec
from epipose.models.pose_net import ModelParams, PoseNetConfig, load_pose_net, save_pose_net
from epipose.pipeline.pretrain_2d import Pretrain2DParams
from epipose.pipeline.train_3d import init_from_2d
from train_fixture import overfit_pose_net


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
    before, after, losses, result = overfit_pose_net(tmp_path, lr=1e-3, head="heatmap")
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
    assert content_hash(Pretrain2DParams(head="integral")) != content_hash(Pretrain2DParams(head="heatmap"))
    assert content_hash(Pretrain2DParams()) != content_hash(Pretrain2DParams(heatmap_swap_tolerance=0.3))


def test_the_left_right_tolerant_heatmap_loss_forgives_a_swap_by_its_weight():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(8, 16, 2, generator=g) * 80 + 8
    visible = torch.rand(8, 16, generator=g) > 0.1
    target, weight = heatmap_codec.encode(xy, visible, 24, 4.0, 1.0)
    perm = list(skeleton.FLIP_PERM)
    swapped_pred = heatmap_codec.encode(xy[:, perm], visible[:, perm], 24, 4.0, 1.0)[0]   # every pair named the other way
    straight = heatmap_codec.loss(swapped_pred, target, weight)
    assert straight > 0
    tolerant = heatmap_codec.loss(swapped_pred, target, weight, perm, 0.3)
    assert tolerant == pytest.approx(0.7 * straight.item(), rel=1e-5)
    assert heatmap_codec.loss(target, target, weight, perm, 0.3) == 0            # a right answer costs nothing
    assert heatmap_codec.loss(swapped_pred, target, weight, perm, 0.0) == straight   # 0: the plain MSE, same bits
    blurred = 0.5 * (target + swapped_pred)                                      # each joint spread over both sides
    assert heatmap_codec.loss(blurred, target, weight, perm, 0.3) == pytest.approx(
        heatmap_codec.loss(blurred, target, weight).item(), rel=1e-5)           # no discount: both readings as bad
