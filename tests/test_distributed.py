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
from epipose.launch import Nodes, blas_environment, command, params_path
from epipose.params import ParamError

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
NO_AUG = {"scale": 0.0, "rotation": 0.0, "translate": 0.0, "flip": False, "color": 0.0, "occlusion_prob": 0.0}


def write_params(path: Path, nproc: int, device: str = "cpu", **sections) -> Path:
    params = copy.deepcopy(BASE)
    params["compute"] = {**params["compute"], "nproc": nproc, "device": device}
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
    # several machines: the c10d rendezvous (ranks by arrival), or the static one at node 0 with a node rank
    assert command("stages/train_3d.py", [], 1, Nodes(2, "auto", "node0:29400", "run1"))[3:] == [
        "--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", "node0:29400", "--rdzv_id", "run1",
        "--nproc_per_node", "1", "stages/train_3d.py"]
    assert command("stages/infer_2d.py", [], 4, Nodes(3, "2", "10.0.0.1:29500"))[3:] == [
        "--nnodes", "3", "--node_rank", "2", "--master_addr", "10.0.0.1", "--master_port", "29500",
        "--nproc_per_node", "4", "stages/infer_2d.py"]
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


@pytest.mark.parametrize("compute, line", [
    ({"nnodes": 2, "rdzv_endpoint": "node0"}, "param compute.rdzv_endpoint: 'node0' is not host:port"),
    ({"nnodes": 2, "rdzv_endpoint": "node0:1", "node_rank": 2}, "param compute.node_rank: 2 is not auto or 0..1"),
    ({"nnodes": 2, "rdzv_endpoint": "node0:1", "nproc": 3}, "param train_3d.batch_size: 32 does not split over "
     "compute.nproc 3 x compute.nnodes 2 processes (make it a multiple of 6)"),
])
def test_bad_machine_keys_stop_the_launch_naming_them(tmp_path, compute, line):
    params = write_params(tmp_path / "params.yaml", compute.pop("nproc", 1), train_3d={"batch_size": 32})
    p = yaml.safe_load(params.read_text())
    p["compute"].update(compute)
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "epipose.launch", str(ROOT / "stages" / "train_3d.py"), "--params",
                           str(params), "--out", "out/x.pt"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith(f"epipose.launch: {line}") and not (tmp_path / "out").exists()


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
    train_3d_on_processes(tmp_path, real_rig, "cpu")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across processes needs two CUDA devices")
def test_train_3d_on_two_gpus_with_nccl_trains_what_one_gpu_trains(tmp_path, real_rig):
    train_3d_on_processes(tmp_path, real_rig, "cuda")


def train_3d_on_processes(tmp_path, real_rig, device: str) -> None:
    """train_3d on 1 and on 2 processes (gloo on CPU, NCCL on CUDA) through the launcher: the same weights
    up to float rounding."""
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
        params = write_params(tmp_path / f"params{nproc}.yaml", nproc, device, data={"h36m_root": str(h36m)},
                              model=model,
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_nodes(script: str, args: list, cwd: Path, nnodes: int, timeout: float = 240) -> None:
    """``nnodes`` "machines" on this one: the same launcher command started ``nnodes`` times, meeting at a
    c10d rendezvous on 127.0.0.1 (the params say nnodes and the endpoint)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "epipose.launch", str(ROOT / "stages" / script), *map(str, args)],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(nnodes)]
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, err in zip(procs, errs):
        assert p.returncode == 0, f"{script} failed on a node:\n{err[-4000:]}"


def on_nodes(params: Path, nnodes: int) -> Path:
    """``params`` for ``nnodes`` machines meeting on this one (unchanged for 1)."""
    if nnodes == 1:
        return params
    p = yaml.safe_load(params.read_text())
    p["compute"].update(nnodes=nnodes, rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_id=params.stem.replace(" ", "_"))
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    return params


@pytest.mark.slow
def test_two_machines_train_and_infer_what_one_process_does(tmp_path, real_rig):
    """Two launcher processes as two machines (one process each, c10d rendezvous on 127.0.0.1), sharing
    the file system: pretrain_2d ends where one process ends (the global batch split over the machines:
    float rounding apart, far closer than another seed), and infer_2d writes the very same table."""
    from epipose.camera import Rig
    from pose2d_fixture import make_h36m_with_shards, tiny_pose_net

    synth = {"subjects": ["S1"], "actions": ["Walking"], "n_frames": 4, "image_size": 128, "workers": 1,
             "mpii": {**BASE["synth"]["mpii"], "n_train": 16, "n_valid": 4, "image_size": 96, "images_per_chunk": 8}}
    model = {"backbone": 18, "input_size": 32, "deconv_channels": 8, "pretrained": None}
    train = {"epochs": 2, "batch_size": 8, "warmup_steps": 0, "threads": 1, "amp": "none", "eval_every": 2,
             "eval_batch_size": 8, "decode_workers": 1, "flip_test": False, "log_every": 1}
    params = write_params(tmp_path / "synth.yaml", 1, synth=synth)
    launch("synthesize.py", ["--h36m-out", tmp_path / "h36m_synth", "--mpii-out", tmp_path / "mpii",
                             "--params", params], tmp_path)
    weights = {}
    for name, nnodes, seed in (("one", 1, 0), ("two machines", 2, 0), ("another seed", 1, 1)):
        params = on_nodes(write_params(tmp_path / f"{name}.yaml", 1, model=model, pretrain_2d={**train, "seed": seed},
                                       augment=NO_AUG), nnodes)
        out = tmp_path / name
        launch_nodes("pretrain_2d.py", ["--mpii", tmp_path / "mpii", "--out", out / "pose2d.pt", "--ckpt-dir",
                                        out / "ckpt", "--live-dir", out / "live", "--params", params, "--no-progress"],
                     tmp_path, nnodes)
        weights[name] = _flat(torch.load(out / "pose2d.pt", weights_only=True)["state_dict"])
    assert (weights["two machines"] - weights["one"]).norm() < 0.1 * (weights["another seed"] - weights["one"]).norm()

    rig = Rig({c: real_rig.intrinsics[c] for c in ("54138969", "55011271")},
              {s: {c: real_rig.extrinsics[s][c] for c in ("54138969", "55011271")} for s in ("S1", "S9")})
    h36m, frames_root = make_h36m_with_shards(tmp_path, rig)
    ckpt = tiny_pose_net(tmp_path / "pose2d_dots.pt")
    tables = []
    for nnodes in (1, 2):
        params = on_nodes(write_params(tmp_path / f"infer{nnodes}.yaml", 1, infer_2d={"batch_size": 3, "threads": 1}),
                          nnodes)
        out = tmp_path / f"infer{nnodes}" / "pose2d.parquet"
        launch_nodes("infer_2d.py", ["--frames", frames_root, "--model", ckpt, "--out", out, "--params", params,
                                     "--no-progress"], tmp_path, nnodes)
        tables.append(out.read_bytes())
    assert tables[0] == tables[1] and len(read_pose2d(tmp_path / "infer2" / "pose2d.parquet"))
