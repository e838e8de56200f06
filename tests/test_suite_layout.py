"""The test suite's own layout: shared helpers live in tests/conftest.py and the ``*_fixture.py`` /
``tiny_repo.py`` helper modules, never in a test module that another imports."""

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
