"""Person boxes from the videos alone (frames.boxes: auto): silhouettes against a background model,
square crops that contain the rendered person, recordings without ground truth, and bad videos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from epipose import skeleton
from epipose.data import boxes as bx
from epipose.data.frames import FramesParams, read_shard
from epipose.data.h36m import H36MDataset
from epipose.pipeline.extract_frames import extract_frames


# --- the pieces on constructed images ------------------------------------------------------------------
def _room(rng, size=200):
    return rng.integers(60, 200, size=(size, size, 3), dtype=np.uint8)


def test_background_is_the_per_pixel_median_and_the_silhouette_the_person():
    rng = np.random.default_rng(0)
    room = _room(rng)
    frames = []
    for i in range(9):                        # the person at a different place in each frame
        f = room.copy()
        f[40:160, 10 + 20 * i : 30 + 20 * i] = (250, 20, 200)
        frames.append(f)
    bg = bx.background(frames)
    assert np.array_equal(bg, room)
    ext = bx.silhouette_extent(frames[4], bg, 1.0, threshold=30)
    np.testing.assert_array_equal(ext, [90, 40, 110, 160])
    empty = bx.silhouette_extent(room, bg, 1.0, threshold=30)
    assert np.isnan(empty).all()
    # At a reduced working resolution the extent is in original pixels, within the reduction.
    half = bx.silhouette_extent(frames[4], bx.reduce(bg, 0.5), 0.5, threshold=30)
    assert np.abs(half - [90, 40, 110, 160]).max() <= 2


def test_square_crops_fill_gaps_and_keep_the_standing_size():
    height = np.array([100.0, 100, 100, 60, 60, 60, 100, 100, 100])          # sits down in frames 3-5
    ext = np.stack([np.full(9, 50.0), 200 - height, np.full(9, 90.0), np.full(9, 200.0)], axis=1)
    ext[7] = np.nan                                                          # no person found
    crops = bx.square_crops(ext, person_fraction=0.9, centre_shift=-0.1, smooth=1, size_window=9)
    assert np.isfinite(crops).all()
    np.testing.assert_allclose(crops[:, 2], 100 / 0.9)                      # the standing size throughout
    no_window = bx.square_crops(ext, person_fraction=0.9, centre_shift=0.0, smooth=1, size_window=1)
    np.testing.assert_allclose(no_window[3, 2], 60 / 0.9)
    np.testing.assert_allclose(no_window[:, 0] + no_window[:, 2] / 2, 70.0)  # centred on the silhouette
    np.testing.assert_allclose(crops[0, 1] + crops[0, 2] / 2, 150 - 0.1 * crops[0, 2])   # shifted up


# --- rendered recordings -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from epipose.pipeline.synthesize import synthesize
    from epipose.synth.config import MpiiParams, SynthParams

    tmp = tmp_path_factory.mktemp("boxes")
    mpii = MpiiParams(n_train=7, n_valid=7, image_size=64, images_per_chunk=7, backgrounds_per_chunk=1,
                      bodies_per_chunk=1)
    synthesize(SynthParams(subjects=["S1"], actions=["Walking", "SittingDown", "Greeting"], n_frames=30,
                           image_size=200, workers=1, mpii=mpii), tmp / "h36m", tmp / "mpii")
    return tmp


def _params(**kw):
    return FramesParams(**{"stride": 3, "crop_size": 64, "workers": 1, **kw})


def test_auto_boxes_contain_the_rendered_person(rendered, tmp_path):
    root = rendered / "h36m"
    summary = extract_frames(root, tmp_path / "frames", _params())
    assert summary["frames_without_person"] == 0
    ds = H36MDataset(root)
    inside, height = [], []
    for seq in ds.sequences():
        shard = read_shard(tmp_path / "frames" / seq.subject / f"{seq.action}.{seq.camera}.parquet")
        cam = ds.rig.camera(seq.subject, seq.camera)
        uv = cam.project(skeleton.h36m32_to_mpii(ds.poses_world(seq.subject, seq.action))[shard["frame"]])
        x0, y0, s = (shard[c].to_numpy()[:, None] for c in ("x0", "y0", "size"))
        inside.append((uv[..., 0] >= x0) & (uv[..., 0] <= x0 + s) & (uv[..., 1] >= y0) & (uv[..., 1] <= y0 + s))
        height.append(np.ptp(uv[..., 1], axis=1) / s[:, 0])
    assert np.concatenate(inside).mean() >= 0.995
    assert 0.6 < np.median(np.concatenate(height)) < 0.95          # the person fills the crop as in gt crops


def test_a_recording_without_ground_truth_gives_the_same_crops(rendered, tmp_path):
    """Videos and intrinsics only: no D3_Positions, no extrinsics — and the same shards, byte for byte
    (auto boxes never read either)."""
    nogt = tmp_path / "nogt"
    shutil.copytree(rendered / "h36m", nogt)
    shutil.rmtree(nogt / "S1" / "MyPoseFeatures")
    cameras = json.loads((nogt / "cameras.json").read_text())
    del cameras["extrinsics"]
    (nogt / "cameras.json").write_text(json.dumps(cameras))
    extract_frames(rendered / "h36m", tmp_path / "a", _params())
    extract_frames(nogt, tmp_path / "b", _params())
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    with pytest.raises(ValueError, match="frames.boxes: gt .* needs D3_Positions and extrinsics"):
        extract_frames(nogt, tmp_path / "c", _params(boxes="gt"))   # the paper's crops need them


def _replace_video(path, frames_fn):
    from h36m_fixture import write_video

    from epipose.data.h36m import iter_video_frames, video_info

    frames = [frames_fn(i, f) for i, f in iter_video_frames(path)]
    write_video(path, frames, fps=video_info(path)[3])     # its own frame rate (extract_frames checks they agree)


def test_frames_without_a_person_follow_their_neighbours_and_an_empty_video_is_an_error(rendered, tmp_path, caplog):
    root = tmp_path / "h36m"
    shutil.copytree(rendered / "h36m", root)
    video = sorted((root / "S1" / "Videos").glob("Walking.*.mp4"))[0]
    others = sorted((root / "S1" / "Videos").glob(f"*.{video.name.split('.')[1]}.mp4"))
    # The person vanishes (frames painted with the empty room) in frames 9-14 of one video.
    from epipose.pipeline.extract_frames import camera_background

    clean, scale = camera_background(others, 63)
    assert scale == 1.0
    _replace_video(video, lambda i, f: clean.copy() if 9 <= i < 15 else f)
    summary = extract_frames(root, tmp_path / "frames", _params())
    assert summary["frames_without_person"] == 2                  # frames 9 and 12 of the sampled 0, 3, 6, ...
    assert "no person found in 2 of 10 frames" in caplog.text
    shard = read_shard(tmp_path / "frames" / "S1" / f"{video.stem}.parquet")
    assert np.isfinite(shard[["x0", "y0", "size"]].to_numpy()).all()
    _replace_video(video, lambda i, f: clean.copy())
    with pytest.raises(ValueError, match=rf"{video}: no person found in any frame"):
        extract_frames(root, tmp_path / "frames2", _params())


def test_a_camera_without_intrinsics_is_an_error_naming_it(rendered, tmp_path):
    root = tmp_path / "h36m"
    shutil.copytree(rendered / "h36m", root)
    cameras = json.loads((root / "cameras.json").read_text())
    gone = sorted(cameras["intrinsics"])[1]
    del cameras["intrinsics"][gone]
    (root / "cameras.json").write_text(json.dumps(cameras))
    with pytest.raises(ValueError, match=rf"cameras.json: camera {gone} of .* is not in its intrinsics"):
        extract_frames(root, tmp_path / "frames", _params())
    assert not (tmp_path / "frames").exists()
