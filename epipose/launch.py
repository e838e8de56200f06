"""How a stage runs: on ``compute.nproc`` processes, and with one way of failing.

    python -m epipose.launch stages/<name>.py [stage arguments ...]

Reads section ``compute`` of the params file the stage will read (its ``--params`` argument, else
``params.yaml``). With ``compute.nproc: 1`` (and for the stages that run in one process whatever it
says: synthesize, extract_frames, triangulate, evaluate) it replaces itself with
``python stages/<name>.py ...``; with N > 1 with ``torchrun --standalone --nproc_per_node N
stages/<name>.py ...`` (the stage then runs DistributedDataParallel / split inference; gloo on CPU,
nccl on CUDA). Either way the launcher's process becomes the stage's, so exit codes and signals pass
through unchanged.

``compute.blas_kernel`` sets the stage's OpenBLAS kernel (numpy's and scipy's linear algebra) before
any library loads: ``auto`` lets OpenBLAS pick the kernel for the CPU and ignores an
``OPENBLAS_CORETYPE`` in the environment — kernels round differently (triangulate's labels moved by up
to 0.15 mm under ``Haswell`` against ``SkylakeX`` on one CPU), so a machine's environment never changes
the bytes a stage writes on a given CPU; ``keep`` honours the environment; a kernel name
(``Haswell``, ``SkylakeX``, ...) pins that one.

Every stage script ends with ``sys.exit(run_stage(main))``: logging goes to stderr under the
stage's name; a bad param or input — a ``ValueError`` (``ParamError``, ``TableError``, ...), an
``OSError`` (a missing or unwritable file) or a diverged training — stops the stage with one line
that names the ``section.key`` or the file and exit status 2; outputs are written atomically at
the end, so nothing is left half-written, also when the stage is terminated (SIGTERM). Under
torchrun every process leaves the process group on the way out.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

from epipose.params import (READ_VALUES_ENV, ParamError, adopt_read_values, changed_since_read, check_machines,
                            flush_trace, load_value,
                            read_values_env)


def params_path(args: list[str]) -> str:
    """The stage's ``--params`` value (``--params X`` or ``--params=X``), else params.yaml."""
    for i, a in enumerate(args):
        if a == "--params" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--params="):
            return a.split("=", 1)[1]
    return "params.yaml"


# The stages that can run on several processes (DDP training, split inference); the others run in one.
MULTI_PROCESS = {"pretrain_2d", "infer_2d", "train_3d", "train_refiner"}
BLAS_KERNEL_VARIABLE = "OPENBLAS_CORETYPE"


def blas_environment(env: dict[str, str], kernel: str) -> dict[str, str]:
    """The stage's environment for ``compute.blas_kernel`` (``auto``, ``keep`` or a kernel name)."""
    if not kernel or not kernel.replace("_", "").isalnum():
        raise ParamError(f"param compute.blas_kernel: {kernel!r} is not auto, keep or an OpenBLAS kernel name")
    env = dict(env)
    if kernel == "auto":
        env.pop(BLAS_KERNEL_VARIABLE, None)
    elif kernel != "keep":
        env[BLAS_KERNEL_VARIABLE] = kernel
    return env


