import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real Human3.6M calibration, kept in the project with its licence (resources/h36m/README.md).
REAL_CAMERAS = ROOT / "resources" / "h36m" / "camera-parameters.json"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def real_rig():
    from epipose.camera import load_rig

    return load_rig(REAL_CAMERAS)


REMOVE = object()    # as a value in ``deep_update``'s ``new``: delete that key


def deep_update(base: dict, new: dict) -> dict:
    """``base`` with ``new`` merged in, section by section (``REMOVE`` deletes a key)."""
    for k, v in new.items():
        if v is REMOVE:
            base.pop(k, None)
        else:
            base[k] = deep_update(dict(base.get(k) or {}), v) if isinstance(v, dict) else v
    return base


def write_params(path: Path, overrides: dict | None = None) -> Path:
    """The project's params.yaml with ``overrides`` (nested) merged in, written to ``path``: every key is
    there (a missing key is an error), the test states only what it changes."""
    import yaml

    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides or {})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """The project as a git + DVC repository on the tiny params profile (tests/tiny_repo.py), one per test
    module → (its folder, the environment to run git and dvc in)."""
    from tiny_repo import make_tiny_repo

    return make_tiny_repo(tmp_path_factory.mktemp("pipeline") / "repo")
