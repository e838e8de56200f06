"""Where the code touches the ground truth, checked by reading it (AST): only ``epipose.evaluation`` and
the few places listed below with their reason read it, and the self-supervised stages import
``epipose.evaluation`` only for what their reports say (or for the one explicit ground-truth
experiment, ``triangulate.input_2d: ground_truth``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

# Reading the ground truth: the dataset's accessors, the shared row lookup, the pose files' reader.
TRUTH_CALLS = {"poses_mpii_camera", "poses_world", "has_ground_truth", "read_pose_cdf", "truth_of_rows",
               "sequences_without_truth", "gt_targets"}
TRUTH_STRINGS = {"D3_Positions"}          # a path component of the pose files
TRUTH_MODULES = {"cdflib"}                # their format

# Besides epipose/evaluation/ (every comparison with the truth), the places that need it, and why.
ALLOWED = {
    "epipose/data/h36m.py": "the dataset class: the one reader of D3_Positions",
    "epipose/data/targets.py": "truth_of_rows, the rows' truth through the dataset's methods (shared with "
                               "epipose.evaluation), and gt_targets, the labels of train_3d's target: gt",
    "epipose/pipeline/train_3d.py": "target: gt, the fully supervised baseline (train_3d_gt)",
    "epipose/pipeline/extract_frames.py": "frames.boxes: gt, the paper's crops around the true pelvis",
}
ALLOWED_FOLDERS = {
    "epipose/evaluation/": "every comparison with the ground truth",
    "epipose/synth/": "the renderer writes the synthetic ground truth and can take its motion from "
                      "D3_Positions (synth.motion_root); simulate2d simulates detections from it",
}

# The self-supervised chain, and what each of its stage modules may import from epipose.evaluation.
SELF_SUPERVISED = ("extract_frames", "infer_2d", "triangulate", "train_3d", "train_refiner")
REPORTING = {
    "infer_2d": {"Pose2DError": "the 2D error in its report"},
    "triangulate": {"score_pseudo_labels": "the labels' accuracy and error tables in its report and plots",
                    "camera_errors": "the recovered cameras' errors in its report",
                    "camera_error_summary": "their means in its report and metrics",
                    "truth_as_detections": "input_2d: ground_truth, the paper's 2D-GT experiment (params; "
                                           "default detections): the projected truth instead of the detections"},
}


def _files() -> list[Path]:
    return sorted(p for folder in ("epipose", "stages") for p in (ROOT / folder).rglob("*.py"))


def truth_reads(source: str) -> list[str]:
    """Where the code ``source`` reads the ground truth: calls of TRUTH_CALLS, TRUTH_STRINGS as a whole
    string, imports of TRUTH_MODULES (definitions of such methods, e.g. a simulated source's, are not reads)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in TRUTH_CALLS:
                found.append(f"{name}() at line {node.lineno}")
        elif isinstance(node, ast.Constant) and node.value in TRUTH_STRINGS:
            found.append(f"{node.value!r} at line {node.lineno}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {n} at line {node.lineno}" for n in names if n.split(".")[0] in TRUTH_MODULES]
    return found


def _allowed(rel: str) -> bool:
    return rel in ALLOWED or rel.startswith(tuple(ALLOWED_FOLDERS))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_evaluation_and_the_listed_places_read_the_ground_truth(path):
    rel = path.relative_to(ROOT).as_posix()
    if _allowed(rel):
        return
    reads = truth_reads(path.read_text())
    assert not reads, (f"{rel} reads the ground truth ({', '.join(reads)}): go through epipose.evaluation, or add "
                       "it to ALLOWED with its reason")


@pytest.mark.parametrize("rel", sorted(ALLOWED))
def test_every_listed_place_still_reads_the_ground_truth(rel):
    """The list stays exact: a place that no longer needs the truth comes off it."""
    assert truth_reads((ROOT / rel).read_text()), f"{rel} no longer reads the ground truth: take it off ALLOWED"


def test_the_audit_sees_a_reader():
    """The check itself: the dataset's accessor, a pose file's path and its format are caught."""
    code = ("import cdflib\n"
            "def f(ds, root):\n"
            "    return ds.poses_mpii_camera('S1', 'Walking', '54138969'), root / 'S1' / 'D3_Positions'\n")
    assert [r.split(" at ")[0] for r in truth_reads(code)] == ["import cdflib", "poses_mpii_camera()", "'D3_Positions'"]
    assert truth_reads("def poses_mpii_camera(self, s, a, c):\n    return None\n") == []   # a definition


def _evaluation_imports(path: Path) -> dict[str, int]:
    """Names ``path`` imports from epipose.evaluation (a module import counts as its name)."""
    names = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("epipose.evaluation"):
            names.update({a.name: node.lineno for a in node.names})
        elif isinstance(node, ast.Import):
            names.update({a.name: node.lineno for a in node.names if a.name.startswith("epipose.evaluation")})
    return names


@pytest.mark.parametrize("stage", SELF_SUPERVISED)
def test_the_self_supervised_stages_import_evaluation_only_to_report(stage):
    for path in (ROOT / "epipose" / "pipeline" / f"{stage}.py", ROOT / "stages" / f"{stage}.py"):
        imported = _evaluation_imports(path)
        extra = sorted(set(imported) - set(REPORTING.get(stage, {})))
        assert not extra, f"{path.relative_to(ROOT)} imports {extra} from epipose.evaluation (not in REPORTING)"
