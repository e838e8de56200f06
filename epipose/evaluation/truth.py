"""The ground truth as triangulate's 2D input (``triangulate.input_2d: ground_truth``, the paper's "2D GT"
experiment): the true joints projected through the true cameras (lens included)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from epipose.data.h36m import H36MDataset
from epipose.data.pose_tables import POSE2D_VALUES, from_dense, key_groups, to_dense
from epipose.data.targets import truth_of_rows


def truth_as_detections(pose2d: pd.DataFrame, dataset: H36MDataset) -> pd.DataFrame:
    """``pose2d``'s rows with u, v replaced by the projected truth and confidence 1
    (``triangulate.input_2d: ground_truth``: what better 2D detections would buy)."""
    keys, values = to_dense(pose2d, POSE2D_VALUES)
    values = values.astype(np.float64)
    truth = truth_of_rows(keys, dataset)
    if truth.without or truth.short:
        s, a, c = min([*truth.without, *truth.short])
        raise ValueError(f"param triangulate.input_2d: ground_truth needs the poses and extrinsics of {s} {a!r} "
                         f"camera {c} under {dataset.root}")
    for (s, a, c), idx in key_groups(keys).items():
        values[idx, :, :2] = dataset.rig.camera(s, c).project_camera(truth.pose[idx])
        values[idx, :, 2] = 1.0
    return from_dense(keys, values.astype(np.float32), POSE2D_VALUES)
