"""The DVC pipeline end to end, on a tiny params profile, in a temporary git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, deep_update

# Small enough to run the stages in seconds; same code paths as the default profile.
TINY = {
    "synth": {
        "subjects": ["S1", "S9"], "actions": ["Walking", "Greeting"], "n_frames": 30, "fps": 50.0, "image_size": 320,
        "mpii": {"n_train": 48, "n_valid": 16, "image_size": 128, "images_per_chunk": 16},
    },
    "frames": {"stride": 3, "crop_size": 64},
    "model": {"input_size": 32, "deconv_channels": 8, "depth_bins": 8},
    "pretrain_2d": {"epochs": 1, "batch_size": 16, "eval_batch_size": 16, "warmup_steps": 0, "log_every": 1},
    "infer_2d": {"batch_size": 32, "flip_test": False},
    # the tiny 2D network's detections are noise (median 33 px): the self-calibration checks would rightly
    # refuse what they triangulate to (tests/test_selfcalib.py tests them); here the chain must run through
    "triangulate": {"min_pair_points": 50, "ba_max_frames": 30, "min_epipolar_agreement": 0.0,
                    "min_triangulation_angle_deg": 0.0},
    "train_3d": {"subjects": ["S1"], "epochs": 1, "batch_size": 16, "warmup_steps": 0, "fit_frames": 16,
                 "eval_batch_size": 32, "log_every": 1},
    "refiner": {"width": 32, "epochs": 2, "batch_size": 16, "eval_every": 1, "log_every": 1},
    "evaluate": {"subjects": ["S9"], "stride": 3, "pss_k": [4], "figures": 1, "batch_size": 32},
}


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC repository holding the project's tracked files and the tiny params."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = deep_update(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    for committed in ("metrics", "reports"):     # the default run's metrics: every output must come from this run
        shutil.rmtree(repo / committed, ignore_errors=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(repo.parent / "site-cache"),
           "EPIPOSE_PARAMS_TRACE": str(repo.parent / "params-trace.txt"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny"], repo, env)
    return repo, env


def test_repro_extract_frames(repo):
    repo, env = repo
    _run(["dvc", "repro", "extract_frames"], repo, env)
    shards = sorted((repo / "data" / "frames").glob("*/*.parquet"))
    assert len(shards) == 2 * 2 * 4
    assert (repo / "data" / "raw" / "mpii" / "annot" / "valid.json").exists()
    status = _run(["dvc", "status", "extract_frames"], repo, env)
    assert "up to date" in status
    again = _run(["dvc", "repro", "extract_frames"], repo, env)
    assert "didn't change, skipping" in again and "Running stage" not in again


def _listed(key: str, listed: set[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in listed)


def test_full_repro_then_a_train_3d_param_reruns_only_what_follows(repo):
    """The whole chain on the tiny profile: every output with its schema, a clean ``dvc status``, and a
    changed ``train_3d`` param reruns train_3d and later stages only."""
    import json

    import pandas as pd

    from epipose.data import pose_tables

    repo, env = repo
    _run(["dvc", "repro"], repo, env)
    for out in ("models/pose2d.pt", "models/pose3d.pt", "models/refiner.pt", "metrics/eval.json",
                "metrics/triangulate.json", "reports/results.md"):
        assert (repo / out).is_file(), out
    pose_tables.read_pose2d(repo / "data" / "pose2d.parquet")
    pseudo = pose_tables.read_pseudo3d(repo / "data" / "pseudo3d.parquet")
    assert pseudo.columns.tolist() == pose_tables.PSEUDO3D_SCHEMA.names
    assert set(pseudo["subject"]) <= {"S1", "S9"} and len(pd.read_parquet(repo / "data" / "pose2d.parquet"))
    assert "mpjpe" in json.dumps(json.loads((repo / "metrics" / "eval.json").read_text())).lower()
    # Metrics: flat, stable names, no timings; `dvc metrics show` fits a screen (≤ 40 columns).
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo, env))
    files = next(iter(shown.values()))["data"]
    names = {k for f in files.values() for k in f["data"]}
    assert len(names) + 1 <= 40 and len(files) <= 40, sorted(names)
    assert all(isinstance(v, (int, float)) or v is None for f in files.values() for v in f["data"].values())
    assert not [n for n in names if "second" in n]
    assert {"pose3d.mpjpe", "pose3d_refined.mpjpe", "baseline_gt.mpjpe", "pseudo3d.n_mpjpe", "rig.rotation_error_deg",
            "mpii.pckh@0.5", "pose2d.pckh@0.5", "fit.mpjpe", "refiner.fit_mpjpe_after"} <= names
    assert json.loads((repo / "timings" / "train_3d.json").read_text())["seconds"] > 0
    status = _run(["dvc", "status"], repo, env)
    assert "up to date" in status, status

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train_3d"]["lr"] *= 2                     # a changed value, whatever the default
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = _run(["dvc", "repro"], repo, env)
    for stage in ("synthesize", "extract_frames", "pretrain_2d", "infer_2d", "triangulate"):
        assert f"Running stage '{stage}'" not in again, stage
    for stage in ("train_3d", "train_refiner", "evaluate"):
        assert f"Running stage '{stage}'" in again, stage


def test_stages_read_exactly_the_params_they_list(repo):
    """After the repros above (the whole chain): every params key a stage read (recorded by ``epipose.params`` through
    ``EPIPOSE_PARAMS_TRACE``) or interpolates (``${...}`` in its cmd, deps, outs) is listed under its
    ``params:`` in dvc.yaml, so changing it reruns the stage; and every listed key is used, so
    changing another key does not rerun it for nothing."""
    import re

    repo, env = repo
    trace = repo.parent / "params-trace.txt"
    if not trace.exists():                      # this test alone: run the cheapest stages first
        _run(["dvc", "repro", "extract_frames"], repo, env)
    read: dict[str, set[str]] = {}
    for line in trace.read_text().splitlines():
        script, key = line.split()
        read.setdefault(script, set()).add(key)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    checked = []
    for name, stage in stages.items():
        scripts = [Path(w).stem for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py")]
        if not any(s in read for s in scripts):
            continue                            # not run by the repros of this module
        used = set().union(*(read.get(s, set()) for s in scripts))
        text = yaml.safe_dump({k: stage.get(k) for k in ("cmd", "deps", "outs")})
        used |= set(re.findall(r"\$\{\s*([\w.]+)\s*\}", text))
        listed = {p for p in stage.get("params", []) if isinstance(p, str)}
        unlisted = sorted(k for k in used if not _listed(k, listed))
        assert not unlisted, f"stage {name} reads {unlisted} but does not list them under params"
        unused = sorted(p for p in listed if not any(_listed(k, {p}) or p.startswith(k + ".") for k in used))
        assert not unused, f"stage {name} lists {unused} under params but never reads them"
        checked.append(name)
    assert {"synthesize", "extract_frames"} <= set(checked), checked


def test_a_recording_without_ground_truth_runs_the_self_supervised_chain(repo, tmp_path):
    """Videos and an intrinsics-only cameras.json (no D3_Positions, no extrinsics): ``dvc repro
    train_refiner`` writes the pseudo-labels (the same as with ground truth beside them), the recovered
    rig and both models; the stages that need ground truth say so in one line."""
    import json

    import numpy as np
    import pandas as pd

    repo, env = repo
    _run(["dvc", "repro", "triangulate"], repo, env)            # the run with ground truth (if not yet run)
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    nogt = copy / "my recording"                                # a space in the path: the cmds quote it
    shutil.copytree(repo / "data" / "raw" / "h36m", nogt)
    for features in nogt.glob("S*/MyPoseFeatures"):
        shutil.rmtree(features)
    cameras = json.loads((nogt / "cameras.json").read_text())
    del cameras["extrinsics"]
    (nogt / "cameras.json").write_text(json.dumps(cameras))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["data"]["h36m_root"] = "my recording"
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = _run(["dvc", "repro", "train_refiner"], copy, env)
    assert "Running stage 'pretrain_2d'" not in out and "Running stage 'train_3d_gt'" not in out
    for path in ("models/pose3d.pt", "models/refiner.pt", "data/pseudo3d.parquet"):
        assert (copy / path).is_file(), path
    with_gt = pd.read_parquet(repo / "data" / "pseudo3d.parquet")
    without = pd.read_parquet(copy / "data" / "pseudo3d.parquet")
    assert with_gt[["subject", "action", "camera", "frame", "joint"]].equals(without[with_gt.columns[:5]])
    np.testing.assert_allclose(without[["x", "y", "z"]].to_numpy(), with_gt[["x", "y", "z"]].to_numpy(),
                               rtol=1e-6, atol=1e-3)
    rig = json.loads((copy / "data" / "cameras_estimated.json").read_text())
    assert sorted(rig["extrinsics"]) == ["S1", "S9"] and len(rig["extrinsics"]["S1"]) == 4
    infer = json.loads((copy / "reports" / "infer_2d.json").read_text())
    assert infer["shards_without_gt"] == infer["shards"] and "median_px" not in infer
    assert json.loads((copy / "metrics" / "infer_2d.json").read_text()) == {}
    tri = json.loads((copy / "reports" / "triangulate.json").read_text())
    assert tri["ground_truth"]["frames_evaluated"] == 0 and "camera_errors" not in tri["subjects"]["S1"]
    assert "pseudo3d.mpjpe" not in json.loads((copy / "metrics" / "triangulate.json").read_text())
    assert len(pd.read_csv(copy / "reports" / "plots" / "pseudo3d_error_by_views.tsv", sep="\t")) == 0

    proc = subprocess.run(["dvc", "repro", "train_3d_gt"], cwd=copy, env=env, capture_output=True, text=True)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no ground truth (D3_Positions and the subject's extrinsics" in said and "dvc repro train_refiner" in said
