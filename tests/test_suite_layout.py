"""The test suite's own layout: shared helpers live in tests/conftest.py and the ``*_fixture.py`` /
``tiny_repo.py`` helper modules, never in a test module that another imports; and the fast lane
(``python -m pytest -m "not slow"``) runs a test of every test module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(TESTS.glob("test_*.py"))
TEST_MODULE = re.compile(r"(?:tests\.)?test_\w+")
# an import in code that a test writes out and runs in another process (a torchrun script, a stage)
IMPORT_IN_TEXT = re.compile(r"^\s*(?:from|import)\s+((?:tests\.)?test_\w+)", re.MULTILINE)


def imported_test_modules(tree: ast.AST) -> list[str]:
    """The test modules a module imports: anywhere in its code, and in code it holds as text."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.module not in (None, "tests") else [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = IMPORT_IN_TEXT.findall(node.value)
        else:
            continue
        found += [n for n in names if TEST_MODULE.fullmatch(n)]
    return found


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: p.stem)
def test_a_test_module_imports_no_other_test_module(path):
    found = imported_test_modules(ast.parse(path.read_text()))
    assert not found, (f"{path.name} imports {found}: move what it shares to tests/conftest.py or a helper "
                       "module (tests/*_fixture.py, tests/tiny_repo.py)")


def test_the_import_check_sees_every_form():
    t = "test_"           # spelled so, this module's own text imports nothing
    code = "\n".join([f"import {t}a", f"from {t}b import x", f"import tests.{t}c", f"from . import {t}d",
                      f"from tests import {t}e", "def f():", f"    from .{t}f import y",
                      f"SCRIPT = 'import sys\\nfrom {t}g import z\\n'",
                      "import testing_tools", "from conftest import ROOT", "from pose2d_fixture import tiny_pose_net"])
    assert sorted(imported_test_modules(ast.parse(code))) == sorted([f"tests.{t}c", *(t + x for x in "abdefg")])


def _is_slow_mark(node: ast.AST) -> bool:
    """``pytest.mark.slow`` (also called, or in a list/tuple of marks)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(e) for e in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow" and isinstance(node.value, ast.Attribute) \
        and node.value.attr == "mark"


def _all_cases_slow(decorator: ast.AST) -> bool:
    """A ``parametrize`` whose every case is ``pytest.param(..., marks=pytest.mark.slow)``."""
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
            and decorator.func.attr == "parametrize" and len(decorator.args) >= 2
            and isinstance(decorator.args[1], (ast.List, ast.Tuple)) and decorator.args[1].elts):
        return False
    return all(isinstance(c, ast.Call) and any(k.arg == "marks" and _is_slow_mark(k.value) for k in c.keywords)
               for c in decorator.args[1].elts)


def fast_tests(tree: ast.Module) -> list[str]:
    """The test functions of a module that ``-m "not slow"`` keeps (marks seen in the source: the module's
    ``pytestmark``, a class's or the function's decorators, parametrized cases)."""
    def slow(decorators) -> bool:
        return any(_is_slow_mark(d) or _all_cases_slow(d) for d in decorators)

    if any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
           and _is_slow_mark(n.value) for n in tree.body):
        return []
    fast = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test") and not slow(node.decorator_list):
            fast.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test") and not slow(node.decorator_list):
            fast += [f"{node.name}.{f.name}" for f in node.body
                     if isinstance(f, ast.FunctionDef) and f.name.startswith("test") and not slow(f.decorator_list)]
    return fast


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: p.stem)
def test_the_fast_lane_runs_a_test_of_every_module(path):
    assert fast_tests(ast.parse(path.read_text())), (
        f"{path.name}: every test is marked slow; give the fast lane a small test of its real behaviour")


def test_the_slow_marks_are_seen_in_every_form():
    code = ("import pytest\n"
            "def test_plain(): pass\n"
            "@pytest.mark.slow\ndef test_marked(): pass\n"
            "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.slow), 2])\ndef test_some_slow(x): pass\n"
            "@pytest.mark.parametrize('x', [pytest.param(1, marks=[pytest.mark.slow])])\ndef test_all_slow(x): pass\n"
            "@pytest.mark.slow\nclass TestSlow:\n    def test_in_slow_class(self): pass\n"
            "class TestMixed:\n    def test_a(self): pass\n    @pytest.mark.slow\n    def test_b(self): pass\n")
    assert fast_tests(ast.parse(code)) == ["test_plain", "test_some_slow", "TestMixed.test_a"]
    assert fast_tests(ast.parse("import pytest\npytestmark = pytest.mark.slow\ndef test_x(): pass\n")) == []
    assert fast_tests(ast.parse("import pytest\npytestmark = [pytest.mark.slow]\ndef test_x(): pass\n")) == []
