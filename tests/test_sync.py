"""Cameras out of sync: each camera's time offset found from the 2D poses and corrected before
triangulating (``epipose.geometry.sync``, the triangulate stage), on simulated detections."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from epipose.camera import load_rig
from epipose.data.multiview import SubjectViews
from epipose.evaluation.pseudo_labels import evaluate_against_gt
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.sync import decide_offset, estimate_offsets, resample_camera, shift_frames, subframe
from epipose.pipeline.triangulate import TriangulateParams, summary, triangulate_table
from epipose.synth.simulate2d import NOISE_MODELS, camera_frame_truth, procedural_motions, simulate_pose2d

ACTIONS = ["Walking 1", "Greeting", "Directions"]
FRAMES = 40              # 4 s at the default data's 10 fps


@pytest.fixture(scope="module")
def recording():
    """S9 on Human3.6M's rig: 3 procedural actions × 40 frames at 10 fps, 2D with 2 px noise, synchronised."""
    rig = load_rig(ROOT / "resources" / "h36m" / "camera-parameters.json")
    seqs = {k: v for k, v in procedural_motions(["S1", "S5", "S6", "S7", "S8", "S9"], ACTIONS, FRAMES, 0,
                                                fps=10.0).items() if k[0] == "S9"}
    cams = {"S9": rig.cameras("S9")}
    df, _ = simulate_pose2d(seqs, cams, NOISE_MODELS["gauss2"], seed=1)
    return rig, df, camera_frame_truth(seqs, cams), sorted(cams["S9"])


def late(df, camera: str, k: int):
    """``camera`` started ``k`` frames late: its frame f shows the moment the others show in f − k (its
    recording runs as long as theirs, so it misses the last k moments)."""
    shifted = shift_frames(df, {camera: k}, sign=+1)
    return shifted[shifted["frame"] < FRAMES]


@pytest.mark.slow
def test_offsets_of_0_to_10_frames_are_recovered_exactly(recording):
    rig, df, _, cams = recording
    intr = CameraGroup.from_rig(rig, "S9", cams, extrinsics=False)
    focal = np.array([c.K[0, 0] for c in intr.cameras])
    for k in range(11):
        for camera, other in ((cams[2], 0), (cams[1], -3 if k >= 3 else 0)):      # two cameras off at once too
            off = late(late(df, camera, k), cams[3], other)
            sv = SubjectViews.from_table(off, cams)
            found = estimate_offsets(intr.undistort(sv.uv), sv.weights(0.01) > 0, sv.timestamps,
                                     4.0 / np.sqrt(np.outer(focal, focal)), max_steps=10)
            expected = {v: (k if c == camera else other if c == cams[3] else 0) for v, c in enumerate(cams) if v}
            assert {v: o.frames for v, o in found.items()} == expected, (k, camera, other)
            assert not any(o.ambiguous for o in found.values())


@pytest.mark.slow
def test_the_labels_of_a_late_camera_are_back_to_the_synchronised_error(recording, caplog):
    rig, df, truth, cams = recording
    for k in (1, 4, 10):
        off = late(df, cams[2], k)
        synchronised = df[~((df["camera"] == cams[2]) & (df["frame"] >= FRAMES - k))]    # the same moments, in sync
        ref = evaluate_against_gt(triangulate_table(synchronised, rig, TriangulateParams()).table, truth)["n_mpjpe_mm"]
        with caplog.at_level(logging.WARNING):
            out = triangulate_table(off, rig, TriangulateParams(sync_max_offset=10))
        rep = out.report["subjects"]["S9"]
        assert rep["status"] == "ok" and rep["sync"]["offsets_frames"] == {cams[1]: 0, cams[2]: k, cams[3]: 0}
        assert f"S9: camera {cams[2]} is {k} frame(s) behind camera {cams[0]}" in caplog.text
        assert summary(out.report)["rig.cameras_time_shifted"] == 1
        # every row stays on its own camera's clock: the late camera's rows keep its frame numbers
        assert set(out.table.loc[out.table["camera"] == cams[2], "frame"]) <= set(off.loc[off["camera"] == cams[2], "frame"])
        on_reference_clock = shift_frames(out.table, {cams[2]: k})
        assert evaluate_against_gt(on_reference_clock, truth)["n_mpjpe_mm"] == pytest.approx(ref, abs=0.5)
        # not searched that far: the late camera's labels are wrong, or the subject is refused
        uncorrected = triangulate_table(off, rig, TriangulateParams(sync_max_offset=0))
        if uncorrected.report["subjects"]["S9"]["status"] == "ok":
            assert evaluate_against_gt(shift_frames(uncorrected.table, {cams[2]: k}), truth)["n_mpjpe_mm"] > ref + 2.0


