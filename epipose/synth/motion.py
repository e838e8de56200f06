"""Procedural human motion on the Human3.6M 32-joint skeleton.

A motion is built from smooth joint-angle time series (per action, with per-subject random
amplitudes and phases), a root trajectory and heading on the floor, and forward kinematics over
the fixed 32-joint tree of ``skeleton.H36M32_PARENTS`` with the subject's bone lengths, so every
bone keeps its length in every frame. The body is then lifted so that its lowest foot point
touches the floor (z = 0). Everything is vectorised over frames; the only Python loops run over
the 32 joints or the handful of signal components.

World frame (Human3.6M's): millimetres, z up, floor at z = 0. The body frame used for the rest
pose and joint angles: x forward, y to the subject's left, z up.

Angle conventions (degrees in the action code, radians in the kinematics):
- ``*_flex``: a limb hanging down swings forward (hip, shoulder, elbow); the torso bends forward
  (spine); the head nods down (neck, head). ``knee``: the shin swings back.
  ``ankle``: toes up.
- ``*_abd``: a limb moves away from the midline. ``*_twist``: rotation about the bone, + turns the
  front of the limb outwards (so the elbow bends upwards with abd 90 and twist 90).
- ``spine_side``/``neck_side``: bend towards the subject's left; ``spine_twist``/``neck_twist``/
  ``head_twist``: turn to the subject's left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from epipose import skeleton

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Greeting", "Phoning", "Posing", "Purchases", "SittingDown",
    "Waiting", "Walking",
)

# Indices into the 15 MPII bones (skeleton.BONES) of each body part's length.
_B_PELVIS, _B_THIGH, _B_SHIN = 0, 1, 2
_B_TORSO, _B_NECK, _B_HEAD = 6, 7, 8
_B_SHOULDER, _B_UPPER_ARM, _B_FOREARM = 9, 10, 11
_MIRROR_BONES = ((0, 3), (1, 4), (2, 5), (9, 12), (10, 13), (11, 14))
_SPINE_LOWER_FRACTION = 0.475  # Hip→Spine / Hip→Thorax (Human3.6M subjects: ~233 / 490 mm)

Colour = tuple[int, int, int]  # BGR, 0..255
# black, dark brown, brown, auburn, blonde, grey
_HAIR_COLOURS: tuple[Colour, ...] = ((20, 20, 25), (30, 40, 60), (40, 70, 110), (30, 60, 140), (110, 180, 215),
                                     (170, 170, 175))


@dataclass(frozen=True)
class Body:
    """One subject: bone lengths, body proportions and appearance (all lengths in mm)."""

    bone_lengths: tuple[float, ...]  # per skeleton.BONES (MPII tree), left = right
    ankle_height: float              # ankle joint above the floor, foot flat
    foot_length: float               # ankle → toe tip, along the floor
    hand_length: float               # wrist → finger tips
    head_radius: float
    neck_radius: float
    torso_half_width: float          # half the chest width (side to side)
    torso_half_depth: float          # half the chest depth (front to back)
    hip_radius: float
    upper_arm_radius: float
    forearm_radius: float
    thigh_radius: float
    shin_radius: float
    hand_radius: float
    foot_radius: float
    skin: Colour
    hair: Colour
    shirt: Colour
    trousers: Colour
    shoes: Colour
    long_sleeves: bool
    long_trousers: bool
    long_hair: bool

    def bone(self, index: int) -> float:
        return float(self.bone_lengths[index])

    @property
    def leg_length(self) -> float:
        return self.bone(_B_THIGH) + self.bone(_B_SHIN) + self.ankle_height

    @property
    def height(self) -> float:
        """Floor to head top, standing straight."""
        return self.leg_length + self.bone(_B_TORSO) + 0.98 * self.bone(_B_NECK) + self.bone(_B_HEAD)


def _uniform_colour(rng: np.random.Generator, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> Colour:
    return tuple(int(round(c)) for c in rng.uniform(lo, hi))  # type: ignore[return-value]


def _clothing_colour(rng: np.random.Generator) -> Colour:
    """A random, clearly visible clothing colour (HSV sampled, returned as BGR)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 230), rng.uniform(60, 230)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])  # type: ignore[return-value]


