"""Where a stage computes: section ``compute`` of params.yaml and the process's runtime.

* ``compute.nproc``: processes. With N > 1 the stage runs under ``torchrun --nproc_per_node N``
  (``python -m epipose.launch stages/<name>.py ...`` in dvc.yaml does that): training stages use
  DistributedDataParallel with each process taking its slice of every global batch, inference
  stages split the frame shards over the processes and rank 0 merges the results in order.
* ``compute.device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` (an error
  where there is no CUDA device). Process groups use nccl on CUDA and gloo on CPU.

This module is the one place that decides the device: ``load_compute`` reads and checks the
section against how the process was launched (a stage run with ``compute.nproc: 2`` outside
torchrun would not compute what its params say), ``setup_runtime`` turns it into a ``Runtime``
(device, rank, process group, CPU threads) and ``select_device`` does the same for one process
(evaluate, ``epipose predict``). Training (``epipose.train``) and inference
(``epipose.models.inference``) share the AMP policy (``amp_dtype``, ``autocast``) and the
synchronised BatchNorm from here.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from epipose.params import ParamError, check_machines, in_range, load_section
from epipose.stage import Runtime  # noqa: F401  (the stages import it from here too)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeParams:
    """Section ``compute`` of params.yaml."""

    nproc: int = in_range(1, 1024, default=1)           # processes per machine (node)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    blas_kernel: str = "auto"       # applied (and checked) by the launcher, epipose.launch.blas_environment
    nnodes: int = in_range(1, 1024, default=1)          # machines; > 1: the same command on each (epipose.launch)
    node_rank: int | Literal["auto"] = "auto"           # auto: ranks from the c10d rendezvous; N: static (node 0 hosts)
    rdzv_endpoint: str = ""                             # host:port of the rendezvous (node 0), needed when nnodes > 1
    rdzv_id: str = "epipose"                            # the run's id at the rendezvous (c10d)

    def __post_init__(self) -> None:
        check_machines(self.nnodes, self.node_rank, self.rdzv_endpoint)

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes


def world_size() -> int:
    """Processes of this run as torchrun set them up (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_cuda(p: ComputeParams) -> bool:
    return p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available())


def check_compute(p: ComputeParams) -> ComputeParams:
    """``p`` checked against the launch (torchrun's world size) and the machine's CUDA devices."""
    world = world_size()
    if world != p.world:
        how = ("a single process" if world == 1 else f"one of {world} torchrun processes")
        nodes = f" on each of compute.nnodes {p.nnodes}" if p.nnodes > 1 else ""
        raise ParamError(f"param compute.nproc is {p.nproc}{nodes} but this is {how}; run the stage as "
                         f"`python -m epipose.launch stages/<name>.py ...` (as dvc.yaml does)")
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ParamError("param compute.device is cuda but no CUDA device is available (use auto or cpu)")
    if use_cuda(p) and p.nproc > torch.cuda.device_count():
        raise ParamError(f"param compute.nproc is {p.nproc} but there are {torch.cuda.device_count()} CUDA "
                         "device(s): one process per device (or compute.device: cpu)")
    return p


def load_compute(path: str | Path = "params.yaml") -> ComputeParams:
    """Read and check section ``compute`` (recorded among the keys the stage reads)."""
    return check_compute(load_section(ComputeParams, "compute", path))


# --- the runtime -------------------------------------------------------------------------------------
def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_times(lines) -> dict[int, tuple[int, int]]:
    """Per core number, from ``/proc/stat``'s lines: (total jiffies, idle + iowait jiffies)."""
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in fields[:8]]       # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (sum(v), v[3] + v[4])
    return out


def busy_between(first: dict[int, tuple[int, int]], second: dict[int, tuple[int, int]], cores) -> float:
    """How many of ``cores`` were busy between two ``cpu_times`` samples: the sum of each core's busy
    fraction (a core missing from a sample, or with no time elapsed, counts as idle)."""
    busy = 0.0
    for c in set(cores) & first.keys() & second.keys():
        total, idle = second[c][0] - first[c][0], second[c][1] - first[c][1]
        busy += (total - idle) / total if total > 0 else 0.0
    return busy


