"""The paper's profile runs: pretrain_2d, train_3d and evaluate as dvc.yaml runs them, with the paper's
network (ResNet-50, 256-px input, all four stages, 3 × 256-channel deconvolutions, 64 depth bins) for a
couple of steps on tiny synthetic data, so that the GPU profile of the README cannot rot on CPU-only CI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, deep_update

PAPER = {
    "model": {"backbone": 50, "input_size": 256, "backbone_stages": 4, "deconv_layers": 3, "deconv_channels": 256,
              "depth_bins": 64},
    "synth": {"subjects": ["S1", "S9"], "actions": ["Walking"], "n_frames": 4, "image_size": 192, "workers": 1,
              "mpii": {"n_train": 4, "n_valid": 2, "image_size": 96, "images_per_chunk": 4}},
    "frames": {"stride": 2, "crop_size": 64, "workers": 1},
    "pretrain_2d": {"epochs": 1, "batch_size": 2, "eval_batch_size": 2, "eval_every": 1, "threads": 2},
    "train_3d": {"subjects": ["S1"], "epochs": 1, "batch_size": 2, "eval_batch_size": 4, "fit_frames": 4,
                 "mpii_share": 0.5, "bn_recalib_batches": 1, "threads": 2},
    "evaluate": {"subjects": ["S9"], "stride": 2, "figures": 0, "batch_size": 4, "pss_k": [1]},
}


def run(workdir: Path, *script_and_args: str) -> None:
    """A stage script in ``workdir`` as dvc.yaml runs it (its params.yaml there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "epipose.launch", str(ROOT / script_and_args[0]), *script_and_args[1:]],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script_and_args[0]} failed:\n{proc.stderr[-3000:]}"


def test_the_papers_network_has_the_papers_shapes():
    """ResNet-50 at 256 px, 4 stages, 3 × 256 deconvolutions: a 64 × 64 heatmap (stride 4) of 16 × 64 bins."""
    from epipose.models.pose_net import PoseNet, PoseNetConfig

    net = PoseNet(PoseNetConfig(**PAPER["model"])).eval()
    assert net.config.heatmap_size == 64 and net.config.stride == 4.0
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 256, 256), return_logits=True)
    assert out["logits"].shape == (1, 16, 64, 64, 64) and out["xy"].shape == (1, 16, 2)


@pytest.mark.slow
def test_pretrain_2d_train_3d_and_evaluate_run_at_the_papers_sizes(tmp_path):
    a = tmp_path / "paper"
    a.mkdir()
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), copy.deepcopy(PAPER))
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(a, "stages/synthesize.py", "--h36m-out", "data/raw/h36m", "--mpii-out", "data/raw/mpii")
    run(a, "stages/extract_frames.py", "--h36m", "data/raw/h36m", "--out", "data/frames")
    run(a, "stages/pretrain_2d.py", "--mpii", "data/raw/mpii", "--out", "models/pose2d.pt", "--metrics",
        "metrics/pretrain_2d.json", "--live-dir", "dvclive/pretrain_2d", "--ckpt-dir", "models/pretrain_2d")
    run(a, "stages/train_3d.py", "--target", "gt", "--frames", "data/frames", "--pose2d", "models/pose2d.pt",
        "--out", "models/pose3d_gt.pt", "--metrics", "metrics/train_3d_gt.json", "--live-dir", "dvclive/train_3d_gt",
        "--ckpt-dir", "models/train_3d_gt")
    run(a, "stages/evaluate.py", "--frames", "data/frames", "--model", "models/pose3d_gt.pt", "--metrics",
        "metrics/eval.json", "--plots", "reports/plots")
    state = torch.load(a / "models/pose3d_gt.pt", weights_only=True)
    assert state["config"]["backbone"] == 50 and state["config"]["input_size"] == 256
    assert state["state_dict"]["final.weight"].shape == (16 * 64, 256, 1, 1)
    assert state["state_dict"]["deconv.6.weight"].shape == (256, 256, 4, 4)
    assert json.loads((a / "metrics/eval.json").read_text())["pose3d.mpjpe"] > 0