def random_body(rng: np.random.Generator, scale_range: float = 0.05, bone_jitter: float = 0.03) -> Body:
    """A random adult: bones within about ±8% of ``skeleton.MEAN_BONE_LENGTHS_MM``, random looks.

    The overall scale varies by ``±scale_range`` and each bone pair (left = right) by
    ``±bone_jitter`` on top of it.
    """
    mean = np.asarray(skeleton.MEAN_BONE_LENGTHS_MM, dtype=np.float64)
    scale = rng.uniform(1.0 - scale_range, 1.0 + scale_range)
    jitter = rng.uniform(1.0 - bone_jitter, 1.0 + bone_jitter, size=mean.size)
    for right, left in _MIRROR_BONES:
        jitter[left] = jitter[right]
    bones = mean * scale * jitter
    girth = scale * rng.uniform(0.9, 1.15)
    skin_tone = rng.uniform(0.0, 1.0)
    skin = tuple(int(round(a + (b - a) * skin_tone)) for a, b in zip((45, 70, 110), (170, 195, 235)))
    hair_base = _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))]
    hair = tuple(int(np.clip(c * rng.uniform(0.85, 1.15), 0, 255)) for c in hair_base)
    return Body(
        bone_lengths=tuple(float(b) for b in bones),
        ankle_height=80.0 * scale,
        foot_length=200.0 * scale * rng.uniform(0.95, 1.05),
        hand_length=170.0 * scale,
        head_radius=95.0 * scale * rng.uniform(0.95, 1.05),
        neck_radius=50.0 * girth,
        torso_half_width=155.0 * girth,
        torso_half_depth=105.0 * girth,
        hip_radius=95.0 * girth,
        upper_arm_radius=48.0 * girth,
        forearm_radius=38.0 * girth,
        thigh_radius=72.0 * girth,
        shin_radius=52.0 * girth,
        hand_radius=38.0 * scale,
        foot_radius=42.0 * scale,
        skin=skin,  # type: ignore[arg-type]
        hair=hair,  # type: ignore[arg-type]
        shirt=_clothing_colour(rng),
        trousers=_clothing_colour(rng) if rng.uniform() < 0.6 else _uniform_colour(rng, (60, 30, 20), (140, 90, 60)),
        shoes=_uniform_colour(rng, (15, 15, 15), (80, 80, 90)) if rng.uniform() < 0.8 else (225, 225, 230),
        long_sleeves=bool(rng.uniform() < 0.6),
        long_trousers=bool(rng.uniform() < 0.8),
        long_hair=bool(rng.uniform() < 0.3),
    )


# --- rest pose --------------------------------------------------------------------------------
def rest_offsets(body: Body) -> np.ndarray:
    """(32, 3) offset of every joint from its parent in the rest pose (body frame, mm)."""
    b = body.bone
    torso = b(_B_TORSO)
    spine_lo, spine_hi = _SPINE_LOWER_FRACTION * torso, (1.0 - _SPINE_LOWER_FRACTION) * torso
    sh = b(_B_SHOULDER)
    neck = b(_B_NECK)
    toe_fwd = 0.62 * body.foot_length
    toe_down = 0.7 * body.ankle_height
    off = np.zeros((32, 3))
    for side, (hip, knee, foot, toe, site) in ((-1.0, (1, 2, 3, 4, 5)), (1.0, (6, 7, 8, 9, 10))):
        off[hip] = (0.0, side * b(_B_PELVIS), 0.0)
        off[knee] = (0.0, 0.0, -b(_B_THIGH))
        off[foot] = (0.0, 0.0, -b(_B_SHIN))
        off[toe] = (toe_fwd, 0.0, -toe_down)
        off[site] = (0.38 * body.foot_length, 0.0, 0.0)
    off[11] = (0.0, 0.0, 0.0)                      # Spine0 sits on the hip joint (as in H36M)
    off[12] = (0.0, 0.0, spine_lo)                 # Spine
    off[13] = (0.0, 0.0, spine_hi)                 # Thorax
    off[14] = (0.2 * neck, 0.0, np.sqrt(1 - 0.04) * neck)  # Neck/Nose
    off[15] = (0.0, 0.0, b(_B_HEAD))               # Head (top)
    hand = body.hand_length
    for side, (collar, sho, elb, wri, thumb, thumb_site, end, end_site) in (
        (1.0, (16, 17, 18, 19, 20, 21, 22, 23)), (-1.0, (24, 25, 26, 27, 28, 29, 30, 31)),
    ):
        off[collar] = off[13]                      # collars coincide with the thorax (as in H36M)
        off[sho] = (0.0, side * np.sqrt(1 - 0.04) * sh, -0.2 * sh)  # slightly below the thorax
        off[elb] = (0.0, 0.0, -b(_B_UPPER_ARM))
        off[wri] = (0.0, 0.0, -b(_B_FOREARM))
        off[thumb] = (0.18 * hand, -side * 0.05 * hand, -0.25 * hand)
        off[thumb_site] = (0.12 * hand, 0.0, -0.2 * hand)
        off[end] = (0.0, 0.0, -0.5 * hand)
        off[end_site] = (0.0, 0.0, -0.5 * hand)
    return off


# --- rotations --------------------------------------------------------------------------------
def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


