"""The project as a temporary git + DVC repository on a tiny params profile, for the tests that run the
pipeline with DVC itself (``dvc repro``, ``dvc exp run``): the ``tiny_repo`` fixture (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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
    # the integral head: after 3 steps the default heatmap head's argmax is anywhere on the crop and no camera
    # can be estimated from it (S1 dropped, train_3d refuses); the integral head's soft-argmax stays near the
    # person. The heatmap head's stage runs end to end in tests/test_paper_profile.py and test_heatmap.py
    "pretrain_2d": {"epochs": 1, "batch_size": 16, "eval_batch_size": 16, "warmup_steps": 0, "log_every": 1,
                    "head": "integral"},
    "infer_2d": {"batch_size": 32, "flip_test": False},
    # the tiny 2D network's detections are noise (median 33 px): the self-calibration checks would rightly
    # refuse what they triangulate to (tests/test_selfcalib.py tests them), and the time-offset search finds
    # offsets in noise (on a CPU with AMX, whose bf16 rounds the tiny network otherwise, it called S1's
    # ambiguous and dropped it: train_3d had no labels; tests/test_sync.py tests it); here the chain must run
    "triangulate": {"min_pair_points": 50, "ba_max_frames": 30, "min_epipolar_agreement": 0.0,
                    "min_triangulation_angle_deg": 0.0, "sync_max_offset": 0},
    # one learning rate and the last step's weights: after 10 steps at 0.3 x lr for the backbone, or their
    # moving average, the tiny network's training predictions barely vary and the refiner, standardised on
    # them, extrapolates on the test frames (13-48 m seen); the default's 405 steps: README, "Over seeds"
    "train_3d": {"subjects": ["S1"], "epochs": 1, "batch_size": 16, "warmup_steps": 0, "fit_frames": 16,
                 "eval_batch_size": 32, "log_every": 1, "ema_decay": 0.0, "bn_recalib_batches": 0,
                 "backbone_lr_factor": 1.0},
    "refiner": {"width": 32, "epochs": 2, "batch_size": 16, "eval_every": 1, "log_every": 1},
    "evaluate": {"subjects": ["S9"], "stride": 3, "pss_k": [4], "figures": 1, "batch_size": 32},
}


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    """``cmd`` in ``cwd`` → its stdout and stderr; an AssertionError with their tails if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def make_tiny_repo(repo: Path) -> tuple[Path, dict]:
    """A git + DVC repository at ``repo`` holding the project's tracked files and the tiny params, without
    the committed results → (repo, the environment to run git and dvc in). Stages run there append the
    params keys they read to ``repo.parent / "params-trace.txt"`` (``EPIPOSE_PARAMS_TRACE``)."""
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
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny"], repo, env)
    return repo, env
