"""Every stage has one shape: ``run(paths, params, runtime) -> StageResult`` in its module, and a script
that parses arguments, calls ``run`` and writes the result through ``io.write_results`` — nothing else."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

from conftest import ROOT

from epipose.io import write_results
from epipose.stage import Runtime, StageResult

STAGES = sorted(p.stem for p in (ROOT / "epipose" / "pipeline").glob("[!_]*.py"))


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_module_exposes_paths_load_params_and_run(name):
    module = importlib.import_module(f"epipose.pipeline.{name}")
    assert list(inspect.signature(module.run).parameters) == ["paths", "params", "runtime"], name
    assert "StageResult" in str(inspect.signature(module.run).return_annotation), name
    assert list(inspect.signature(module.load_params).parameters)[0] == "path", name
    paths_classes = [c for n, c in vars(module).items() if n.endswith("Paths") and inspect.isclass(c)
                     and c.__module__ == module.__name__]
    assert len(paths_classes) == 1, f"{name}: one <Stage>Paths class, found {paths_classes}"
    assert callable(getattr(paths_classes[0], "outputs", None)), f"{name}: its Paths lists no outputs()"


def _calls(tree: ast.AST) -> list[str]:
    return [n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
            for n in ast.walk(tree) if isinstance(n, ast.Call)]


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_script_parses_runs_and_writes_nothing_else(name):
    tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == f"epipose.pipeline.{name}"
                for a in n.names}
    assert imported <= {"run", "load_params"} | {n for n in imported if n.endswith("Paths")}, imported
    calls = _calls(tree)
    assert calls.count("run") == 1 and calls.count("write_results") == 1, calls
    assert calls.count("check_outputs") == 1, f"{name}: its outputs are not checked before any work"
    # nothing that writes or computes: only the parser, the stage's three calls and the runtime
    allowed = {"stage_parser", "add_argument", "parse_args", "check_outputs", "load_params", "run", "write_results",
               "setup_runtime", "Runtime", "run_stage", "exit"} | {n for n in imported if n.endswith("Paths")}
    assert set(calls) <= allowed, f"{name}: the script also calls {sorted(set(calls) - allowed)}"


def test_write_results_writes_the_three_files_and_nothing_for_another_process(tmp_path):
    result = StageResult(["x"], {"fit.mpjpe": 12.5}, {"frames": 3, "per_joint": [1.0, 2.0]}, {"seconds": 1.5})
    paths = [tmp_path / "m.json", tmp_path / "r.json", tmp_path / "t.json"]
    write_results(None, *paths)
    assert not any(p.exists() for p in paths)
    write_results(result, *paths)
    assert [json.loads(p.read_text()) for p in paths] == [result.metrics, result.report, result.timings]


def test_write_results_refuses_metrics_that_are_not_flat_numbers(tmp_path):
    with pytest.raises(TypeError, match="flat numbers"):
        write_results(StageResult(metrics={"a": {"b": 1}}), tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_the_runtime_says_which_process_writes():
    assert Runtime().is_main and not Runtime().distributed
    other = Runtime(rank=1, world_size=2)
    assert not other.is_main and other.distributed


def test_synthesize_runs_through_the_contract(tmp_path):
    """One whole stage through ``run``: its data outputs written, its report returned (not written)."""
    from epipose.pipeline import synthesize
    from conftest import write_params

    params = synthesize.load_params(write_params(tmp_path / "params.yaml", {"synth": {
        "subjects": ["S1"], "actions": ["Walking"], "n_frames": 2, "image_size": 96, "workers": 1,
        "mpii": {"n_train": 2, "n_valid": 2, "image_size": 64, "images_per_chunk": 2}}}))
    paths = synthesize.SynthesizePaths(str(tmp_path / "h36m"), str(tmp_path / "mpii"))
    result = synthesize.run(paths, params, Runtime(progress=False))
    assert result.outputs == paths.outputs()
    assert (tmp_path / "h36m" / "cameras.json").is_file() and (tmp_path / "mpii" / "annot" / "train.json").is_file()
    assert result.report["videos"] == 4 and result.report["images"] == {"train": 2, "valid": 2}
    assert len(list(Path(tmp_path / "h36m").rglob("*.mp4"))) == 4


KILLED_WRITER = """
import os, signal, sys
from epipose.io import atomic_path
target, directory = sys.argv[1], sys.argv[2] == "dir"
with atomic_path(target, directory=directory) as tmp:
    (tmp / "part" if directory else tmp).write_text("half written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_a_killed_stage_left_are_removed_before_its_next_run(tmp_path):
    """A writer killed inside ``atomic_path`` (SIGKILL: nothing can clean up) leaves a hidden temporary;
    the launcher's output check removes those of the stage's outputs — files, folders and the files
    written one by one into a folder — and nothing else."""
    import argparse
    import subprocess
    import sys
    from dataclasses import dataclass

    from epipose.launch import check_outputs
    from epipose.stage import Folder

    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    for target, kind in ((out / "table.parquet", "file"), (out / "frames", "dir"), (out / "plots" / "a.tsv", "file"),
                         (out / "m.json", "file")):
        done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), kind], cwd=ROOT)
        assert done.returncode == -9
    left = sorted(p.name for p in out.rglob(".*"))
    assert len(left) == 4 and all(".tmp" in n for n in left), left
    keep = [out / ".table.other.tmp.parquet", out / "notes.tmp", out / "plots" / "b.tsv"]
    for p in keep:
        p.write_text("not a temporary of the outputs")

    @dataclass(frozen=True)
    class Paths:
        def outputs(self):
            return [str(out / "table.parquet"), Folder(out / "frames"), Folder(out / "plots"), None]

    check_outputs(Paths(), argparse.Namespace(metrics=str(out / "m.json"), report=None, timings=None))
    assert sorted(p.name for p in out.rglob(".*")) == [".table.other.tmp.parquet"]
    assert all(p.exists() for p in keep)