def test_synchronised_cameras_are_left_alone_and_the_report_is_unchanged(recording):
    rig, df, _, _ = recording
    out = triangulate_table(df, rig, TriangulateParams())
    assert "sync" not in out.report["subjects"]["S9"] and out.report["cameras_time_shifted"] == 0


def test_an_offset_needs_clear_evidence_and_two_far_apart_are_ambiguous():
    flat = {-2: 0.30, -1: 0.29, 0: 0.30, 1: 0.28, 2: 0.31}           # a person who barely moves: no evidence
    assert decide_offset(flat, min_gain=0.2).frames == 0
    clear = {-2: 0.60, -1: 0.50, 0: 0.45, 1: 0.30, 2: 0.44}
    assert (decide_offset(clear).frames, decide_offset(clear).ambiguous) == (1, False)
    twice = {-2: 0.31, -1: 0.50, 0: 0.45, 1: 0.30, 2: 0.44}          # a periodic motion: -2 fits as well as 1
    assert decide_offset(twice).ambiguous
    assert decide_offset({-10: 0.6, -5: 0.5, 0: 0.45, 5: 0.3, 10: 0.5}, step=5).frames == 5


def test_the_fraction_of_a_frame_is_where_the_cost_curve_bottoms_out():
    v = {d: 0.3 + 0.1 * abs(d - 0.4) for d in range(-3, 4)}           # a V with its minimum 0.4 frame late
    assert subframe(v, 0, 1) == pytest.approx(0.4)
    assert decide_offset(v).fraction == pytest.approx(0.4) and decide_offset(v).total(0.35) == pytest.approx(0.4)
    assert decide_offset(v).total(0.5) == 0                             # whole frames only
    assert subframe({d: 0.3 + 0.1 * abs(d + 6) for d in range(-15, 16, 5)}, -5, 5) == pytest.approx(-1.0)  # stride 5
    assert subframe({0: 0.3, 1: 0.5}, 0, 1) == 0                         # at the search's edge: no fraction
    assert subframe({-1: 0.364, 0: 0.363, 1: 0.402}, 0, 1) == 0          # flat (a frame moves the person less
    #                                                                     than the noise): the minimum is noise


