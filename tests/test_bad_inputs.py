"""Bad params and bad input files across the stages: each stage script, run as dvc runs it (its
arguments, a params.yaml in the working directory), stops with exit status 2 and one error line that
names the offending ``section.key`` or file, and writes nothing.

The scripts run in this process (``runpy``, as ``python stages/<name>.py``) to keep the matrix fast;
their outputs all go under ``<tmp>/out``, which must stay empty.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import runpy
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from conftest import REMOVE, ROOT, deep_update
from epipose import skeleton
from epipose.camera import Rig
from epipose.data.h36m import H36MDataset
from epipose.data.pose_tables import write_pose2d
from epipose.synth.simulate2d import NOISE_MODELS, simulate_pose2d
from h36m_fixture import make_root as make_video_root
from mpii_fixture import make_mpii
from pose2d_fixture import make_h36m_with_shards, tiny_pose_net

CAMS = ("54138969", "55011271")
BASE_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """Valid inputs of every stage (tiny), shared read-only by the cases."""
    from epipose.camera import load_rig
    from conftest import REAL_CAMERAS

    real = load_rig(REAL_CAMERAS)
    rig = Rig({c: real.intrinsics[c] for c in CAMS}, {s: {c: real.extrinsics[s][c] for c in CAMS} for s in ("S1", "S9")})
    root = tmp_path_factory.mktemp("world")
    videos = make_video_root(root / "videos", rig, subjects=("S1", "S9"), actions=("Walking 1",), n_frames=4)
    h36m, frames_root = make_h36m_with_shards(root, rig, subjects=("S1",), actions=("Walking 1",))
    ds = H36MDataset(h36m)
    poses = skeleton.h36m32_to_mpii(ds.poses_world("S1", "Walking 1"))
    pose2d, _ = simulate_pose2d({("S1", "Walking 1"): poses[:6]}, {"S1": ds.rig.cameras("S1")}, NOISE_MODELS["exact"])
    write_pose2d(pose2d, root / "pose2d.parquet")
    return {
        "rig": rig, "videos": videos, "h36m": h36m, "frames": frames_root, "pose2d": root / "pose2d.parquet",
        "pose2d_df": pose2d, "mpii": make_mpii(root / "mpii", n_train=4, n_valid=2, image_size=96),
        "ckpt": tiny_pose_net(root / "pose2d.pt"), "ckpt17": tiny_pose_net(root / "j17.pt", num_joints=17),
    }


# --- the stages' command lines (outputs under out/) ---------------------------------------------------------
def synthesize(w, t):
    return "synthesize", ["--h36m-out", "out/h36m", "--mpii-out", "out/mpii"]


def extract_frames(w, t, h36m=None):
    return "extract_frames", ["--h36m", str(h36m or w["videos"]), "--out", "out/frames"]


def pretrain_2d(w, t, mpii=None):
    return "pretrain_2d", ["--mpii", str(mpii or w["mpii"]), "--out", "out/pose2d.pt", "--metrics", "out/m.json",
                           "--report", "out/r.json", "--live-dir", "out/live", "--ckpt-dir", "out/ckpt", "--no-progress"]


def infer_2d(w, t, frames=None, model=None, gt=None):
    return "infer_2d", ["--frames", str(frames or w["frames"]), "--model", str(model or w["ckpt"]),
                        "--out", "out/pose2d.parquet", "--metrics", "out/m.json", "--report", "out/r.json", "--gt-root", str(gt or w["h36m"]),
                        "--no-progress"]


def triangulate(w, t, pose2d=None, cameras=None):
    return "triangulate", ["--pose2d", str(pose2d or w["pose2d"]), "--cameras", str(cameras or w["h36m"] / "cameras.json"),
                           "--out", "out/pseudo3d.parquet", "--metrics", "out/m.json"]


def train_3d(w, t, pseudo3d=None):
    return "train_3d", ["--frames", str(w["frames"]), "--pose2d", str(w["ckpt"]),
                        "--pseudo3d", str(pseudo3d or w["pose2d"].parent / "pseudo3d.parquet"), "--out", "out/pose3d.pt",
                        "--metrics", "out/m.json", "--report", "out/r.json", "--live-dir", "out/live", "--ckpt-dir",
                        "out/ckpt", "--no-progress"]


def train_refiner(w, t):
    return "train_refiner", ["--pred3d", str(t / "pred3d.parquet"), "--pseudo3d", str(t / "pseudo3d.parquet"),
                             "--out", "out/refiner.pt", "--metrics", "out/m.json", "--report", "out/r.json", "--live-dir", "out/live",
                             "--ckpt-dir", "out/ckpt", "--no-progress"]


def evaluate(w, t, model=None):
    return "evaluate", ["--frames", str(w["frames"]), "--model", str(model or w["ckpt"]), "--metrics", "out/m.json",
                        "--report", "out/r.json", "--plots", "out/plots", "--no-progress"]


def pose3d_trained_on(w, t, subjects: list[str]) -> Path:
    """A (random) 3D network whose file says it trained on ``subjects``."""
    from epipose.models.pose_net import PoseNet, PoseNetConfig, save_pose_net

    path = t / "in" / "pose3d.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    net = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=64, depth_bins=4))
    save_pose_net(net, path, meta={"depth_range_mm": 2000.0, "target": "pseudo3d", "subjects": subjects})
    return path


# --- input breakers: copy an input into the case's folder and break it --------------------------------------
def copy_tree(src: Path, t: Path) -> Path:
    dst = t / "in" / src.name
    shutil.copytree(src, dst)
    return dst


def cameras_without(w, t, subject=None, camera=None) -> Path:
    root = copy_tree(w["videos"], t)
    data = json.loads((root / "cameras.json").read_text())
    if subject:
        del data["extrinsics"][subject]
    if camera:
        del data["intrinsics"][camera]
    (root / "cameras.json").write_text(json.dumps(data))
    return root


def truncated_video(w, t) -> Path:
    root = copy_tree(w["videos"], t)
    video = root / "S9" / "Videos" / f"Walking 1.{CAMS[1]}.mp4"
    video.write_bytes(video.read_bytes()[:1500])
    return root


def broken_shard(w, t) -> Path:
    root = copy_tree(w["frames"], t)
    (root / "S1" / f"Walking 1.{CAMS[1]}.parquet").write_bytes(b"PAR1 truncated")
    return root


def without_cdf(w, t) -> Path:
    root = copy_tree(w["h36m"], t)
    (root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf").unlink()
    return root


def pose2d_table(w, t, change: Callable) -> Path:
    path = t / "in" / "pose2d.parquet"
    path.parent.mkdir(parents=True)
    change(w["pose2d_df"].copy()).to_parquet(path)
    return path


def mpii_without(w, t, key: str) -> Path:
    root = copy_tree(w["mpii"], t)
    annot = root / "annot" / "train.json"
    entries = json.loads(annot.read_text())
    del entries[2][key]
    annot.write_text(json.dumps(entries))
    return root


def cameras_changed(w, t, change: Callable, root: Path | None = None) -> Path:
    """A copy of a cameras.json (of ``root``, default the world's Human3.6M root), changed in place."""
    path = t / "in" / "cameras.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(((root or w["h36m"]) / "cameras.json").read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def videos_with_cameras(w, t, change: Callable) -> Path:
    root = copy_tree(w["videos"], t)
    data = json.loads((root / "cameras.json").read_text())
    change(data)
    (root / "cameras.json").write_text(json.dumps(data))
    return root


def _halve_intrinsics(data: dict) -> None:
    for v in data["intrinsics"].values():
        v["calibration_matrix"] = (np.asarray(v["calibration_matrix"]) * [[0.5], [0.5], [1.0]]).tolist()


def _set(data: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


def nan_pelvis(w, t) -> Path:
    from epipose.data.h36m import read_pose_cdf, write_pose_cdf

    root = copy_tree(w["videos"], t)
    cdf = root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf"
    poses = read_pose_cdf(cdf)
    poses[2, 0] = np.nan                         # joint 0 of the 32: the pelvis (Hip)
    cdf.unlink()
    write_pose_cdf(cdf, poses)
    return root


def blocked(stage_args: tuple[str, list[str]], t: Path, flag: str) -> tuple[str, list[str]]:
    """The stage's ``flag`` output moved under a file (``in/blocker``): it cannot be written."""
    stage, args = stage_args
    (t / "in").mkdir(exist_ok=True)
    (t / "in" / "blocker").write_text("a file, not a folder")
    i = args.index(flag)
    return stage, [*args[: i + 1], str(t / "in" / "blocker" / Path(args[i + 1]).name), *args[i + 2:]]


def occupied(stage_args: tuple[str, list[str]], t: Path, flag: str, name: str, folder: bool) -> tuple[str, list[str]]:
    """The stage's ``flag`` output (added when absent) at ``in/<name>``, where a folder (``folder``) or a
    file of that name already is: the wrong kind of thing for it."""
    stage, args = stage_args
    target = t / "in" / name
    target.parent.mkdir(exist_ok=True)
    target.mkdir() if folder else target.write_text("a file, not a folder")
    if flag in args:
        i = args.index(flag)
        return stage, [*args[: i + 1], str(target), *args[i + 2:]]
    return stage, [*args, flag, str(target)]


class Pickled:
    """Not a tensor: torch.load(weights_only=True) refuses it with a page of advice."""


def pickled_object(t: Path) -> Path:
    import torch

    (t / "in").mkdir(exist_ok=True)
    torch.save({"config": Pickled(), "state_dict": {}}, t / "in" / "pickled.pt")
    return t / "in" / "pickled.pt"


def gt_not_finite(w, t) -> Path:
    from epipose.data.h36m import read_pose_cdf, write_pose_cdf

    root = copy_tree(w["h36m"], t)
    cdf = root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf"
    poses = read_pose_cdf(cdf)
    poses[1, 17, 2] = np.inf                     # a wrist, frame 1
    cdf.unlink()
    write_pose_cdf(cdf, poses)
    return root


def cameras_without_matrix(w, t) -> Path:
    path = t / "in" / "cameras.json"
    path.parent.mkdir(parents=True)
    data = json.loads((w["h36m"] / "cameras.json").read_text())
    del data["intrinsics"][CAMS[0]]["calibration_matrix"]
    path.write_text(json.dumps(data))
    return path


@dataclass
class Case:
    id: str
    command: Callable                     # (world, tmp) -> (stage, args)
    message: str                          # regex the error must match ({tmp} and {world:...} are filled in)
    params: dict = field(default_factory=dict)


# Params under which world's 2D checkpoint is train_3d's starting point and its h36m root the data.
TINY_3D = {"model": {"input_size": 64, "deconv_channels": 8}, "train_3d": {"subjects": ["S1"]}}

CASES = [
    # params: type, range, choice, unknown key, per section; checked before anything runs
    Case("synth-range", synthesize, r"param synth\.n_frames: -3 is below the minimum 1", {"synth": {"n_frames": -3}}),
    Case("frames-type", extract_frames, r"param frames\.crop_size: expected an integer, got str 'big'",
         {"frames": {"crop_size": "big"}}),
    Case("model-choice", pretrain_2d, r"param model\.backbone: 19 is not one of \[18, 34, 50\]",
         {"model": {"backbone": 19}}),
    Case("pretrain-unknown", pretrain_2d, r"param pretrain_2d\.epoch: unknown key", {"pretrain_2d": {"epoch": 3}}),
    Case("pretrain-type", pretrain_2d, r"param pretrain_2d\.lr: expected a number, got str 'fast'",
         {"pretrain_2d": {"lr": "fast"}}),
    Case("augment-bool", pretrain_2d, r"param augment\.flip: expected true/false", {"augment": {"flip": "maybe"}}),
    Case("infer-range", infer_2d, r"param infer_2d\.batch_size: 0 is below the minimum 1", {"infer_2d": {"batch_size": 0}}),
    Case("compute-choice", infer_2d, r"param compute\.device: 'tpu' is not one of \['auto', 'cpu', 'cuda'\]",
         {"compute": {"device": "tpu"}}),
    Case("compute-nproc-outside-torchrun", pretrain_2d, r"param compute\.nproc is 2 but this is a single process",
         {"compute": {"nproc": 2}}),
    Case("triangulate-choice", triangulate, r"param triangulate\.extrinsics: 'guessed' is not one of",
         {"triangulate": {"extrinsics": "guessed"}}),
    # units and splits that would run and mean nothing
    Case("bones-in-metres", triangulate, r"param triangulate\.bone_lengths_mm: \{'pelvis-r_hip': 0\.133, .*\} are not "
         r"a person's bones in mm \(each within \[50, 700\]\); wrong units\?",
         {"triangulate": {"bone_lengths_mm": [b / 1000 for b in skeleton.MEAN_BONE_LENGTHS_MM]}}),
    Case("evaluate-seen-subject", lambda w, t: evaluate(w, t, model=pose3d_trained_on(w, t, ["S1", "S5"])),
         r"param evaluate\.subjects: \['S1'\] trained {tmp}/in/pose3d\.pt \(its subjects: \['S1', 'S5'\]\); the test "
         r"people must be unseen", {"evaluate": {"subjects": ["S1"], "stride": 3, "pss_k": [2]}}),
    # input files: the error names the file
    Case("cameras-missing-subject", lambda w, t: extract_frames(w, t, cameras_without(w, t, subject="S9")),
         r"{tmp}/in/videos/cameras.json: no extrinsics for subject S9", {"frames": {"boxes": "gt"}}),
    Case("cameras-missing-camera", lambda w, t: extract_frames(w, t, cameras_without(w, t, camera=CAMS[1])),
         rf"{{tmp}}/in/videos/cameras.json: camera {CAMS[1]} of .*Walking 1.{CAMS[1]}.mp4 is not in its intrinsics"),
    Case("truncated-video", lambda w, t: extract_frames(w, t, truncated_video(w, t)),
         rf"{{tmp}}/in/videos/S9/Videos/Walking 1.{CAMS[1]}.mp4: ", {"frames": {"workers": 1, "boxes": "gt"}}),
    Case("unreadable-shard", lambda w, t: infer_2d(w, t, frames=broken_shard(w, t)),
         rf"{{tmp}}/in/frames/S1/Walking 1.{CAMS[1]}.parquet: not a readable frame shard"),
    Case("missing-frames", lambda w, t: infer_2d(w, t, frames=t / "nowhere"), r"frames folder not found: {tmp}/nowhere"),
    Case("missing-checkpoint", lambda w, t: infer_2d(w, t, model=t / "models" / "pose2d.pt"),
         r"model checkpoint not found: {tmp}/models/pose2d.pt"),
    Case("checkpoint-joints", lambda w, t: infer_2d(w, t, model=w["ckpt17"]),
         r"{world}/j17.pt: the checkpoint predicts 17 joints but param model.num_joints is 16"),
    Case("pose2d-schema", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.drop(columns="conf"))),
         r"{tmp}/in/pose2d.parquet: missing column\(s\) \['conf'\]"),
    Case("pose2d-joint-names", lambda w, t: triangulate(
        w, t, pose2d_table(w, t, lambda d: d.assign(joint=d["joint"].replace("l_wrist", "LeftHand")))),
        r"{tmp}/in/pose2d.parquet: unknown joint name\(s\) \['LeftHand'\]"),
    Case("pose2d-joint-count", lambda w, t: triangulate(
        w, t, pose2d_table(w, t, lambda d: d[~((d["frame"] == 3) & (d["joint"] == "head_top"))])),
        r"{tmp}/in/pose2d.parquet: subject S1 action 'Walking 1' camera \d+ frame 3 has 15 joint rows, expected 16"),
    Case("pose2d-type", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(u=d["u"].astype(str)))),
         r"{tmp}/in/pose2d.parquet: column 'u' is not numeric"),
    # pose tables that would be silently misread
    Case("pose2d-duplicate-joint", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(
        joint=d["joint"].mask((d["frame"] == 3) & (d["joint"] == "l_wrist"), "head_top")))),
        r"{tmp}/in/pose2d.parquet: subject S1 .* frame 3 has joint 'head_top' twice and lacks \['l_wrist'\]"),
    Case("pose2d-camera-integers", lambda w, t: triangulate(w, t, pose2d_table(
        w, t, lambda d: d.assign(camera=d["camera"].astype(int)))),
        r"{tmp}/in/pose2d.parquet: column 'camera' must hold strings"),
    Case("pose2d-null-camera", lambda w, t: triangulate(w, t, pose2d_table(
        w, t, lambda d: d.assign(camera=d["camera"].astype(object).mask(d.index == 3, None)))),
        r"{tmp}/in/pose2d.parquet: column 'camera' has 1 empty \(null\) value\(s\)"),
    Case("pose2d-negative-conf", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(conf=-d["conf"]))),
         r"{tmp}/in/pose2d.parquet: confidence -[0-9.e-]+ is outside \[0, 1\]"),
    Case("pose2d-conf-above-1", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(conf=d["conf"] + 1))),
         r"{tmp}/in/pose2d.parquet: confidence [0-9.]+ is outside \[0, 1\]"),
    Case("pose2d-negative-frame", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(frame=d["frame"] - 2))),
         r"{tmp}/in/pose2d.parquet: frame index -2 is outside \[0, 2\^31\)"),
    Case("pose2d-float-frame", lambda w, t: triangulate(w, t, pose2d_table(w, t, lambda d: d.assign(frame=d["frame"] + 0.5))),
         r"{tmp}/in/pose2d.parquet: column 'frame' must hold integers"),
    Case("params-nan", triangulate, r"param triangulate\.view_ransac_px: expected a finite number, got nan",
         {"triangulate": {"view_ransac_px": float("nan")}}),
    Case("params-missing-key", triangulate, r"param triangulate\.min_conf: missing",
         {"triangulate": {"min_conf": REMOVE}}),
    # calibrations that would be silently misused
    Case("cameras-negative-focal", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: _set(d, ("intrinsics", CAMS[0], "calibration_matrix", 0, 0), -1000.0))),
        rf"{{tmp}}/in/cameras.json: intrinsics\['{CAMS[0]}'\].calibration_matrix: focal lengths must be positive"),
    Case("cameras-nan-distortion", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: _set(d, ("intrinsics", CAMS[1], "distortion", 0), float("nan")))),
        rf"{{tmp}}/in/cameras.json: intrinsics\['{CAMS[1]}'\].distortion .*finite"),
    Case("cameras-reflection", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: _set(d, ("extrinsics", "S1", CAMS[0], "R", 0), [-x for x in d["extrinsics"]["S1"][CAMS[0]]["R"][0]]))),
        rf"{{tmp}}/in/cameras.json: extrinsics\['S1'\]\['{CAMS[0]}'\].R: determinant −1"),
    Case("cameras-not-a-rotation", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: _set(d, ("extrinsics", "S1", CAMS[0], "R"), [[2, 0, 0], [0, 1, 0], [0, 0, 1]]))),
        rf"{{tmp}}/in/cameras.json: extrinsics\['S1'\]\['{CAMS[0]}'\].R: not a rotation"),
    Case("video-resolution", lambda w, t: extract_frames(w, t, videos_with_cameras(w, t, _halve_intrinsics)),
         rf"{{tmp}}/in/videos/cameras.json: camera \d+'s principal point .* far from the centre of its 1000x1000 video"),
    Case("nan-pelvis", lambda w, t: extract_frames(w, t, nan_pelvis(w, t)),
         r"{tmp}/in/videos/S1/MyPoseFeatures/D3_Positions/Walking 1.cdf: ground truth not finite at frame 2, joint Hip",
         {"frames": {"boxes": "gt", "stride": 1, "workers": 1}}),
    # outputs that cannot be written: refused before any work (the other outputs stay unwritten)
    Case("metrics-unwritable", lambda w, t: blocked(triangulate(w, t), t, "--metrics"),
         r"{tmp}/in/blocker/m.json: cannot write there: {tmp}/in/blocker is a file, not a folder"),
    Case("checkpoint-unwritable", lambda w, t: blocked(pretrain_2d(w, t), t, "--ckpt-dir"),
         r"{tmp}/in/blocker/ckpt: cannot write there: {tmp}/in/blocker is a file, not a folder"),
    Case("frames-unwritable", lambda w, t: blocked(extract_frames(w, t), t, "--out"),
         r"{tmp}/in/blocker/frames: cannot write there"),
    Case("plots-folder-is-a-file", lambda w, t: occupied(triangulate(w, t), t, "--plots", "plots", folder=False),
         r"{tmp}/in/plots: cannot write this folder: a file of that name is there"),
    Case("table-is-a-folder", lambda w, t: occupied(triangulate(w, t), t, "--out", "pseudo3d.parquet", folder=True),
         r"{tmp}/in/pseudo3d.parquet: cannot write this file: a folder of that name is there"),
    Case("gt-not-finite", lambda w, t: infer_2d(w, t, gt=gt_not_finite(w, t)),
         r"{tmp}/in/h36m/S1/MyPoseFeatures/D3_Positions/Walking 1.cdf: ground truth not finite at frame 1, joint \w+ "
         r"\(1 frames\)"),
    Case("cameras-json-null-subject", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: _set(d, ("extrinsics", "S1"), None))),
        r"{tmp}/in/cameras.json: extrinsics\['S1'\]: expected an object \(\{...\}\), got NoneType"),
    Case("cameras-json-intrinsics-list", lambda w, t: triangulate(w, t, cameras=cameras_changed(
        w, t, lambda d: d.update(intrinsics=list(d["intrinsics"].values())))),
        r"{tmp}/in/cameras.json: intrinsics: expected an object \(\{...\}\), got list"),
    Case("cameras-json-field", lambda w, t: triangulate(w, t, cameras=cameras_without_matrix(w, t)),
         rf"{{tmp}}/in/cameras.json: intrinsics\['{CAMS[0]}'\]: missing 'calibration_matrix'"),
    Case("mpii-field", lambda w, t: pretrain_2d(w, t, mpii_without(w, t, "joints_vis")),
         r"{tmp}/in/mpii/annot/train.json: entry 2: missing key\(s\) \['joints_vis'\]"),
    # the 3D stages
    Case("train3d-choice", train_3d, r"param train_3d\.target: 'semi' is not one of", {"train_3d": {"target": "semi"}}),
    Case("pseudo3d-missing", lambda w, t: train_3d(w, t, pseudo3d=t / "data" / "pseudo3d.parquet"),
         r"pose table not found: {tmp}/data/pseudo3d.parquet", TINY_3D),
    Case("refiner-range", train_refiner, r"param refiner\.dropout: 1\.5 is above the maximum 0\.95",
         {"refiner": {"dropout": 1.5}}),
    Case("evaluate-pss-k-zero", evaluate, r"param evaluate\.pss_k: \[0\] must be numbers of clusters from 1 to "
         r"evaluate\.pss_max_poses \(20000\)", {"evaluate": {"pss_k": [0]}}),
    Case("frames-stride-huge", extract_frames, r"param frames\.stride: 1000000000 is above the maximum 100000",
         {"frames": {"stride": 10**9}}),
    Case("model-pickled-object", lambda w, t: evaluate(w, t, model=pickled_object(t)),
         r"{tmp}/in/pickled.pt: not a readable model checkpoint \(UnpicklingError: Weights only load failed\. "
         r"[^\n]*\)$"),
    Case("evaluate-not-3d", evaluate, r"{world}/pose2d.pt: not a 3D network", {"evaluate": {"subjects": ["S1"], "stride": 3, "pss_k": [2]}}),
]


