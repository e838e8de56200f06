"""Where a stage computes and on how many processes: section ``compute`` of params.yaml.

* ``compute.nproc``: processes. With N > 1 the stage runs under ``torchrun --nproc_per_node N``
  (``python -m epipose.launch stages/<name>.py ...`` in dvc.yaml does that): training stages use
  DistributedDataParallel with each process taking its slice of every global batch, inference
  stages split the frame shards over the processes and rank 0 merges the results in order.
* ``compute.device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` (an error
  where there is no CUDA device). Process groups use nccl on CUDA and gloo on CPU.

A stage calls ``load_compute`` at its start: the settings are validated, checked against how the
process was launched (a stage run with ``compute.nproc: 2`` outside torchrun would not compute
what its params say) and made the process's choice for ``epipose.train.setup_runtime``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from epipose.params import ParamError, in_range, load_section


@dataclass(frozen=True)
class ComputeParams:
    """Section ``compute`` of params.yaml."""

    nproc: int = in_range(1, 1024, default=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


_current = ComputeParams()


def world_size() -> int:
    """Processes of this run as torchrun set them up (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_cuda(p: ComputeParams | None = None) -> bool:
    import torch    # here, not at the top: the launcher reads this module and should start fast

    p = p or _current
    return p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available())


def configure(p: ComputeParams) -> ComputeParams:
    """Make ``p`` this process's compute settings after checking them against the launch."""
    import torch

    global _current
    world = world_size()
    if world != p.nproc:
        how = ("a single process" if world == 1 else f"one of {world} torchrun processes")
        raise ParamError(f"param compute.nproc is {p.nproc} but this is {how}; run the stage as "
                         f"`python -m epipose.launch stages/<name>.py ...` (as dvc.yaml does)")
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ParamError("param compute.device is cuda but no CUDA device is available (use auto or cpu)")
    if use_cuda(p) and p.nproc > torch.cuda.device_count():
        raise ParamError(f"param compute.nproc is {p.nproc} but there are {torch.cuda.device_count()} CUDA "
                         "device(s): one process per device (or compute.device: cpu)")
    _current = p
    return p


def load_compute(path: str | Path = "params.yaml") -> ComputeParams:
    """Read, validate and apply section ``compute`` (recorded among the keys the stage reads)."""
    return configure(load_section(ComputeParams, "compute", path))
