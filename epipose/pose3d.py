"""3D targets in the paper's normalisation, and back-projection of predictions.

A 3D pose in a camera's frame (mm) is represented for the network as, per joint,
``(u, v)`` in crop pixels (the joint's projection through the lens, mapped into the crop) and
``d = (z - z_pelvis) / depth_range_mm``, depth relative to the pelvis over a 2000 mm range.
Back-projection inverts it given the root depth (the ground truth's, in the paper's protocol)
and the camera intrinsics (lens distortion included).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Camera
from epipose.data.frames import crop_to_original, original_to_crop
from epipose.pose2d import predict_pose
from epipose.train import amp_dtype


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


def root_relative(poses: np.ndarray) -> np.ndarray:
    """Subtract the pelvis: (..., J, 3)."""
    return poses - poses[..., skeleton.PELVIS : skeleton.PELVIS + 1, :]


# --- inference: the one code path from crops to camera-frame poses ------------------------------------
def as_image_batch(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Square uint8 RGB crops, (N, S, S, 3) array or (N, 3, S, S) tensor → (N, 3, S, S) uint8 tensor."""
    if isinstance(crops, np.ndarray):
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"expected square RGB crops of shape (N, S, S, 3), got {crops.shape}")
        crops = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"expected square RGB crops of shape (N, 3, S, S), got {tuple(crops.shape)}")
    if crops.dtype != torch.uint8:
        raise ValueError(f"expected uint8 crops, got {crops.dtype}")
    return crops


def infer_3d(model: torch.nn.Module, crops: np.ndarray | torch.Tensor, boxes: np.ndarray | None = None,
             cameras: Camera | list[Camera] | None = None, root_depth_mm: np.ndarray | float | None = None,
             *, depth_range_mm: float = 2000.0, batch_size: int = 64, flip_test: bool = True, amp: str = "auto",
             channels_last: bool = True, progress: bool = False) -> dict[str, np.ndarray]:
    """The 3D network on square person crops → its poses, batched, under ``torch.inference_mode``.

    ``crops``: uint8 RGB, (N, S, S, 3) or (N, 3, S, S); the whole crop is the person box (the
    frame shards' convention: the projection of a ``depth_range_mm`` box around the pelvis). Runs
    on the model's device with autocast per ``amp`` (``epipose.train.amp_dtype``: bf16/fp16 on
    CUDA), optionally averaged with the mirrored crop (``flip_test``). Returns

    * ``uvd`` (N, J, 3): u, v in crop pixels and the pelvis-relative depth in units of
      ``depth_range_mm`` (``encode_pose``'s representation);
    * ``conf`` (N, J) in [0, 1];
    * with ``boxes`` (N, 3) (x0, y0, size of each crop in original pixels), ``cameras`` (one, or
      one per crop) and ``root_depth_mm`` (scalar or (N,)): ``pose_cam`` (N, J, 3), the pose in
      the camera's frame in mm (``decode_pose`` of the depths relative to the predicted pelvis:
      through the lens model, the pelvis exactly at that root depth), and
      ``uv`` (N, J, 2), the joints in original-image pixels.
    """
    images = as_image_batch(crops)
    n, crop_size = len(images), int(images.shape[-1])
    device = next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    was_training = model.training
    model.eval()
    uvd = np.zeros((n, model.config.num_joints, 3), dtype=np.float64)
    conf = np.zeros((n, model.config.num_joints), dtype=np.float64)
    with torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc="infer_3d", unit="batch", file=sys.stderr,
                          disable=not progress, mininterval=1.0):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            out = predict_pose(model, batch, float(crop_size), flip_test, dtype, channels_last)
            uvd[start : start + len(batch), :, :2] = out["xy"].double().cpu().numpy()
            uvd[start : start + len(batch), :, 2] = out["z"].double().cpu().numpy()
            conf[start : start + len(batch)] = out["conf"].double().cpu().numpy()
    model.train(was_training)
    result = {"uvd": uvd, "conf": conf}
    if boxes is not None and cameras is not None and root_depth_mm is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(n, 3)
        depth = np.broadcast_to(np.asarray(root_depth_mm, dtype=np.float64), (n,))
        cams = [cameras] * n if isinstance(cameras, Camera) else list(cameras)
        if len(cams) != n:
            raise ValueError(f"{len(cams)} cameras for {n} crops")
        # Depths relative to the predicted pelvis, so that the pelvis lies exactly at the given root depth.
        rel = uvd.copy()
        rel[..., 2] -= rel[:, skeleton.PELVIS, None, 2]
        pose = np.full((n, uvd.shape[1], 3), np.nan)
        for cam in {id(c): c for c in cams}.values():
            idx = np.array([i for i, c in enumerate(cams) if c is cam])
            pose[idx] = decode_pose(rel[idx], cam, boxes[idx], crop_size, depth[idx], depth_range_mm)
        result["pose_cam"] = pose
        result["uv"] = crop_to_original(uvd[..., :2], boxes[:, None, 0], boxes[:, None, 1], boxes[:, None, 2], crop_size)
    return result
