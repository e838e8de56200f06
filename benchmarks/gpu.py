"""Benchmark for a machine with a CUDA GPU, run as is: the default profile (params.yaml's ``model``) and the
paper's (ResNet-50, 256 px, 4 stages, 3 × 256 deconvolutions) — a training step of the 2D network (batch
``pretrain_2d.batch_size``) and of the 3D network (64 depth bins, batch ``train_3d.batch_size``) under the
stages' autocast (``amp: auto``: bf16 where the GPU has it, else fp16 with the gradient scaler) and
channels_last, and inference throughput with the flip test (``infer_2d.batch_size``); milliseconds and
peak GPU memory each. ``--repro`` also runs the default ``dvc repro`` on the GPU in a fresh clone of this
repository (``compute.device: cuda``) and collects every stage's ``timings/*.json``::

    python benchmarks/gpu.py [--steps 20] [--repro]

Writes ``benchmarks/out/gpu.json``. Without a CUDA device it stops with one line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epipose.compute import amp_dtype, autocast  # noqa: E402
from epipose.models.pose_net import PoseNet, PoseNetConfig, load_model_params  # noqa: E402
from epipose.params import load_value  # noqa: E402

PAPER = {"backbone": 50, "input_size": 256, "backbone_stages": 4, "deconv_layers": 3, "deconv_channels": 256}


def timed(fn, steps: int) -> dict:
    """Median ms of ``fn`` over ``steps`` calls after 3 warm-up calls, and the peak GPU memory."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return {"ms": round(sorted(times)[len(times) // 2], 2), "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20)}


def profile(net_cfg: dict, batches: dict[str, int], steps: int) -> dict:
    """The three measurements of one profile on ``cuda``."""
    device = torch.device("cuda")
    dtype = amp_dtype("auto", device)
    out = {"amp": str(dtype)}
    for name, depth_bins in (("train_2d", 1), ("train_3d", 64)):
        net = PoseNet(PoseNetConfig(**net_cfg, depth_bins=depth_bins)).to(device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        x = torch.randn(batches[name], 3, net_cfg["input_size"], net_cfg["input_size"], device=device
                        ).contiguous(memory_format=torch.channels_last)

        def step():
            with autocast(device, dtype):
                o = net(x)
            scaler.scale(o["xy"].float().square().mean() + o["z"].float().square().mean()).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

        out[name] = {"batch": batches[name], **timed(step, steps)}
    net.eval()
    x = torch.randn(batches["infer"], 3, net_cfg["input_size"], net_cfg["input_size"], device=device
                    ).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def infer():
        with autocast(device, dtype):
            net(x), net(torch.flip(x, dims=[3]))

    out["infer_flip"] = {"batch": batches["infer"], **timed(infer, steps)}
    out["infer_flip"]["crops_per_s"] = round(1000 * batches["infer"] / out["infer_flip"]["ms"])
    return out


def repro_timings() -> dict:
    """The default ``dvc repro`` on the GPU in a fresh clone → {stage: seconds}."""
    with tempfile.TemporaryDirectory(prefix="gpu_repro.") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["dvc", "exp", "run", "-S", "compute.device=cuda"], cwd=clone, check=True)
        return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((clone / "timings").glob("*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repro", action="store_true", help="also the default dvc repro on the GPU (minutes)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device here (run it on a machine with a GPU)")
    params = ROOT / "params.yaml"
    m = load_model_params(params)
    default = {"backbone": m.backbone, "input_size": m.input_size, "backbone_stages": m.backbone_stages,
               "deconv_layers": m.deconv_layers, "deconv_channels": m.deconv_channels}
    batches = {"train_2d": load_value("pretrain_2d", "batch_size", int, params),
               "train_3d": load_value("train_3d", "batch_size", int, params),
               "infer": load_value("infer_2d", "batch_size", int, params)}
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "default": profile(default, batches, args.steps), "paper": profile(PAPER, batches, args.steps)}
    if args.repro:
        result["default_repro_seconds"] = repro_timings()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
