"""Cameras out of sync: each camera's time offset found from the 2D poses and corrected before
triangulating (``epipose.geometry.sync``, the triangulate stage), on simulated detections."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import ROOT
from epipose.camera import load_rig
from epipose.data.multiview import SubjectViews
from epipose.evaluation.pseudo_labels import evaluate_against_gt
from epipose.geometry.camera_group import CameraGroup
from epipose.geometry.sync import decide_offset, estimate_offsets, shift_frames
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
