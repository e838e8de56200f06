import pytest
import torch

from epipose import skeleton
from epipose.pipeline.pretrain_2d import heatmap_ce_loss, l1_loss_2d


def _pose(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 16, 2, generator=g) * 64


def test_l1_is_the_papers_loss_by_default():
    target = _pose()
    pred = target + 2.0
    vis = torch.ones(3, 16, dtype=torch.bool)
    assert l1_loss_2d(pred, target, vis, 64).item() == pytest.approx(2.0 / 64)
    vis[:, 3] = False
    pred[:, 3] += 100                                    # invisible joints do not count
    assert l1_loss_2d(pred, target, vis, 64).item() == pytest.approx(2.0 / 64)


def test_swap_tolerant_l1():
    target = _pose()
    vis = torch.ones(3, 16, dtype=torch.bool)
    swapped = target[:, list(skeleton.FLIP_PERM)]        # left and right named the other way round
    straight = l1_loss_2d(swapped, target, vis, 64).item()
    assert straight > 0
    assert l1_loss_2d(swapped, target, vis, 64, swap_tolerance=0.7).item() == pytest.approx(0.3 * straight, rel=1e-5)
    assert l1_loss_2d(target, target, vis, 64, swap_tolerance=0.7).item() == 0.0
    # Collapsing each pair onto its midpoint costs more than separating the limbs with the sides swapped.
    mid = target.clone()
    for a, b in skeleton.FLIP_PAIRS:
        mid[:, a] = mid[:, b] = (target[:, a] + target[:, b]) / 2
    assert l1_loss_2d(mid, target, vis, 64, 0.7) > l1_loss_2d(swapped, target, vis, 64, 0.7)
    assert l1_loss_2d(mid, target, vis, 64) < l1_loss_2d(swapped, target, vis, 64)   # ... unlike the plain L1


def test_heatmap_cross_entropy_prefers_the_target():
    h = w = 16
    stride = 4.0
    target = torch.tensor([[[5 * stride + 1.5, 9 * stride + 1.5]]])     # cell (x=5, y=9) in input pixels
    vis = torch.ones(1, 1, dtype=torch.bool)
    right = torch.zeros(1, 1, 1, h, w)
    right[0, 0, 0, 9, 5] = 8.0
    wrong = torch.zeros(1, 1, 1, h, w)
    wrong[0, 0, 0, 2, 12] = 8.0
    assert heatmap_ce_loss(right, target, vis, stride, 1.0) < heatmap_ce_loss(wrong, target, vis, stride, 1.0)
    # A 3D volume: the loss sees the 2D marginal, so spreading over depth does not change it.
    vol = right.expand(1, 1, 4, h, w).clone()
    assert heatmap_ce_loss(vol, target, vis, stride, 1.0).item() == pytest.approx(
        heatmap_ce_loss(right, target, vis, stride, 1.0).item(), abs=1e-5)
