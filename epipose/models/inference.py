"""The one inference path of the pose networks, used by infer_2d, train_3d, evaluate and ``epipose predict``.

``predict_pose`` runs a network (2D or 3D) on a batch of uint8 crops already on its device, with
the flip test; ``predict_2d`` is its 2D part; ``infer_3d`` batches any number of crops through a 3D
network and back-projects its output to camera-frame poses (``epipose.models.codec``). Mixed
precision follows ``epipose.compute.amp_dtype``. ``InferenceParams``: the keys of how a stage runs a
network on its frames (sections ``infer_2d`` and ``evaluate``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Camera
from epipose.compute import amp_dtype, autocast
from epipose.data.crop import crop_to_original
from epipose.data.transforms import apply_to_points, center_batch, flip_joints
from epipose.models.codec import decode_pose
from epipose.models.pose_net import normalise
from epipose.params import in_range


@dataclass(frozen=True)
class InferenceParams:
    """How a stage runs a network on its frame shards: the keys that sections ``infer_2d`` and
    ``evaluate`` of params.yaml share (each section extends it, ``params.redefault`` for its own values)."""

    batch_size: int = in_range(1, 65536, default=256)
    flip_test: bool = True                                  # average with the mirrored crop
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    channels_last: bool = True
    threads: int = in_range(0, 256, default=0)              # CPU threads; 0 = auto: the cores other work leaves free
    decode_workers: int = in_range(1, 64, default=2)        # JPEG-decoding threads


@torch.inference_mode()
def predict_pose(model: nn.Module, images: torch.Tensor, src_box: float, flip_test: bool = False,
                 amp: torch.dtype | None = None, channels_last: bool = True) -> dict[str, torch.Tensor]:
    """The network on a batch of uint8 RGB crops (B, 3, S, S) on the model's device.

    The central ``src_box`` px of each crop are resized to the network's input. Returns
    ``{"xy": (B, J, 2) in the crops' pixels, "z": (B, J) relative depth (0 for a 2D network),
    "conf": (B, J)}``, averaged with the mirrored image when ``flip_test`` (mirrored predictions
    are un-mirrored and their left/right slots swapped; depth is not mirrored).
    """
    size = model.config.input_size
    device = images.device
    views = [False, True] if flip_test else [False]
    outs: dict[str, list[torch.Tensor]] = {"xy": [], "z": [], "conf": []}
    for flip in views:
        warped, M = center_batch(images, src_box, size, flip=flip)
        x = normalise(warped)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model(x)
        back = torch.linalg.inv(M)
        flag = torch.full((len(images),), flip, dtype=torch.bool, device=device)
        outs["xy"].append(flip_joints(apply_to_points(back, out["xy"].float()), flag))
        outs["z"].append(flip_joints(out["z"].float(), flag))
        outs["conf"].append(flip_joints(out["conf"].float(), flag))
    return {k: torch.stack(v).mean(0) for k, v in outs.items()}


def predict_2d(model: nn.Module, images: torch.Tensor, src_box: float, flip_test: bool = False,
               amp: torch.dtype | None = None, channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """2D predictions for a batch of uint8 RGB crops (B, 3, S, S): ``(xy (B, J, 2) crop px, conf (B, J))``
    (``predict_pose`` without the depth)."""
    out = predict_pose(model, images, src_box, flip_test, amp, channels_last)
    return out["xy"], out["conf"]


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
    on the model's device with autocast per ``amp`` (``epipose.compute.amp_dtype``: bf16/fp16 on
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
