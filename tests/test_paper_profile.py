"""The paper's profile runs: pretrain_2d, train_3d and evaluate as dvc.yaml runs them, with the paper's
network (ResNet-50, 256-px input, all four stages, 3 × 256-channel deconvolutions, 64 depth bins) for a
couple of steps on tiny synthetic data, so that the GPU profile of the README cannot rot on CPU-only CI."""

from __future__ import annotations

import json

import pytest
import torch

from test_determinism import EXTRACT, SYNTHESIZE, new_workdir, run

PAPER = {
    "model": {"backbone": 50, "input_size": 256, "backbone_stages": 4, "deconv_layers": 3, "deconv_channels": 256,
              "depth_bins": 64},
    "synth": {"subjects": ["S1", "S9"], "actions": ["Walking"], "n_frames": 4,
              "mpii": {"n_train": 4, "n_valid": 2, "image_size": 96, "images_per_chunk": 4}},
    "frames": {"stride": 2, "crop_size": 64},
    "pretrain_2d": {"epochs": 1, "batch_size": 2, "eval_batch_size": 2, "eval_every": 1, "threads": 2},
    "train_3d": {"subjects": ["S1"], "epochs": 1, "batch_size": 2, "eval_batch_size": 4, "fit_frames": 4,
                 "mpii_share": 0.5, "bn_recalib_batches": 1, "threads": 2},
    "evaluate": {"subjects": ["S9"], "stride": 2, "figures": 0, "batch_size": 4, "pss_k": [1]},
}


@pytest.mark.slow
def test_pretrain_2d_train_3d_and_evaluate_run_at_the_papers_sizes(tmp_path):
    import copy

    from conftest import deep_update

    a = new_workdir(tmp_path / "paper")
    params = a / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump(deep_update(yaml.safe_load(params.read_text()), copy.deepcopy(PAPER)),
                                     sort_keys=False))
    run(a, *SYNTHESIZE)
    run(a, *EXTRACT)
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
