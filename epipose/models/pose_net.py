"""The pose network: torchvision ResNet + deconvolutions (3 in the paper) + integral (soft-argmax) regression.

The head predicts ``J × D`` volumetric heatmaps (``D`` depth bins; ``D = 1`` for the 2D network).
A softmax over each joint's whole volume turns the logits into a probability volume whose
expectation gives the joint's position (Sun et al., "Integral human pose regression"):

* ``xy``  (B, J, 2): in pixels of the network input (OpenCV convention: pixel centres at
  integers, the input spans ``[-0.5, size - 0.5]``), the expectation of the 2D marginal,
  i.e. the volume integrated over the depth axis — the same for the 2D and the 3D network;
* ``z``   (B, J): expected depth in ``[-0.5, 0.5]`` (bin centres ``(k + 0.5) / D - 0.5``), the
  network's relative depth (``epipose.models.codec`` scales it by its depth range); 0 when ``D = 1``;
* ``conf`` (B, J) in [0, 1]: the probability mass of the 2D marginal within ``conf_radius``
  heatmap cells (Chebyshev distance) of the predicted position — 1 for a sharp peak, small
  for a diffuse or multi-modal heatmap.

Nothing is downloaded: ``pretrained`` is a local torchvision ResNet state-dict file or None.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from epipose import skeleton
from epipose.models import heatmap_codec
from epipose.io import first_line, read_model_file
from epipose.params import ParamError, from_dict, in_range, load_value, read_params

log = logging.getLogger(__name__)

BACKBONE_CHANNELS = {18: 512, 34: 512, 50: 2048}   # out of layer4; each earlier stage has half
BACKBONE_STRIDE = 32                                 # with all four stages; 16 with three
# ImageNet statistics, RGB, for inputs in [0, 1] (torchvision's backbones expect them).
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelParams:
    """Section ``model`` of params.yaml: the architecture shared by the 2D and the 3D network."""

    backbone: Literal[18, 34, 50] = 18
    pretrained: str | None = None          # local torchvision ResNet weights (.pth), or none
    input_size: int = in_range(32, 1024, default=96)
    backbone_stages: int = in_range(3, 4, default=3)   # ResNet stages used: 4 (stride 32, the paper) or 3 (stride 16, no layer4)
    deconv_layers: int = in_range(1, 4, default=2)     # each doubles the resolution (the paper: 3)
    deconv_channels: int = in_range(8, 1024, default=128)
    depth_bins: int = in_range(1, 256, default=64)   # the 3D network's; the 2D network uses 1
    num_joints: int = in_range(1, 64, default=skeleton.NUM_JOINTS)


def load_model_params(path: str | Path = "params.yaml", with_depth_bins: bool = False) -> ModelParams:
    """Section ``model``, reading (and recording, for dvc.yaml's params lists) only the keys used:
    ``depth_bins`` is the 3D network's, so the 2D stages leave it out (it gets its default)."""
    section = read_params(path).get("model")
    if not isinstance(section, dict):
        raise ParamError(f"param model: section missing from {path}")
    names = [f.name for f in dataclasses.fields(ModelParams)]
    unknown = sorted(set(section) - set(names))
    if unknown:
        raise ParamError(f"param model.{unknown[0]}: unknown key (known: {sorted(names)})")
    wanted = [n for n in names if with_depth_bins or n != "depth_bins"]
    return from_dict(ModelParams, {n: load_value("model", n, Any, path) for n in wanted}, "model",
                     optional=set(names) - set(wanted))


@dataclass(frozen=True)
class PoseNetConfig:
    """Everything needed to rebuild a network; stored in its checkpoints."""

    backbone: int = 18
    num_joints: int = skeleton.NUM_JOINTS
    depth_bins: int = 1
    deconv_channels: int = 256
    deconv_layers: int = 3
    backbone_stages: int = 4
    deconv_kernel: int = 4
    input_size: int = 256
    conf_radius: float = 2.0
    head: Literal["integral", "heatmap"] = "integral"   # heatmap: the 2D network's Simple Baselines head (D = 1;
    #                                                  ``heatmap_codec``: argmax + quarter shift, conf = the peak)
    grid: Literal["centre", "corner"] = "centre"   # where heatmap cell k and depth bin k lie (``soft_argmax``):
    #   centre: cell k covers input pixels [k·s − ½, (k+1)·s − ½], bin k at (k + ½)/D − ½ (this project's);
    #   corner: cell k at input pixel k·s, bin k at k/D − ½ (EpipolarPose's released models, ``seed_import``)

    @property
    def backbone_stride(self) -> int:
        return BACKBONE_STRIDE // 2 ** (4 - self.backbone_stages)

    @property
    def backbone_channels(self) -> int:
        return BACKBONE_CHANNELS[self.backbone] // 2 ** (4 - self.backbone_stages)

    @property
    def heatmap_size(self) -> int:
        return self.input_size // self.backbone_stride * 2 ** self.deconv_layers

    @property
    def stride(self) -> float:
        """Input pixels per heatmap cell."""
        return self.input_size / self.heatmap_size

    @classmethod
    def from_params(cls, p: ModelParams, depth_bins: int = 1, **overrides) -> "PoseNetConfig":
        return cls(backbone=p.backbone, num_joints=p.num_joints, depth_bins=depth_bins,
                   deconv_channels=p.deconv_channels, deconv_layers=p.deconv_layers,
                   backbone_stages=p.backbone_stages, input_size=p.input_size, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, default in (("grid", "centre"), ("head", "integral")):
            if d[key] == default:         # as before the key existed: the same files and training fingerprints
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PoseNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _check_config(cfg: PoseNetConfig) -> None:
    if cfg.backbone not in BACKBONE_CHANNELS:
        raise ValueError(f"backbone depth {cfg.backbone} not supported (choose from {sorted(BACKBONE_CHANNELS)})")
    if cfg.backbone_stages not in (3, 4):
        raise ValueError(f"backbone_stages {cfg.backbone_stages} not supported (3 or 4)")
    if cfg.input_size % cfg.backbone_stride:
        raise ValueError(f"input size {cfg.input_size} must be a multiple of {cfg.backbone_stride} "
                         f"(the backbone's stride with {cfg.backbone_stages} stages)")
    if cfg.head == "heatmap" and cfg.depth_bins != 1:
        raise ValueError(f"the heatmap head is a 2D network's (1 depth bin, not {cfg.depth_bins})")
    if cfg.deconv_kernel not in (2, 3, 4):
        raise ValueError(f"deconvolution kernel {cfg.deconv_kernel} not supported (2, 3 or 4)")


def _deconv_padding(kernel: int) -> tuple[int, int]:
    # (padding, output_padding) so that each layer exactly doubles the resolution.
    return {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]


def soft_argmax(logits: torch.Tensor, conf_radius: float = 2.0, grid: str = "centre"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integral regression over volumetric logits (B, J, D, H, W).

    Returns ``xy`` (B, J, 2) in heatmap cells (cell centres at integers), ``z`` (B, J) in
    ``[-0.5, 0.5]`` (bin k at (k + ½)/D − ½; ``grid: corner``: k/D − ½) and ``conf`` (B, J) in [0, 1].
    Computed in float32 whatever the input dtype.
    """
    b, j, d, h, w = logits.shape
    prob = F.softmax(logits.float().reshape(b, j, -1), dim=-1).reshape(b, j, d, h, w)
    p2d = prob.sum(dim=2)                                   # (B, J, H, W): integral over depth
    px, py = p2d.sum(dim=2), p2d.sum(dim=3)                  # marginals (B, J, W), (B, J, H)
    gx = torch.arange(w, device=logits.device, dtype=torch.float32)
    gy = torch.arange(h, device=logits.device, dtype=torch.float32)
    x = (px * gx).sum(-1)
    y = (py * gy).sum(-1)
    if d > 1:
        pz = prob.sum(dim=(3, 4))
        gz = (torch.arange(d, device=logits.device, dtype=torch.float32) + (0.5 if grid == "centre" else 0.0)) / d - 0.5
        z = (pz * gz).sum(-1)
    else:
        z = torch.zeros_like(x)
    with torch.no_grad():
        near_x = ((gx - x[..., None]).abs() <= conf_radius).float()     # (B, J, W)
        near_y = ((gy - y[..., None]).abs() <= conf_radius).float()     # (B, J, H)
        conf = torch.einsum("bjhw,bjh,bjw->bj", p2d, near_y, near_x).clamp_(0.0, 1.0)
    return torch.stack([x, y], dim=-1), z, conf


class PoseNet(nn.Module):
    """ResNet backbone → deconvolutions → 1×1 conv to J·D logits → soft-argmax.

    ``backbone_stages = 3`` stops the ResNet after layer3 (stride 16). On small inputs that is
    most of the speed: at 96 px layer4 runs on 3×3 maps, where a CPU's convolutions (its backward
    above all) are several times less efficient than on larger maps, and it holds 3/4 of the
    ResNet-18's weights.

    ``forward`` takes normalised RGB images (B, 3, S, S) (see ``normalise``) and returns a dict
    ``{"xy", "z", "conf"}`` (module docstring); ``forward(x, return_logits=True)`` adds
    ``"logits"`` (B, J, D, H, W).
    """

    def __init__(self, config: PoseNetConfig, pretrained: str | Path | None = None):
        super().__init__()
        _check_config(config)
        self.config = config
        resnet = getattr(torchvision.models, f"resnet{config.backbone}")(weights=None)
        if pretrained is not None:
            load_backbone_weights(resnet, pretrained)
        stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4][: config.backbone_stages]
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, *stages)
        layers: list[nn.Module] = []
        c_in = config.backbone_channels
        pad, out_pad = _deconv_padding(config.deconv_kernel)
        for _ in range(config.deconv_layers):
            layers += [
                nn.ConvTranspose2d(c_in, config.deconv_channels, config.deconv_kernel, stride=2, padding=pad,
                                   output_padding=out_pad, bias=False),
                nn.BatchNorm2d(config.deconv_channels),
                nn.ReLU(inplace=True),
            ]
            c_in = config.deconv_channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(c_in, config.num_joints * config.depth_bins, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        # As Simple Baselines / Integral regression: small normal weights for the head.
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, images: torch.Tensor, return_logits: bool = False) -> dict[str, torch.Tensor]:
        cfg = self.config
        feats = self.deconv(self.backbone(images))
        logits = self.final(feats)
        b, _, h, w = logits.shape
        logits = logits.reshape(b, cfg.num_joints, cfg.depth_bins, h, w)
        if cfg.head == "heatmap":
            xy, conf = heatmap_codec.decode(logits[:, :, 0])
            z = torch.zeros_like(conf)
        else:
            xy, z, conf = soft_argmax(logits, cfg.conf_radius, cfg.grid)
        # Heatmap cells → input pixels (cell k covers input pixels [k·s − ½, (k+1)·s − ½]; corner: at k·s).
        s = images.shape[-1] / w
        out = {"xy": xy * s + ((s - 1.0) / 2.0 if cfg.grid == "centre" else 0.0), "z": z, "conf": conf}
        if return_logits:
            out["logits"] = logits
        return out


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) → float, ImageNet-normalised (the network's input)."""
    mean = torch.tensor(MEAN_RGB, device=images_uint8.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD_RGB, device=images_uint8.device).view(1, 3, 1, 1) * 255.0
    return (images_uint8.float() - mean) / std


def load_backbone_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ResNet state dict (the classifier ``fc`` is ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained backbone weights not found: {path} (param model.pretrained; "
                                "nothing is downloaded — give a local torchvision ResNet .pth or null)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable torch state dict ({first_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = {k for k in resnet.state_dict() if not k.startswith("fc.")}
    missing, unexpected = own - set(state), set(state) - own
    if missing or unexpected:
        raise ValueError(f"{path}: not a weights file of this ResNet (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}); check param model.backbone")
    try:
        resnet.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{path}: shapes do not match this ResNet ({exc}); check param model.backbone") from None
    log.info("backbone initialised from %s", path)


def expand_depth(state: dict[str, torch.Tensor], config_2d: PoseNetConfig, depth_bins: int) -> dict[str, torch.Tensor]:
    """A 2D network's state dict → one for the same network with ``depth_bins`` depth bins.

    The final layer's weights are repeated over depth, so the 3D network starts with exactly
    the 2D network's 2D predictions (uniform over depth). Everything else is copied.
    """
    out = dict(state)
    for name in ("final.weight", "final.bias"):
        t = state[name].reshape(config_2d.num_joints, config_2d.depth_bins, *state[name].shape[1:])
        if config_2d.depth_bins != 1:
            t = t.mean(dim=1, keepdim=True)
        out[name] = t.expand(-1, depth_bins, *t.shape[2:]).reshape(config_2d.num_joints * depth_bins,
                                                                     *state[name].shape[1:]).clone()
    return out


# --- checkpoints of trained networks ----------------------------------------------------------
def save_pose_net(model: PoseNet, path: str | Path, meta: dict | None = None) -> None:
    """Write ``{"config", "state_dict", "joint_names", "meta"}`` atomically (weights in float32)."""
    from epipose.io import write_torch

    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    payload = {"config": model.config.to_dict(), "state_dict": state,
               "joint_names": list(skeleton.MPII_NAMES[: model.config.num_joints])
               if model.config.num_joints == skeleton.NUM_JOINTS else None,
               "meta": meta or {}}
    write_torch(payload, path)


def load_pose_net(path: str | Path, num_joints: int | None = None, map_location: str | torch.device = "cpu"
                  ) -> tuple[PoseNet, dict]:
    """Rebuild a network from ``save_pose_net``'s file; returns (model in eval mode, meta).

    ``num_joints``: the joint count the caller's params expect (``model.num_joints``); a
    checkpoint with another count is refused with an error naming both.
    """
    path = Path(path)
    payload = read_model_file(path, "model checkpoint", "pose network checkpoint", "the stage that writes it",
                              map_location)
    config = PoseNetConfig.from_dict(payload["config"])
    if num_joints is not None and config.num_joints != num_joints:
        raise ValueError(f"{path}: the checkpoint predicts {config.num_joints} joints but param "
                         f"model.num_joints is {num_joints}")
    model = PoseNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored config ({exc})") from None
    model.eval()
    return model, dict(payload.get("meta") or {})


def load_pose3d(path: str | Path, num_joints: int | None = None, map_location: str | torch.device = "cpu"
                ) -> tuple[PoseNet, dict]:
    """A trained 3D network (``save_pose_net`` file with ``depth_range_mm`` in its meta) → (model, meta)."""
    model, meta = load_pose_net(path, num_joints=num_joints, map_location=map_location)
    if model.config.depth_bins < 2 or "depth_range_mm" not in meta:
        raise ValueError(f"{path}: not a 3D network (depth bins {model.config.depth_bins}, meta keys {sorted(meta)}); "
                         "train it with the train_3d stage")
    return model, meta


@torch.no_grad()
def fuse_for_inference(model: PoseNet) -> PoseNet:
    """A copy of ``model`` for inference with every BatchNorm folded into the convolution before it
    (the backbone through torch.fx, the deconvolutions by hand): the same outputs (up to float
    rounding) with fewer, cheaper ops — BatchNorm runs unfused and in fp32 under bf16 autocast."""
    from torch.fx.experimental.optimization import fuse

    fused = copy.deepcopy(model).eval()
    fused.backbone = fuse(fused.backbone)
    layers = list(fused.deconv)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, nn.ConvTranspose2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            bn = layers[i + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                      m.output_padding, bias=True)
            conv.weight.copy_(m.weight * scale.view(1, -1, 1, 1))
            bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            out.append(conv)
            i += 2
        else:
            out.append(m)
            i += 1
    fused.deconv = nn.Sequential(*out)
    return fused


def count_flops(model: nn.Module, input_size: int, batch: int = 1) -> int:
    """Forward FLOPs (multiply-adds counted as 2) for ``batch`` images, by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, input_size, input_size, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


__all__ = [
    "ModelParams", "load_model_params", "PoseNetConfig", "PoseNet", "soft_argmax", "normalise", "load_backbone_weights",
    "expand_depth", "save_pose_net", "load_pose_net", "fuse_for_inference", "load_pose3d", "count_flops",
    "MEAN_RGB", "STD_RGB",
]
