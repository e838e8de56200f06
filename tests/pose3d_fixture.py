"""A tiny Human3.6M-layout root with frame shards and a pseudo3d table, for the 3D stages' tests.

The crops are drawn directly (no video): a grey square with one coloured disc per projected joint,
cut with the frame shards' geometry (a 2000 mm box around the pelvis). The pseudo-labels are the
ground truth plus noise — a development stand-in built here, never in the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from epipose import skeleton
from epipose.camera import Rig, save_rig
from epipose.data.crop import original_to_crop
from epipose.data import frames as fr
from epipose.data.h36m import H36MDataset, write_pose_cdf
from epipose.data.pose_tables import from_dense, write_pseudo3d
from h36m_fixture import walking_poses

CAMERAS = ("54138969", "55011271")
FRAMES = np.arange(0, 24, 4)          # native indices kept in the shards
CROP = 64


def small_rig(real_rig: Rig, subjects=("S1", "S9")) -> Rig:
    return Rig({c: real_rig.intrinsics[c] for c in CAMERAS},
               {s: {c: real_rig.extrinsics[s][c] for c in CAMERAS} for s in subjects})


def moving_poses(n: int, seed: int) -> np.ndarray:
    """(n, 32, 3) mm: ``walking_poses`` with every joint but the root wobbling per frame (distinct poses)."""
    poses = walking_poses(n, seed=seed)
    wobble = np.random.default_rng(seed + 1000).normal(scale=80.0, size=poses.shape)
    wobble[:, 0] = 0.0
    return poses + wobble


def draw_crop(uv_crop: np.ndarray, size: int = CROP) -> np.ndarray:
    img = np.full((size, size, 3), 90, np.uint8)
    for j, (u, v) in enumerate(uv_crop):
        colour = tuple(int(c) for c in cv2.applyColorMap(np.uint8([[j * 16]]), cv2.COLORMAP_JET)[0, 0])
        cv2.circle(img, (int(round(u)), int(round(v))), 2, colour, -1)
    return img


def make_root(tmp_path: Path, rig: Rig, subjects=("S1", "S9"), actions=("Walking 1", "Greeting")) -> tuple[Path, Path]:
    """(h36m root with cameras.json + cdf poses, frames root with one shard per (subject, action, camera))."""
    h36m, frames_root = tmp_path / "h36m", tmp_path / "frames"
    save_rig(rig, h36m / "cameras.json")
    for si, subject in enumerate(subjects):
        for ai, action in enumerate(actions):
            poses = moving_poses(int(FRAMES.max()) + 1, seed=si * 10 + ai)
            write_pose_cdf(h36m / subject / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf", poses)
            for cam_name, cam in rig.cameras(subject).items():
                pose_cam = cam.world_to_camera(skeleton.h36m32_to_mpii(poses[FRAMES]))
                boxes = fr.crop_boxes(pose_cam[:, skeleton.PELVIS], cam, 2000.0)
                uv = original_to_crop(cam.project_camera(pose_cam), boxes[:, None, 0], boxes[:, None, 1],
                                         boxes[:, None, 2], CROP)
                jpegs = [fr.encode_jpeg(draw_crop(uv[i]), 95) for i in range(len(FRAMES))]
                fr.write_shard(fr.shard_path(frames_root, subject, action, cam_name), FRAMES, jpegs, boxes)
    return h36m, frames_root


def gt_table(h36m: Path, subjects=("S1",), noise_mm: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A pseudo3d table: each shard frame's ground truth in its camera's frame (+ Gaussian noise)."""
    ds = H36MDataset(h36m)
    rng = np.random.default_rng(seed)
    keys, values = [], []
    for subject in subjects:
        for action in ds.actions(subject):
            for cam in sorted(ds.rig.cameras(subject)):
                pose = ds.poses_mpii_camera(subject, action, cam)[FRAMES]
                pose = pose + rng.normal(scale=noise_mm, size=pose.shape) if noise_mm else pose
                keys.append(pd.DataFrame({"subject": subject, "action": action, "camera": cam, "frame": FRAMES}))
                extra = np.stack([np.full(pose.shape[:2], 1.5), np.full(pose.shape[:2], 2.0)], -1)
                values.append(np.concatenate([pose, extra], -1))
    keys = pd.concat(keys, ignore_index=True)
    return from_dense(keys, np.concatenate(values), ["x", "y", "z", "reproj_err", "n_views"])


def write_table(df: pd.DataFrame, path: Path) -> Path:
    write_pseudo3d(df, path, metadata={"extrinsics": "ground truth + noise (test fixture)"})
    return path
