import logging

import numpy as np
import pytest

from epipose import skeleton
from epipose.camera import Rig
from epipose.data.h36m import (H36MDataset, canonical_action, iter_video_frames, read_pose_cdf, video_info,
                               write_pose_cdf)

from h36m_fixture import make_root


def _small_rig(real_rig: Rig, subjects=("S1",)) -> Rig:
    return Rig(real_rig.intrinsics, {s: real_rig.extrinsics[s] for s in subjects})


def test_cdf_round_trip_and_determinism(tmp_path):
    poses = np.random.default_rng(0).normal(scale=500, size=(33, 32, 3))
    write_pose_cdf(tmp_path / "a.cdf", poses)
    write_pose_cdf(tmp_path / "b.cdf", poses)
    assert np.array_equal(read_pose_cdf(tmp_path / "a.cdf"), poses)
    assert (tmp_path / "a.cdf").read_bytes() == (tmp_path / "b.cdf").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cdf", "b.cdf"]  # no temp files left


def test_cdf_layout_is_h36m(tmp_path):
    import cdflib

    poses = np.zeros((5, 32, 3))
    write_pose_cdf(tmp_path / "p.cdf", poses)
    assert cdflib.CDF(str(tmp_path / "p.cdf")).varget("Pose").shape == (1, 5, 96)


def test_bad_cdf(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.cdf"):
        read_pose_cdf(tmp_path / "missing.cdf")
    (tmp_path / "junk.cdf").write_bytes(b"not a cdf at all")
    with pytest.raises(ValueError, match="junk.cdf"):
        read_pose_cdf(tmp_path / "junk.cdf")
    with pytest.raises(ValueError, match=r"\(N, 32, 3\)"):
        write_pose_cdf(tmp_path / "x.cdf", np.zeros((4, 17, 3)))
    assert not (tmp_path / "x.cdf").exists()


def test_action_aliases():
    assert canonical_action("TakingPhoto 1") == "Photo 1"
    assert canonical_action("WalkingDog") == "WalkDog"
    assert canonical_action("Walking 1") == "Walking 1"


def test_sequences_survive_real_quirks(tmp_path, real_rig, caplog):
    rig = _small_rig(real_rig, ("S1", "S11"))
    cams = rig.camera_names
    make_root(tmp_path, rig, subjects=("S1", "S11"), actions=("Photo", "Directions"), n_frames=12,
              video_frames={("S11", "Directions", cams[0]): 0, ("S1", "Photo", cams[1]): 10},
              video_names={"Photo": "TakingPhoto"})
    ds = H36MDataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        seqs = ds.sequences()
    keys = [(s.subject, s.action, s.camera) for s in seqs]
    assert ("S1", "Photo", cams[0]) in keys                      # video "TakingPhoto" matched to poses "Photo"
    assert ("S11", "Directions", cams[0]) not in keys            # missing video: skipped...
    assert len(keys) == 2 * 2 * 4 - 1
    assert "no video for camera" in caplog.text                 # ...with a warning
    short = next(s for s in seqs if (s.subject, s.action, s.camera) == ("S1", "Photo", cams[1]))
    with caplog.at_level(logging.WARNING):
        assert ds.usable_frames(short) == 10                     # frame-count mismatch: the shorter
    assert "using the shorter" in caplog.text


def test_gt_in_camera_frame(tmp_path, real_rig):
    rig = _small_rig(real_rig)
    make_root(tmp_path, rig, n_frames=5)
    ds = H36MDataset(tmp_path)
    cam = rig.camera("S1", "55011271")
    world = skeleton.h36m32_to_mpii(ds.poses_world("S1", "Walking 1"))
    ours = ds.poses_mpii_camera("S1", "Walking 1", "55011271")
    assert ours.shape == (5, 16, 3)
    assert np.allclose(ours, world @ cam.R.T + cam.t)


def test_video_reading_and_truncation(tmp_path, real_rig):
    rig = _small_rig(real_rig)
    make_root(tmp_path, rig, n_frames=8)
    video = next((tmp_path / "S1" / "Videos").glob("*.mp4"))
    n, w, h, fps = video_info(video)
    assert (n, w, h) == (8, 1000, 1000) and fps == pytest.approx(50)
    got = [i for i, _ in iter_video_frames(video, np.array([0, 3, 6]))]
    assert got == [0, 3, 6]
    with pytest.raises(ValueError, match=f"{video.name}.*truncated"):
        list(iter_video_frames(video, np.array([0, 9])))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[: len(video.read_bytes()) // 3])
    with pytest.raises(ValueError, match="broken.mp4"):
        video_info(broken)
        list(iter_video_frames(broken))
