"""Inputs of the 2D stages' tests: a Human3.6M-layout root whose frame shards show one bright dot at a
known crop pixel (``dot_position``), and tiny seeded 2D networks saved as checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from epipose import skeleton
from epipose.camera import Rig, save_rig
from epipose.data import frames as fr
from epipose.data.h36m import write_pose_cdf
from epipose.models.pose_net import PoseNet, PoseNetConfig, save_pose_net
from h36m_fixture import walking_poses

CROP = 96
FRAMES = np.array([0, 3, 6, 9])


def dot_position(i: int) -> tuple[int, int]:
    """The dot's crop pixel (u, v) in the ``i``-th frame of every shard (in frame order)."""
    return 20 + 7 * i, 70 - 9 * i


def make_h36m_with_shards(tmp_path: Path, rig: Rig, subjects=("S1", "S9"), actions=("Walking 1", "Greeting")):
    """A Human3.6M-layout root (cameras.json + cdf poses, no videos) and frame shards whose crops
    show one white dot at a known crop pixel (``dot_position(row)``)."""
    h36m, frames_root = tmp_path / "h36m", tmp_path / "frames"
    save_rig(rig, h36m / "cameras.json")
    for si, subject in enumerate(subjects):
        for ai, action in enumerate(actions):
            poses = walking_poses(12, seed=si * 10 + ai)
            write_pose_cdf(h36m / subject / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf", poses)
            for cam_name, cam in rig.cameras(subject).items():
                pelvis = cam.world_to_camera(skeleton.h36m32_to_mpii(poses[FRAMES]))[:, skeleton.PELVIS]
                boxes = fr.crop_boxes(pelvis, cam, 2000.0)
                jpegs = []
                yy, xx = np.mgrid[:CROP, :CROP]
                for i in range(len(FRAMES)):
                    u, v = dot_position(i)
                    blob = 40 + 200 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 2.5**2))
                    jpegs.append(fr.encode_jpeg(np.repeat(blob[..., None], 3, -1).round().astype(np.uint8), 100))
                order = np.array([2, 0, 3, 1])                     # shards need not be sorted by frame
                fr.write_shard(fr.shard_path(frames_root, subject, action, cam_name), FRAMES[order],
                               [jpegs[k] for k in order], boxes[order])
    return h36m, frames_root


def tiny_pose_net(path: Path, num_joints: int = 16, input_size: int = 64, backbone_stages: int = 3,
                  deconv_layers: int = 2) -> Path:
    """A seeded tiny 2D network saved at ``path``. By default params.yaml's layout (3 ResNet stages,
    2 deconvolutions), so train_3d accepts it as its 2D network."""
    torch.manual_seed(0)
    model = PoseNet(PoseNetConfig(backbone=18, num_joints=num_joints, deconv_channels=8, input_size=input_size,
                                  backbone_stages=backbone_stages, deconv_layers=deconv_layers))
    nn.init.normal_(model.final.weight, std=0.05)
    save_pose_net(model, path)
    return path