DOFS: tuple[str, ...] = (
    "root_roll", "spine_flex", "spine_side", "spine_twist", "neck_flex", "neck_side", "neck_twist",
    "head_flex", "head_twist",
    *(f"{s}{d}" for s in "RL" for d in ("hip_flex", "hip_abd", "hip_twist", "knee", "ankle",
                                           "sho_flex", "sho_abd", "sho_twist", "elbow", "wrist")),
)


def local_rotations(angles: dict[str, np.ndarray], n: int) -> dict[int, np.ndarray]:
    """Joint-angle series (degrees) → (n, 3, 3) local rotation of each articulated joint."""
    unknown = sorted(set(angles) - set(DOFS))
    if unknown:
        raise KeyError(f"unknown degrees of freedom {unknown} (known: {DOFS})")
    a = {k: np.radians(np.broadcast_to(angles.get(k, 0.0), (n,)).astype(np.float64)) for k in DOFS}
    rot: dict[int, np.ndarray] = {
        0: _rx(a["root_roll"]),
        11: _rz(a["spine_twist"]) @ _ry(a["spine_flex"]) @ _rx(-a["spine_side"]),
        13: _rz(a["neck_twist"]) @ _ry(a["neck_flex"]) @ _rx(-a["neck_side"]),
        14: _rz(a["head_twist"]) @ _ry(a["head_flex"]),
    }
    for s, side, (hip, knee, foot, sho, elb, wri) in (("R", -1.0, (1, 2, 3, 25, 26, 27)),
                                                      ("L", 1.0, (6, 7, 8, 17, 18, 19))):
        rot[hip] = _ry(-a[f"{s}hip_flex"]) @ _rx(side * a[f"{s}hip_abd"]) @ _rz(side * a[f"{s}hip_twist"])
        rot[knee] = _ry(a[f"{s}knee"])
        rot[foot] = _ry(-a[f"{s}ankle"])
        rot[sho] = _ry(-a[f"{s}sho_flex"]) @ _rx(side * a[f"{s}sho_abd"]) @ _rz(side * a[f"{s}sho_twist"])
        rot[elb] = _ry(-a[f"{s}elbow"])
        rot[wri] = _ry(-a[f"{s}wrist"])
    return rot


def forward_kinematics(offsets: np.ndarray, rotations: dict[int, np.ndarray], root_rotation: np.ndarray,
                       root_position: np.ndarray) -> np.ndarray:
    """Joint positions (n, 32, 3) from rest offsets, local rotations and the root placement.

    ``position[j] = position[parent] + G[parent] @ offset[j]`` and ``G[j] = G[parent] @ L[j]``;
    joints without an entry in ``rotations`` do not rotate.
    """
    n = root_position.shape[0]
    parents = skeleton.H36M32_PARENTS
    glob: list[np.ndarray] = [np.empty(0)] * len(parents)
    pos = np.empty((n, len(parents), 3))
    for j, p in enumerate(parents):
        if p < 0:
            glob[j] = root_rotation @ rotations[j] if j in rotations else root_rotation
            pos[:, j] = root_position
            continue
        pos[:, j] = pos[:, p] + glob[p] @ offsets[j]
        glob[j] = glob[p] @ rotations[j] if j in rotations else glob[p]
    return pos


def _sole_points(pos: np.ndarray, body: Body) -> np.ndarray:
    """(n, 6) heights of the soles: heel below each ankle, toe base and toe tip of each foot."""
    heel = pos[:, [3, 8], 2] - body.ankle_height
    toes = pos[:, [4, 5, 9, 10], 2] - 0.3 * body.ankle_height
    return np.concatenate([heel, toes], axis=1)


def pose_from_angles(body: Body, angles: dict[str, np.ndarray], root_xy: np.ndarray, heading: np.ndarray,
                     grounded: bool = True) -> np.ndarray:
    """Forward kinematics of angle series → (n, 32, 3) world poses, lowest sole on the floor."""
    n = root_xy.shape[0]
    root = np.concatenate([root_xy, np.zeros((n, 1))], axis=1)
    pos = forward_kinematics(rest_offsets(body), local_rotations(angles, n), _rz(heading), root)
    if grounded:
        pos[:, :, 2] -= _sole_points(pos, body).min(axis=1)[:, None]
    return pos


# --- smooth signals ---------------------------------------------------------------------------
def _wiggle(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float = 0.1, fmax: float = 0.6,
            k: int = 3) -> np.ndarray:
    """Smooth random signal: ``k`` sinusoids of random frequency and phase, peak about ``amp``."""
    f = rng.uniform(fmin, fmax, size=k)
    ph = rng.uniform(0, 2 * np.pi, size=k)
    w = rng.uniform(0.5, 1.0, size=k)
    w = w / w.sum()
    return amp * (w[None, :] * np.sin(2 * np.pi * t[:, None] * f[None, :] + ph[None, :])).sum(axis=1)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _pulses(rng: np.random.Generator, t: np.ndarray, period: float, hold: float = 0.35) -> np.ndarray:
    """Smooth 0→1→0 cycles of ``period`` seconds (random phase) that hold at 0 and at 1."""
    c = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return _smoothstep((c - hold / 2) / (1.0 - hold))


