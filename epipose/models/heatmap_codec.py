"""The 2D heatmap head's target encoding and decoding, in one place (Simple Baselines, Xiao et al. 2018;
the seed's "MPII heatmap" row): one heatmap per joint, trained towards an unnormalised Gaussian of
``sigma`` cells (peak 1) at the joint with a mean squared error over the visible joints, read by its
argmax moved a quarter cell towards the higher neighbour in x and in y.

Coordinates as ``pose_net``'s ``centre`` grid: heatmap cell k covers input pixels [k·s − ½, (k+1)·s − ½]
(s = the stride, input px per cell), so input pixel u is cell (u − (s − 1)/2) / s.
"""

from __future__ import annotations

import torch


def to_cells(xy_px: torch.Tensor, stride: float) -> torch.Tensor:
    return (xy_px.float() - (stride - 1.0) / 2.0) / stride


def encode(xy_px: torch.Tensor, visible: torch.Tensor, size: int, stride: float, sigma: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for joints at ``xy_px`` (B, J, 2) input pixels → (heatmaps (B, J, size, size), weights (B, J):
    1 for a visible joint whose centre lies on the heatmap, else 0)."""
    cells = to_cells(xy_px[..., :2], stride)
    grid = torch.arange(size, device=xy_px.device, dtype=torch.float32)
    gx = torch.exp(-((grid - cells[..., :1]) ** 2) / (2 * sigma**2))                  # (B, J, W)
    gy = torch.exp(-((grid - cells[..., 1:2]) ** 2) / (2 * sigma**2))                 # (B, J, H)
    inside = ((cells > -0.5) & (cells < size - 0.5)).all(-1)
    return gy[..., :, None] * gx[..., None, :], (visible.bool() & inside).float()


def loss(heatmaps: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, swap_perm: list[int] | None = None,
         swap_tolerance: float = 0.0) -> torch.Tensor:
    """Simple Baselines' JointsMSELoss: ½ × the mean squared error per joint, the weighted mean over joints.

    ``swap_tolerance`` w > 0 (with ``swap_perm``, the left/right permutation of the joints) mixes in a
    left/right-tolerant term, as the integral head's L1: per image, the smaller of the error to the targets
    and to the targets with every left/right pair swapped, ``w · min(straight, swapped) + (1 − w) ·
    straight``, so a network that cannot yet tell a front from a back view commits to one reading of the
    limbs instead of spreading each joint over both."""
    def per_joint(t: torch.Tensor) -> torch.Tensor:                                  # (B, J)
        return 0.5 * (heatmaps.float() - t).square().mean(dim=(-1, -2))

    if swap_tolerance <= 0 or swap_perm is None:
        return (per_joint(target) * weight).sum() / weight.sum().clamp_min(1.0)
    per_image = (per_joint(target) * weight).sum(-1)                                  # (B,)
    swapped = (per_joint(target[:, swap_perm]) * weight[:, swap_perm]).sum(-1)
    mixed = swap_tolerance * torch.minimum(per_image, swapped) + (1.0 - swap_tolerance) * per_image
    return mixed.sum() / weight.sum().clamp_min(1.0)


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (B, J, H, W) → (xy (B, J, 2) in cells: the argmax plus a quarter cell towards the higher
    neighbour in x and in y, where it has one; conf (B, J): the peak value, clamped to [0, 1])."""
    b, j, h, w = heatmaps.shape
    hm = heatmaps.float()
    peak, idx = hm.reshape(b, j, -1).max(dim=-1)
    y, x = idx // w, idx % w
    flat = hm.reshape(b * j, h, w)
    r = torch.arange(b * j, device=hm.device)
    yy, xx = y.reshape(-1), x.reshape(-1)

    def at(dy: int, dx: int) -> torch.Tensor:
        return flat[r, (yy + dy).clamp(0, h - 1), (xx + dx).clamp(0, w - 1)]

    inner_x, inner_y = (xx > 0) & (xx < w - 1), (yy > 0) & (yy < h - 1)
    sx = torch.where(inner_x, torch.sign(at(0, 1) - at(0, -1)), torch.zeros_like(peak.reshape(-1))) * 0.25
    sy = torch.where(inner_y, torch.sign(at(1, 0) - at(-1, 0)), torch.zeros_like(peak.reshape(-1))) * 0.25
    xy = torch.stack([x.float() + sx.reshape(b, j), y.float() + sy.reshape(b, j)], dim=-1)
    return xy, peak.clamp(0.0, 1.0)
