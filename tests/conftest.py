import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_CAMERAS = SHARED / "h36m" / "camera-parameters.json"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def real_rig():
    from epipose.camera import load_rig

    if not REAL_CAMERAS.exists():
        pytest.skip("../shared/h36m/camera-parameters.json not present")
    return load_rig(REAL_CAMERAS)
