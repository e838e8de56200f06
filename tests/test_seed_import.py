"""EpipolarPose's released networks imported (``epipose.models.seed_import``). The files cannot be
downloaded here, so the seed's network is rebuilt in this test as its code defines it
(``lib/models/pose3d_resnet.py``: names, layers, shapes; saved as a ``DataParallel`` state dict) and its
outputs decoded as its ``integral_loss.py`` does; the imported network must hold every tensor and give
the same joints, coordinates and depths."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from epipose.models.pose_net import load_pose_net
from epipose.models.seed_import import H36M17_TO_MPII, import_seed
from epipose.predict_options import crop_convention, gt_convention


class SeedPoseResNet(nn.Module):
    """The seed's PoseResNet: torchvision ResNet stages, 3 × (ConvTranspose2d k4 s2 p1 without bias, BN, ReLU),
    a 1×1 ``final_layer`` of joints × 64 depth bins (joint-major)."""

    def __init__(self, depth: int, joints: int, channels: int = 256):
        super().__init__()
        r = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4
        c, layers = (2048 if depth >= 50 else 512), []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1, output_padding=0, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, joints * 64, kernel_size=1, padding=0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.final_layer(self.deconv_layers(self.layer4(self.layer3(self.layer2(self.layer1(x))))))


def seed_decode(logits: torch.Tensor, joints: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's softmax_integral_tensor + get_joint_location_result: (u, v) in input pixels, z relative."""
    n, h = logits.shape[0], logits.shape[-1]
    p = F.softmax(logits.reshape(n, joints, -1), dim=-1).reshape(n, joints, 64, h, h)     # (z, y, x)
    grid = torch.arange(h, dtype=torch.float32)
    x, y = (p.sum((2, 3)) * grid).sum(-1), (p.sum((2, 4)) * grid).sum(-1)
    z = (p.sum((3, 4)) * torch.arange(64, dtype=torch.float32)).sum(-1)
    return torch.stack([(x / h - 0.5 + 0.5) * size, (y / h - 0.5 + 0.5) * size], -1), z / 64 - 0.5


def seed_file(tmp_path, depth: int, joints: int, seed: int = 0):
    torch.manual_seed(seed)
    net = SeedPoseResNet(depth, joints)
    with torch.no_grad():
        nn.init.normal_(net.final_layer.weight, std=3.0)            # heatmaps with structure, not flat
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"r{depth}_{joints}.pth.tar"
    torch.save(nn.DataParallel(net).state_dict(), path)            # keys "module.<name>", as the released files
    return net.eval(), path


@pytest.mark.parametrize("depth, keys", [(18, 140), (34, 236), (50, 338)])
@pytest.mark.parametrize("joints", [16, 17])
def test_every_tensor_of_the_seeds_layout_lands_in_the_network(tmp_path, depth, keys, joints):
    seed, path = seed_file(tmp_path, depth, joints)
    assert len(seed.state_dict()) == keys                          # the layout the seed's code defines
    model, meta = import_seed(path, "pose3d")
    ours, theirs = model.state_dict(), seed.state_dict()
    assert len(ours) == keys and model.config.backbone == depth and model.config.depth_bins == 64
    assert torch.equal(ours["backbone.6.1.conv1.weight"], theirs["layer3.1.conv1.weight"])
    assert torch.equal(ours["deconv.3.weight"], theirs["deconv_layers.3.weight"])
    rows = theirs["final_layer.weight"].reshape(joints, 64, -1)
    order = H36M17_TO_MPII if joints == 17 else list(range(16))
    assert torch.equal(ours["final.weight"].reshape(16, 64, -1), rows[order])
    assert meta["depth_range_mm"] == 2000.0 and meta["seed_joints"] == joints


def test_the_imported_network_predicts_what_the_seed_decodes(tmp_path):
    """Joints reordered (Human3.6M's 17 → MPII's 16), pixels at k × stride, depth bins at k / 64 − ½."""
    seed, path = seed_file(tmp_path, 18, 17)
    model, _ = import_seed(path, "pose3d")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        uv, z = seed_decode(seed(x), 17, 64)
        out = model(x)
    assert torch.allclose(out["xy"], uv[:, H36M17_TO_MPII], atol=1e-4)
    assert torch.allclose(out["z"], z[:, H36M17_TO_MPII], atol=1e-6)
    # the joints differ by far more than the tolerance (a wrong order would show), and cell centres instead of
    # corners would move every joint by 1.5 px (a 4-px stride) and every depth by 1/128
    assert (uv - uv.mean(1, keepdim=True)).abs().max() > 0.5 and (z - z.mean(1, keepdim=True)).abs().max() > 0.01


def test_a_file_of_another_layout_is_refused_naming_what_differs(tmp_path):
    _, path = seed_file(tmp_path, 18, 16)
    state = torch.load(path, weights_only=True)
    del state["module.layer2.0.downsample.0.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut.pth: not the layout of EpipolarPose's ResNet-18 \(missing "
                                         r"\['backbone.5.0.downsample.0.weight'\]"):
        import_seed(tmp_path / "cut.pth", "pose3d")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not an EpipolarPose network"):
        import_seed(tmp_path / "other.pth", "pose2d")
    state = torch.load(path, weights_only=True)
    state["module.final_layer.weight"] = state["module.final_layer.weight"][: 15 * 64]
    state["module.final_layer.bias"] = state["module.final_layer.bias"][: 15 * 64]
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "j15.pth")      # a training checkpoint's layout
    with pytest.raises(ValueError, match="predicts 15 joints"):
        import_seed(tmp_path / "j15.pth", "pose3d")


def test_the_command_writes_a_network_evaluate_and_predict_read(tmp_path):
    _, path = seed_file(tmp_path, 18, 16)
    out = tmp_path / "models" / "seed_pose3d.pt"
    proc = subprocess.run([sys.executable, "-m", "epipose", "import-seed", str(path), "--as", "pose3d",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(out), proc.stderr
    model, meta = load_pose_net(out, num_joints=16)
    assert model.config.grid == "corner" and model.config.input_size == 256
    assert meta["crop"]["boxes"] == "gt" and crop_convention(meta)[0] == gt_convention(2000.0)
    assert meta["subjects"] == ["S1", "S5", "S6", "S7", "S8"]       # evaluate refuses them as test subjects
    bad = subprocess.run([sys.executable, "-m", "epipose", "import-seed", str(tmp_path / "none.pth"), "--as", "pose3d",
                          "--out", str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "none.pth" in bad.stderr