def run_stage(stage: str, args: list[str], cwd: Path, monkeypatch, caplog) -> str:
    """``python stages/<stage>.py ARGS`` in ``cwd``, in this process; the error it stopped with."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", *args])
    try:
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
    except SystemExit as exc:                         # every stage: one error line, exit status 2
        assert exc.code == 2, f"{stage} exited {exc.code}"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "\n" not in errors[0], f"{stage}: not one error line: {errors}"
        return errors[0]
    raise AssertionError(f"stage {stage} succeeded on a bad input")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_names_it_and_writes_nothing(case, world, tmp_path, monkeypatch, caplog):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    params = deep_update(copy.deepcopy(BASE_PARAMS), case.params)
    params["data"]["h36m_root"] = str(world["h36m"])
    (case_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage, args = case.command(world, case_dir)
    error = run_stage(stage, args, case_dir, monkeypatch, caplog)
    tmp = re.escape(str(case_dir))
    expected = case.message.replace("{tmp}", tmp).replace("{world}", re.escape(str(world["ckpt"].parent)))
    assert re.search(expected, error), f"{stage}: expected /{expected}/ in:\n{error}"
    out = case_dir / "out"
    assert not out.exists() or not any(out.rglob("*")), f"{stage} wrote {sorted(out.rglob('*'))}"
    assert not any(p.name.startswith(".") for p in case_dir.rglob("*") if "in" not in p.relative_to(case_dir).parts)


def test_a_sequence_without_ground_truth_is_left_out_of_the_2d_error_and_counted(world, tmp_path, monkeypatch,
                                                                                   caplog):
    """No D3_Positions for a sequence is not bad input (a recording without ground truth): infer_2d
    writes its table, leaves the sequence out of the 2D error with one log line and counts it."""
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    params = copy.deepcopy(BASE_PARAMS)
    params["data"]["h36m_root"] = str(world["h36m"])
    (case_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage, args = infer_2d(world, case_dir, gt=without_cdf(world, case_dir))
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(case_dir)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
    assert exit_.value.code == 0
    metrics = json.loads((case_dir / "out" / "r.json").read_text())
    assert metrics["shards_without_gt"] == metrics["shards"] == 2 and "median_px" not in metrics
    assert (case_dir / "out" / "pose2d.parquet").is_file()
    assert "2 of 2 shards have no ground truth" in caplog.text


def test_a_terminated_stage_leaves_no_temporaries(tmp_path):
    """SIGTERM in the middle of writing a directory output and a file output (as a cancelled dvc
    repro sends it): the stage exits 143 and leaves neither outputs nor their hidden temporaries."""
    import os
    import subprocess

    script = tmp_path / "stage.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from epipose.io import atomic_path\n"
        "from epipose.launch import run_stage\n"
        "def main():\n"
        "    with atomic_path(Path('out/frames'), directory=True) as tmp:\n"
        "        (tmp / 'S1.parquet').write_bytes(b'x' * 1000)\n"
        "        with atomic_path(Path('out/models/last.pt')) as f:\n"
        "            f.write_bytes(b'x' * 1000)\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            time.sleep(60)\n"
        "sys.exit(run_stage(main))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 128 + 15
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "out").rglob("*")) == ["out/models"]
