"""Sweeps with DVC's experiment queue, as the README documents them: queue experiments with
``dvc exp run --queue -S ...``, run them with ``dvc queue start -j N``, compare them with
``dvc exp show``. Tiny profile, in a temporary git repository: the cheapest stage (extract_frames),
and a train_3d experiment on the whole chain (only what follows train_3d reruns; it keeps its own curves)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from conftest import ROOT
from tiny_repo import run


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """``dvc exp show --json`` → {experiment name: its data (params, outs, ...) plus its executor state}."""
    out = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                out[rev["name"]] = {**rev["data"], "state": (exp.get("executor") or {}).get("state")}
    return out


def _run_queue(repo, env) -> str:
    """Start the queue with one worker, wait until nothing is queued or running → the last status."""
    try:
        run(["dvc", "queue", "start", "-j", "1"], repo, env)
        deadline = time.time() + 600
        while time.time() < deadline:
            status = run(["dvc", "queue", "status"], repo, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, env)      # the workers (and a task still running)
    return status


@pytest.mark.slow
def test_two_queued_experiments_run_and_show(tiny_repo):
    repo, env = tiny_repo
    run(["dvc", "repro", "extract_frames"], repo, env)
    run(["git", "add", "dvc.lock"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)
    base = yaml.safe_load((repo / "params.yaml").read_text())["frames"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["extract_frames"]["outs"]
    base_hash = next(o["md5"] for o in lock if o["path"] == "data/frames")
    run(["dvc", "exp", "run", "--queue", "extract_frames", "-S", "frames.crop_size=48", "-n", "crop48"], repo, env)
    run(["dvc", "exp", "run", "--queue", "extract_frames", "-S", "frames.stride=6", "-n", "stride6"], repo, env)
    status = _run_queue(repo, env)
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "crop48"], repo, env)
    show = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True)
    shown = _experiments(json.loads(show.stdout))
    assert {"crop48", "stride6"} <= set(shown), list(shown)
    params = {name: shown[name]["params"]["params.yaml"]["data"]["frames"] for name in ("crop48", "stride6")}
    assert params["crop48"] == {**base, "crop_size": 48} and params["stride6"] == {**base, "stride": 6}
    frames = {name: shown[name]["outs"]["data/frames"]["hash"] for name in ("crop48", "stride6")}
    assert len({base_hash, *frames.values()}) == 3                     # three different frame sets
    assert all(shown[name]["state"] == "success" for name in ("crop48", "stride6"))


@pytest.mark.slow
def test_a_queued_train_3d_experiment_reruns_only_what_follows_and_keeps_its_curves(tiny_repo):
    """The README's sweep on the committed chain: ``dvc exp run --queue -S train_3d.lr=...`` in DVC's
    temporary workspace reruns the stages that read train_3d and those after them, never pretrain_2d (no checkpoint
    folder is an output); the experiment's commit holds its own training curves, and applying it or
    going back leaves ``dvc status`` clean."""
    repo, env = tiny_repo
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)                   # dvc.lock, metrics/, dvclive/ curves, reports
    run(["git", "commit", "-qm", "chain"], repo, env)
    assert "up to date" in run(["dvc", "status"], repo, env)
    curve = "dvclive/train_3d/plots/metrics/train/loss.tsv"
    base_curve = (repo / curve).read_text()
    lr = yaml.safe_load((repo / "params.yaml").read_text())["train_3d"]["lr"]
    run(["dvc", "exp", "run", "--queue", "-S", f"train_3d.lr={lr * 1.5}", "-n", "lr15"], repo, env)
    status = _run_queue(repo, env)
    logs = run(["dvc", "queue", "logs", "lr15"], repo, env)
    assert "Failed" not in status, status + logs
    for stage in ("synthesize", "extract_frames", "pretrain_2d", "infer_2d", "triangulate"):
        assert f"Running stage '{stage}'" not in logs, stage + logs[-3000:]
    # train_3d_gt too: the fully supervised baseline trains with the same train_3d recipe
    for stage in ("train_3d", "train_3d_gt", "train_refiner", "evaluate"):
        assert f"Running stage '{stage}'" in logs, stage + logs[-3000:]
    run(["dvc", "exp", "apply", "lr15"], repo, env)
    assert (repo / curve).read_text() != base_curve          # the experiment's own curves
    assert "up to date" in run(["dvc", "status"], repo, env)
    run(["git", "checkout", "--", "."], repo, env)
    run(["dvc", "checkout"], repo, env)
    assert (repo / curve).read_text() == base_curve
    assert "up to date" in run(["dvc", "status"], repo, env)


def _kind(value) -> str:
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_the_readmes_experiments_set_params_that_exist():
    """Every ``-S section.key=value`` the README shows (sweeps, the larger profiles, real data) names a key
    of params.yaml and gives it a value of that key's kind (number, string, list, true/false): a key the
    stages do not read would change nothing, a value of another kind stops the stage."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = re.findall(r"-S '?([\w.]+)=([^\s`']+)'?", (ROOT / "README.md").read_text())
    assert len(overrides) >= 20, overrides
    wrong = []
    for key, text in overrides:
        node = params
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        value = None if text == "..." else yaml.safe_load(text)         # "-S train_3d.lr=...": any value
        if node is KeyError or (value is not None and node is not None and _kind(value) != _kind(node)):
            wrong.append(f"{key}={text}")
    assert not wrong, f"the README sets params that params.yaml lacks (or gives them another kind of value): {wrong}"