def _keyframes(rng: np.random.Generator, t: np.ndarray, period: float, lo: float, hi: float) -> np.ndarray:
    """Random key values every ``period`` seconds, smoothly blended (holds near each key)."""
    n_keys = int(np.ceil((t[-1] - t[0]) / period)) + 2 if t.size else 2
    keys = rng.uniform(lo, hi, size=n_keys)
    u = (t - t[0]) / period + rng.uniform(0, 1)
    i = np.floor(u).astype(int)
    w = _smoothstep((u - i - 0.2) / 0.6)
    i = np.clip(i, 0, n_keys - 2)
    return keys[i] * (1 - w) + keys[i + 1] * w


def _velocity(xy: np.ndarray, dt: float) -> np.ndarray:
    """Per-frame velocity (n, 2) of a path; a single frame stands still."""
    return np.gradient(xy, dt, axis=0) if xy.shape[0] > 1 else np.zeros_like(xy)


def _heading_of(xy: np.ndarray, dt: float) -> np.ndarray:
    v = _velocity(xy, dt)
    return np.unwrap(np.arctan2(v[:, 1], v[:, 0]))


# --- actions ----------------------------------------------------------------------------------
@dataclass
class _Ctx:
    t: np.ndarray
    dt: float
    body: Body
    rng: np.random.Generator

    def wiggle(self, amp: float, fmin: float = 0.1, fmax: float = 0.6) -> np.ndarray:
        return _wiggle(self.rng, self.t, amp, fmin, fmax)

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))


Angles = dict[str, np.ndarray]
Plan = tuple[np.ndarray, np.ndarray, Angles]  # root xy (n, 2) mm, heading (n,) rad, angles (deg)


def _add(ang: Angles, prefix: str = "", **deltas) -> None:
    """``ang[prefix + k] += v`` for every keyword (missing angles start at 0)."""
    for k, v in deltas.items():
        ang[prefix + k] = ang.get(prefix + k, 0.0) + v


def _idle(c: _Ctx) -> Angles:
    """A relaxed standing pose with small, subject-specific fidgets."""
    ang: Angles = {}
    for s in "RL":
        _add(ang, s, hip_flex=c.u(0, 5) + c.wiggle(2), hip_abd=c.u(1, 6) + c.wiggle(1.5),
             hip_twist=c.u(-5, 10) + c.wiggle(2), knee=c.u(2, 8) + np.abs(c.wiggle(3)),
             ankle=c.u(-2, 4) + c.wiggle(1.5), sho_flex=c.u(-5, 10) + c.wiggle(4),
             sho_abd=c.u(6, 14) + c.wiggle(3), sho_twist=c.u(-10, 10) + c.wiggle(4),
             elbow=c.u(8, 25) + c.wiggle(5), wrist=c.wiggle(8))
    _add(ang, spine_flex=c.u(-2, 6) + c.wiggle(2), spine_side=c.wiggle(2), spine_twist=c.wiggle(4),
         neck_flex=c.u(-5, 8) + c.wiggle(4), neck_side=c.wiggle(3), neck_twist=c.wiggle(10),
         head_flex=c.wiggle(4), head_twist=c.wiggle(8))
    return ang


def _drift_path(c: _Ctx, radius: float, speed: float) -> np.ndarray:
    """A slow, smooth wander around a random spot, staying within ``radius`` of it."""
    centre = c.rng.uniform(-400.0, 400.0, size=2)
    f = speed / max(radius, 1.0) / (2 * np.pi)
    x = centre[0] + radius * _wiggle(c.rng, c.t, 1.0, 0.5 * f, 1.5 * f, k=2)
    y = centre[1] + radius * _wiggle(c.rng, c.t, 1.0, 0.5 * f, 1.5 * f, k=2)
    return np.stack([x, y], axis=1)


def _turning(c: _Ctx, amp_deg: float, period: float) -> np.ndarray:
    """Heading (rad) that faces a random way and turns smoothly now and then."""
    return np.radians(c.u(-180, 180) + _keyframes(c.rng, c.t, period, -amp_deg, amp_deg) + c.wiggle(8))


def _standing(c: _Ctx, radius: float, speed: float, turn_deg: float, turn_period: float) -> tuple[np.ndarray, np.ndarray, Angles]:
    """Idle pose, a slow wander of ``radius`` mm and occasional turns: the base of most actions."""
    return _idle(c), _drift_path(c, radius, speed), _turning(c, turn_deg, turn_period)


