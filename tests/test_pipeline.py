"""The DVC pipeline end to end, on a tiny params profile, in a temporary git repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tiny_repo import run


def plant_stale_temporaries(repo: Path, names: list[str] | None = None) -> list[Path]:
    """Beside every output of the stages ``names`` (default: those dvc.lock does not hold yet, which the next
    ``dvc repro`` runs), what a stage killed while writing it leaves (``io.atomic_path``'s hidden
    temporaries: ``.<stem>.XXXXXXXX.tmp<suffix>`` of a file, ``.<name>.XXXXXXXX.tmp/`` of a folder)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    lock = repo / "dvc.lock"
    done = set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()
    stages = {k: v for k, v in stages.items() if (k in names if names is not None else k not in done)}
    outs = {next(iter(o)) if isinstance(o, dict) else o for st in stages.values() for kind in ("outs", "metrics")
            for o in st.get(kind, [])}
    planted = []
    for out in sorted(outs):
        out = repo / out
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix:                                  # a file
            planted.append(out.with_name(f".{out.stem}.k1ll3d_x.tmp{out.suffix}"))
            planted[-1].write_bytes(b"half written")
        else:
            planted.append(out.with_name(f".{out.name}.k1ll3d_x.tmp"))
            planted[-1].mkdir()
            (planted[-1] / "part").write_bytes(b"half written")
    return planted


@pytest.mark.slow
def test_repro_extract_frames(tiny_repo):
    repo, env = tiny_repo
    planted = plant_stale_temporaries(repo, ["synthesize", "extract_frames"])
    run(["dvc", "repro", "extract_frames"], repo, env)
    assert planted and not [p for p in planted if p.exists()], "temporaries of a killed run survived the stages' next run"
    shards = sorted((repo / "data" / "frames").glob("*/*.parquet"))
    assert len(shards) == 2 * 2 * 4
    assert (repo / "data" / "raw" / "mpii" / "annot" / "valid.json").exists()
    status = run(["dvc", "status", "extract_frames"], repo, env)
    assert "up to date" in status
    again = run(["dvc", "repro", "extract_frames"], repo, env)
    assert "didn't change, skipping" in again and "Running stage" not in again


def _listed(key: str, listed: set[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in listed)


@pytest.mark.slow
def test_full_repro_then_a_train_3d_param_reruns_only_what_follows(tiny_repo):
    """The whole chain on the tiny profile: every output with its schema, a clean ``dvc status``, and a
    changed ``train_3d`` param reruns train_3d and later stages only."""
    import json

    import pandas as pd

    from epipose.data import pose_tables

    repo, env = tiny_repo
    planted = plant_stale_temporaries(repo)
    run(["dvc", "repro"], repo, env)
    assert not [p for p in planted if p.exists()], "temporaries of a killed run survived the stages' next run"
    for out in ("models/pose2d.pt", "models/pose3d.pt", "models/refiner.pt", "metrics/eval.json",
                "metrics/triangulate.json", "reports/results.md"):
        assert (repo / out).is_file(), out
    pose_tables.read_pose2d(repo / "data" / "pose2d.parquet")
    pseudo = pose_tables.read_pseudo3d(repo / "data" / "pseudo3d.parquet")
    assert pseudo.columns.tolist() == pose_tables.PSEUDO3D_SCHEMA.names
    assert set(pseudo["subject"]) <= {"S1", "S9"} and len(pd.read_parquet(repo / "data" / "pose2d.parquet"))
    evaluated = json.loads((repo / "metrics" / "eval.json").read_text())
    mpjpe = {k: evaluated.get(k) for k in ("pose3d.mpjpe", "pose3d_refined.mpjpe", "baseline_gt.mpjpe")}
    assert all(isinstance(v, (int, float)) and 0 < v < 10_000 for v in mpjpe.values()), mpjpe    # mm, each model
    # Metrics: flat, stable names, no timings; `dvc metrics show` fits a screen (≤ 40 columns).
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env))
    files = next(iter(shown.values()))["data"]
    names = {k for f in files.values() for k in f["data"]}
    assert len(names) + 1 <= 40 and len(files) <= 40, sorted(names)
    assert all(isinstance(v, (int, float)) or v is None for f in files.values() for v in f["data"].values())
    assert not [n for n in names if "second" in n]
    assert {"pose3d.mpjpe", "pose3d_refined.mpjpe", "baseline_gt.mpjpe", "pseudo3d.n_mpjpe", "rig.rotation_error_deg",
            "mpii.pckh@0.5", "pose2d.pckh@0.5", "fit.mpjpe", "refiner.fit_mpjpe_after"} <= names
    assert json.loads((repo / "timings" / "train_3d.json").read_text())["seconds"] > 0
    # the model says how its training crops were cut (predict frames people by it)
    import torch

    frames = yaml.safe_load((repo / "params.yaml").read_text())["frames"]
    meta = torch.load(repo / "models" / "pose3d.pt", weights_only=True)["meta"]
    assert meta["crop"]["boxes"] == frames["boxes"] and meta["box_mm"] == frames["box_mm"]
    status = run(["dvc", "status"], repo, env)
    assert "up to date" in status, status

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train_3d"]["lr"] *= 2                     # a changed value, whatever the default
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = run(["dvc", "repro"], repo, env)
    for stage in ("synthesize", "extract_frames", "pretrain_2d", "infer_2d", "triangulate"):
        assert f"Running stage '{stage}'" not in again, stage
    for stage in ("train_3d", "train_refiner", "evaluate"):
        assert f"Running stage '{stage}'" in again, stage


