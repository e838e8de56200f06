"""The one shape of every stage: ``run(paths, params, runtime) -> StageResult``.

- ``paths``: the stage's files as its command line names them, inputs and outputs (a frozen dataclass
  per stage, ``<Stage>Paths``); its ``outputs()`` (a folder marked ``Folder``) are checked writable
  before any work, and the temporaries a killed run of the stage left beside them are removed.
- ``params``: every param section the stage reads (a frozen dataclass per stage, ``<Stage>Config``,
  built by the stage module's ``load_params(path)`` from params.yaml, the one source of truth).
- ``runtime``: how the stage runs, not what it computes: progress bars and, for the stages that
  compute with torch, the device and the process group (``compute.setup_runtime``).

A stage writes its data outputs itself (atomically, see ``io.atomic_path``) and returns the rest:
the flat metrics, the report and the seconds it took. Its script parses the
arguments, calls ``run`` and hands the result to ``io.write_results``: nothing else. Under torchrun
only the main process returns a result; the others return ``None`` and write nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Folder(str):
    """An output that is a folder (``<Stage>Paths.outputs()``); every other output is a file."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage runs: ``device`` (a ``torch.device`` for the torch stages, else "cpu"),
    the process group (``rank`` of ``world_size``, ``local_rank`` on this machine) and ``progress``
    (tqdm bars on stderr)."""

    device: object = "cpu"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    progress: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class StageResult:
    """What a stage's ``run`` returns besides the data outputs it wrote (``outputs``): ``metrics``
    (flat ``group.name`` → number, what DVC compares), ``report`` (the details, JSON), ``timings``
    (seconds, never compared). ``run`` logs its own closing line."""

    outputs: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
