"""Section ``synth`` of params.yaml, and deterministic per-item random streams."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from epipose.data.h36m import EXTRA_TRAIN_SUBJECTS, TEST_SUBJECTS, TRAIN_SUBJECTS
from epipose.params import ParamError, in_range
from epipose.synth.motion import ACTIONS, FREESTYLE, GENERATED_ACTIONS, base_action

# Human3.6M's camera ids; the default rig stands its cameras roughly where Human3.6M's stand
# (azimuth about the capture centre, distance, height: measured from the real calibration).
H36M_CAMERA_IDS: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")


@dataclass(frozen=True)
class RigParams:
    """Section ``synth.rig`` of params.yaml. Lists have one entry per camera."""

    camera_ids: list[str] = field(default_factory=lambda: list(H36M_CAMERA_IDS))
    azimuth_deg: list[float] = field(default_factory=lambda: [68.0, -69.0, 108.0, -113.0])
    distance_mm: list[float] = field(default_factory=lambda: [5300.0, 5400.0, 5450.0, 4200.0])
    height_mm: list[float] = field(default_factory=lambda: [1550.0, 1590.0, 1510.0, 1570.0])
    target_height_mm: float = in_range(0.0, 2500.0, default=900.0)   # every camera looks at (0, 0, this)
    focal_factor: float = in_range(0.3, 5.0, default=1.15)           # fx = fy = factor × image width
    focal_jitter: float = in_range(0.0, 0.2, default=0.005)          # relative, per camera
    principal_jitter: float = in_range(0.0, 0.1, default=0.015)      # fraction of the width, per camera
    distortion: list[float] = field(default_factory=lambda: [-0.2, 0.24, -0.0015, -0.001, 0.0])
    distortion_jitter: float = in_range(0.0, 0.1, default=0.01)      # absolute, k1 and k2
    position_jitter_mm: float = in_range(0.0, 1000.0, default=100.0)  # per subject
    angle_jitter_deg: float = in_range(0.0, 10.0, default=1.0)       # per subject, about each axis

    def check(self, section: str = "synth.rig") -> None:
        n = len(self.camera_ids)
        if n < 2:
            raise ParamError(f"param {section}.camera_ids: need at least 2 cameras, got {n}")
        if len(set(self.camera_ids)) != n:
            raise ParamError(f"param {section}.camera_ids: duplicate ids {self.camera_ids}")
        for key in ("azimuth_deg", "distance_mm", "height_mm"):
            if len(getattr(self, key)) != n:
                raise ParamError(f"param {section}.{key}: expected {n} values (one per camera_ids entry), "
                                 f"got {len(getattr(self, key))}")
        if len(self.distortion) != 5:
            raise ParamError(f"param {section}.distortion: expected [k1, k2, p1, p2, k3], got {self.distortion}")
        if min(self.distance_mm) <= 1500:
            raise ParamError(f"param {section}.distance_mm: cameras must stand outside the capture space (> 1500 mm)")




@dataclass(frozen=True)
class MpiiParams:
    """Section ``synth.mpii``: the MPII-layout still images (one person each)."""

    n_train: int = in_range(0, 1_000_000, default=3000)
    n_valid: int = in_range(0, 1_000_000, default=500)
    image_size: int = in_range(64, 2048, default=256)              # square images, pixels
    person_height: list[float] = field(default_factory=lambda: [0.45, 0.95])  # × image size, head top to ankle
    centre_jitter: float = in_range(0.0, 0.5, default=0.08)        # × image size, person centre offset (sd)
    truncated_fraction: float = in_range(0.0, 1.0, default=0.15)   # images with the person partly outside
    elevation_deg: list[float] = field(default_factory=lambda: [-15.0, 45.0])
    roll_deg: float = in_range(0.0, 45.0, default=10.0)
    focal_factor: list[float] = field(default_factory=lambda: [0.9, 2.0])  # × image size
    images_per_chunk: int = in_range(1, 10_000, default=64)        # one room and a few bodies per chunk
    backgrounds_per_chunk: int = in_range(1, 1000, default=4)
    bodies_per_chunk: int = in_range(1, 1000, default=8)
    jpeg_quality: int = in_range(30, 100, default=90)
    freestyle_share: float = in_range(0.0, 1.0, default=0.0)     # bodies in Freestyle motion, the rest the 9 actions

    def check(self, section: str = "synth.mpii") -> None:
        for key in ("person_height", "elevation_deg", "focal_factor"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                raise ParamError(f"param {section}.{key}: expected [low, high] with low <= high, got {lo_hi}")
        if self.person_height[0] <= 0:
            raise ParamError(f"param {section}.person_height: must be > 0, got {self.person_height}")
        if self.focal_factor[0] <= 0:
            raise ParamError(f"param {section}.focal_factor: must be > 0, got {self.focal_factor}")


@dataclass(frozen=True)
class SynthParams:
    """Section ``synth`` of params.yaml: what the ``synthesize`` stage renders."""

    seed: int = 0
    workers: int = in_range(1, 64, default=2)
    subjects: list[str] = field(default_factory=lambda: [*TRAIN_SUBJECTS, *TEST_SUBJECTS, *EXTRA_TRAIN_SUBJECTS])
    actions: list[str] = field(default_factory=lambda: list(ACTIONS))
    takes: int = in_range(1, 10, default=1)         # takes per action: "Walking", "Walking 1", ...
    extra_subject_actions: list[str] = field(default_factory=lambda: [FREESTYLE])   # more, for the extra people (S12...) only
    n_frames: int = in_range(1, 1_000_000, default=9)
    fps: float = in_range(1.0, 1000.0, default=10.0)
    image_size: int = in_range(64, 4096, default=500)  # square videos, pixels
    n_objects: list[int] = field(default_factory=lambda: [2, 5])  # furniture per room, [min, max]
    motion_root: str | None = None                  # H36M-layout folder of D3_Positions to render instead
    cameras: str | None = None                      # a cameras.json to render with instead of synth.rig
    rig: RigParams = field(default_factory=RigParams)
    mpii: MpiiParams = field(default_factory=MpiiParams)

    def __post_init__(self) -> None:
        bad = [s for s in self.subjects if not re.fullmatch(r"S\d+", s)]
        if bad or not self.subjects or len(set(self.subjects)) != len(self.subjects):
            raise ParamError(f"param synth.subjects: expected distinct names like 'S1', got {self.subjects}")
        unknown = [a for a in self.actions if base_action(a) not in GENERATED_ACTIONS]
        if unknown and self.motion_root is None:
            raise ParamError(f"param synth.actions: unknown actions {unknown} (known: {list(GENERATED_ACTIONS)})")
        unknown = [a for a in self.extra_subject_actions if a not in GENERATED_ACTIONS or a in self.actions]
        if unknown:
            raise ParamError(f"param synth.extra_subject_actions: {unknown} are not generated actions outside "
                             f"synth.actions (known: {list(GENERATED_ACTIONS)})")
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ParamError(f"param synth.actions: expected distinct action names, got {self.actions}")
        if len(self.n_objects) != 2 or not 0 <= self.n_objects[0] <= self.n_objects[1] <= 20:
            raise ParamError(f"param synth.n_objects: expected [min, max] within 0..20, got {self.n_objects}")
        self.rig.check("synth.rig")
        self.mpii.check("synth.mpii")

    def sequence_names(self, subject: str | None = None) -> list[str]:
        """Procedural sequences of ``subject``: each action, ``takes`` times (H36M naming); an extra
        training person (``EXTRA_TRAIN_SUBJECTS``) also ``extra_subject_actions``."""
        extra = self.extra_subject_actions if subject in EXTRA_TRAIN_SUBJECTS else []
        return [a if k == 0 else f"{a} {k}" for a in (*self.actions, *extra) for k in range(self.takes)]


def _key(value: str | int) -> int:
    return zlib.crc32(value.encode("utf-8")) if isinstance(value, str) else int(value)


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A random stream determined by ``seed`` and ``keys`` only (stable across processes and runs)."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2 ** 63, *(_key(k) for k in keys)]))
