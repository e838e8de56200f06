"""Scale-out: the stages run through ``python -m epipose.launch`` with ``compute.nproc`` processes
(torchrun, gloo on CPU) and compute what one process computes."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from epipose.data.pose_tables import read_pose2d
from epipose.pipeline.infer_2d import Infer2DParams, run_infer_2d
from epipose.launch import blas_environment, command, params_path
from epipose.params import ParamError

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
NO_AUG = {"scale": 0.0, "rotation": 0.0, "translate": 0.0, "flip": False, "color": 0.0, "occlusion_prob": 0.0}


def write_params(path: Path, nproc: int, **sections) -> Path:
    params = copy.deepcopy(BASE)
    params["compute"] = {**params["compute"], "nproc": nproc, "device": "cpu"}
    for name, values in sections.items():
        params[name].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def launch(script: str, args: list, cwd: Path, timeout: float = 240) -> None:
    """``python -m epipose.launch stages/<script> ARGS`` as dvc.yaml runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "epipose.launch", str(ROOT / "stages" / script), *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)           # torchrun and its workers
        raise
    assert proc.returncode == 0, f"{script} failed:\n{err[-4000:]}"


def test_launcher_command():
    assert command("stages/train_3d.py", ["--a", "1"], 1) == [sys.executable, "stages/train_3d.py", "--a", "1"]
    assert command("stages/train_3d.py", [], 3)[1:] == ["-m", "torch.distributed.run", "--standalone",
                                                       "--nproc_per_node", "3", "stages/train_3d.py"]
    # the stages that have no multi-process path run in one process whatever compute.nproc says
    assert command("stages/triangulate.py", ["--a"], 3) == [sys.executable, "stages/triangulate.py", "--a"]
    assert params_path(["--out", "o", "--params", "p.yaml"]) == "p.yaml"
    assert params_path(["--params=q.yaml"]) == "q.yaml" and params_path(["--out", "o"]) == "params.yaml"


def test_the_blas_kernel_param_decides_the_stages_openblas_kernel():
    env = {"OPENBLAS_CORETYPE": "Haswell", "HOME": "/h"}
    assert blas_environment(env, "auto") == {"HOME": "/h"}                 # OpenBLAS's choice for the CPU
    assert blas_environment(env, "keep") == env
    assert blas_environment({"HOME": "/h"}, "SkylakeX") == {"HOME": "/h", "OPENBLAS_CORETYPE": "SkylakeX"}
    assert env == {"OPENBLAS_CORETYPE": "Haswell", "HOME": "/h"}          # the launcher's own is left alone
    with pytest.raises(ParamError, match="param compute.blas_kernel: 'x y'"):
        blas_environment(env, "x y")


def test_a_batch_that_does_not_split_over_the_processes_stops_before_they_start(tmp_path):
    params = write_params(tmp_path / "params.yaml", 3, train_3d={"batch_size": 16})
    proc = subprocess.run([sys.executable, "-m", "epipose.launch", str(ROOT / "stages" / "train_3d.py"), "--params",
                           str(params), "--out", "out/x.pt"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert proc.stderr.strip() == ("epipose.launch: param train_3d.batch_size: 16 does not split over compute.nproc 3 "
                                   "processes (make it a multiple of 3)")


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten().double() for k, v in state.items() if v.dtype.is_floating_point and "running" not in k])


