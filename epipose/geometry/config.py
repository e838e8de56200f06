"""Section ``triangulate`` of params.yaml: every option of the triangulation stage, typed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from epipose import skeleton
from epipose.params import ParamError, in_range


@dataclass(frozen=True)
class TriangulateParams:
    """Section ``triangulate`` of params.yaml."""

    extrinsics: Literal["estimated", "known"] = "estimated"
    relative_pose: Literal["pooled", "per_frame"] = "pooled"
    min_conf: float = in_range(0.0, 1.0, default=0.2)             # joints below are ignored
    min_views: int = in_range(2, 64, default=2)                   # consistent views needed per joint
    view_ransac_px: float = in_range(0.1, None, default=15.0)    # RANSAC-over-views inlier threshold
    refine_iterations: int = in_range(0, 100, default=1)         # Gauss–Newton steps per point (0: off)
    swap_detection: bool = True                                   # fix left/right-swapped legs/arms per view
    swap_ratio: float = in_range(0.0, 1.0, default=0.5)          # mirrored error must be below ratio × error
    essential_method: Literal["magsac", "lo_ransac"] = "lo_ransac"
    essential_points: Literal["swap_invariant", "joints"] = "swap_invariant"   # pooled: E + chaining points
    essential_px: float = in_range(0.1, None, default=4.0)       # essential-matrix inlier threshold
    essential_confidence: float = in_range(0.5, 0.999999, default=0.9999)
    essential_max_points: int = in_range(100, None, default=20000)  # correspondences per pair (pooled)
    min_pair_points: int = in_range(8, None, default=100)         # fewer: the pair is unusable
    min_inlier_ratio: float = in_range(0.0, 1.0, default=0.3)
    min_parallax_deg: float = in_range(0.0, 90.0, default=1.0)   # median ray angle below: degenerate pair
    ba_max_frames: int = in_range(10, None, default=400)          # frames per subject in bundle adjustment
    ba_iterations: int = in_range(1, None, default=100)           # max function evaluations per round
    ba_loss: Literal["soft_l1", "huber", "cauchy", "linear"] = "soft_l1"
    ba_f_scale_px: float = in_range(0.01, None, default=3.0)
    bone_lengths_mm: list[float] = field(default_factory=lambda: list(skeleton.MEAN_BONE_LENGTHS_MM))
    seed: int = 0

    def __post_init__(self) -> None:
        bones = self.bone_lengths_mm
        if len(bones) != len(skeleton.BONES) or not all(b > 0 for b in bones):
            raise ParamError(f"param triangulate.bone_lengths_mm: expected {len(skeleton.BONES)} positive lengths "
                             f"in skeleton.BONES order ({', '.join(skeleton.BONE_NAMES)}), got {bones!r}")

    @property
    def mode(self) -> str:
        return "known" if self.extrinsics == "known" else f"estimated/{self.relative_pose}"

    def triangulation(self) -> dict:
        return dict(threshold_px=self.view_ransac_px, min_views=self.min_views, ransac=True,
                    refine_iterations=self.refine_iterations, swap_detection=self.swap_detection,
                    swap_ratio=self.swap_ratio)
