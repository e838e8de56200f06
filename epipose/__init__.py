"""epipose: self-supervised 3D human pose from multi-view epipolar geometry (EpipolarPose, rebuilt)."""

__version__ = "0.1.0"
