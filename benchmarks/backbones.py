"""Benchmark: a training step of the pose network (forward, backward, Adam; 64 depth bins, as train_3d)
for ResNet-18, -34 and -50 at 96 and 256 px, with the paper's layout (all four stages, 3 × 256-channel
deconvolutions) — against the default CPU profile (params.yaml's ``model``) in the same run.

Each configuration runs in its own process (its peak RSS is its own): ``--steps`` timed steps after
``--warmup``, batch ``--batch``, ``--threads`` threads. Run it on an otherwise idle machine::

    python benchmarks/backbones.py [--batch 8] [--steps 3] [--threads 0]

Writes ``benchmarks/out/backbones.json``; prints ms per step, per crop, peak RSS and the ratio to the
default profile. Multiply by a stage's steps (README: the paper's profile) for its time on this CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step_times(cfg: dict, batch: int, steps: int, warmup: int, threads: int) -> dict:
    """In this process: ms per training step of the network ``cfg`` (PoseNetConfig's keys), peak RSS."""
    import torch

    from epipose.compute import auto_threads
    from epipose.models.pose_net import PoseNet, PoseNetConfig

    torch.set_num_threads(threads or auto_threads(1))
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(**cfg)).train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 3, cfg["input_size"], cfg["input_size"]).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        out = net(x)
        (out["xy"].square().mean() + out["z"].square().mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    return {"ms_per_step": round(ms, 1), "ms_per_crop": round(ms / batch, 2), "threads": torch.get_num_threads(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def configurations() -> dict[str, dict]:
    from epipose.models.pose_net import load_model_params

    m = load_model_params(ROOT / "params.yaml")
    default = {"backbone": m.backbone, "input_size": m.input_size, "backbone_stages": m.backbone_stages,
               "deconv_layers": m.deconv_layers, "deconv_channels": m.deconv_channels, "depth_bins": m.depth_bins}
    paper = {"backbone_stages": 4, "deconv_layers": 3, "deconv_channels": 256, "depth_bins": 64}
    return {"default": default, **{f"R{b}@{s}": {**paper, "backbone": b, "input_size": s}
                                   for s in (96, 256) for b in (18, 34, 50)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0: the cores other work leaves free")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)     # a child process: one configuration
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "backbones.json"))
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(step_times(json.loads(args.one), args.batch, args.steps, args.warmup, args.threads)))
        return
    results = {}
    for name, cfg in configurations().items():
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg), "--batch", str(args.batch),
                              "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[name] = {**cfg, **json.loads(out.stdout.strip().splitlines()[-1])}
        r = results[name]
        print(f"{name:<10} {r['ms_per_step']:>9.0f} ms/step {r['ms_per_crop']:>8.1f} ms/crop {r['peak_rss_mib']:>8.0f} MiB"
              f"  x{r['ms_per_step'] / results['default']['ms_per_step']:.1f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = {"batch": args.batch, "steps": args.steps, "results": results}
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
