import logging
import re
import shutil

import numpy as np
import pytest

from epipose import skeleton
from epipose.camera import Rig
from epipose.pipeline.extract_frames import extract_frames
from epipose.data.crop import crop_image, crop_to_original, original_to_crop
from epipose.data.frames import FramesParams, crop_boxes, decode_jpeg, list_shards, read_crop_info, read_shard
from epipose.data.h36m import H36MDataset

from h36m_fixture import make_root


@pytest.fixture
def root(tmp_path, real_rig):
    rig = Rig(real_rig.intrinsics, {"S1": real_rig.extrinsics["S1"], "S9": real_rig.extrinsics["S9"]})
    return make_root(tmp_path / "h36m", rig, subjects=("S1", "S9"), actions=("Walking 1", "Greeting"), n_frames=23)


def test_crop_mapping_round_trip():
    uv = np.random.default_rng(0).uniform(0, 1000, size=(7, 16, 2))
    x0, y0, size = np.arange(7.0)[:, None], -np.arange(7.0)[:, None] * 3, 300 + np.arange(7.0)[:, None]
    back = crop_to_original(original_to_crop(uv, x0, y0, size, 128), x0, y0, size, 128)
    assert np.allclose(back, uv)


def test_crop_image_maps_known_point():
    img = np.zeros((400, 600, 3), np.uint8)
    img[250, 410] = 255                       # a single bright pixel at (u, v) = (410, 250)
    x0, y0, size = 300.0, 180.0, 256.0       # crop 256 px → 128: scale 0.5
    crop = crop_image(img, x0, y0, size, 128).astype(float)[..., 0]
    v, u = np.unravel_index(np.argmax(crop), crop.shape)
    expected = original_to_crop(np.array([410.0, 250.0]), x0, y0, size, 128)
    assert np.hypot(u - expected[0], v - expected[1]) <= 1.0


def test_crop_is_padded_at_borders():
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_image(img, -50, -50, 100, 64)
    assert crop[:30, :30].max() == 0 and crop[40:, 40:].min() == 200


def test_box_is_2000mm_at_pelvis(real_rig):
    cam = real_rig.camera("S1", "54138969")
    pelvis = np.array([[0.0, 0.0, 5000.0], [300.0, -200.0, 4000.0]])
    boxes = crop_boxes(pelvis, cam, 2000.0)
    # Without distortion the side would be f·2000/z; mild distortion changes it by a few %.
    assert boxes[:, 2] == pytest.approx(cam.K[0, 0] * 2000 / pelvis[:, 2], rel=0.05)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    assert np.allclose(centre, cam.project_camera(pelvis))


def test_extract_frames_shards(root, tmp_path):
    """The paper's crops (frames.boxes: gt): the box around the ground-truth pelvis holds every joint."""
    params = FramesParams(stride=5, crop_size=96, jpeg_quality=95, boxes="gt", workers=2)
    summary = extract_frames(root, tmp_path / "frames", params)
    shards = list_shards(tmp_path / "frames")
    assert summary == {"sequences": 16, "frames": 16 * 5, "frames_without_person": 0, "stray_files": 0,
                       "stray_file_names": []}
    assert len(shards) == 16 and shards[0].relative_to(tmp_path / "frames").as_posix() == "S1/Greeting.54138969.parquet"
    # how the crops were cut travels with them (train_3d writes it into the model; predict frames by it)
    assert read_crop_info(tmp_path / "frames") == {"boxes": "gt", "box_mm": 2000.0, "crop_size": 96}
    ds = H36MDataset(root)
    for path in shards[::5]:
        df = read_shard(path)
        assert df["frame"].tolist() == [0, 5, 10, 15, 20]          # every stride-th frame of 23
        assert str(df["frame"].dtype) == "int32" and str(df["size"].dtype) == "float32"
        subject, (action, camera) = path.parent.name, path.stem.rsplit(".", 1)
        cam = ds.rig.camera(subject, camera)
        uv = cam.project_camera(ds.poses_mpii_camera(subject, action, camera)[df["frame"].to_numpy()])
        box = df[["x0", "y0", "size"]].to_numpy(np.float64)
        in_crop = original_to_crop(uv, box[:, :1], box[:, 1:2], box[:, 2:], 96)
        assert ((in_crop >= 0) & (in_crop < 96)).all()              # every joint inside its crop
        for row, pts in zip(df.itertuples(), in_crop):
            img = decode_jpeg(row.jpeg)
            assert img.shape == (96, 96, 3)
            u, v = np.round(pts[skeleton.PELVIS]).astype(int)
            b, g, r = img[v, u].astype(int)                          # the fixture's joint disc is yellow
            assert r > 150 and g > 150 and b < r - 40               # (background: grey 90)


