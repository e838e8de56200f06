"""A tiny Human3.6M-layout root for loader tests: real rig, simple poses, plain videos.

The videos show a filled disc at each projected joint on a grey background, so crops can be
checked against the ground truth without the full renderer.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from epipose.camera import Rig, save_rig
from epipose.data.h36m import write_pose_cdf

SIZE = 1000


def walking_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 3) mm: a rigid T-ish skeleton drifting across the floor, z up."""
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=[120, 120, 0], size=(32, 3))
    base[:, 2] = np.linspace(100, 1700, 32)
    base[0] = [0, 0, 950]
    t = np.arange(n)[:, None]
    drift = np.concatenate([np.cos(t / 20) * 400, np.sin(t / 25) * 400, np.zeros_like(t, dtype=float)], axis=1)
    return base[None] + drift[:, None, :]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 50.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()


def make_root(root: Path, rig: Rig, subjects=("S1",), actions=("Walking 1",), n_frames=20,
              video_frames: dict | None = None, video_names: dict | None = None) -> Path:
    """Write cameras.json, cdf poses and one video per camera for each (subject, action)."""
    root = Path(root)
    save_rig(rig, root / "cameras.json")
    for si, subject in enumerate(subjects):
        for ai, action in enumerate(actions):
            poses = walking_poses(n_frames, seed=si * 10 + ai)
            write_pose_cdf(root / subject / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf", poses)
            for cam_name, cam in rig.cameras(subject).items():
                n_video = (video_frames or {}).get((subject, action, cam_name), n_frames)
                if n_video == 0:
                    continue
                uv = cam.project(poses[:n_video])
                frames = []
                for i in range(n_video):
                    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
                    for u, v in uv[i]:
                        cv2.circle(img, (int(round(u)), int(round(v))), 6, (40, 220, 240), -1)
                    frames.append(img)
                name = (video_names or {}).get(action, action)
                write_video(root / subject / "Videos" / f"{name}.{cam_name}.mp4", frames)
    return root
