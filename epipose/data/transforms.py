"""Crops and augmentation.

Two steps, so that training on a CPU spends its time in the network and not in JPEG decoding:

1. ``decode_crops`` cuts every person out of its image **once**, into an in-memory uint8 array
   of square crops (``cache_size`` px, covering ``context`` × the person box);
2. ``augment_batch`` turns a batch of those crops into network inputs on the training device:
   one batched affine resampling (``affine_grid``/``grid_sample``) for scale, rotation,
   translation and horizontal flip (joints swapped with the MPII flip pairs), then synthetic
   occlusion (random patches, or Pascal VOC objects when ``augment.voc_root`` is set, as the
   paper after Sárándi et al.) and per-channel colour gain. ``center_batch`` is the same
   resampling without augmentation (evaluation).

Pixel convention (the frame shards'): a crop of the square ``(x0, y0, size)`` at ``n`` px maps
original pixel ``x`` to ``(x − x0) · n / size``; sample points are integer coordinates.
All random draws come from a caller-given CPU ``torch.Generator``: the augmentation of a batch
depends only on that generator's seed, not on the device or the number of workers.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from epipose import skeleton
from epipose.params import in_range

log = logging.getLogger(__name__)

PIXEL_STD = 200.0
VOC_PERSON_CLASS = 15


@dataclass(frozen=True)
class AugmentParams:
    """Section ``augment`` of params.yaml."""

    scale: float = in_range(0.0, 0.9, default=0.2)           # s ~ clip(1 + N(0, σ), 1 ± σ)
    rotation: float = in_range(0.0, 180.0, default=20.0)     # deg, r ~ clip(N(0, σ), ±2σ) ...
    rotation_prob: float = in_range(0.0, 1.0, default=0.5)   # ... with this probability, else 0
    translate: float = in_range(0.0, 0.5, default=0.05)      # shift ~ U(±t) × box side
    flip: bool = True
    color: float = in_range(0.0, 1.0, default=0.2)           # per-channel gain ~ U(1 ± c)
    occlusion_prob: float = in_range(0.0, 1.0, default=0.3)
    occlusion_size: float = in_range(0.0, 1.0, default=0.4)  # max patch side / crop side
    voc_root: str | None = None                              # Pascal VOC (VOCdevkit/VOC2012) for object occluders
    voc_max_objects: int = in_range(1, 100000, default=2000)


# --- geometry ----------------------------------------------------------------------------------
def person_boxes(centers: np.ndarray, scales: np.ndarray, margin: float) -> np.ndarray:
    """MPII centre/scale → square boxes (N, 3) = (x0, y0, side), side = scale · 200 · margin."""
    side = np.asarray(scales, np.float64) * PIXEL_STD * margin
    c = np.asarray(centers, np.float64)
    return np.stack([c[:, 0] - side / 2, c[:, 1] - side / 2, side], axis=-1)


def to_crop(points: np.ndarray, boxes: np.ndarray, n: int) -> np.ndarray:
    """Original pixels (N, J, 2) → crop pixels for boxes (N, 3) at ``n`` px."""
    k = n / boxes[:, None, 2:3]
    return (points - boxes[:, None, :2]) * k


def _read_image(path: Path, reduce: int) -> np.ndarray:
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    image = cv2.imread(str(path), flag)
    if image is None:
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        raise ValueError(f"{path}: unreadable image (corrupt or not an image)")
    return image


def decode_crops(paths: list[Path], boxes: np.ndarray, size: int, workers: int = 2) -> np.ndarray:
    """Cut square ``boxes`` (N, 3) out of the images at ``paths`` → uint8 RGB (N, size, size, 3).

    Each distinct image is decoded once (several people may share it), at the smallest JPEG
    DCT reduction (1/2, 1/4, 1/8) that still gives every box of that image at least ``size`` px;
    parts of a box outside the image are black.
    """
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    groups: dict[Path, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(Path(p), []).append(i)

    def work(item: tuple[Path, list[int]]) -> None:
        path, idx = item
        smallest = float(np.min(boxes[idx, 2]))
        reduce = 1
        while reduce < 8 and smallest / (reduce * 2) >= size:
            reduce *= 2
        image = _read_image(path, reduce)
        for i in idx:
            x0, y0, side = boxes[i]
            # Reduced pixel r covers original pixels [r·f, (r+1)·f): original x = r·f + (f − 1)/2.
            k = size / side
            off = (reduce - 1) / 2.0
            M = np.array([[k * reduce, 0.0, (off - x0) * k], [0.0, k * reduce, (off - y0) * k]])
            interp = cv2.INTER_AREA if k * reduce < 1 else cv2.INTER_LINEAR
            crop = cv2.warpAffine(image, M, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT)
            out[i] = crop[..., ::-1]

    items = list(groups.items())
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, items))
    else:
        for item in items:
            work(item)
    return out


# --- batched affine resampling -------------------------------------------------------------------
def _pixel_to_norm(n: int) -> torch.Tensor:
    """3×3 map from pixel coordinates (samples at integers) to grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor([[2.0 / n, 0.0, 1.0 / n - 1.0], [0.0, 2.0 / n, 1.0 / n - 1.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


def crop_transforms(src_size: int, src_box: float, out_size: int, scale: torch.Tensor, rotation_deg: torch.Tensor,
                    shift: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) float64 maps from source-crop pixels to output pixels.

    The source crop (``src_size`` px) holds the person box (``src_box`` px) at its centre. The
    output shows a box ``scale`` times that size (``scale`` > 1 zooms out), rotated by
    ``rotation_deg`` (counter-clockwise on screen), its centre shifted by ``shift`` (B, 2) box
    sides, mirrored left-right where ``flip``.
    """
    b = scale.shape[0]
    k = out_size / (src_box * scale.double())
    a = torch.deg2rad(rotation_deg.double())
    cos, sin = torch.cos(a) * k, torch.sin(a) * k
    c_src = src_size / 2.0 + shift.double() * src_box
    M = torch.zeros(b, 3, 3, dtype=torch.float64)
    # p = k·R·(q − c_src) + out/2, R a rotation by −a in image (y-down) axes = counter-clockwise on screen.
    M[:, 0, 0], M[:, 0, 1] = cos, sin
    M[:, 1, 0], M[:, 1, 1] = -sin, cos
    M[:, 0, 2] = out_size / 2.0 - (cos * c_src[:, 0] + sin * c_src[:, 1])
    M[:, 1, 2] = out_size / 2.0 - (-sin * c_src[:, 0] + cos * c_src[:, 1])
    M[:, 2, 2] = 1.0
    flip = flip.bool()
    if flip.any():
        Fm = torch.tensor([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        M[flip] = Fm @ M[flip]
    return M


def warp_batch(images: torch.Tensor, M: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample images (B, C, S, S) (any dtype; returned float32) with pixel maps ``M`` (B, 3, 3)."""
    src = images.shape[-1]
    theta = _pixel_to_norm(src) @ torch.linalg.inv(M) @ torch.linalg.inv(_pixel_to_norm(out_size))
    theta = theta[:, :2].to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_to_points(M: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) maps applied to (B, J, 2) points."""
    M = M.to(device=points.device, dtype=torch.float64)
    p = points.double()
    out = torch.einsum("bij,bkj->bki", M[:, :2, :2], p) + M[:, None, :2, 2]
    return out.to(points.dtype)


def flip_joints(joints: torch.Tensor, flip: torch.Tensor, perm: tuple[int, ...] = skeleton.FLIP_PERM) -> torch.Tensor:
    """Swap left/right joint slots (axis 1) where ``flip`` (B,) — for tensors of any trailing shape."""
    if not bool(flip.any()):
        return joints
    swapped = joints[:, list(perm)]
    mask = flip.to(joints.device).view(-1, *([1] * (joints.dim() - 1)))
    return torch.where(mask, swapped, joints)


# --- occluders ------------------------------------------------------------------------------------
def load_voc_occluders(voc_root: str | Path, max_objects: int = 2000, size: int = 64) -> torch.Tensor:
    """Pascal VOC object cut-outs (not persons) as RGBA uint8 (K, 4, size, size), aspect kept.

    Reads ``SegmentationObject/*.png`` with ``SegmentationClass`` and ``JPEGImages`` under
    ``voc_root`` (a ``VOC2012`` folder), keeps objects of ≥ 500 px that are not persons.
    """
    from PIL import Image

    root = Path(voc_root)
    seg_dir = root / "SegmentationObject"
    if not seg_dir.is_dir():
        raise FileNotFoundError(f"Pascal VOC folder not found: {seg_dir} (param augment.voc_root should point at "
                                "VOCdevkit/VOC2012)")
    bank: list[np.ndarray] = []
    for seg_path in sorted(seg_dir.glob("*.png")):
        if len(bank) >= max_objects:
            break
        cls_path = root / "SegmentationClass" / seg_path.name
        img_path = root / "JPEGImages" / f"{seg_path.stem}.jpg"
        if not cls_path.exists() or not img_path.exists():
            continue
        objects = np.asarray(Image.open(seg_path))
        classes = np.asarray(Image.open(cls_path))
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if image is None or objects.shape != image.shape[:2]:
            raise ValueError(f"{img_path}: unreadable or not the size of {seg_path}")
        for obj in np.unique(objects):
            if obj in (0, 255):
                continue
            mask = objects == obj
            cls = np.bincount(classes[mask]).argmax()
            if cls == VOC_PERSON_CLASS or cls == 0 or mask.sum() < 500:
                continue
            ys, xs = np.nonzero(mask)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            rgba = np.concatenate([image[y0:y1, x0:x1, ::-1], (mask[y0:y1, x0:x1, None] * 255).astype(np.uint8)], -1)
            h, w = rgba.shape[:2]
            k = size / max(h, w)
            rgba = cv2.resize(rgba, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((size, size, 4), np.uint8)
            oy, ox = (size - rgba.shape[0]) // 2, (size - rgba.shape[1]) // 2
            canvas[oy:oy + rgba.shape[0], ox:ox + rgba.shape[1]] = rgba
            bank.append(canvas)
            if len(bank) >= max_objects:
                break
    if not bank:
        raise ValueError(f"{root}: no usable VOC objects found (need SegmentationObject, SegmentationClass, JPEGImages)")
    log.info("loaded %d VOC occluders from %s", len(bank), root)
    return torch.from_numpy(np.stack(bank)).permute(0, 3, 1, 2).contiguous()


def _occlude(images: torch.Tensor, aug: AugmentParams, gen: torch.Generator,
             occluders: torch.Tensor | None) -> torch.Tensor:
    """Composite one occluder onto each selected image (B, 3, n, n) float in [0, 255]."""
    b, _, n, _ = images.shape
    chosen = torch.rand(b, generator=gen) < aug.occlusion_prob
    if not bool(chosen.any()) or aug.occlusion_size <= 0:
        return images
    idx = torch.nonzero(chosen).squeeze(1)
    m = idx.numel()
    side = (0.1 + torch.rand(m, generator=gen) * 0.9) * aug.occlusion_size * n     # occluder side, px
    centre = torch.rand(m, 2, generator=gen) * n
    if occluders is None:
        aspect = torch.exp((torch.rand(m, generator=gen) - 0.5) * 1.4)
        w, h = side * aspect.sqrt(), side / aspect.sqrt()
        colour = torch.rand(m, 3, 1, 1, generator=gen) * 255.0
        noise = torch.rand(m, 1, 1, 1, generator=gen) * 60.0 * (torch.rand(m, 3, n, n, generator=gen) - 0.5)
        g = torch.arange(n, dtype=torch.float32)
        inside_x = (g[None, :] - centre[:, 0:1]).abs() <= w[:, None] / 2
        inside_y = (g[None, :] - centre[:, 1:2]).abs() <= h[:, None] / 2
        alpha = (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]      # (m, 1, n, n)
        rgb = (colour + noise).clamp(0, 255)
    else:
        pick = torch.randint(len(occluders), (m,), generator=gen)
        src = occluders[pick]                                                        # (m, 4, P, P)
        P = src.shape[-1]
        rot = (torch.rand(m, generator=gen) - 0.5) * 60.0
        # Occluder pixels → image pixels: scale P → side, rotate, centre at ``centre``.
        Ms = crop_transforms(P, float(P), n, (n / side).float(), rot, torch.zeros(m, 2), torch.zeros(m, dtype=torch.bool))
        Ms[:, :2, 2] += (centre.double() - n / 2.0)
        warped = warp_batch(src.to(images.device), Ms, n)
        alpha, rgb = warped[:, 3:4] / 255.0, warped[:, :3]
    alpha, rgb = alpha.to(images.device), rgb.to(images.device)
    images = images.clone()
    images[idx] = images[idx] * (1.0 - alpha) + rgb * alpha
    return images


# --- the batch transforms ---------------------------------------------------------------------------
def augment_batch(images: torch.Tensor, joints: torch.Tensor, visible: torch.Tensor, src_box: float, out_size: int,
                  aug: AugmentParams, gen: torch.Generator, occluders: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random augmentation of cached crops.

    images uint8 RGB (B, 3, S, S) on the training device; joints (B, J, 2) in its pixels —
    or (B, J, 2 + C): channels after x, y (e.g. a relative depth) are carried along unchanged
    but follow the left/right swap of flips; visible (B, J) bool; ``src_box`` the person box
    side in those pixels. Returns float images in [0, 255] (B, 3, out, out), joints in output
    pixels (flipped joints in swapped slots) and visibility (False for joints that left the output).
    """
    b = images.shape[0]
    scale = (1.0 + torch.randn(b, generator=gen) * aug.scale).clamp(1.0 - aug.scale, 1.0 + aug.scale)
    rot = (torch.randn(b, generator=gen) * aug.rotation).clamp(-2 * aug.rotation, 2 * aug.rotation)
    rot = torch.where(torch.rand(b, generator=gen) < aug.rotation_prob, rot, torch.zeros_like(rot))
    shift = (torch.rand(b, 2, generator=gen) * 2.0 - 1.0) * aug.translate
    flip = (torch.rand(b, generator=gen) < 0.5) & aug.flip
    M = crop_transforms(images.shape[-1], src_box, out_size, scale, rot, shift, flip)
    out = warp_batch(images, M, out_size)
    pts = apply_to_points(M, joints[..., :2])
    if joints.shape[-1] > 2:
        pts = torch.cat([pts, joints[..., 2:].to(pts.dtype)], dim=-1)
    pts = flip_joints(pts, flip)
    vis = flip_joints(visible, flip)
    inside = ((pts[..., :2] >= 0) & (pts[..., :2] <= out_size - 1)).all(dim=-1)
    vis = vis & inside
    if aug.occlusion_prob > 0:
        out = _occlude(out, aug, gen, occluders)
    if aug.color > 0:
        gain = 1.0 + (torch.rand(b, 3, 1, 1, generator=gen) * 2.0 - 1.0) * aug.color
        out = (out * gain.to(out.device)).clamp_(0.0, 255.0)
    return out, pts, vis


def center_batch(images: torch.Tensor, src_box: float, out_size: int, flip: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The un-augmented view: the person box resized to ``out_size`` (optionally mirrored).

    Returns float images in [0, 255] and the (B, 3, 3) maps from source to output pixels.
    """
    b = images.shape[0]
    M = crop_transforms(images.shape[-1], src_box, out_size, torch.ones(b), torch.zeros(b), torch.zeros(b, 2),
                        torch.full((b,), flip, dtype=torch.bool))
    return warp_batch(images, M, out_size), M