@dataclass(frozen=True)
class Nodes:
    """The machines a multi-process stage spans (section ``compute``: nnodes, node_rank, rdzv_endpoint,
    rdzv_id): one by default."""

    nnodes: int = 1
    node_rank: str = "auto"
    rdzv_endpoint: str = ""
    rdzv_id: str = "epipose"

    def torchrun_args(self) -> list[str]:
        """torchrun's rendezvous arguments: standalone on one machine; on several the c10d rendezvous at
        the endpoint (ranks in order of arrival), or with a node rank the static one hosted by node 0."""
        if self.nnodes == 1:
            return ["--standalone"]
        if self.node_rank == "auto":
            return ["--nnodes", str(self.nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", self.rdzv_endpoint,
                    "--rdzv_id", self.rdzv_id]
        host, _, port = self.rdzv_endpoint.rpartition(":")
        return ["--nnodes", str(self.nnodes), "--node_rank", str(self.node_rank), "--master_addr", host,
                "--master_port", port]

    @classmethod
    def load(cls, path: str) -> Nodes:
        """Section ``compute``'s machine keys (checked in full by the stage, ``compute.ComputeParams``)."""
        nnodes = load_value("compute", "nnodes", int, path)
        if nnodes < 1:
            raise ParamError(f"param compute.nnodes: {nnodes} is below the minimum 1")
        if nnodes == 1:
            return cls()
        endpoint = load_value("compute", "rdzv_endpoint", str, path)
        rank = load_value("compute", "node_rank", int | Literal["auto"], path)
        check_machines(nnodes, rank, endpoint)
        return cls(nnodes, str(rank), endpoint, load_value("compute", "rdzv_id", str, path))


def command(script: str, args: list[str], nproc: int, nodes: Nodes = Nodes()) -> list[str]:
    if (nproc == 1 and nodes.nnodes == 1) or Path(script).stem not in MULTI_PROCESS:
        return [sys.executable, script, *args]
    return [sys.executable, "-m", "torch.distributed.run", *nodes.torchrun_args(), "--nproc_per_node", str(nproc),
            script, *args]


# --- a stage script -----------------------------------------------------------------------------------
def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    """A stage script's parser with the arguments every stage has (``--params``, ``--metrics``, ``--report``,
    ``--timings``, ``--no-progress``); the script adds its own files."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--metrics", default=None, help="output flat metrics JSON, e.g. metrics/<stage>.json")
    parser.add_argument("--report", default=None, help="output detailed report JSON, e.g. reports/<stage>.json")
    parser.add_argument("--timings", default=None, help="output seconds taken, JSON (not a metric), e.g. timings/<stage>.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def check_outputs(paths, args: argparse.Namespace) -> None:
    """Before any work: the stage's outputs (``paths.outputs()``) and its result files can be written,
    and the temporaries a killed run left beside them are removed (by the main process only)."""
    from epipose.io import check_writable, remove_stale_temporaries    # the launcher itself stays light

    outputs = [p for p in (*paths.outputs(), args.metrics, args.report, args.timings) if p is not None]
    check_writable(*outputs)
    if os.environ.get("RANK", "0") == "0":
        for p in outputs:
            for stale in remove_stale_temporaries(p):
                stage_logger().info("removed %s, left by a killed run", stale)


# --- running a stage script --------------------------------------------------------------------------
INPUT_ERRORS = (ValueError, OSError, FloatingPointError)


def stage_logger() -> logging.Logger:
    """The running stage's logger (named as its script: ``train_3d``, ``triangulate``, ...)."""
    return logging.getLogger(Path(sys.argv[0]).stem or "epipose")


def _terminated(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def run_stage(main: Callable[[], None]) -> int:
    """Run a stage's ``main`` → its exit status: 0, or 2 after one error line for a bad param or input.

    SIGTERM (a cancelled ``dvc repro``, a job scheduler, ``kill``) unwinds the stage like an error:
    the temporaries of the outputs being written are removed (SIGKILL cannot be caught: the
    stage's next run removes what it left)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminated)
    from tqdm.contrib.logging import logging_redirect_tqdm

    adopt_read_values()
    try:
        with logging_redirect_tqdm():            # log lines above the progress bars, not inside them
            main()
        check_params_unchanged()
    except INPUT_ERRORS as exc:
        stage_logger().error("%s", " ".join(str(exc).split()) or type(exc).__name__)
        return 2
    finally:
        dist = sys.modules.get("torch.distributed")   # only a stage that imported torch can have a process group
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def check_params_unchanged() -> None:
    """After the stage's work: every param it (and its launcher) read still has the value it read. Else
    the stage fails, so DVC records nothing: its outputs were made with the old values and dvc.lock would
    pair them with the new (e.g. `dvc exp run -S ...` started while `dvc repro` runs: DVC's lock refuses
    the experiment, but only after it wrote its value into params.yaml)."""
    changed = changed_since_read()
    if changed:
        f, key, then, now = changed[0]
        more = f" and {len(changed) - 1} more key(s)" if len(changed) > 1 else ""
        raise ParamError(f"{f} changed while the stage ran: param {key} was {then!r} when read, is {now!r} now{more}; "
                         "the outputs are from the old value, so the stage fails and DVC records nothing: run it "
                         "again (and start an experiment only when no repro runs)")


# The training stages split each batch over the processes: the params key of their batch size.
SPLIT_BATCH = {"pretrain_2d": ("pretrain_2d", "batch_size"), "train_3d": ("train_3d", "batch_size"),
               "train_refiner": ("refiner", "batch_size")}


def check_batch_split(stage: str, nproc: int, path: str, nnodes: int = 1) -> None:
    """Before any process starts: the stage's batch divides over ``nproc`` × ``nnodes`` processes."""
    world = nproc * nnodes
    if world == 1 or stage not in SPLIT_BATCH:
        return
    section, key = SPLIT_BATCH[stage]
    batch = load_value(section, key, int, path)
    if batch % world:
        where = f"compute.nproc {nproc}" + (f" x compute.nnodes {nnodes}" if nnodes > 1 else "")
        raise ParamError(f"param {section}.{key}: {batch} does not split over {where} processes "
                         f"(make it a multiple of {world})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py"):
        print(__doc__, file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    path = params_path(args)
    stage = Path(script).stem
    try:   # only what the launch needs (it stays free of torch): the stage validates the whole section
        nproc = load_value("compute", "nproc", int, path) if stage in MULTI_PROCESS else 1
        if nproc < 1:
            raise ParamError(f"param compute.nproc: {nproc} is below the minimum 1")
        nodes = Nodes.load(path) if stage in MULTI_PROCESS else Nodes()
        check_batch_split(stage, nproc, path, nodes.nnodes)
        env = blas_environment(dict(os.environ), load_value("compute", "blas_kernel", str, path))
    except (ParamError, FileNotFoundError) as exc:
        print(f"epipose.launch: {exc}", file=sys.stderr)
        return 2
    flush_trace(stage)                    # what the launcher read, it read for the stage
    env[READ_VALUES_ENV] = read_values_env()
    cmd = command(script, args, nproc, nodes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
    return 0   # not reached


if __name__ == "__main__":
    sys.exit(main())
