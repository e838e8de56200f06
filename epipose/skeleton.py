"""Joint sets, names, index mappings, bones and flip pairs.

Every 2D/3D pose downstream of the raw data uses the 16-joint MPII order.
Human3.6M poses arrive as 32 joints; `H36M17_FROM_32` picks the 17 used joints and
`MPII_FROM_H36M17` maps those to MPII by name (Spine is dropped).
"""

from __future__ import annotations

import numpy as np

# --- Human3.6M, 32-joint layout of D3_Positions (names as in the community's metadata) ---
H36M32_NAMES: tuple[str, ...] = (
    "Hip", "RHip", "RKnee", "RFoot", "RToeBase", "RSite",
    "LHip", "LKnee", "LFoot", "LToeBase", "LSite",
    "Spine0", "Spine", "Thorax", "Neck/Nose", "Head",
    "LCollar", "LShoulder", "LElbow", "LWrist", "LThumb", "LThumbSite", "LWristEnd", "LWristEndSite",
    "RCollar", "RShoulder", "RElbow", "RWrist", "RThumb", "RThumbSite", "RWristEnd", "RWristEndSite",
)
# Parent of every joint in the 32-joint kinematic tree (-1: root).
H36M32_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14,
    12, 16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30,
)

# The 17 joints used by everyone, as indices into the 32.
H36M17_FROM_32: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M17_NAMES: tuple[str, ...] = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax",
    "Neck/Nose", "Head", "LSho", "LElb", "LWri", "RSho", "RElb", "RWri",
)

# --- MPII, 16 joints: the order of every pose table in the project ---
MPII_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
NUM_JOINTS = len(MPII_NAMES)
JOINT_INDEX: dict[str, int] = {n: i for i, n in enumerate(MPII_NAMES)}

_H36M17_TO_MPII_NAME = {
    "RFoot": "r_ankle", "RKnee": "r_knee", "RHip": "r_hip", "LHip": "l_hip", "LKnee": "l_knee",
    "LFoot": "l_ankle", "Hip": "pelvis", "Thorax": "thorax", "Neck/Nose": "upper_neck",
    "Head": "head_top", "RWri": "r_wrist", "RElb": "r_elbow", "RSho": "r_shoulder",
    "LSho": "l_shoulder", "LElb": "l_elbow", "LWri": "l_wrist",
}
# MPII_FROM_H36M17[i] = index into the 17 of MPII joint i.
MPII_FROM_H36M17: tuple[int, ...] = tuple(
    H36M17_NAMES.index(next(h for h, m in _H36M17_TO_MPII_NAME.items() if m == name)) for name in MPII_NAMES
)
# MPII_FROM_H36M32[i] = index into the 32 of MPII joint i.
MPII_FROM_H36M32: tuple[int, ...] = tuple(H36M17_FROM_32[i] for i in MPII_FROM_H36M17)

PELVIS = JOINT_INDEX["pelvis"]
THORAX = JOINT_INDEX["thorax"]
HEAD_TOP = JOINT_INDEX["head_top"]
UPPER_NECK = JOINT_INDEX["upper_neck"]

# Left/right pairs, for horizontal flips and swap detection.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
FLIP_PERM: tuple[int, ...] = tuple(
    {**{a: b for a, b in FLIP_PAIRS}, **{b: a for a, b in FLIP_PAIRS}}.get(i, i) for i in range(NUM_JOINTS)
)

# Bones of the MPII skeleton (parent, child), a tree rooted at the pelvis.
BONES: tuple[tuple[int, int], ...] = (
    (6, 2), (2, 1), (1, 0),          # right leg
    (6, 3), (3, 4), (4, 5),          # left leg
    (6, 7), (7, 8), (8, 9),          # spine, neck, head
    (7, 12), (12, 11), (11, 10),     # right arm
    (7, 13), (13, 14), (14, 15),     # left arm
)
BONE_NAMES: tuple[str, ...] = tuple(f"{MPII_NAMES[a]}-{MPII_NAMES[b]}" for a, b in BONES)

# Mean adult bone lengths in mm (Human3.6M training-subject averages, rounded), per BONES entry.
# Used as the default metric-scale prior of the triangulation and by the synthetic skeleton.
MEAN_BONE_LENGTHS_MM: tuple[float, ...] = (
    133.0, 450.0, 440.0,
    133.0, 450.0, 440.0,
    490.0, 120.0, 115.0,
    150.0, 280.0, 250.0,
    150.0, 280.0, 250.0,
)


def h36m32_to_mpii(poses32: np.ndarray) -> np.ndarray:
    """(..., 32, C) Human3.6M poses → (..., 16, C) in MPII joint order."""
    if poses32.shape[-2] != len(H36M32_NAMES):
        raise ValueError(f"expected 32 joints on axis -2, got shape {poses32.shape}")
    return poses32[..., list(MPII_FROM_H36M32), :]


def bone_lengths(poses: np.ndarray) -> np.ndarray:
    """(..., 16, C) MPII-order poses → (..., n_bones) bone lengths."""
    parents = [a for a, _ in BONES]
    children = [b for _, b in BONES]
    return np.linalg.norm(poses[..., children, :] - poses[..., parents, :], axis=-1)