def _add_gait(c: _Ctx, ang: Angles, xy: np.ndarray, heading: np.ndarray, amp_scale: float = 1.0) -> None:
    """Legs and arms stepping along ``xy``: stride phase from the distance walked, amplitude from speed.

    Speed is measured along the heading, so side-steps of a drifting stand get smaller steps.
    """
    v = _velocity(xy, c.dt)
    fwd = np.stack([np.cos(heading), np.sin(heading)], axis=1)
    speed = np.abs((v * fwd).sum(axis=1)) + 0.3 * np.abs(v[:, 0] * fwd[:, 1] - v[:, 1] * fwd[:, 0])
    hip_amp = c.u(18, 25)
    leg = c.body.bone(_B_THIGH) + c.body.bone(_B_SHIN)
    stride = 4.0 * leg * np.sin(np.radians(hip_amp))
    phase = 2 * np.pi * np.cumsum(speed) * c.dt / stride + c.u(0, 2 * np.pi)
    amp = amp_scale * np.clip(speed / 900.0, 0.0, 1.0)
    knee_amp, arm_amp = c.u(45, 58), c.u(12, 24)
    for s, ph in (("R", phase), ("L", phase + np.pi)):
        swing = np.maximum(0.0, np.cos(ph - 0.2)) ** 2  # mid-swing: hip passing forward
        load = np.maximum(0.0, np.cos(ph - 2.0)) ** 2
        toe_off = np.maximum(0.0, np.cos(ph + 1.3)) ** 4
        _add(ang, s, hip_flex=amp * (hip_amp * np.sin(ph) + 4.0), knee=amp * (knee_amp * swing + 10.0 * load),
             ankle=amp * (6.0 * np.sin(ph + 0.6) - 8.0 * toe_off), sho_flex=-amp * arm_amp * np.sin(ph),
             elbow=amp * 10.0 * (0.5 - 0.5 * np.sin(ph)))
    _add(ang, root_roll=amp * 3.0 * np.sin(2 * phase), spine_twist=-amp * 6.0 * np.sin(phase))


