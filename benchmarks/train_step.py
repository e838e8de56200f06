"""Benchmark: pretrain_2d's training step (augmentation, forward, backward, Adam) with the default
network against the paper's layout at the same input size, in the same run.

* **default**: ``model`` from params.yaml (CPU profile: ResNet-18 cut after layer3, 2 deconvolutions)
  with the fused Adam of ``epipose.train.fit``;
* **baseline**: the same input and deconvolution width with the paper's layout (all four ResNet
  stages, 3 deconvolutions) and the per-tensor (foreach) Adam;

both on the same random crops, through ``epipose.pipeline.pretrain_2d.Loss2D`` (the stage's augmentation and
loss) under the stage's autocast and memory format. Steps per second is what the 2D accuracy
tracks at a fixed time budget (README: the 2D network).

Usage::

    python benchmarks/train_step.py [--params params.yaml] [--steps 30]

Writes ``benchmarks/out/train_step.json`` and prints a summary with the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epipose.compute import amp_dtype, autocast  # noqa: E402
from epipose.data.transforms import AugmentParams  # noqa: E402
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig, load_model_params  # noqa: E402
from epipose.params import load_section  # noqa: E402
from epipose.pipeline.pretrain_2d import Loss2D, Pretrain2DParams  # noqa: E402


def time_steps(model_params: ModelParams, p: Pretrain2DParams, aug: AugmentParams, fused: bool, steps: int,
               warmup: int = 3) -> dict:
    """Seconds per training step of a fresh network on random uint8 crops (CPU)."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    config = PoseNetConfig.from_params(model_params, depth_bins=1)
    memory_format = torch.channels_last if p.channels_last else torch.contiguous_format
    model = PoseNet(config).to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, fused=fused, foreach=None if fused else True)
    dtype = amp_dtype(p.amp, device)
    src = round(config.input_size * p.context * p.cache_scale)
    gen = torch.Generator().manual_seed(0)
    batch = {"images": torch.randint(0, 256, (p.batch_size, 3, src, src), dtype=torch.uint8, generator=gen),
             "joints": torch.rand(p.batch_size, config.num_joints, 2, generator=gen) * src,
             "visible": torch.ones(p.batch_size, config.num_joints, dtype=torch.bool)}
    loss_fn = Loss2D(src / p.context, config.input_size, aug, p)

    def step() -> None:
        with autocast(device, dtype):
            loss, _ = loss_fn(model, batch, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    return {"ms_per_step": round(seconds * 1e3, 1), "steps_per_s": round(1.0 / seconds, 2),
            "parameters_M": round(sum(q.numel() for q in model.parameters()) / 1e6, 2),
            "heatmap": config.heatmap_size, "backbone_stages": config.backbone_stages,
            "deconv_layers": config.deconv_layers, "fused_adam": fused, "amp": str(dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "train_step.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_params = load_model_params(args.params)
    p = load_section(Pretrain2DParams, "pretrain_2d", args.params)
    aug = load_section(AugmentParams, "augment", args.params)
    paper = dataclasses.replace(model_params, backbone_stages=4, deconv_layers=3)

    default = time_steps(model_params, p, aug, fused=True, steps=args.steps)
    baseline = time_steps(paper, p, aug, fused=False, steps=args.steps)
    result = {"input_size": model_params.input_size, "batch_size": p.batch_size, "threads": torch.get_num_threads(),
              "default": default, "baseline_paper_layout": baseline,
              "speedup": round(baseline["ms_per_step"] / default["ms_per_step"], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"pretrain_2d step, {model_params.input_size} px, batch {p.batch_size}, {result['threads']} threads:")
    print(f"  default ({default['backbone_stages']} stages, {default['deconv_layers']} deconvs, fused Adam): "
          f"{default['ms_per_step']} ms/step, {default['parameters_M']} M parameters")
    print(f"  baseline (4 stages, 3 deconvs, foreach Adam): {baseline['ms_per_step']} ms/step, "
          f"{baseline['parameters_M']} M parameters")
    print(f"  speed-up: {result['speedup']}x")


if __name__ == "__main__":
    main()