def busy_cores(sample_s: float = 0.3) -> float:
    """How many of this process's cores other work keeps busy, measured over ``sample_s`` while this
    process sleeps (Linux ``/proc/stat``; 0.0 where it cannot be read)."""
    def snapshot() -> dict[int, tuple[int, int]]:
        with open("/proc/stat") as f:
            return cpu_times(f)

    try:
        first = snapshot()
        time.sleep(sample_s)
        second = snapshot()
    except (OSError, ValueError):
        return 0.0
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(first)
    return busy_between(first, second, cores)


def auto_threads(world: int = 1) -> int:
    """CPU threads per process for ``threads: 0``. One process: the cores that other work does not keep
    busy when the stage starts (a core at least half busy counts as taken), at least 1 — with all
    cores, every step waits for the thread that shares its core (measured on 2 cores beside one busy
    process: 584 ms per pretrain_2d step with 2 threads, 334 ms with 1; idle 188 / 329 ms). Several
    processes (torchrun): the cores divided among them."""
    cores = cpu_cores()
    if world > 1:
        return max(1, cores // world)
    busy = busy_cores()
    threads = max(1, cores - int(busy + 0.5))
    log.info("CPU threads: %d (%d cores, %.1f busy with other work; set the stage's threads to fix it)",
             threads, cores, busy)
    return threads


def _configure_device(device: torch.device, threads: int, world: int) -> None:
    if device.type == "cpu":
        torch.set_num_threads(threads or auto_threads(world))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def setup_runtime(compute: ComputeParams, threads: int = 0, progress: bool = True) -> Runtime:
    """Device and process group: DDP when launched by torchrun (``WORLD_SIZE`` > 1); CUDA or CPU as
    ``compute.device`` says. ``threads``: CPU threads per process (0: ``auto_threads``)."""
    world = world_size()
    cuda = use_cuda(compute)
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local)
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
    else:
        rank, local = 0, 0
        device = torch.device("cuda") if cuda else torch.device("cpu")
    _configure_device(device, threads, int(os.environ.get("LOCAL_WORLD_SIZE", world)))   # this machine's share
    return Runtime(device, rank, world, local, progress)


def select_device(device: str = "auto", threads: int = 0) -> torch.device:
    """One process's device (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``), configured like ``setup_runtime``'s;
    an error where CUDA is asked for and there is none."""
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available here (use auto or cpu)")
    else:
        dev = torch.device(device)
    _configure_device(dev, threads, 1)
    return dev


# --- mixed precision ---------------------------------------------------------------------------------
def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto: bf16 on CUDA if supported else fp16; bf16 on CPUs
    with native bf16 units; else none)."""
    if amp == "none":
        return None
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if amp == "fp16":
        raise ValueError("amp fp16 is for CUDA; on CPU use bf16 or none")
    if amp == "bf16" or (amp == "auto" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# --- BatchNorm over processes --------------------------------------------------------------------------
class ProcessGroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: the per-process sums
    are all-reduced (autograd-aware, two passes for the variance). ``nn.SyncBatchNorm`` does this
    on CUDA only; this one runs on any device (gloo on CPU). Outside a process group, or in eval
    mode, it is a plain BatchNorm. Same parameters and buffers as the BatchNorm it replaces."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        local_n = torch.tensor([x.numel() // c], dtype=xf.dtype, device=x.device)
        sums = all_reduce(torch.cat([xf.sum(dims), local_n]))
        n = sums[c]
        mean = sums[:c] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean, var, n)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
        unbiased = var.detach() * (n / (n - 1).clamp_min(1))
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``model`` (in place, same parameter objects) by one that uses the
    global batch's statistics: ``nn.SyncBatchNorm`` on CUDA, ``ProcessGroupBatchNorm`` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, ProcessGroupBatchNorm):
            out = ProcessGroupBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats)
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            if module.track_running_stats:
                out.running_mean, out.running_var = module.running_mean, module.running_var
                out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)
