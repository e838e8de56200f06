"""The code's layout, checked: one module per stage that no other stage module imports, layers that
only import downwards, short functions, and a project that reads nothing outside itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "epipose"
STAGE_MODULES = sorted((PACKAGE / "pipeline").glob("[!_]*.py"))
FOUNDATIONS = {"camera", "skeleton", "params", "io", "metrics", "compute", "stage"}
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    """Every ``epipose...`` module a file imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n == "epipose" or n.startswith("epipose.")}


def test_every_dvc_stage_has_its_module_and_script():
    import yaml

    stages = {name.split("@")[0] for name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]}
    scripts = {p.stem for p in (ROOT / "stages").glob("*.py")}
    modules = {p.stem for p in STAGE_MODULES}
    assert modules == scripts, f"stages/ and epipose/pipeline/ differ: {sorted(modules ^ scripts)}"
    assert stages - {"train_3d_gt"} == modules, sorted(stages ^ modules)


@pytest.mark.parametrize("path", STAGE_MODULES, ids=lambda p: p.stem)
def test_a_stage_module_never_imports_another(path):
    others = {n for n in imported_modules(path) if n.startswith("epipose.pipeline")}
    assert not others, f"{path.name} imports {sorted(others)}"


@pytest.mark.parametrize("path", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.stem)
def test_a_stage_script_runs_its_own_module_only(path):
    stage_modules = {n.rsplit(".", 1)[0] if n.count(".") > 2 else n
                     for n in imported_modules(path) if n.startswith("epipose.pipeline.")}
    assert stage_modules == {f"epipose.pipeline.{path.stem}"}, f"{path.name} imports {sorted(stage_modules)}"


def _layer_files(*parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (PACKAGE / part).rglob("*.py"))


@pytest.mark.parametrize("path", _layer_files("evaluation", "models", "data", "geometry", "synth"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_evaluation_models_data_geometry_and_synth_never_import_a_stage(path):
    up = {n for n in imported_modules(path) if n.startswith(("epipose.pipeline", "epipose.predict"))}   # and predict_options
    assert not up, f"{path.relative_to(ROOT)} imports {sorted(up)}"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.parent.name != "synth"
                                       and p != PACKAGE / "pipeline" / "synthesize.py"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_synthesize_stage_imports_the_synthetic_data(path):
    """The renderer is no part of the method: no module but the synthesize stage's needs it."""
    down = {n for n in imported_modules(path) if n.startswith("epipose.synth")}
    assert not down, f"{path.relative_to(ROOT)} imports {sorted(down)}"


@pytest.mark.parametrize("path", _layer_files("models", "data", "geometry") + [PACKAGE / f"{n}.py" for n in sorted(FOUNDATIONS)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_floors_below_evaluation_never_import_it(path):
    """epipose.evaluation compares with the ground truth above the data, models and geometry it uses."""
    up = {n for n in imported_modules(path) if n.startswith("epipose.evaluation")}
    assert not up, f"{path.relative_to(ROOT)} imports {sorted(up)}"


@pytest.mark.parametrize("name", sorted(FOUNDATIONS))
def test_foundations_import_only_foundations(name):
    deps = {n.split(".")[1] for n in imported_modules(PACKAGE / f"{name}.py") if n.count(".") >= 1}
    assert deps <= FOUNDATIONS, f"epipose/{name}.py imports {sorted(deps - FOUNDATIONS)}"


PREDICT_MODULES = [PACKAGE / "predict_options.py", *sorted((PACKAGE / "predict").glob("*.py"))]


def test_inference_does_not_import_the_training_loop():
    for path in (PACKAGE / "models" / "inference.py", *PREDICT_MODULES, PACKAGE / "pipeline" / "infer_2d.py",
                 PACKAGE / "pipeline" / "evaluate.py"):
        assert "epipose.train" not in imported_modules(path), path.relative_to(PACKAGE)


@pytest.mark.parametrize("path", PREDICT_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_predict_imports_only_downwards(path):
    """``epipose predict`` stands on the models, data, geometry, figures and foundations: no stage, no training loop."""
    allowed = FOUNDATIONS | {"models", "data", "geometry", "viz", "predict", "predict_options"}
    deps = {n.split(".")[1] for n in imported_modules(path) if n.count(".") >= 1}
    assert deps <= allowed, f"{path.relative_to(ROOT)} imports {sorted(deps - allowed)}"


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_over_80_lines(path):
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(path)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: {long}"


def test_the_project_reads_nothing_outside_itself():
    """A user's clone has nothing beside it: no code, test or benchmark may look at the workspace's
    reference folder next to the project."""
    outside = ("../" + 'shared', '"' + 'shared' + '"')
    offenders = []
    for folder in ("epipose", "stages", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if path.name != "test_architecture.py" and any(needle in text for needle in outside):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