def _walking(c: _Ctx) -> Plan:
    ang = _idle(c)
    a = c.u(800, 1150)
    b = a * c.u(0.7, 0.95)
    rot = c.u(0, np.pi)
    centre = c.rng.uniform(-150, 150, size=2)
    speed = c.u(900, 1300) * c.body.leg_length / 970.0
    direction = 1.0 if c.rng.uniform() < 0.5 else -1.0
    # Constant speed along a wobbly ellipse: tabulate the curve, walk it by arc length.
    s = np.linspace(0.0, 2 * np.pi, 721)
    wobble = 1.0 + 0.08 * np.sin(3 * s + c.u(0, 2 * np.pi))
    ex, ey = a * wobble * np.cos(s), b * wobble * np.sin(s)
    curve = np.stack([ex * np.cos(rot) - ey * np.sin(rot), ex * np.sin(rot) + ey * np.cos(rot)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    walked = (c.u(0, 1) * arc[-1] + direction * speed * c.t) % arc[-1]
    xy = centre + np.stack([np.interp(walked, arc, curve[:, 0]), np.interp(walked, arc, curve[:, 1])], axis=1)
    heading = _heading_of(xy, c.dt)
    _add(ang, spine_flex=c.u(0, 5), neck_twist=direction * c.u(0, 10))  # looks into the turn
    _add_gait(c, ang, xy, heading)
    return xy, heading, ang


def _greeting(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(200, 500), 250, 70, c.u(2.5, 4))
    raise_ = _pulses(c.rng, c.t, c.u(2.5, 4.0))
    wave = np.sin(2 * np.pi * c.u(1.2, 2.0) * c.t)
    first = "L" if c.rng.uniform() < 0.5 else "R"
    sides = "LR" if c.rng.uniform() < 0.3 else first
    for s in sides:  # raise the arm(s), forearm up, and wave
        _add(ang, s, sho_abd=raise_ * (c.u(90, 130) + 12 * wave), sho_flex=raise_ * c.u(0, 30),
             sho_twist=raise_ * c.u(75, 95), elbow=raise_ * (c.u(45, 70) + 25 * wave))
    bow = _pulses(c.rng, c.t, c.u(3, 5))
    _add(ang, spine_flex=12 * (1 - raise_) * bow, head_flex=10 * (1 - raise_))
    _add_gait(c, ang, xy, heading, 0.6)
    return xy, heading, ang


def _directions(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(300, 600), 450, 110, c.u(2, 3.5))
    twist = _keyframes(c.rng, c.t, c.u(1.5, 2.5), -35, 35)
    _add(ang, spine_twist=twist, neck_twist=0.8 * twist)
    for s in "LR":  # point somewhere, arm straight
        point = _pulses(c.rng, c.t, c.u(2.5, 4.5), hold=0.5)
        _add(ang, s, sho_flex=point * _keyframes(c.rng, c.t, 2.0, 55, 110),
             sho_abd=point * _keyframes(c.rng, c.t, 2.0, 0, 50))
        ang[f"{s}elbow"] = ang[f"{s}elbow"] * (1 - point) + point * c.u(0, 12)
    _add_gait(c, ang, xy, heading, 0.8)
    return xy, heading, ang


def _sitting_down(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(100, 300), 150, 40, c.u(3, 5))
    sit = _pulses(c.rng, c.t, c.u(3.0, 4.5), hold=0.3)
    transition = np.sin(np.pi * sit)
    hip, knee = c.u(80, 100), c.u(90, 110)
    for s in "RL":  # ankle = knee - hip keeps the feet flat
        _add(ang, s, hip_flex=sit * hip, knee=sit * knee, ankle=sit * (knee - hip), hip_abd=sit * c.u(3, 15),
             sho_flex=sit * c.u(10, 35) + transition * c.u(15, 40), elbow=sit * c.u(20, 60))
    _add(ang, spine_flex=transition * c.u(25, 40) + sit * c.u(0, 15), neck_flex=transition * 10)
    return xy, heading, ang


def _purchases(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(300, 600), 400, 90, c.u(2.5, 4))
    bend = _pulses(c.rng, c.t, c.u(3, 5), hold=0.4)
    depth = c.u(50, 80)
    _add(ang, spine_flex=bend * depth, neck_flex=-bend * 0.3 * depth)  # bends over, keeps looking ahead
    for s in "RL":  # reach down and handle something
        _add(ang, s, hip_flex=bend * c.u(5, 20), knee=bend * c.u(10, 35),
             sho_flex=bend * (c.u(40, 80) + c.wiggle(15, 0.5, 1.2)), elbow=bend * (c.u(0, 40) + c.wiggle(15, 0.5, 1.2)))
    _add_gait(c, ang, xy, heading, 0.8)
    return xy, heading, ang


def _posing(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(150, 400), 200, 60, c.u(3, 4))
    period = c.u(1.6, 2.4)

    def key(lo: float, hi: float) -> np.ndarray:
        return _keyframes(c.rng, c.t, period, lo, hi)

    for s in "RL":  # a new pose every ``period`` seconds
        _add(ang, s, sho_abd=key(0, 150), sho_flex=key(-20, 100), sho_twist=key(-40, 90), elbow=key(0, 120),
             hip_abd=key(0, 20), knee=key(0, 25))
    _add(ang, spine_side=key(-20, 20), spine_flex=key(-10, 30), root_roll=key(-5, 5))
    _add_gait(c, ang, xy, heading, 0.6)
    return xy, heading, ang


def _discussion(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(300, 600), 300, 60, c.u(2.5, 4))
    for s in "RL":  # gesturing forearms
        talk = _pulses(c.rng, c.t, c.u(1.5, 3.0), hold=0.2)
        _add(ang, s, sho_flex=talk * (c.u(15, 40) + c.wiggle(12, 0.6, 1.5)), sho_abd=talk * c.u(5, 25),
             sho_twist=-talk * c.u(10, 40), elbow=talk * (c.u(50, 90) + c.wiggle(20, 0.8, 2.0)))
    _add(ang, neck_twist=_keyframes(c.rng, c.t, 1.5, -40, 40), root_roll=c.wiggle(4, 0.2, 0.5))
    _add_gait(c, ang, xy, heading, 0.7)
    return xy, heading, ang


def _phoning(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(400, 700), 500, 60, 3.0)
    s = "R" if c.rng.uniform() < 0.7 else "L"
    other = "L" if s == "R" else "R"
    # The phone hand at the ear: replace the idle arm.
    ang.update({f"{s}sho_flex": c.u(15, 30) + c.wiggle(4), f"{s}sho_abd": c.u(30, 45) + c.wiggle(3),
                f"{s}sho_twist": c.u(75, 95) + c.wiggle(3), f"{s}elbow": c.u(135, 150) + c.wiggle(3)})
    _add(ang, other, elbow=_pulses(c.rng, c.t, 4.0) * c.u(30, 80))
    _add(ang, neck_side=5 if s == "R" else -5, neck_flex=_keyframes(c.rng, c.t, 2.0, -5, 25))
    _add_gait(c, ang, xy, heading, 0.9)
    return xy, heading, ang


def _waiting(c: _Ctx) -> Plan:
    ang, xy, heading = _standing(c, c.u(150, 350), 150, 80, c.u(3, 5))
    crossed = c.rng.uniform() < 0.5
    for s in "RL":
        if crossed:  # arms folded in front
            flex, twist, elbow = c.u(25, 40), -c.u(50, 80), c.u(100, 125)
        else:  # hands behind the back
            flex, twist, elbow = -c.u(15, 30), -c.u(30, 60), c.u(40, 70)
        ang.update({f"{s}sho_flex": flex + c.wiggle(3), f"{s}sho_twist": twist + c.wiggle(3),
                    f"{s}elbow": elbow + c.wiggle(4), f"{s}sho_abd": c.u(8, 20) + 0.0 * c.t})
    _add(ang, root_roll=c.wiggle(5, 0.1, 0.3), neck_twist=_keyframes(c.rng, c.t, 2.5, -50, 50))
    _add_gait(c, ang, xy, heading, 0.5)
    return xy, heading, ang


# --- pose diversity: what people do and the nine actions never make ---------------------------------
FREESTYLE = "Freestyle"   # not a Human3.6M action: for the extra training people and the MPII stills
KNEE_RADIUS_MM = 50.0
_KNEES = [2, 7]           # Human3.6M's 32-joint skeleton: right, left knee

# Anatomical ranges (degrees) of every degree of freedom (adult active ranges, rounded; the convention of
# the module doc). The Freestyle motion stays within them; the nine actions are drawn well inside.
JOINT_LIMITS_DEG: dict[str, tuple[float, float]] = {
    "root_roll": (-30.0, 30.0), "spine_flex": (-30.0, 90.0), "spine_side": (-35.0, 35.0),
    "spine_twist": (-45.0, 45.0), "neck_flex": (-40.0, 50.0), "neck_side": (-35.0, 35.0),
    "neck_twist": (-70.0, 70.0), "head_flex": (-20.0, 25.0), "head_twist": (-20.0, 20.0),
    **{f"{s}{k}": lim for s in "RL" for k, lim in (
        ("hip_flex", (-30.0, 125.0)), ("hip_abd", (-20.0, 50.0)), ("hip_twist", (-40.0, 45.0)),
        ("knee", (0.0, 145.0)), ("ankle", (-45.0, 25.0)), ("sho_flex", (-50.0, 180.0)),
        ("sho_abd", (-10.0, 180.0)), ("sho_twist", (-90.0, 90.0)), ("elbow", (0.0, 145.0)),
        ("wrist", (-70.0, 70.0)))},
}
assert set(JOINT_LIMITS_DEG) == set(DOFS)


def _motif_deltas(c: _Ctx) -> dict[str, Angles]:
    """One clip's version of each motif: angle changes (deg) from the idle pose, sides drawn at random."""
    s, o = ("R", "L") if c.rng.uniform() < 0.5 else ("L", "R")
    crouch_hip, crouch_knee = c.u(85, 120), c.u(100, 140)
    overhead = {f"{x}{k}": v for x in "RL" for k, v in (("sho_flex", c.u(150, 180)), ("sho_abd", c.u(0, 30)),
                                                        ("elbow", c.u(0, 40)))}
    return {
        "reach": {f"{s}sho_flex": c.u(80, 170), f"{s}sho_abd": c.u(0, 60), f"{s}elbow": c.u(-20, 10),
                  "spine_flex": c.u(0, 35), "spine_twist": c.u(-30, 30), "spine_side": c.u(-20, 20)},
        "overhead": {**overhead, "spine_flex": c.u(-20, 0), "neck_flex": c.u(-30, 0)},
        "crouch": {**{f"{x}{k}": v for x in "RL" for k, v in (("hip_flex", crouch_hip), ("knee", crouch_knee),
                                                             ("ankle", min(25.0, crouch_knee - crouch_hip)),
                                                             ("hip_abd", c.u(5, 25)), ("sho_flex", c.u(20, 70)))},
                   "spine_flex": c.u(15, 45)},
        "kneel": {f"{s}hip_flex": c.u(-10, 10), f"{s}knee": c.u(85, 110), f"{s}ankle": c.u(-40, -20),
                  f"{o}hip_flex": c.u(80, 100), f"{o}knee": c.u(80, 100), "spine_flex": c.u(0, 25)},
        "bend": {"spine_flex": c.u(55, 90), "Rknee": c.u(0, 20), "Lknee": c.u(0, 20),   # the pelvis stays level
                 "Rsho_flex": c.u(30, 90), "Lsho_flex": c.u(30, 90), "neck_flex": c.u(-30, 0)},
        "one_leg": ({f"{s}hip_flex": c.u(30, 95), f"{s}knee": c.u(30, 120)} if c.rng.uniform() < 0.6 else
                    {f"{s}hip_flex": c.u(-30, -10), f"{s}knee": c.u(60, 120)})
                   | {"Rsho_abd": c.u(20, 70), "Lsho_abd": c.u(20, 70), "spine_side": c.u(-15, 15)},
        "twist": {"spine_twist": c.u(-45, 45), "neck_twist": c.u(-60, 60), "spine_side": c.u(-30, 30),
                  f"{s}sho_abd": c.u(40, 100), f"{o}sho_flex": c.u(40, 120)},
    }


def _freestyle(c: _Ctx) -> Plan:
    """Pose diversity beyond the nine actions: every ``period`` seconds another motif (reaching, arms
    overhead, crouching, kneeling, bending over, standing on one leg, twisting), smoothly blended in
    and out of the idle pose, while the person turns about; every angle clipped to ``JOINT_LIMITS_DEG``."""
    ang, xy, heading = _standing(c, c.u(100, 300), 150, c.u(90, 180), c.u(1.5, 3))
    motifs = _motif_deltas(c)
    period = c.u(1.0, 1.8)
    n_keys = int(np.ceil((c.t[-1] - c.t[0]) / period)) + 2
    chosen = c.rng.integers(0, len(motifs), size=n_keys)        # the motif held at each key (idle between)
    u = (c.t - c.t[0]) / period + c.u(0, 1)
    i = np.clip(np.floor(u).astype(int), 0, n_keys - 2)
    w = _smoothstep((u - i - 0.2) / 0.6)
    for m, deltas in enumerate(motifs.values()):
        weight = (chosen[i] == m) * (1 - w) + (chosen[i + 1] == m) * w
        _add(ang, **{k: weight * v for k, v in deltas.items()})
    for k, (lo, hi) in JOINT_LIMITS_DEG.items():
        if k in ang:
            ang[k] = np.clip(ang[k], lo, hi)
    return xy, heading, ang


_ACTION_FUNCS: dict[str, Callable[[_Ctx], Plan]] = {
    "Directions": _directions, "Discussion": _discussion, "Greeting": _greeting, "Phoning": _phoning,
    "Posing": _posing, "Purchases": _purchases, "SittingDown": _sitting_down, "Waiting": _waiting,
    "Walking": _walking, FREESTYLE: _freestyle,
}
GENERATED_ACTIONS: tuple[str, ...] = (*ACTIONS, FREESTYLE)
assert tuple(sorted(_ACTION_FUNCS)) == tuple(sorted(GENERATED_ACTIONS))


def base_action(name: str) -> str:
    """The action of a sequence name: ``"Walking 1"`` → ``"Walking"``."""
    return name.split(" ")[0]


def generate_motion(action: str, n_frames: int, fps: float, body: Body, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, 32, 3) float64 world poses (mm, z up, floor z = 0) of ``body`` doing ``action``.

    ``action`` is one of ``GENERATED_ACTIONS`` (a take suffix like ``"Walking 1"`` is accepted). The same
    ``rng`` state gives the same motion; different states give different phases and amplitudes.
    """
    stem = base_action(action)
    if stem not in _ACTION_FUNCS:
        raise ValueError(f"unknown action {action!r} (known: {list(GENERATED_ACTIONS)})")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    dt = 1.0 / fps
    ctx = _Ctx(t=np.arange(n_frames) * dt, dt=dt, body=body, rng=rng)
    xy, heading, angles = _ACTION_FUNCS[stem](ctx)
    pos = pose_from_angles(body, angles, xy, heading)
    if stem == FREESTYLE:            # a kneeling knee rests on the floor (its centre a knee's radius above)
        pos[:, :, 2] += np.maximum(0.0, np.maximum(KNEE_RADIUS_MM - pos[:, _KNEES, 2].min(axis=1),
                                                   -pos[:, :, 2].min(axis=1)))[:, None]
    return pos


# --- external motion --------------------------------------------------------------------------
def load_motion_root(root: str | Path, subject: str) -> dict[str, np.ndarray]:
    """Every ``<root>/<subject>/MyPoseFeatures/D3_Positions/<Action>.cdf`` → {action: (N, 32, 3) mm}.

    For rendering real (e.g. Human3.6M) motion instead of procedural motion (param
    ``synth.motion_root``).
    """
    from epipose.data.h36m import read_pose_cdf

    folder = Path(root) / subject / "MyPoseFeatures" / "D3_Positions"
    if not folder.is_dir():
        raise FileNotFoundError(f"motion folder not found: {folder} (param synth.motion_root)")
    files = sorted(folder.glob("*.cdf"))
    if not files:
        raise FileNotFoundError(f"no .cdf files in {folder} (param synth.motion_root)")
    return {p.stem: read_pose_cdf(p) for p in files}