@pytest.mark.slow
def test_train_3d_on_two_gloo_processes_trains_what_one_process_trains(tmp_path, real_rig):
    """Same global batch (8 = 2 x 4), no augmentation (its randomness is drawn per rank), every label
    valid (the loss is a mean over valid joints per rank): 6 steps on 2 processes end where 6 steps on
    1 process end, up to float rounding (which Adam's first steps amplify for weights with near-zero
    gradients). Unsynchronised BatchNorm statistics, a rank training on its own half only, or another
    batch order end about as far from the single process as the whole training moved (measured: 1.4
    without synchronised BatchNorm, 0.025 with)."""
    from epipose.models.pose_net import ModelParams
    from epipose.pipeline.train_3d import init_from_2d
    from pose2d_fixture import tiny_pose_net
    from pose3d_fixture import FRAMES, gt_table, make_root, small_rig, write_table

    h36m, frames_root = make_root(tmp_path, small_rig(real_rig))          # S1, S9 x 2 actions x 2 cameras
    pseudo3d = write_table(gt_table(h36m, ("S1",)), tmp_path / "pseudo3d.parquet")
    model = {"backbone": 18, "input_size": 32, "deconv_channels": 8, "depth_bins": 8, "pretrained": None,
             "backbone_stages": 4, "deconv_layers": 3}                    # PoseNetConfig's defaults
    pose2d = tiny_pose_net(tmp_path / "pose2d.pt", input_size=32, backbone_stages=4, deconv_layers=3)
    runs = {}
    for nproc in (1, 2):
        params = write_params(tmp_path / f"params{nproc}.yaml", nproc, data={"h36m_root": str(h36m)}, model=model,
                              train_3d={"subjects": ["S1"], "epochs": 2, "batch_size": 8, "warmup_steps": 0,
                                        "amp": "none", "threads": 1, "fit_frames": 0, "flip_test": False,
                                        "mpii_share": 0.0,
                                        "eval_batch_size": 8, "decode_workers": 1},
                              augment=NO_AUG)
        out = tmp_path / f"n{nproc}"
        launch("train_3d.py", ["--frames", frames_root, "--pose2d", pose2d, "--pseudo3d", pseudo3d,
                               "--out", out / "pose3d.pt", "--metrics", out / "m.json", "--report", out / "r.json",
                               "--live-dir", out / "live",
                               "--ckpt-dir", out / "ckpt", "--params", params, "--no-progress"], tmp_path)
        runs[nproc] = out
    init = _flat(init_from_2d(pose2d, ModelParams(**{**model, "num_joints": 16})).state_dict())
    one, two = (_flat(torch.load(runs[n] / "pose3d.pt", weights_only=True)["state_dict"]) for n in (1, 2))
    moved = (one - init).norm()
    assert moved > 0.1
    assert (two - one).norm() / moved < 0.1
    steps = 2 * 2 * len(FRAMES) // 8                                   # S1: 2 actions x 2 cameras x frames
    ckpt = torch.load(runs[2] / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * steps
    assert json.loads((runs[2] / "r.json").read_text())["train_frames"] == 2 * 2 * len(FRAMES)


@pytest.mark.slow
def test_infer_2d_on_two_processes_writes_the_same_file(tmp_path, real_rig):
    from epipose.camera import Rig
    from pose2d_fixture import FRAMES, make_h36m_with_shards, tiny_pose_net

    rig = Rig({c: real_rig.intrinsics[c] for c in ("54138969", "55011271")},
              {s: {c: real_rig.extrinsics[s][c] for c in ("54138969", "55011271")} for s in ("S1", "S9")})
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig)          # 8 shards
    ckpt = tiny_pose_net(tmp_path / "pose2d.pt")
    params = write_params(tmp_path / "params.yaml", 2, infer_2d={"batch_size": 3, "threads": 1})
    out = tmp_path / "n2"
    launch("infer_2d.py", ["--frames", frames_root, "--model", ckpt, "--out", out / "pose2d.parquet",
                           "--metrics", out / "m.json", "--report", out / "r.json", "--gt-root", h36m, "--params", params,
                           "--no-progress"], tmp_path)
    threads = torch.get_num_threads()
    try:                                            # the single process, here (one thread, as each rank)
        metrics = run_infer_2d(frames_root, ckpt, tmp_path / "n1.parquet", Infer2DParams(batch_size=3, threads=1),
                               gt_root=h36m, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(read_pose2d(out / "pose2d.parquet")) == 8 * len(FRAMES) * 16
    assert (out / "pose2d.parquet").read_bytes() == (tmp_path / "n1.parquet").read_bytes()
    assert json.loads((out / "r.json").read_text()) == json.loads(json.dumps(metrics))
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "pose2d.parquet", "r.json"]     # the parts are gone
