"""The 3D network's target encoding (the paper's normalisation) and its inverse.

A 3D pose in a camera's frame (mm) is represented for the network as, per joint, ``(u, v)`` in
crop pixels (the joint's projection through the lens, mapped into the crop with the frame shards'
``x0, y0, size``) and ``d = (z - z_pelvis) / depth_range_mm``, depth relative to the pelvis over a
2000 mm range. ``decode_pose`` inverts it given the root depth (the ground truth's, in the paper's
protocol) and the camera intrinsics (lens distortion included).
"""

from __future__ import annotations

import numpy as np

from epipose import skeleton
from epipose.camera import Camera
from epipose.data.crop import crop_to_original, original_to_crop


def encode_pose(pose_cam: np.ndarray, camera: Camera, boxes: np.ndarray, crop_size: int,
                depth_range_mm: float = 2000.0) -> np.ndarray:
    """(F, J, 3) camera-frame mm → (F, J, 3) = (u_crop px, v_crop px, relative depth)."""
    uv = camera.project_camera(pose_cam)
    uv_crop = original_to_crop(uv, boxes[:, None, 0], boxes[:, None, 1], boxes[:, None, 2], crop_size)
    d = (pose_cam[..., 2] - pose_cam[:, skeleton.PELVIS, None, 2]) / depth_range_mm
    return np.concatenate([uv_crop, d[..., None]], axis=-1)


def decode_pose(pred: np.ndarray, camera: Camera, boxes: np.ndarray, crop_size: int, root_depth_mm: np.ndarray,
                depth_range_mm: float = 2000.0) -> np.ndarray:
    """Inverse of ``encode_pose``: (F, J, 3) network output → camera-frame mm, given root depths (F,)."""
    uv = crop_to_original(pred[..., :2], boxes[:, None, 0], boxes[:, None, 1], boxes[:, None, 2], crop_size)
    xn = camera.undistort_points(uv)
    z = np.asarray(root_depth_mm, dtype=np.float64)[:, None] + pred[..., 2] * depth_range_mm
    return np.concatenate([xn * z[..., None], z[..., None]], axis=-1)

