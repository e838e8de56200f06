"""EpipolarPose's released networks (github.com/mkocabas/EpipolarPose, ``models/h36m/*.pth.tar`` and
``models/mpii/mpii_integral*.pth.tar``) as this project's network files, so ``evaluate`` and ``epipose
predict`` run the paper's own models.

The seed's ``PoseResNet`` (``lib/models/pose3d_resnet.py``) is this project's ``PoseNet`` under other
names: a torchvision ResNet (``conv1``, ``bn1``, ``layer1``–``layer4``) → ``backbone.0, 1, 4–7``; its
deconvolutions (``deconv_layers.0–8``: kernel 4, stride 2, no bias, BatchNorm, ReLU) → ``deconv.0–8``;
its 1×1 ``final_layer`` of J × 64 channels (joint-major, 64 depth bins, ``DEPTH_RES``) → ``final``. Its
files are the ``state_dict`` of a ``DataParallel`` model (keys prefixed ``module.``), or a training
checkpoint holding one under ``state_dict`` — both read. What differs is mapped, not assumed:

* **Joints.** The fully supervised Human3.6M models predict 17 joints in Human3.6M's order (Hip, RHip,
  RKnee, RFoot, LHip, LKnee, LFoot, Spine, Thorax, Neck/Nose, Head, LShoulder, LElbow, LWrist, RShoulder,
  RElbow, RWrist); the final layer's rows are reordered to the 16 MPII joints (``H36M17_TO_MPII``, the
  seed's ``H36M_TO_MPII_PERM``: Spine dropped — a joint's softmax covers its own channels only, so the
  others are unchanged). The self-supervised and MPII models already predict the 16 MPII joints.
* **Coordinates** (the seed's ``integral_loss.py``): heatmap cell k at input pixel k × stride and depth
  bin k at k / 64 − ½ (``PoseNetConfig.grid: corner``; this project's networks use cell centres), the
  depth relative to the root over a 2000-mm range (``meta.depth_range_mm``), 256-px input.
* **Crops**: the projection of a 2000-mm box around the pelvis (its ``prep_h36m.py``): ``frames.boxes: gt``
  with ``box_mm`` 2000, as the meta says (``predict_options.crop_convention``).
* **Input**: RGB, ImageNet mean and std on 0–255 values: the same as ``pose_net.normalise``.

The MPII 2D models also have 64 depth bins (their depth was never trained): imported as a 2D network
(``--as pose2d``) their 2D marginal is what ``infer_2d`` reads. The refiner (``refiner.pth.tar``, another
format) is not imported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch

from epipose import skeleton
from epipose.io import first_line
from epipose.models.pose_net import BACKBONE_CHANNELS, PoseNet, PoseNetConfig, save_pose_net

DEPTH_BINS = 64                    # the seed's DEPTH_RES
INPUT_SIZE = 256                   # the seed's IMAGE_SIZE
DEPTH_RANGE_MM = 2000.0            # its rect_3d_width: depth relative to the root over 2000 mm
TRAINING_SUBJECTS = ["S1", "S5", "S6", "S7", "S8"]    # the seed's Human3.6M training split
# The 17 Human3.6M joints → the 16 MPII joints (the seed's H36M_TO_MPII_PERM): MPII joint j is H36M joint [j].
H36M17_TO_MPII = [3, 2, 1, 4, 5, 6, 0, 8, 9, 10, 16, 15, 14, 11, 12, 13]
# Block counts per ResNet stage → depth (torchvision's, the seed's resnet_spec): basic blocks, bottlenecks.
RESNET_BLOCKS = {False: {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}, True: {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101,
                                                                     (3, 8, 36, 3): 152}}
RENAMES = [(r"^conv1\.", "backbone.0."), (r"^bn1\.", "backbone.1."), (r"^layer([1-4])\.", None),
           (r"^deconv_layers\.", "deconv."), (r"^final_layer\.", "final.")]


def read_seed_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The seed's file → its state dict without the ``module.`` prefix."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable torch file ({first_line(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "module.final_layer.weight" not in state and "final_layer.weight" not in state:
        raise ValueError(f"{path}: not an EpipolarPose network (no final_layer.weight among its keys)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _rename(key: str) -> str:
    for pattern, new in RENAMES:
        m = re.match(pattern, key)
        if m:
            return (f"backbone.{3 + int(m.group(1))}." if new is None else new) + key[m.end():]
    raise ValueError(f"key {key!r} is not part of EpipolarPose's PoseResNet")


def seed_config(state: dict[str, torch.Tensor]) -> tuple[PoseNetConfig, int]:
    """The network a seed state dict holds → (its config, the joints its final layer predicts)."""
    blocks = tuple(1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")) for i in range(1, 5))
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    depth = RESNET_BLOCKS[bottleneck].get(blocks)
    if depth is None or depth not in BACKBONE_CHANNELS:
        raise ValueError(f"a ResNet with blocks {blocks}{' (bottleneck)' if bottleneck else ''} is not one of "
                         f"ResNet-{'/'.join(map(str, sorted(BACKBONE_CHANNELS)))}")
    deconvs = sorted({int(k.split(".")[1]) for k in state if k.startswith("deconv_layers.") and k.endswith("weight")
                      and state[k].dim() == 4})
    channels, kernel = state["deconv_layers.0.weight"].shape[1], state["deconv_layers.0.weight"].shape[-1]
    out_channels = state["final_layer.weight"].shape[0]
    if out_channels % DEPTH_BINS:
        raise ValueError(f"final_layer has {out_channels} channels: not joints x {DEPTH_BINS} depth bins")
    joints = out_channels // DEPTH_BINS
    if joints not in (skeleton.NUM_JOINTS, len(H36M17_TO_MPII) + 1):
        raise ValueError(f"final_layer predicts {joints} joints: neither MPII's 16 nor Human3.6M's 17")
    return PoseNetConfig(backbone=depth, num_joints=skeleton.NUM_JOINTS, depth_bins=DEPTH_BINS,
                         deconv_channels=int(channels), deconv_layers=len(deconvs), deconv_kernel=int(kernel),
                         input_size=INPUT_SIZE, grid="corner"), joints


def to_mpii_joints(state: dict[str, torch.Tensor], joints: int) -> dict[str, torch.Tensor]:
    """The final layer's rows for the 16 MPII joints (reordered from Human3.6M's 17 where needed)."""
    if joints == skeleton.NUM_JOINTS:
        return state
    out = dict(state)
    for name in ("final.weight", "final.bias"):
        t = state[name].reshape(joints, DEPTH_BINS, *state[name].shape[1:])[H36M17_TO_MPII]
        out[name] = t.reshape(skeleton.NUM_JOINTS * DEPTH_BINS, *state[name].shape[1:]).clone()
    return out


def import_seed(path: str | Path, role: Literal["pose3d", "pose2d"]) -> tuple[PoseNet, dict]:
    """The seed's network file → (this project's network, its meta): every tensor placed by name and shape,
    none missing or left over (else an error naming them)."""
    seed = read_seed_state(path)
    config, joints = seed_config(seed)
    state = to_mpii_joints({_rename(k): v for k, v in seed.items()}, joints)
    model = PoseNet(config)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise ValueError(f"{path}: not the layout of EpipolarPose's ResNet-{config.backbone} (missing {missing[:3]}, "
                         f"left over {extra[:3]}, other shapes {wrong[:3]})")
    model.load_state_dict(state)
    meta = {"source": f"EpipolarPose {Path(path).name}", "seed_joints": joints, "crop_size": INPUT_SIZE}
    if role == "pose3d":
        meta.update(depth_range_mm=DEPTH_RANGE_MM, target=f"seed:{Path(path).name.split('.')[0]}",
                    crop={"boxes": "gt", "box_mm": DEPTH_RANGE_MM, "crop_size": INPUT_SIZE}, box_mm=DEPTH_RANGE_MM,
                    subjects=list(TRAINING_SUBJECTS))
    return model.eval(), meta


def convert(path: str | Path, out: str | Path, role: Literal["pose3d", "pose2d"]) -> Path:
    """``import_seed`` written as a network file (``save_pose_net``) → ``out``."""
    model, meta = import_seed(path, role)
    save_pose_net(model, out, meta=meta)
    return Path(out)
