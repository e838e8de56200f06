"""Static checks of dvc.yaml: every stage depends on its script and on every epipose module the
script imports (transitively), and every dependency is a tracked source, a param path or another
stage's output."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def epipose_imports(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """Files of every epipose module ``path`` imports, transitively (package __init__s included)."""
    seen = set() if seen is None else seen
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
        if name != "epipose" and not name.startswith("epipose."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):       # the module and its parent packages
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                epipose_imports(f, seen)
    return seen


def _covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_its_script_and_modules(name):
    stage = STAGES[name]
    deps = [d for d in stage.get("deps", []) if "${" not in d]
    script = ROOT / "stages" / f"{name.split('@')[0]}.py"
    scripts = [w for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py")]
    assert scripts, f"stage {name}: cmd runs no stages/<name>.py script"
    words = stage["cmd"].split()
    modules = [_module_file(words[i + 1]) for i, w in enumerate(words[:-1])      # python -m epipose.launch ...
               if w == "-m" and words[i + 1].startswith("epipose.")]
    assert None not in modules, f"stage {name}: cmd runs an epipose module that does not exist"
    for s in scripts + [m.relative_to(ROOT).as_posix() for m in modules]:
        assert s in deps, f"stage {name}: {s}, which its cmd runs, is not in its deps"
        missing = sorted(f.relative_to(ROOT).as_posix() for f in epipose_imports(ROOT / s)
                         if f.name != "__init__.py" and not _covered(f, deps))
        assert not missing, f"stage {name}: imports {missing} but does not depend on them"
    del script


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_nothing_it_does_not_import(name):
    """An edit to a module reruns exactly the stages that run it: no epipose module (or folder) in a
    stage's deps that its script and launcher do not import."""
    stage = STAGES[name]
    words = stage["cmd"].split()
    runs = [w for w in words if w.startswith("stages/") and w.endswith(".py")]
    runs += ["epipose/launch.py"] if "epipose.launch" in words else []
    imported = set(runs)
    for s in runs:
        imported |= {f.relative_to(ROOT).as_posix() for f in epipose_imports(ROOT / s)}
    code_deps = [d for d in stage.get("deps", []) if d.startswith(("epipose/", "stages/"))]
    extra = sorted(d for d in code_deps if d not in imported)
    assert not extra, f"stage {name}: depends on {extra}, which it does not import"


def test_the_refiner_stage_depends_on_a_dozen_modules_at_most():
    """train_refiner is an MLP on two tables: no image, video or dataset code among its deps."""
    code = [d for d in STAGES["train_refiner"]["deps"] if d.startswith(("epipose/", "stages/"))]
    assert len(code) <= 13, code
    images = {"epipose/data/frames.py", "epipose/data/h36m.py", "epipose/data/transforms.py", "epipose/data/crop.py",
              "epipose/models/pose_net.py", "epipose/models/inference.py"}
    assert not images & set(code), sorted(images & set(code))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_dep_is_a_source_or_an_output(name):
    outs = {o if isinstance(o, str) else next(iter(o)) for s in STAGES.values()
            for key in ("outs", "metrics", "plots") for o in s.get(key, []) or []}
    for dep in STAGES[name].get("deps", []):
        if "${" in dep:
            continue
        if dep in outs or any(dep.startswith(o.rstrip("/") + "/") for o in outs):
            continue
        assert (ROOT / dep).exists(), f"stage {name}: dep {dep} is neither a source file nor a stage output"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_known_sections(name):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for p in STAGES[name].get("params", []) or []:
        keys = [p] if isinstance(p, str) else list(p.values())[0]
        for key in keys:
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"stage {name}: param {key} not in params.yaml"
                node = node[part]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_param_paths_in_commands_are_quoted(name):
    """A data root with a space (``data.h36m_root: /my recordings``) stays one argument."""
    import re
    import shlex

    cmd = STAGES[name]["cmd"]
    for m in re.finditer(r"\$\{[^}]+\}", cmd):
        arg = next(a for a in shlex.split(cmd.replace(m.group(0), "/a b")) if "a b" in a)
        assert arg.startswith("/a b"), f"{name}: {m.group(0)} is not quoted in its cmd"


def _declared_plots() -> dict[str, dict]:
    """Every plot: the stages' own and the top-level ones (several columns of a stage's output)."""
    out = {}
    top = yaml.safe_load((ROOT / "dvc.yaml").read_text()).get("plots", [])
    for entry in [e for stage in STAGES.values() for e in stage.get("plots", [])] + top:
        (path, cfg), = entry.items()
        out[path] = cfg or {}
    return out


def test_every_training_curve_is_declared_with_title_and_axis_labels():
    """Every series dvclive writes (committed under dvclive/) is a declared plot of its stage, each with
    a title, axis labels and its x/y columns."""
    written = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dvclive").rglob("*.tsv")}
    declared = _declared_plots()
    assert written and written <= set(declared), sorted(written - set(declared))
    for path, cfg in declared.items():
        if not path.endswith(".png"):           # an image plot is its own title
            assert {"title", "x_label", "y_label", "x", "y"} <= set(cfg), path
    # the plots a researcher expects beside the curves
    assert {"reports/plots/eval_pck3d_curve.tsv", "reports/plots/eval_per_joint.tsv", "reports/plots/eval_per_action.tsv",
            "reports/plots/pseudo3d_error_by_views.tsv", "reports/plots/pseudo3d_error_by_reproj.tsv",
            "reports/rig_topview.png"} <= set(declared)


def test_dvc_plots_show_renders_every_declared_plot_with_its_title(tmp_path):
    import json
    import subprocess

    proc = subprocess.run(["dvc", "plots", "show", "--json", "-o", str(tmp_path / "plots")], cwd=ROOT,
                          capture_output=True, text=True, env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = json.loads(proc.stdout)["data"]
    declared = _declared_plots()
    assert set(shown) == set(declared)
    for path, items in shown.items():
        if path.endswith(".png"):
            assert items[0]["type"] == "image" and Path(items[0]["url"]).stat().st_size > 10000, path
        else:
            assert items[0]["content"]["title"]["text"] == declared[path]["title"], path
