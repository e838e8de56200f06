"""Synthetic data: procedural motion, rig, renderer, writers and the synthesize stage."""

from __future__ import annotations

import numpy as np
import pytest

from epipose import skeleton
from epipose.data.synth.motion import ACTIONS, Body, generate_motion, load_motion_root, random_body

FPS = 50.0
USED = list(skeleton.H36M17_FROM_32)
EDGES = [(j, p) for j, p in enumerate(skeleton.H36M32_PARENTS) if p >= 0]


def _motion(action: str, seed: int, n: int = 300) -> tuple[Body, np.ndarray]:
    body = random_body(np.random.default_rng(seed))
    return body, generate_motion(action, n, FPS, body, np.random.default_rng(seed + 1000))


# --- motion ---------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ACTIONS)
def test_motion_is_a_rigid_smooth_skeleton_on_the_floor(action):
    for seed in range(3):
        body, m = _motion(action, seed)
        assert m.shape == (300, 32, 3) and m.dtype == np.float64 and np.isfinite(m).all()
        # Every edge of the 32-joint tree keeps its length, and the MPII bones are the body's.
        lengths = np.stack([np.linalg.norm(m[:, j] - m[:, p], axis=-1) for j, p in EDGES], axis=1)
        assert np.abs(lengths - lengths[0]).max() < 1e-6
        mpii_bones = skeleton.bone_lengths(skeleton.h36m32_to_mpii(m))
        assert np.allclose(mpii_bones, body.bone_lengths, atol=1e-6)
        # Smooth: bounded per-frame velocity (6 m/s) and acceleration of the used joints.
        step = np.linalg.norm(np.diff(m[:, USED], axis=0), axis=-1)
        assert step.max() < 120.0, f"{action}: a joint moved {step.max():.0f} mm in one frame"
        assert np.linalg.norm(np.diff(m[:, USED], 2, axis=0), axis=-1).max() < 40.0
        # On the floor, not under it; inside the capture space; upright head.
        assert m[..., 2].min() > -1e-6
        assert m[:, [3, 8], 2].min(axis=1).max() < body.ankle_height + 150.0
        assert np.abs(m[:, 0, :2]).max() < 1500.0
        assert (m[:, 15, 2] > m[:, 0, 2]).all()


def test_standing_feet_rest_on_the_floor_and_extra_joints_are_plausible():
    body, m = _motion("Waiting", 3)
    ankles = m[:, [3, 8], 2]
    assert np.abs(ankles.min(axis=1) - body.ankle_height).max() < 40.0   # one foot planted
    assert np.abs(ankles - body.ankle_height).max() < 120.0              # the other barely lifted
    toes = m[:, [4, 9], 2]
    assert toes.max() < 100.0                                            # toe bases near the floor
    # Collars sit on the thorax (as in Human3.6M); toes in front of the ankles; hands past the wrists.
    assert np.allclose(m[:, 16], m[:, 13]) and np.allclose(m[:, 24], m[:, 13])
    fwd = np.cross(m[:, 17] - m[:, 25], [0.0, 0.0, 1.0])
    assert ((m[:, 4] - m[:, 3]) * fwd).sum(-1).min() > 0
    hand = np.linalg.norm(m[:, 22] - m[:, 19], axis=-1)
    assert np.allclose(hand, 0.5 * body.hand_length)
    # Standing height close to the body's nominal height.
    assert abs(m[:, 15, 2].max() - body.height) < 120.0


def test_subjects_and_seeds_differ_and_repeat():
    b0, b1 = random_body(np.random.default_rng(0)), random_body(np.random.default_rng(1))
    assert b0 != b1 and b0 == random_body(np.random.default_rng(0))
    mean = np.asarray(skeleton.MEAN_BONE_LENGTHS_MM)
    for seed in range(50):
        ratio = np.asarray(random_body(np.random.default_rng(seed)).bone_lengths) / mean
        assert (np.abs(ratio - 1) < 0.085).all()
    m0 = generate_motion("Walking", 100, FPS, b0, np.random.default_rng(5))
    again = generate_motion("Walking", 100, FPS, b0, np.random.default_rng(5))
    other_phase = generate_motion("Walking", 100, FPS, b0, np.random.default_rng(6))
    other_body = generate_motion("Walking", 100, FPS, b1, np.random.default_rng(5))
    assert np.array_equal(m0, again)
    assert np.abs(m0 - other_phase).mean() > 100.0 and np.abs(m0 - other_body).mean() > 3.0
    # The root moves and the heading turns while walking.
    assert np.linalg.norm(m0[-1, 0, :2] - m0[0, 0, :2]) > 1000.0
    left = m0[:, 17, :2] - m0[:, 25, :2]
    turn = np.degrees(np.arccos(np.clip((left[0] @ left[-1]) / np.linalg.norm(left[0]) / np.linalg.norm(left[-1]), -1, 1)))
    assert turn > 30.0


def test_actions_differ_and_bad_input_is_rejected():
    body = random_body(np.random.default_rng(0))
    sit = generate_motion("SittingDown", 400, FPS, body, np.random.default_rng(1))
    assert sit[:, 0, 2].min() < 0.7 * sit[:, 0, 2].max()          # the pelvis goes down
    wave = generate_motion("Greeting", 400, FPS, body, np.random.default_rng(1))
    assert (wave[:, [19, 27], 2].max(axis=1) > wave[:, 15, 2] - 100).any()  # a hand up by the head
    assert generate_motion("Walking 1", 10, FPS, body, np.random.default_rng(0)).shape == (10, 32, 3)
    with pytest.raises(ValueError, match="unknown action 'Dancing'"):
        generate_motion("Dancing", 10, FPS, body, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_frames"):
        generate_motion("Walking", 0, FPS, body, np.random.default_rng(0))


def test_load_motion_root_reads_d3_positions(tmp_path):
    from epipose.data.h36m import write_pose_cdf

    _, m = _motion("Posing", 0, 20)
    write_pose_cdf(tmp_path / "S1" / "MyPoseFeatures" / "D3_Positions" / "Posing 1.cdf", m)
    loaded = load_motion_root(tmp_path, "S1")
    assert list(loaded) == ["Posing 1"] and np.allclose(loaded["Posing 1"], m)
    with pytest.raises(FileNotFoundError, match="S9"):
        load_motion_root(tmp_path, "S9")