def test_a_camera_resampled_between_its_frames_is_interpolated_and_loses_only_the_edges():
    frames = np.arange(0, 20, 2)                                        # a table sampled every other frame
    rows = [("S1", "Walk", c, int(f), j, 10.0 * f + k, 100.0 - f, 3 if f != 8 else 1)
            for c in ("a", "b") for f in frames for k, j in enumerate(("head", "pelvis"))]
    df = pd.DataFrame(rows, columns=["subject", "action", "camera", "frame", "joint", "x", "y", "n_views"])
    df = df.astype({"frame": np.int32, "x": np.float32, "y": np.float32, "n_views": np.int8})
    out = resample_camera(df, "b", 0.5)                                 # b's values a quarter of the spacing later
    b = out[out["camera"] == "b"]
    assert b["frame"].tolist() == np.repeat(frames[:-1], 2).tolist()    # the last frame has no later neighbour
    assert np.allclose(b["x"], 10.0 * (b["frame"] + 0.5) + np.tile([0, 1], len(frames) - 1))
    assert np.allclose(b["y"], 100.0 - (b["frame"] + 0.5)) and b["x"].dtype == np.float32
    assert (b.loc[b["frame"].isin([6, 8]), "n_views"] == 1).all() and (b.loc[b["frame"] == 4, "n_views"] == 3).all()
    assert out[out["camera"] == "a"].reset_index(drop=True).equals(df[df["camera"] == "a"].reset_index(drop=True))
    back = shift_frames(shift_frames(df, {"b": -3.0}), {"b": -3.0}, sign=+1)    # 1.5 spacings there and back
    assert np.allclose(back.loc[back["camera"] == "b", "x"], 10.0 * back.loc[back["camera"] == "b", "frame"]
                       + np.tile([0, 1], (back["camera"] == "b").sum() // 2))
    assert shift_frames(df, {"b": 2}).loc[lambda t: t["camera"] == "b", "frame"].tolist() == \
        (df.loc[df["camera"] == "b", "frame"] - 2).tolist()             # whole frames: the numbers move


@pytest.fixture(scope="module")
def fine_recording():
    """S9's 3 procedural actions at 100 fps, 2D with 2 px noise, read at 10 fps: a camera may start any
    tenth of a frame late."""
    rig = load_rig(ROOT / "resources" / "h36m" / "camera-parameters.json")
    seqs = {k: v for k, v in procedural_motions(["S1", "S5", "S6", "S7", "S8", "S9"], ACTIONS, FRAMES * 10, 0,
                                                fps=100.0).items() if k[0] == "S9"}
    cams = {"S9": rig.cameras("S9")}
    df, _ = simulate_pose2d(seqs, cams, NOISE_MODELS["gauss2"], seed=1)
    return rig, df, camera_frame_truth(seqs, cams), sorted(cams["S9"])


def read_at_10fps(df, camera: str, tenths: int):
    """Every 10th frame, ``camera``'s ``tenths`` of a frame later than the others' (frames renumbered)."""
    mine = df["camera"] == camera
    kept = df[(~mine & (df["frame"] % 10 == 0)) | (mine & ((df["frame"] - tenths) % 10 == 0) & (df["frame"] >= tenths))]
    kept = kept.assign(frame=((kept["frame"] - np.where(kept["camera"] == camera, tenths, 0)) // 10).astype(np.int32))
    return kept[kept["frame"] < FRAMES - 1].sort_values(["subject", "action", "camera", "frame"]).reset_index(drop=True)


@pytest.mark.slow
def test_half_a_frame_is_found_and_corrected(fine_recording):
    rig, df, truth, cams = fine_recording

    def error(table, tenths):                       # each row scored at the moment its camera saw
        at_100fps = table["frame"] * 10 + np.where(table["camera"] == cams[2], tenths, 0)
        return evaluate_against_gt(table.assign(frame=at_100fps.astype(np.int32)), truth)["n_mpjpe_mm"]

    synchronised = error(triangulate_table(read_at_10fps(df, cams[2], 0), rig, TriangulateParams()).table, 0)
    half = read_at_10fps(df, cams[2], 5)            # its frame f shows the others' f + 0.5: half a frame ahead
    out = triangulate_table(half, rig, TriangulateParams())
    offset = out.report["subjects"]["S9"]["sync"]["offsets_frames"]
    assert offset[cams[2]] == pytest.approx(-0.5, abs=0.1) and offset[cams[1]] == offset[cams[3]] == 0
    whole_only = triangulate_table(half, rig, TriangulateParams(sync_subframe=0.5))
    assert "sync" not in whole_only.report["subjects"]["S9"]
    assert error(out.table, 5) < synchronised + 0.5 < error(whole_only.table, 5) - 2.0
