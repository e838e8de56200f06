"""Determinism and interruption, stage by stage, as dvc runs the stages (scripts in subprocesses,
relative paths, a params.yaml in the working directory).

* Every non-training stage, run twice on the same inputs and params in two different folders,
  writes byte-identical outputs (data and metrics): dvc.lock stays stable and a cached output is
  exactly what its inputs and params say, wherever (e.g. an experiment's temporary folder) it ran;
  and the same bytes under three OpenBLAS kernels (``OPENBLAS_CORETYPE``), as dvc.yaml runs it.
* The training stage (pretrain_2d, tiny profile) run twice on CPU ends with identical weights: the
  second run is killed with SIGKILL once its first epoch's checkpoint exists, which leaves no model
  or metrics; rerun, it resumes from that checkpoint and ends with the weights, model file, metrics
  and curves of the uninterrupted run. (One second run serves both checks: training is slow here.)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, deep_update
from epipose import skeleton
from epipose.data.h36m import H36MDataset
from epipose.data.pose_tables import write_pose2d
from epipose.synth.simulate2d import NOISE_MODELS, simulate_pose2d

TINY = {
    "synth": {"subjects": ["S1", "S9"], "actions": ["Walking"], "n_frames": 30, "image_size": 192, "workers": 1,
              "mpii": {"n_train": 16, "n_valid": 4, "image_size": 96, "images_per_chunk": 8}},
    "frames": {"stride": 3, "crop_size": 64, "workers": 1},
    "model": {"input_size": 32, "deconv_channels": 8, "backbone": 18, "pretrained": None},
    # threads fixed: a training's floating-point sums depend on the thread count, which `threads: 0`
    # chooses from the machine's load at the stage's start
    "pretrain_2d": {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "warmup_steps": 0, "log_every": 1, "threads": 2},
    "infer_2d": {"batch_size": 16, "flip_test": False},
    "triangulate": {"min_pair_points": 50, "ba_max_frames": 30},
    "evaluate": {"subjects": ["S9"], "stride": 3, "pss_k": [4], "figures": 1, "batch_size": 16},
}
PRETRAIN = ["stages/pretrain_2d.py", "--mpii", "data/raw/mpii", "--out", "models/pose2d.pt", "--metrics",
            "metrics/pretrain_2d.json", "--report", "reports/pretrain_2d.json", "--timings", "timings/pretrain_2d.json",
            "--live-dir", "dvclive/pretrain_2d", "--ckpt-dir", "models/pretrain_2d"]


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", **extra}


def _cmd(script_and_args: list[str], launcher: bool = False) -> list[str]:
    return [sys.executable, *(["-m", "epipose.launch"] if launcher else []), str(ROOT / script_and_args[0]),
            *script_and_args[1:], *(["--no-progress"] if script_and_args[0] in (
                "stages/pretrain_2d.py", "stages/infer_2d.py", "stages/evaluate.py") else [])]


def run(workdir: Path, *script_and_args: str, launcher: bool = False, **env: str) -> str:
    """The stage script in ``workdir`` (through ``python -m epipose.launch`` with ``launcher``, as dvc.yaml
    runs it); ``env``: more environment variables."""
    proc = subprocess.run(_cmd(list(script_and_args), launcher), cwd=workdir, env=_env(**env), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{script_and_args[0]} failed:\n{proc.stderr[-3000:]}"
    return proc.stderr


def new_workdir(path: Path) -> Path:
    path.mkdir(parents=True)
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), copy.deepcopy(TINY))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def copy_in(src: Path, dst: Path, *rel: str) -> None:
    for r in rel:
        (dst / r).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (src / r).is_dir() else shutil.copy2)(src / r, dst / r)


def digests(root: Path, *rel: str) -> dict[str, str]:
    """sha256 of every file under the given paths (files or folders), keyed by relative path."""
    out = {}
    for r in rel:
        files = [root / r] if (root / r).is_file() else sorted(p for p in (root / r).rglob("*") if p.is_file())
        assert files, f"{root / r}: nothing written"
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


SYNTHESIZE = ["stages/synthesize.py", "--h36m-out", "data/raw/h36m", "--mpii-out", "data/raw/mpii"]
EXTRACT = ["stages/extract_frames.py", "--h36m", "data/raw/h36m", "--out", "data/frames"]
INFER = ["stages/infer_2d.py", "--frames", "data/frames", "--model", "models/pose2d.pt", "--out", "data/pose2d.parquet",
         "--metrics", "metrics/infer_2d.json", "--report", "reports/infer_2d.json", "--gt-root", "data/raw/h36m"]
EVALUATE = ["stages/evaluate.py", "--frames", "data/frames", "--model", "models/pose3d.pt", "--refiner", "models/refiner.pt",
            "--metrics", "metrics/eval.json", "--report", "reports/eval.json", "--plots", "reports/plots",
            "--figures", "reports/figures", "--markdown", "reports/results.md"]
TRIANGULATE = ["stages/triangulate.py", "--pose2d", "data/pose2d_sim.parquet", "--cameras", "data/raw/h36m/cameras.json",
               "--out", "data/pseudo3d.parquet", "--metrics", "metrics/triangulate.json",
               "--report", "reports/triangulate.json", "--plots", "reports/plots", "--rig-figure", "reports/rig.png",
               "--gt-root", "data/raw/h36m"]


def test_a_table_is_the_same_bytes_whatever_the_row_order_and_folder(tmp_path, real_rig):
    """What the byte-identical stage outputs below rest on, in the fast lane: a 2D pose table depends on its
    rows only. Simulated twice with one seed it is the same table; its rows in another order (as workers
    may finish them), written in another folder, give the same file."""
    from h36m_fixture import walking_poses

    sequences = {(s, "Walking"): skeleton.h36m32_to_mpii(walking_poses(6, seed=i)) for i, s in enumerate(("S1", "S9"))}
    cameras = {s: real_rig.cameras(s) for s in ("S1", "S9")}
    df, _ = simulate_pose2d(sequences, cameras, NOISE_MODELS["outliers_swaps4"], seed=4)
    again, _ = simulate_pose2d(sequences, cameras, NOISE_MODELS["outliers_swaps4"], seed=4)
    other, _ = simulate_pose2d(sequences, cameras, NOISE_MODELS["outliers_swaps4"], seed=5)
    assert df.equals(again) and not df.equals(other)
    write_pose2d(df, tmp_path / "a" / "pose2d.parquet")
    write_pose2d(df.sample(frac=1.0, random_state=0).reset_index(drop=True), tmp_path / "b" / "pose2d.parquet")
    assert digests(tmp_path / "a", "pose2d.parquet") == digests(tmp_path / "b", "pose2d.parquet")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("determinism")


@pytest.fixture(scope="module")
def chain(base) -> Path:
    """Folder a: synthesize and extract_frames."""
    a = new_workdir(base / "a")
    run(a, *SYNTHESIZE)
    run(a, *EXTRACT)
    return a


def rerun(a: Path, folder: Path, inputs: list[str], command: list[str], launcher: bool = False, **env: str) -> Path:
    """The stage again, in a new folder holding copies of a's inputs."""
    b = new_workdir(folder)
    copy_in(a, b, *inputs)
    run(b, *command, launcher=launcher, **env)
    return b


