"""Synthetic data: procedural motion, rig, renderer, writers and the synthesize stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epipose import skeleton
from epipose.synth.motion import (ACTIONS, FREESTYLE, GENERATED_ACTIONS, JOINT_LIMITS_DEG, Body, _Ctx, _freestyle,
                                  generate_motion, load_motion_root, random_body)

FPS = 50.0
ROOT_DIR = Path(__file__).resolve().parents[1]
USED = list(skeleton.H36M17_FROM_32)
EDGES = [(j, p) for j, p in enumerate(skeleton.H36M32_PARENTS) if p >= 0]


def _motion(action: str, seed: int, n: int = 300) -> tuple[Body, np.ndarray]:
    body = random_body(np.random.default_rng(seed))
    return body, generate_motion(action, n, FPS, body, np.random.default_rng(seed + 1000))


# --- motion ---------------------------------------------------------------------------------
@pytest.mark.parametrize("action", GENERATED_ACTIONS)
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


def test_freestyle_stays_within_joint_limits_and_makes_poses_the_nine_actions_never_make():
    t = np.arange(300) / FPS
    for seed in range(20):
        xy, heading, ang = _freestyle(_Ctx(t, 1 / FPS, random_body(np.random.default_rng(seed)),
                                           np.random.default_rng(seed + 1)))
        for k, v in ang.items():
            lo, hi = JOINT_LIMITS_DEG[k]
            assert lo <= np.min(v) and np.max(v) <= hi, k
    # Beyond the nine actions: a knee on the floor (kneeling), the pelvis below 45% of its standing height
    # (crouching), one foot 25 cm above the other (one-leg stances): never in the nine, often in Freestyle.
    def shares(actions):
        m = skeleton.h36m32_to_mpii(np.concatenate([_motion(a, s)[1] for a in actions for s in range(4)]))
        z, j = m[..., 2], {n: i for i, n in enumerate(skeleton.MPII_NAMES)}
        kneel = np.minimum(z[:, j["l_knee"]], z[:, j["r_knee"]]) < 150.0
        deep = z[:, j["pelvis"]] < 0.45 * np.percentile(z[:, j["pelvis"]], 95)      # the 95th: standing
        one_leg = np.abs(z[:, j["l_ankle"]] - z[:, j["r_ankle"]]) > 250.0
        return np.array([kneel.mean(), deep.mean(), one_leg.mean()])
    assert (shares([FREESTYLE]) > 0.02).all()
    assert (shares(ACTIONS) == 0).all()
    body, m = _motion(FREESTYLE, 0)
    assert m[:, [2, 7], 2].min() >= 50.0 - 1e-9            # a kneeling knee rests on the floor, not in it


def test_freestyle_reaches_only_the_extra_people_and_the_stills_asked_for():
    from epipose.params import ParamError
    from epipose.synth.config import SynthParams
    from epipose.synth.stills import clip_action

    p = SynthParams(actions=["Walking"], takes=2, extra_subject_actions=[FREESTYLE])
    assert p.sequence_names("S12") == ["Walking", "Walking 1", FREESTYLE, f"{FREESTYLE} 1"]
    assert p.sequence_names("S1") == p.sequence_names("S9") == ["Walking", "Walking 1"]   # Human3.6M's people
    assert SynthParams(actions=["Walking"], extra_subject_actions=[]).sequence_names("S12") == ["Walking"]
    assert SynthParams(actions=["Walking"]).sequence_names("S12") == ["Walking", FREESTYLE]     # the default
    for bad in (["Dancing"], ["Walking"]):
        with pytest.raises(ParamError, match="param synth.extra_subject_actions"):
            SynthParams(actions=["Walking"], extra_subject_actions=bad)
    # share 0 draws exactly what the stills drew before the share existed; share 1 is all Freestyle
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [clip_action(a, 0.0) for _ in range(20)] == [str(b.choice(ACTIONS)) for _ in range(20)]
    assert a.uniform() == b.uniform()
    assert {clip_action(a, 1.0) for _ in range(10)} == {FREESTYLE}


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
    for action in ACTIONS:
        assert np.isfinite(generate_motion(action, 1, FPS, body, np.random.default_rng(0))).all()
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


# --- rig ------------------------------------------------------------------------------------
def test_synthetic_rig_is_human36m_like():
    from epipose.synth.config import RigParams
    from epipose.synth.rig import synthetic_rig

    rig = synthetic_rig(RigParams(), ["S1", "S9"], 500, seed=0)
    assert rig.camera_names == ["54138969", "55011271", "58860488", "60457274"]
    for name in rig.camera_names:
        K, dist = rig.intrinsics[name]
        assert K[0, 0] == pytest.approx(1.15 * 500, rel=0.03) and abs(K[0, 2] - 250) < 25
        assert dist[0] == pytest.approx(-0.2, abs=0.05) and dist[1] == pytest.approx(0.24, abs=0.05)
        a, b = rig.camera("S1", name), rig.camera("S9", name)
        for cam in (a, b):
            c = cam.center
            assert 3800 < np.hypot(c[0], c[1]) < 6000 and 1200 < c[2] < 1900
            # The optical axis passes close to (0, 0, 900).
            target = np.array([0.0, 0.0, 900.0]) - c
            off_axis = np.linalg.norm(np.cross(cam.R[2], target))
            assert off_axis < 250.0
        # Per-subject re-calibration: slightly different extrinsics, same intrinsics.
        assert 5.0 < np.linalg.norm(a.center - b.center) < 800.0
        assert np.array_equal(a.K, b.K)


# --- renderer -------------------------------------------------------------------------------
def _scene_free(seed: int = 0):
    from epipose.synth.render import random_scene

    return random_scene(np.random.default_rng(seed), n_objects=(0, 0))


def _corner_camera(size: int = 400):
    """A distorted camera that sees a person standing at the origin near its top-left corner."""
    from epipose.camera import Camera, look_at

    centre = np.array([4500.0, 0.0, 1500.0])
    R, t = look_at(centre, np.array([0.0, 1000.0, 0.0]))
    K = np.array([[1.15 * size, 0, size / 2], [0, 1.15 * size, size / 2], [0, 0, 1.0]])
    return Camera(K, np.array([-0.25, 0.25, 0.0, 0.0, 0.0]), R, t, "corner")


def test_rendered_head_lands_where_the_pose_says_through_the_lens():
    from epipose.synth.render import head_frame, render_labels

    import dataclasses

    body, m = _motion("Waiting", 7, 10)
    body = dataclasses.replace(body, long_hair=False)
    cam = _corner_camera()
    labels, names = render_labels(m, body, cam, 400, 400)
    head_ids = [i + 1 for i, n in enumerate(names) if n in ("head", "hair", "l_eye", "r_eye", "nose", "mouth")]
    hc, _, _, up = head_frame(m)
    centre = hc - 0.1 * body.head_radius * up  # the skull's middle: its capsule spans -0.35 r .. +0.12 r
    for f in range(0, 10, 3):
        v, u = np.nonzero(np.isin(labels[f], head_ids))
        assert u.size > 50
        centroid = np.array([u.mean(), v.mean()])
        lens = cam.project(centre[f])
        pinhole = cam.project(centre[f], distort=False)
        assert np.linalg.norm(lens - pinhole) > 8.0          # distortion matters here...
        assert np.linalg.norm(centroid - lens) < 3.0          # ...and the render follows the lens
        top = np.round(cam.project(m[f, 15])).astype(int)     # the Head joint: on the head's top
        window = labels[f, top[1] - 3:top[1] + 4, top[0] - 3:top[0] + 4]
        assert np.isin(window, head_ids).any()


def test_silhouette_covers_every_projected_joint():
    from epipose.camera import Camera, look_at
    from epipose.synth.render import render_labels

    for action, seed in (("Walking", 1), ("Greeting", 2), ("SittingDown", 3), ("Purchases", 4)):
        body, m = _motion(action, seed, 60)
        for az in (0.3, 2.0, 4.0):
            centre = np.array([5000 * np.cos(az), 5000 * np.sin(az), 1500.0])
            R, t = look_at(centre, np.array([0.0, 0.0, 900.0]))
            cam = Camera(np.array([[460.0, 0, 200], [0, 460.0, 200], [0, 0, 1]]), np.array([-0.2, 0.2, 0, 0, 0]), R, t)
            labels, _ = render_labels(m[::6], body, cam, 400, 400)
            uv = np.round(cam.project(m[::6][:, USED])).astype(int)
            inside = (uv >= 1).all(-1) & (uv < 399).all(-1)
            assert inside.mean() > 0.95
            f, j = np.nonzero(inside)
            around = np.stack([labels[f, uv[f, j, 1] + dy, uv[f, j, 0] + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            assert (around > 0).any(axis=0).all(), f"{action}: joints outside the rendered silhouette"


def test_frames_show_the_person_and_furniture_occludes_it():
    import dataclasses

    from epipose.synth.render import Box, render_background, render_frames

    body, m = _motion("Waiting", 5, 4)
    m = m - np.array([m[0, 0, 0], m[0, 0, 1], 0.0])           # stand at the origin
    cam = _corner_camera()
    scene = _scene_free()
    bg = render_background(scene, cam, 400, 400)
    frames = list(render_frames(m, body, cam, bg))
    uv = np.round(cam.project(m[:, USED])).astype(int)
    for f, frame in enumerate(frames):
        assert frame.shape == (400, 400, 3) and frame.dtype == np.uint8
        changed = np.abs(frame.astype(int) - bg.image).sum(-1) > 0
        assert changed[uv[f, :, 1], uv[f, :, 0]].all()
    # A tall crate between the camera and the person hides the person's middle.
    ray = cam.center - m[0, 0]
    crate = Box(*(m[0, 0, :2] + 0.45 * ray[:2]), 300.0, 300.0, 1300.0, 0.2, (50, 90, 160))
    blocked = dataclasses.replace(scene, objects=(crate,))
    bg2 = render_background(blocked, cam, 400, 400)
    frame = next(render_frames(m[:1], body, cam, bg2))
    pelvis = np.round(cam.project(m[0, 0])).astype(int)
    assert np.array_equal(frame[pelvis[1], pelvis[0]], bg2.image[pelvis[1], pelvis[0]])
    head = np.round(cam.project(m[0, 15] + [0, 0, 60])).astype(int)   # above the crate: visible
    assert not np.array_equal(frame[head[1] + 3, head[0]], bg2.image[head[1] + 3, head[0]])


def test_front_and_back_of_the_head_differ():
    from epipose.camera import Camera, look_at
    from epipose.synth.render import body_frame, render_labels

    body, m = _motion("Waiting", 11, 1)
    fwd = body_frame(m)[0][0]
    fwd[2] = 0
    fwd /= np.linalg.norm(fwd)
    K = np.array([[800.0, 0, 150], [0, 800.0, 150], [0, 0, 1]])
    counts = {}
    for view, sign in (("front", 1.0), ("back", -1.0)):
        centre = m[0, 15] + sign * 3000 * fwd
        R, t = look_at(centre, m[0, 15] - [0, 0, 100])
        labels, names = render_labels(m, body, Camera(K, np.zeros(5), R, t), 300, 300)
        counts[view] = {n: int((labels[0] == i + 1).sum()) for i, n in enumerate(names)}
    front, back = counts["front"], counts["back"]
    assert front["l_eye"] > 0 and front["r_eye"] > 0 and front["nose"] > 0
    assert back["l_eye"] == back["r_eye"] == back["nose"] == back["mouth"] == 0
    assert back["hair"] > 2 * back["head"] and front["head"] > front["hair"]


# --- stills (MPII layout) -------------------------------------------------------------------
def test_stills_joints_lie_on_the_person():
    from epipose.synth.config import MpiiParams
    from epipose.synth.stills import render_stills

    params = MpiiParams(image_size=128, truncated_fraction=0.3, backgrounds_per_chunk=2, bodies_per_chunk=3)
    stills = render_stills(np.random.default_rng(0), 30, params, (1, 2), with_masks=True)
    heights = []
    for s in stills:
        assert s.image.shape == (128, 128, 3) and s.joints.shape == (16, 2)
        uv = np.round(s.joints).astype(int)
        inside = (uv >= 1).all(-1) & (uv < 127).all(-1)
        for u, v in uv[inside]:
            assert s.mask[v - 1:v + 2, u - 1:u + 2].any()
        # The head box (MPII's PCKh normaliser) holds the head joints and is about a head in size.
        lo, hi = s.head_box
        head = s.joints[[skeleton.HEAD_TOP, skeleton.UPPER_NECK]]
        assert ((head >= lo - 1) & (head <= hi + 1)).all()
        segment = np.linalg.norm(head[0] - head[1])
        assert 1.2 * segment < np.linalg.norm(hi - lo) < 6 * segment
        heights.append(np.ptp(s.joints, axis=0).max())
    assert 0.35 * 128 < np.median(heights) < 1.0 * 128 and np.ptp(heights) > 20


# --- the stage ------------------------------------------------------------------------------
def _tiny(**over):
    from epipose.synth.config import MpiiParams, SynthParams

    mpii = MpiiParams(n_train=14, n_valid=5, image_size=96, images_per_chunk=7, backgrounds_per_chunk=1,
                      bodies_per_chunk=2, truncated_fraction=0.5)
    base = dict(subjects=["S1", "S9"], actions=["Walking", "SittingDown"], n_frames=8, fps=50.0, image_size=160,
                n_objects=[1, 2], workers=1, mpii=mpii)
    base.update(over)
    return SynthParams(**base)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthesize_writes_native_layouts_deterministically(tmp_path):
    import json

    from epipose.data.h36m import H36MDataset, iter_video_frames, read_pose_cdf, video_info
    from epipose.pipeline.synthesize import synthesize

    summary = synthesize(_tiny(workers=1), tmp_path / "a" / "h36m", tmp_path / "a" / "mpii")
    assert summary["videos"] == 2 * 2 * 4 and summary["frames"] == 16 * 8
    ds = H36MDataset(tmp_path / "a" / "h36m")
    seqs = ds.sequences()
    assert len(seqs) == 16 and {s.action for s in seqs} == {"Walking", "SittingDown"}
    assert ds.rig.camera_names == ["54138969", "55011271", "58860488", "60457274"]
    n, w, h, fps = video_info(seqs[0].video)
    assert (n, w, h) == (8, 160, 160) and fps == pytest.approx(50.0)
    assert read_pose_cdf(seqs[0].poses).shape == (8, 32, 3)
    # The MPII layout: schema, joints_vis = inside the image, files present.
    mpii = tmp_path / "a" / "mpii"
    n_hidden = 0
    for split, count in (("train", 14), ("valid", 5)):
        entries = json.loads((mpii / "annot" / f"{split}.json").read_text())
        assert len(entries) == count and len({e["image"] for e in entries}) == count
        for e in entries:
            assert set(e) == {"image", "center", "scale", "joints", "joints_vis"}
            assert (mpii / "images" / e["image"]).is_file()
            joints = np.asarray(e["joints"])
            assert joints.shape == (16, 2) and len(e["center"]) == 2 and e["scale"] > 0
            inside = (joints >= 0).all(1) & (joints[:, 0] <= 95) & (joints[:, 1] <= 95)
            assert e["joints_vis"] == [int(v) for v in inside]
            n_hidden += 16 - sum(e["joints_vis"])
    assert n_hidden > 0  # some people are truncated
    # The valid split's evaluation file: head boxes, in the json's order, around the heads.
    from epipose.data.mpii import load_split
    valid = load_split(mpii, "valid")
    assert not (mpii / "annot" / "gt_train.mat").exists() and valid.head_boxes.shape == (5, 2, 2)
    assert (valid.head_boxes[:, 1] > valid.head_boxes[:, 0]).all()
    segment = np.linalg.norm(valid.joints[:, skeleton.HEAD_TOP] - valid.joints[:, skeleton.UPPER_NECK], axis=-1)
    assert (valid.head_sizes() > 0.6 * segment).all()
    # Same params → byte-identical files, whatever the number of workers (mp4 included).
    synthesize(_tiny(workers=2), tmp_path / "b" / "h36m", tmp_path / "b" / "mpii")
    for sub in ("h36m", "mpii"):
        a, b = _files(tmp_path / "a" / sub), _files(tmp_path / "b" / sub)
        assert a.keys() == b.keys()
        assert [k for k in a if a[k] != b[k]] == []
    # A different seed gives different data.
    synthesize(_tiny(seed=1), tmp_path / "c" / "h36m", tmp_path / "c" / "mpii")
    assert _files(tmp_path / "c" / "h36m")["S1/MyPoseFeatures/D3_Positions/Walking.cdf"] != \
        _files(tmp_path / "a" / "h36m")["S1/MyPoseFeatures/D3_Positions/Walking.cdf"]
    frames = [img for _, img in iter_video_frames(seqs[0].video)]
    assert len(frames) == 8 and frames[0].shape == (160, 160, 3)


def test_synthesize_renders_freestyle_for_the_extra_people_only(tmp_path):
    import dataclasses

    from epipose.data.h36m import H36MDataset
    from epipose.pipeline.synthesize import synthesize

    p = _tiny(subjects=["S1", "S12"], actions=["Walking"], extra_subject_actions=[FREESTYLE])
    p = dataclasses.replace(p, mpii=dataclasses.replace(p.mpii, freestyle_share=0.5))
    synthesize(p, tmp_path / "h36m", tmp_path / "mpii")
    seqs = {(s.subject, s.action) for s in H36MDataset(tmp_path / "h36m").sequences()}
    assert seqs == {("S1", "Walking"), ("S12", "Walking"), ("S12", FREESTYLE)}
    plain = _tiny(subjects=["S1", "S12"], actions=["Walking"])
    synthesize(plain, tmp_path / "p" / "h36m", tmp_path / "p" / "mpii")
    a, b = _files(tmp_path / "h36m"), _files(tmp_path / "p" / "h36m")
    assert all(a[k] == b[k] for k in b)                   # what both render is the same: own random streams
    assert _files(tmp_path / "mpii") != _files(tmp_path / "p" / "mpii")      # the stills' bodies move otherwise


def test_real_rig_sees_the_whole_person(real_rig, tmp_path):
    from conftest import REAL_CAMERAS

    from epipose.data.h36m import H36MDataset, iter_video_frames
    from epipose.pipeline.synthesize import synthesize

    # Every procedural action, for 10 s: all 17 joints inside every real camera's image.
    for action in ACTIONS:
        for seed, subject in ((0, "S1"), (1, "S9"), (2, "S11")):
            body = random_body(np.random.default_rng(seed + 40))
            m = generate_motion(action, 100, 10.0, body, np.random.default_rng(seed))
            for cam in real_rig.cameras(subject).values():
                uv = cam.project(m[:, USED])
                assert (uv > 0).all() and (uv < 1000).all(), f"{action} leaves camera {cam.name} of {subject}"
    # synthesize renders with it (synth.cameras): the person is where the poses say in every video.
    params = _tiny(cameras=str(REAL_CAMERAS), image_size=1000, subjects=["S11"], actions=["Walking"], n_frames=3,
                   fps=2.0, mpii=_tiny().mpii.__class__(n_train=0, n_valid=0))
    synthesize(params, tmp_path / "h36m", tmp_path / "mpii")
    ds = H36MDataset(tmp_path / "h36m")
    assert ds.rig.camera("S11", "54138969").K[0, 0] == pytest.approx(1145.0494, abs=1e-3)
    assert len(ds.sequences()) == 4
    for seq in ds.sequences():
        cam = ds.rig.camera(seq.subject, seq.camera)
        poses = ds.poses_world(seq.subject, seq.action)
        assert np.linalg.norm(poses[2, 0] - poses[0, 0]) > 600    # walked on
        frames = [img.astype(int) for _, img in iter_video_frames(seq.video)]
        uv = np.round(cam.project(poses[0, [0, 12, 13]])).astype(int)  # hip, spine, thorax at frame 0
        # There at frame 0, gone by frame 2: the pixels change.
        change = np.abs(frames[0][uv[:, 1], uv[:, 0]] - frames[2][uv[:, 1], uv[:, 0]]).sum(-1)
        assert (change > 40).sum() >= 2, f"{seq.video.name}: no person at the projected torso"


def _write_params(path, synth: dict) -> None:
    from conftest import write_params

    write_params(path, {"synth": synth})


@pytest.mark.parametrize("synth, message", [
    ({"fps": "fast"}, "param synth.fps: expected a number"),
    ({"colour": 3}, "param synth.colour: unknown key"),
    ({"rig": {"azimuth_deg": [0, 90]}}, "param synth.rig.azimuth_deg: expected 4 values"),
    ({"cameras": "missing/cameras.json"}, "param synth.cameras: cameras file not found: missing/cameras.json"),
    ({"actions": ["Dancing"]}, "param synth.actions: unknown actions ['Dancing']"),
])
def test_bad_params_fail_clearly_and_write_nothing(tmp_path, monkeypatch, caplog, synth, message):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("synthesize_stage", ROOT_DIR / "stages" / "synthesize.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    _write_params(tmp_path / "params.yaml", synth)
    monkeypatch.setattr(sys, "argv", ["synthesize.py", "--h36m-out", "out/h36m", "--mpii-out", "out/mpii"])
    from epipose.launch import run_stage

    assert run_stage(stage.main) == 2
    assert message in caplog.text
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_failure_midway_leaves_no_partial_output(tmp_path):
    from epipose.data.h36m import write_pose_cdf
    from epipose.pipeline.synthesize import synthesize

    _, m = _motion("Walking", 0, 8)
    write_pose_cdf(tmp_path / "motion" / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf", m)
    params = _tiny(motion_root=str(tmp_path / "motion"))       # S1 is there, S9 is not
    with pytest.raises(FileNotFoundError, match="S9"):
        synthesize(params, tmp_path / "out" / "h36m", tmp_path / "out" / "mpii")
    assert list((tmp_path / "out").iterdir()) == []
    # With S9 there too, external motion is rendered under its own names.
    write_pose_cdf(tmp_path / "motion" / "S9" / "MyPoseFeatures" / "D3_Positions" / "Walking.cdf", m[:5])
    synthesize(params, tmp_path / "out" / "h36m", tmp_path / "out" / "mpii")
    assert (tmp_path / "out" / "h36m" / "S1" / "Videos" / "Walking 1.55011271.mp4").is_file()
    assert (tmp_path / "out" / "h36m" / "S9" / "MyPoseFeatures" / "D3_Positions" / "Walking.cdf").is_file()


def test_synthesized_human36m_survives_last_bit_differences_of_the_math_library(tmp_path, monkeypatch):
    """Another CPU's numpy takes other SIMD paths for sin/cos/exp (results differing in the last bit):
    with every such result one bit off, data/raw/h36m (cameras.json, the .cdf poses, the videos) keeps
    its bytes — what is stored is rounded far above that (RIG_DECIMALS, POSE_DECIMALS_MM)."""
    from epipose.pipeline.synthesize import synthesize

    params = _tiny(workers=1, mpii=_tiny().mpii)           # one process: the patched functions are used
    synthesize(params, tmp_path / "a" / "h36m", tmp_path / "a" / "mpii")
    def one_bit_up(f):
        def g(*args, **kwargs):
            y = f(*args, **kwargs)
            return y if np.iscomplexobj(y) else np.nextafter(y, np.asarray(np.inf, dtype=np.asarray(y).dtype))
        return g

    for name in ("sin", "cos", "exp", "arctan2", "sqrt", "hypot"):
        monkeypatch.setattr(np, name, one_bit_up(getattr(np, name)))
    assert np.sin(0.5) > __import__("math").sin(0.5)        # the patch is in effect
    synthesize(params, tmp_path / "b" / "h36m", tmp_path / "b" / "mpii")
    monkeypatch.undo()
    a, b = _files(tmp_path / "a" / "h36m"), _files(tmp_path / "b" / "h36m")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
