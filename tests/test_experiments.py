"""Sweeps with DVC's experiment queue, as the README documents them: queue experiments with
``dvc exp run --queue -S ...``, run them with ``dvc queue start -j N``, compare them with
``dvc exp show``. Tiny profile, cheapest stage (extract_frames), in a temporary git repository."""

from __future__ import annotations

import json
import subprocess
import time

import yaml

from test_pipeline import _run, repo  # noqa: F401  (repo: the tiny-profile git + DVC repository fixture)


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """``dvc exp show --json`` → {experiment name: its data (params, outs, ...) plus its executor state}."""
    out = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                out[rev["name"]] = {**rev["data"], "state": (exp.get("executor") or {}).get("state")}
    return out


def test_two_queued_experiments_run_and_show(repo):  # noqa: F811
    repo, env = repo
    _run(["dvc", "repro", "extract_frames"], repo, env)
    _run(["git", "add", "dvc.lock"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    base = yaml.safe_load((repo / "params.yaml").read_text())["frames"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["extract_frames"]["outs"]
    base_hash = next(o["md5"] for o in lock if o["path"] == "data/frames")
    _run(["dvc", "exp", "run", "--queue", "extract_frames", "-S", "frames.crop_size=48", "-n", "crop48"], repo, env)
    _run(["dvc", "exp", "run", "--queue", "extract_frames", "-S", "frames.stride=6", "-n", "stride6"], repo, env)
    try:
        _run(["dvc", "queue", "start", "-j", "1"], repo, env)
        deadline = time.time() + 300
        while time.time() < deadline:
            status = _run(["dvc", "queue", "status"], repo, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        _run(["dvc", "queue", "stop", "--kill"], repo, env)      # the workers (and a task still running)
    assert "Failed" not in status, status + _run(["dvc", "queue", "logs", "crop48"], repo, env)
    show = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True)
    shown = _experiments(json.loads(show.stdout))
    assert {"crop48", "stride6"} <= set(shown), list(shown)
    params = {name: shown[name]["params"]["params.yaml"]["data"]["frames"] for name in ("crop48", "stride6")}
    assert params["crop48"] == {**base, "crop_size": 48} and params["stride6"] == {**base, "stride": 6}
    frames = {name: shown[name]["outs"]["data/frames"]["hash"] for name in ("crop48", "stride6")}
    assert len({base_hash, *frames.values()}) == 3                     # three different frame sets
    assert all(shown[name]["state"] == "success" for name in ("crop48", "stride6"))