@pytest.mark.slow
def test_synthesize_is_byte_identical(chain, base):
    b = rerun(chain, base / "synthesize", [], SYNTHESIZE)
    assert digests(chain, "data/raw") == digests(b, "data/raw")
    assert len(digests(b, "data/raw/h36m")) == 2 * 4 + 2 + 1       # videos, cdfs, cameras.json


@pytest.mark.slow
def test_extract_frames_is_byte_identical(chain, base):
    b = rerun(chain, base / "extract_frames", ["data/raw/h36m"], EXTRACT)
    assert digests(chain, "data/frames") == digests(b, "data/frames")
    assert len(digests(b, "data/frames")) == 2 * 4 + 1          # the shards and crop.json


@pytest.fixture(scope="module")
def trained(chain) -> Path:
    """pretrain_2d, uninterrupted, in a."""
    run(chain, *PRETRAIN)
    return chain


@pytest.fixture(scope="module")
def interrupted(trained, base) -> dict:
    """pretrain_2d again from scratch in another folder (on a copy of a's MPII data), killed with SIGKILL
    once its first epoch's checkpoint exists, then rerun: what the kill left, and the rerun's folder."""
    c = new_workdir(base / "pretrain_2d")
    copy_in(trained, c, "data/raw/mpii")
    ckpt = c / "models/pretrain_2d/last.pt"
    proc = subprocess.Popen(_cmd(PRETRAIN), cwd=c, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = {"returncode": proc.returncode, "checkpoint": torch.load(ckpt, weights_only=False),
              "left": sorted(p.relative_to(c).as_posix() for p in (c / "models").rglob("*") if p.is_file())
              + sorted(p.relative_to(c).as_posix() for p in [*c.glob("metrics/*"), *c.glob("reports/*")])}
    log = run(c, *PRETRAIN)
    return {"folder": c, "log": log, **killed}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_training_leaves_nothing_complete_and_resumes(interrupted, trained):
    assert interrupted["returncode"] == -signal.SIGKILL, "the training finished before it could be killed"
    saved = interrupted["checkpoint"]
    assert 1 <= saved["epoch"] < TINY["pretrain_2d"]["epochs"] and "final" not in saved
    assert interrupted["left"] == ["models/pretrain_2d/last.pt"]        # no model, no metrics
    c = interrupted["folder"]
    assert f"at epoch {saved['epoch']}/{TINY['pretrain_2d']['epochs']}" in interrupted["log"]      # resumed there
    # The curves: the killed run's rows after the checkpoint were dropped and logged again.
    assert digests(c, "dvclive/pretrain_2d/plots") == digests(trained, "dvclive/pretrain_2d/plots")
    assert [p.name for p in (c / "models/pretrain_2d").iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_training_is_deterministic_on_cpu(trained, interrupted):
    """The second run (from scratch in another folder, its second half in a new process after the kill)
    ends with the first run's weights, model file and metrics: seeded, resumed exactly."""
    a, c = trained, interrupted["folder"]
    sa, sc = _state(a / "models/pose2d.pt"), _state(c / "models/pose2d.pt")
    assert sa.keys() == sc.keys()
    different = [k for k in sa if not torch.equal(sa[k], sc[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert (a / "models/pose2d.pt").read_bytes() == (c / "models/pose2d.pt").read_bytes()
    outs = ("metrics/pretrain_2d.json", "reports/pretrain_2d.json")       # no timings in them: byte-identical
    assert digests(a, *outs) == digests(c, *outs)
    assert set(json.loads((a / "timings/pretrain_2d.json").read_text())) == {"seconds", "decode_seconds"}
    # a rerun that finds the complete checkpoint trains nothing and writes the same model and metrics
    before = (a / "models/pose2d.pt").read_bytes()
    assert "resuming from" in run(a, *PRETRAIN)
    assert (a / "models/pose2d.pt").read_bytes() == before
    assert digests(a, *outs) == digests(c, *outs)


@pytest.mark.slow
def test_infer_2d_is_byte_identical(trained, base):
    a = trained
    run(a, *INFER)
    b = rerun(a, base / "infer_2d", ["data/raw/h36m", "data/frames", "models/pose2d.pt"], INFER)
    outs = ("data/pose2d.parquet", "metrics/infer_2d.json", "reports/infer_2d.json")
    assert digests(a, *outs) == digests(b, *outs)


TRIANGULATED = ("data/pseudo3d.parquet", "metrics/triangulate.json", "reports/triangulate.json", "reports/rig.png",
                "reports/plots/pseudo3d_error_by_views.tsv", "reports/plots/pseudo3d_error_by_reproj.tsv")


@pytest.fixture(scope="module")
def triangulated(chain) -> Path:
    """Folder a, triangulate run as dvc.yaml runs it on 2D poses simulated from the synthetic ground truth
    with noise, outliers and left/right swaps, so that the self-calibration (RANSAC, bundle adjustment)
    really runs."""
    a = chain
    ds = H36MDataset(a / "data/raw/h36m")
    sequences = {(s, "Walking"): skeleton.h36m32_to_mpii(ds.poses_world(s, "Walking")) for s in ("S1", "S9")}
    df, _ = simulate_pose2d(sequences, {s: ds.rig.cameras(s) for s in ("S1", "S9")}, NOISE_MODELS["outliers_swaps4"])
    write_pose2d(df, a / "data/pose2d_sim.parquet")
    run(a, *TRIANGULATE, launcher=True)
    assert json.loads((a / "metrics/triangulate.json").read_text())["pseudo3d.coverage"] > 0.5     # it did triangulate
    return a


@pytest.mark.slow
def test_triangulate_is_byte_identical(triangulated, base):
    b = rerun(triangulated, base / "triangulate", ["data/pose2d_sim.parquet", "data/raw/h36m"], TRIANGULATE,
              launcher=True)
    assert digests(triangulated, *TRIANGULATED) == digests(b, *TRIANGULATED)


@pytest.mark.slow
def test_triangulate_is_the_same_bytes_whatever_blas_kernel_the_environment_names(triangulated, base):
    """OpenBLAS's kernels round differently, and a machine's environment may name one (OPENBLAS_CORETYPE):
    the stage run directly under two kernels writes two different tables here. As dvc.yaml runs it (the
    launcher; compute.blas_kernel: auto, OpenBLAS's own choice for the CPU) it writes the same bytes
    whatever the environment names."""
    inputs = ["data/pose2d_sim.parquet", "data/raw/h36m"]
    direct = [digests(rerun(triangulated, base / f"direct_{k}", inputs, TRIANGULATE, OPENBLAS_CORETYPE=k),
                      "data/pseudo3d.parquet") for k in ("Haswell", "Sandybridge")]
    if direct[0] == direct[1]:
        pytest.skip("this CPU's OpenBLAS writes the same labels under both kernels: nothing to check here")
    for k in ("Haswell", "Sandybridge"):
        b = rerun(triangulated, base / f"launched_{k}", inputs, TRIANGULATE, launcher=True, OPENBLAS_CORETYPE=k)
        assert digests(triangulated, *TRIANGULATED) == digests(b, *TRIANGULATED), k


@pytest.fixture(scope="module")
def random_3d(chain) -> Path:
    """Folder a with a random 3D network and refiner (joints spread over the crop) for evaluate."""
    from epipose.models.pose_net import PoseNet, PoseNetConfig, save_pose_net
    from epipose.models.refiner import Refiner, save_refiner

    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=32, depth_bins=4))
    torch.nn.init.normal_(net.final.weight, std=0.5)
    save_pose_net(net, chain / "models/pose3d.pt", meta={"depth_range_mm": 2000.0, "target": "pseudo3d"})
    save_refiner(Refiner(width=16, blocks=1, residual=True).eval(), chain / "models/refiner.pt")
    return chain


EVALUATED = ("metrics/eval.json", "reports/eval.json", "reports/results.md", "reports/figures",
             *(f"reports/plots/eval_{n}.tsv" for n in ("per_action", "per_joint", "pck3d_curve")))


@pytest.mark.slow
def test_evaluate_is_byte_identical(random_3d, base):
    """On the test subject's frames, with a random 3D network and refiner: metrics, per-action TSV,
    figure and report."""
    a = random_3d
    run(a, *EVALUATE)
    b = rerun(a, base / "evaluate", ["data/raw/h36m", "data/frames", "models/pose3d.pt", "models/refiner.pt"], EVALUATE)
    assert digests(a, *EVALUATED) == digests(b, *EVALUATED)
    assert len(list((a / "reports/figures").glob("*.png"))) == 3          # one example frame and the two curves


# The other non-training stages: (inputs copied from folder a, command, outputs compared).
NON_TRAINING = {
    "synthesize": ([], SYNTHESIZE, ("data/raw",)),
    "extract_frames": (["data/raw/h36m"], EXTRACT, ("data/frames",)),
    "infer_2d": (["data/raw/h36m", "data/frames", "models/pose2d.pt"], INFER,
                 ("data/pose2d.parquet", "metrics/infer_2d.json", "reports/infer_2d.json")),
    "evaluate": (["data/raw/h36m", "data/frames", "models/pose3d.pt", "models/refiner.pt"], EVALUATE, EVALUATED),
}
KERNELS = ("Haswell", "Sandybridge", "Prescott")


@pytest.mark.slow
@pytest.mark.parametrize("stage", NON_TRAINING)
def test_a_non_training_stage_is_the_same_bytes_whatever_blas_kernel_the_environment_names(stage, trained,
                                                                                            random_3d, base):
    """Run directly under three OpenBLAS kernels, the stage writes the same bytes (it does not depend on
    the kernel); where it does, as dvc.yaml runs it (the launcher, compute.blas_kernel: auto) it must
    (triangulate: the test above)."""
    inputs, command, outs = NON_TRAINING[stage]
    direct = [digests(rerun(random_3d, base / f"{stage}_{k}", inputs, command, OPENBLAS_CORETYPE=k), *outs)
              for k in KERNELS]
    if direct[1:] == direct[:-1]:
        return
    launched = [digests(rerun(random_3d, base / f"{stage}_launched_{k}", inputs, command, launcher=True,
                              OPENBLAS_CORETYPE=k), *outs) for k in KERNELS]
    assert launched[1:] == launched[:-1], f"{stage} writes other bytes under another BLAS kernel"