@pytest.mark.slow
@pytest.mark.parametrize("boxes", ["auto", "gt"])
def test_extract_frames_is_deterministic(root, tmp_path, boxes):
    params = FramesParams(stride=7, crop_size=64, boxes=boxes, workers=1)
    extract_frames(root, tmp_path / "a", params)
    extract_frames(root, tmp_path / "b", FramesParams(stride=7, crop_size=64, boxes=boxes, workers=2))
    a, b = list_shards(tmp_path / "a"), list_shards(tmp_path / "b")
    assert len(a) == 16 and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_corrupt_video_leaves_nothing(root, tmp_path):
    video = sorted((root / "S9" / "Videos").glob("*.mp4"))[2]
    video.write_bytes(video.read_bytes()[:2000])
    out = tmp_path / "frames"
    with pytest.raises(ValueError, match=video.name):
        extract_frames(root, out, FramesParams(stride=5, boxes="gt", workers=2))
    assert not out.exists() and list(tmp_path.glob(".frames*")) == []


def test_missing_cdf_and_camera(root, tmp_path):
    (root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Greeting.cdf").unlink()
    # A video without poses is skipped with a warning, the rest is extracted.
    summary = extract_frames(root, tmp_path / "f", FramesParams(stride=10, boxes="gt", workers=1))
    assert summary["sequences"] == 12
    # Boxes from the videos need no poses: every video is a sequence (its poses None where missing).
    videos = H36MDataset(root).sequences(require_poses=False)
    assert len(videos) == 16 and sum(s.poses is None for s in videos) == 4
    with pytest.raises(FileNotFoundError, match="h36m_root"):
        extract_frames(tmp_path / "nowhere", tmp_path / "g", FramesParams())


def test_a_warning_raised_in_a_worker_process_reaches_the_stage_s_log(root, tmp_path, caplog):
    from epipose.data.h36m import read_pose_cdf, write_pose_cdf

    cdf = root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Greeting.cdf"
    write_pose_cdf(cdf, read_pose_cdf(cdf)[:20])              # the poses end before the video
    with caplog.at_level(logging.WARNING):
        extract_frames(root, tmp_path / "f", FramesParams(stride=10, boxes="gt", workers=2))
    assert "Greeting.54138969.mp4: 23 video frames vs 20 pose frames, using the shorter" in caplog.text


def test_bad_shard(tmp_path):
    bad = tmp_path / "S1" / "Walking.1.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 nope")
    with pytest.raises(ValueError, match="Walking.1.parquet"):
        read_shard(bad)


@pytest.mark.parametrize("bad, message", [
    ("stride: five", "param frames.stride: expected an integer"),
    ("stride: 0", "param frames.stride: 0 is below the minimum 1"),
    ("strides: 5", "param frames.strides: unknown key"),
])
def test_stage_rejects_bad_params(root, tmp_path, bad, message):
    import subprocess
    import sys

    import yaml

    from conftest import ROOT, write_params

    key, value = (s.strip() for s in bad.split(":", 1))
    write_params(tmp_path / "params.yaml", {"frames": {key: yaml.safe_load(value)}})
    out = tmp_path / "frames"
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "extract_frames.py"), "--h36m", str(root),
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_killed_extract_leaves_nothing_complete_and_rerun_finishes(root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, write_params

    write_params(tmp_path / "params.yaml", {"frames": {"stride": 1, "crop_size": 64, "workers": 1}})
    out = tmp_path / "frames"
    cmd = [sys.executable, str(ROOT / "stages" / "extract_frames.py"), "--h36m", str(root), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".frames.*.tmp/*/*.parquet")) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".frames.*.tmp/*/*.parquet")), "the stage never started writing"
    assert not out.exists()                                   # nothing that looks complete
    subprocess.run(cmd, cwd=tmp_path, check=True, stderr=subprocess.DEVNULL)
    assert len(list_shards(out)) == 16
    assert list(tmp_path.glob(".frames.*")) == []              # the killed run's temporary is gone


