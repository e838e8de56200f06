"""Run a stage script on ``compute.nproc`` processes.

    python -m epipose.launch stages/<name>.py [stage arguments ...]

Reads section ``compute`` of the params file the stage will read (its ``--params`` argument, else
``params.yaml``). With ``compute.nproc: 1`` it replaces itself with ``python stages/<name>.py ...``;
with N > 1 with ``torchrun --standalone --nproc_per_node N stages/<name>.py ...`` (the stage
then runs DistributedDataParallel / split inference; gloo on CPU, nccl on CUDA). Either way the
launcher's process becomes the stage's, so exit codes and signals pass through unchanged.
"""

from __future__ import annotations

import os
import sys

from epipose.compute import ComputeParams
from epipose.params import ParamError, from_dict, read_params


def params_path(args: list[str]) -> str:
    """The stage's ``--params`` value (``--params X`` or ``--params=X``), else params.yaml."""
    for i, a in enumerate(args):
        if a == "--params" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--params="):
            return a.split("=", 1)[1]
    return "params.yaml"


def command(script: str, args: list[str], nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, script, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            script, *args]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py"):
        print(__doc__, file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    path = params_path(args)
    try:
        section = read_params(path).get("compute")
        if section is None:
            raise ParamError(f"param compute: section missing from {path}")
        p = from_dict(ComputeParams, section, "compute")     # the stage validates and records it again
    except (ParamError, FileNotFoundError) as exc:
        print(f"epipose.launch: {exc}", file=sys.stderr)
        return 2
    cmd = command(script, args, p.nproc)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0   # not reached


if __name__ == "__main__":
    sys.exit(main())
