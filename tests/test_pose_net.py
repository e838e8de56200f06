import pytest
import torch
import torchvision
from torch import nn

from epipose.models.pose_net import (PoseNet, PoseNetConfig, count_flops, expand_depth, fuse_for_inference,
                                     load_pose_net, save_pose_net, soft_argmax)


def _peaked(b, j, d, h, w, peaks, height=30.0):
    logits = torch.zeros(b, j, d, h, w)
    for (bi, ji, k, y, x) in peaks:
        logits[bi, ji, k, y, x] = height
    return logits


def test_soft_argmax_recovers_2d_peak():
    logits = _peaked(2, 3, 1, 16, 20, [(0, 0, 0, 7, 5), (0, 1, 0, 0, 19), (1, 2, 0, 15, 0)])
    xy, z, conf = soft_argmax(logits)
    assert xy[0, 0].tolist() == pytest.approx([5.0, 7.0], abs=1e-3)
    assert xy[0, 1].tolist() == pytest.approx([19.0, 0.0], abs=1e-3)
    assert xy[1, 2].tolist() == pytest.approx([0.0, 15.0], abs=1e-3)
    assert z.abs().max() == 0
    assert conf[0, 0] > 0.99 and conf[0, 2] < 0.1          # sharp peak vs a flat (uniform) heatmap
    assert ((conf >= 0) & (conf <= 1)).all()
    # Two equal peaks: the expectation lies between them (sub-pixel).
    two = _peaked(1, 1, 1, 9, 9, [(0, 0, 0, 4, 2), (0, 0, 0, 4, 3)])
    assert soft_argmax(two)[0][0, 0].tolist() == pytest.approx([2.5, 4.0], abs=1e-3)


def test_soft_argmax_recovers_3d_peak():
    d = 8
    logits = _peaked(1, 2, d, 12, 12, [(0, 0, 6, 3, 9), (0, 1, 0, 11, 2)])
    xy, z, conf = soft_argmax(logits)
    assert xy[0, 0].tolist() == pytest.approx([9.0, 3.0], abs=1e-3)
    assert z[0, 0].item() == pytest.approx((6 + 0.5) / d - 0.5, abs=1e-4)
    assert z[0, 1].item() == pytest.approx((0 + 0.5) / d - 0.5, abs=1e-4)
    assert conf.min() > 0.99
    # The 2D result is the integral over depth: spreading a peak over depth leaves x, y unchanged.
    spread = torch.zeros(1, 1, d, 12, 12)
    spread[0, 0, :, 3, 9] = 30.0
    xy2, z2, _ = soft_argmax(spread)
    assert xy2[0, 0].tolist() == pytest.approx([9.0, 3.0], abs=1e-3) and abs(z2.item()) < 1e-5


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_output_shapes_every_backbone(depth):
    cfg = PoseNetConfig(backbone=depth, num_joints=16, depth_bins=4, deconv_channels=16, input_size=64)
    model = PoseNet(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), return_logits=True)
    assert out["xy"].shape == (2, 16, 2) and out["z"].shape == (2, 16) and out["conf"].shape == (2, 16)
    assert out["logits"].shape == (2, 16, 4, 16, 16) and cfg.heatmap_size == 16
    assert ((out["xy"] >= -0.5) & (out["xy"] <= 63.5)).all()
    assert ((out["conf"] >= 0) & (out["conf"] <= 1)).all()
    assert ((out["z"] >= -0.5) & (out["z"] <= 0.5)).all()


@pytest.mark.parametrize("depth,stages,deconvs,channels,heat", [(18, 3, 2, 256, 16), (18, 3, 3, 256, 32),
                                                               (50, 3, 2, 1024, 16), (34, 4, 2, 512, 8)])
def test_backbone_stages_and_deconv_layers(depth, stages, deconvs, channels, heat):
    cfg = PoseNetConfig(backbone=depth, num_joints=5, depth_bins=2, deconv_channels=8, input_size=64,
                        backbone_stages=stages, deconv_layers=deconvs)
    model = PoseNet(cfg).eval()
    assert cfg.backbone_channels == channels and cfg.heatmap_size == heat
    assert len(model.backbone) == 4 + stages           # stem (conv, bn, relu, pool) + the ResNet stages used
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), return_logits=True)
    assert out["logits"].shape == (1, 5, 2, heat, heat) and out["xy"].shape == (1, 5, 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        PoseNet(PoseNetConfig(backbone=18, input_size=72, backbone_stages=3))


def test_old_checkpoints_without_the_new_keys_load_as_four_stages():
    cfg = PoseNetConfig.from_dict({"backbone": 18, "num_joints": 16, "depth_bins": 1, "deconv_channels": 8,
                                   "deconv_layers": 3, "deconv_kernel": 4, "input_size": 64, "conf_radius": 2.0})
    assert cfg.backbone_stages == 4 and cfg.heatmap_size == 16


class _FixedLogits(nn.Module):
    """Stands in for the final conv: a peak at heatmap cell (row 3, col 5) for every joint."""

    def __init__(self, j):
        super().__init__()
        self.j = j

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.j, x.shape[2], x.shape[3])
        out[:, :, 3, 5] = 40.0
        return out