@pytest.fixture(scope="module")
def whole_chain(tiny_repo):
    """The tiny repository after ``dvc repro`` of the whole chain (whatever ran before in this module):
    every stage has run there at least once and appended the params keys it read to the trace."""
    repo, env = tiny_repo
    run(["dvc", "repro"], repo, env)
    assert "up to date" in run(["dvc", "status"], repo, env)
    return repo, env


def test_a_stage_records_the_params_keys_it_reads(tmp_path):
    """What test_stages_read_exactly_the_params_they_list relies on: with ``EPIPOSE_PARAMS_TRACE`` set, a
    script appends ``<script> <section.key>`` at exit for each key of each section (or single value) it
    loaded, and nothing for the keys it did not; a script that loads nothing appends nothing."""
    import os
    import sys

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"demo": {"a": 2, "b": "y"}, "data": {"root": "r", "other": 1},
                                                          "unread": {"c": 3}}))
    (tmp_path / "my_stage.py").write_text(
        "from dataclasses import dataclass\n"
        "from epipose.params import load_section, load_value\n"
        "@dataclass(frozen=True)\n"
        "class Demo:\n    a: int = 1\n    b: str = 'x'\n"
        "assert load_section(Demo, 'demo') == Demo(2, 'y') and load_value('data', 'root') == 'r'\n")
    (tmp_path / "quiet.py").write_text("import epipose.params\n")
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "EPIPOSE_PARAMS_TRACE": str(trace)}
    for script in ("my_stage.py", "quiet.py", "my_stage.py"):
        subprocess.run([sys.executable, script], cwd=tmp_path, env=env, check=True)
    assert trace.read_text().splitlines() == 2 * ["my_stage data.root", "my_stage demo.a", "my_stage demo.b"]


@pytest.mark.slow
def test_stages_read_exactly_the_params_they_list(whole_chain):
    """After the whole chain ran: every params key a stage read (recorded by ``epipose.params`` through
    ``EPIPOSE_PARAMS_TRACE``) or interpolates (``${...}`` in its cmd, deps, outs) is listed under its
    ``params:`` in dvc.yaml, so changing it reruns the stage; and every listed key is used, so
    changing another key does not rerun it for nothing. Every stage of dvc.yaml is checked."""
    import re

    repo, env = whole_chain
    read: dict[str, set[str]] = {}
    for line in (repo.parent / "params-trace.txt").read_text().splitlines():
        script, key = line.split()
        read.setdefault(script, set()).add(key)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    checked, never_ran = [], []
    for name, stage in stages.items():
        scripts = [Path(w).stem for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py")]
        if not any(s in read for s in scripts):
            never_ran.append(name)
            continue
        used = set().union(*(read.get(s, set()) for s in scripts))
        text = yaml.safe_dump({k: stage.get(k) for k in ("cmd", "deps", "outs")})
        used |= set(re.findall(r"\$\{\s*([\w.]+)\s*\}", text))
        listed = {p for p in stage.get("params", []) if isinstance(p, str)}
        unlisted = sorted(k for k in used if not _listed(k, listed))
        assert not unlisted, f"stage {name} reads {unlisted} but does not list them under params"
        unused = sorted(p for p in listed if not any(_listed(k, {p}) or p.startswith(k + ".") for k in used))
        assert not unused, f"stage {name} lists {unused} under params but never reads them"
        checked.append(name)
    assert not never_ran, f"no params trace from stage(s) {never_ran}: checked only {checked}"
    assert checked == list(stages) != [], checked


@pytest.mark.slow
def test_a_recording_without_ground_truth_runs_the_self_supervised_chain(tiny_repo, tmp_path):
    """Videos and an intrinsics-only cameras.json (no D3_Positions, no extrinsics): ``dvc repro
    train_refiner`` writes the pseudo-labels (the same as with ground truth beside them), the recovered
    rig and both models; the stages that need ground truth say so in one line."""
    import json

    import numpy as np
    import pandas as pd

    repo, env = tiny_repo
    run(["dvc", "repro", "triangulate"], repo, env)            # the run with ground truth (if not yet run)
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

    out = run(["dvc", "repro", "train_refiner"], copy, env)
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