def test_files_outside_the_layout_are_named_and_counted(root, tmp_path, caplog):
    """What looks like a video or a pose file but misses the layout is never dropped unsaid: named in one
    warning and counted in the report, or (frames.stray_files: error) the stage's error, nothing written."""
    videos = sorted((root / "S9" / "Videos").glob("*.mp4"))
    action, camera = videos[0].name.rsplit(".", 2)[:2]
    (root / "s5" / "Videos").mkdir(parents=True)
    strays = {f"S9/Videos/{action}.{camera}.MP4": videos[0],              # the suffix's case
              f"S9/Videos/{action}_{camera}.mp4": videos[0],              # no dot before the camera
              f"s5/Videos/{videos[1].name}": videos[1],                    # a subject folder in lower case
              "S9/MyPoseFeatures/Walking.cdf": root / "S9/MyPoseFeatures/D3_Positions/Greeting.cdf"}   # a folder short
    for name, source in strays.items():
        shutil.copy(source, root / name)
    with caplog.at_level(logging.WARNING):
        summary = extract_frames(root, tmp_path / "f", FramesParams(stride=10, boxes="gt", workers=1))
    assert summary["sequences"] == 16 and summary["stray_files"] == 4
    assert sorted(summary["stray_file_names"]) == sorted(strays)
    warnings = [r.getMessage() for r in caplog.records if "do not match the layout" in r.getMessage()]
    assert len(warnings) == 1 and all(name in warnings[0] for name in strays)
    with pytest.raises(ValueError, match=r"4 file\(s\) .* not read: .*param frames.stray_files: warn"):
        extract_frames(root, tmp_path / "g", FramesParams(stride=10, boxes="gt", workers=1, stray_files="error"))
    assert not (tmp_path / "g").exists()


def test_one_recording_under_two_camera_ids_is_refused(root, tmp_path):
    """A copied (or renamed) video under a second camera id would be one view counted twice."""
    a, b = sorted((root / "S1" / "Videos").glob("Greeting.*.mp4"))[:2]
    shutil.copy(a, b)
    with pytest.raises(ValueError, match=f"{b}: the same video as {a}"):
        extract_frames(root, tmp_path / "f", FramesParams(stride=10, workers=1))
    assert not (tmp_path / "f").exists()


def test_a_camera_at_another_frame_rate_is_refused(root, tmp_path):
    """A 25-fps camera among 50-fps ones: frame f of each shows other moments (unsynchronised in effect)."""
    import cv2

    from h36m_fixture import write_video

    video = sorted((root / "S9" / "Videos").glob("Walking 1.*.mp4"))[1]
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    write_video(video, frames, fps=25.0)
    with pytest.raises(ValueError, match=rf"{re.escape(str(video))}: 25 fps, but .* of the same recording is 50 fps"):
        extract_frames(root, tmp_path / "f", FramesParams(stride=10, workers=1))
    assert not (tmp_path / "f").exists()


def test_one_camera_filming_at_two_sizes_is_refused(root, tmp_path):
    """Two videos of one camera at different sizes (one re-encoded): one line naming both, not a traceback
    from the worker pool (the camera's background is one image)."""
    import cv2

    from h36m_fixture import write_video

    video = sorted((root / "S1" / "Videos").glob("Greeting.*.mp4"))[0]
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(cv2.resize(got[1], (got[1].shape[1] * 9 // 10 // 2 * 2, got[1].shape[0] * 9 // 10 // 2 * 2)))
    cap.release()
    write_video(video, frames)
    with pytest.raises(ValueError, match=r"\.54138969\.mp4: 1000x1000 but .* of the same camera is 900x900") as err:
        extract_frames(root, tmp_path / "f", FramesParams(stride=10, workers=2))
    assert str(video) in str(err.value) and not (tmp_path / "f").exists()