def test_heatmap_cells_map_to_input_pixels():
    cfg = PoseNetConfig(backbone=18, num_joints=2, deconv_channels=8, input_size=64)
    model = PoseNet(cfg).eval()
    model.final = _FixedLogits(2)
    with torch.no_grad():
        xy = model(torch.zeros(1, 3, 64, 64))["xy"]
    s = cfg.stride                       # 4 input px per cell: cell k covers pixels [4k - 0.5, 4k + 3.5]
    assert xy[0, 0].tolist() == pytest.approx([5 * s + (s - 1) / 2, 3 * s + (s - 1) / 2], abs=1e-3)


def test_depth_expansion_keeps_2d_predictions():
    torch.manual_seed(0)
    cfg2 = PoseNetConfig(backbone=18, num_joints=16, depth_bins=1, deconv_channels=16, input_size=64)
    net2 = PoseNet(cfg2).eval()
    nn.init.normal_(net2.final.weight, std=0.3)          # a non-trivial 2D head
    cfg3 = PoseNetConfig(**{**cfg2.to_dict(), "depth_bins": 8})
    net3 = PoseNet(cfg3).eval()
    net3.load_state_dict(expand_depth(net2.state_dict(), cfg2, 8))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = net2(x), net3(x)
    assert torch.allclose(a["xy"], b["xy"], atol=1e-4)
    assert b["z"].abs().max() < 1e-5                       # uniform over depth: expected depth 0


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = PoseNetConfig(backbone=18, num_joints=16, deconv_channels=8, input_size=64)
    model = PoseNet(cfg).eval()
    save_pose_net(model, tmp_path / "m.pt", meta={"pckh@0.5": 50.0})
    loaded, meta = load_pose_net(tmp_path / "m.pt", num_joints=16)
    assert loaded.config == cfg and meta == {"pckh@0.5": 50.0}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["xy"], loaded(x)["xy"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pose_net(tmp_path / "missing.pt")
    save_pose_net(PoseNet(PoseNetConfig(num_joints=17, deconv_channels=8, input_size=64)), tmp_path / "j17.pt")
    with pytest.raises(ValueError, match=r"17 joints.*model.num_joints is 16"):
        load_pose_net(tmp_path / "j17.pt", num_joints=16)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_pose_net(tmp_path / "junk.pt")


def test_local_pretrained_backbone(tmp_path):
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=64), pretrained=tmp_path / "resnet18.pth")
    assert torch.equal(model.backbone[0].weight, resnet.conv1.weight)
    assert torch.equal(model.backbone[7][1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        PoseNet(PoseNetConfig(input_size=64), pretrained=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="model.backbone"):
        PoseNet(PoseNetConfig(backbone=50, deconv_channels=8, input_size=64), pretrained=tmp_path / "resnet18.pth")


def test_flops_grow_with_input_area():
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=32, input_size=64))
    f64, f128 = count_flops(model, 64), count_flops(model, 128)
    assert 1e8 < f64 < 1e10 and f128 / f64 == pytest.approx(4.0, rel=0.05)


def test_bad_config():
    with pytest.raises(ValueError, match="multiple of 32"):
        PoseNet(PoseNetConfig(input_size=100))
    with pytest.raises(ValueError, match="backbone depth 101"):
        PoseNet(PoseNetConfig(backbone=101))


def test_fused_inference_network_matches():
    torch.manual_seed(0)
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=16, input_size=64))
    nn.init.normal_(model.final.weight, std=0.3)
    for m in model.modules():                      # non-trivial BatchNorm statistics and affine terms
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())         # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), fused(x)
    assert torch.allclose(a["xy"], b["xy"], atol=1e-3) and torch.allclose(a["conf"], b["conf"], atol=1e-4)
