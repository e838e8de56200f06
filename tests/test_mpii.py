import json

import numpy as np
import pytest

from epipose import skeleton
from epipose.data import mpii
from epipose.metrics import pckh
from mpii_fixture import make_mpii


def test_load_split(tmp_path):
    root = make_mpii(tmp_path / "mpii", n_train=3, n_valid=2)
    s = mpii.load_split(root, "train")
    assert len(s) == 3 and s.joints.shape == (3, 16, 2) and s.visible.all()
    assert s.image_path(0).exists()
    heads = s.head_sizes()
    expected = 0.6 * np.linalg.norm(s.joints[:, skeleton.HEAD_TOP] - s.joints[:, skeleton.UPPER_NECK], axis=-1)
    assert np.allclose(heads, expected)


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.pop("scale"), r"entry 1: missing key\(s\) \['scale'\]"),
    (lambda e: e.__setitem__("joints", e["joints"][:15]), "entry 1: 'joints' must be 16"),
    (lambda e: e.__setitem__("scale", -1), "entry 1: 'scale' must be a positive"),
    (lambda e: e.__setitem__("center", [1]), r"entry 1: 'center' must be \[x, y\]"),
])
def test_bad_annotations_name_file_and_entry(tmp_path, mutate, message):
    root = make_mpii(tmp_path / "mpii", n_train=2, n_valid=1)
    path = root / "annot" / "train.json"
    entries = json.loads(path.read_text())
    mutate(entries[1])
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=message) as err:
        mpii.load_split(root, "train")
    assert "train.json" in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.mpii_root"):
        mpii.load_split(tmp_path / "nope", "train")
    (tmp_path / "r").mkdir()
    with pytest.raises(FileNotFoundError, match="valid.json"):
        mpii.load_split(tmp_path / "r", "valid")
    (tmp_path / "r" / "annot").mkdir()
    (tmp_path / "r" / "annot" / "valid.json").write_text("{not json")
    with pytest.raises(ValueError, match="valid.json: not valid JSON"):
        mpii.load_split(tmp_path / "r", "valid")


def test_pckh_mpii_protocol():
    n = 4
    gt = np.zeros((n, 16, 2))
    gt[:, skeleton.HEAD_TOP] = [0.0, -10.0]                  # head segment 10 px → head size 6 px, threshold 3 px
    vis = np.ones((n, 16), bool)
    heads = mpii.head_sizes(gt, vis)
    assert np.allclose(heads, 6.0)
    pred = gt.copy()
    pred[:, 0] += [2.9, 0]                                   # r_ankle within 3 px: correct
    pred[:, 1] += [0, 3.1]                                   # r_knee just outside: wrong
    pred[:, skeleton.PELVIS] += 100                          # pelvis and thorax wrong, but excluded from the total
    pred[:, skeleton.THORAX] += 100
    vis[0, 2] = False                                        # an invisible joint does not count
    pred[0, 2] += 100
    r = pckh(pred, gt, vis, heads)
    assert r["per_joint"]["r_ankle"] == 100 and r["per_joint"]["r_knee"] == 0 and r["per_joint"]["r_hip"] == 100
    assert r["per_joint"]["pelvis"] == 0
    assert r["count"] == 14 * n - 1
    assert r["total"] == pytest.approx(100.0 * (14 * n - 1 - n) / (14 * n - 1))
    # An instance without a visible head has no head size and is skipped entirely.
    vis[1, skeleton.HEAD_TOP] = False
    heads = mpii.head_sizes(gt, vis)
    assert np.isnan(heads[1]) and pckh(pred, gt, vis, heads)["count"] == 14 * 3 - 1


def _write_gt(root, split, boxes, joints_shift=0.0, order=None):
    s = mpii.load_split(root, split)
    idx = np.arange(len(s)) if order is None else np.asarray(order)
    data = mpii.gt_mat_bytes(s.joints[idx] + joints_shift, s.visible[idx], boxes[idx])
    mpii.gt_path(root, split).write_bytes(data)
    return data


def test_gt_mat_head_boxes(tmp_path):
    """gt_<split>.mat (the lineage's evaluation file) gives PCKh its head boxes: 0.6 x the diagonal."""
    root = make_mpii(tmp_path / "mpii", n_train=2, n_valid=3)
    boxes = np.array([[[10, 20], [40, 60]], [[0, 0], [30, 40]], [[5, 5], [11, 13]]], dtype=np.float64)
    data = _write_gt(root, "valid", boxes)
    assert data == mpii.gt_mat_bytes(*(lambda s: (s.joints, s.visible))(mpii.load_split(root, "valid")), boxes)
    s = mpii.load_split(root, "valid")
    assert np.allclose(s.head_boxes, boxes) and np.allclose(s.head_sizes(), 0.6 * np.array([50.0, 50.0, 10.0]))
    # The file follows MATLAB's 1-based convention, as the original.
    from scipy.io import loadmat
    gt = loadmat(mpii.gt_path(root, "valid"))
    assert np.allclose(gt["headboxes_src"][:, :, 1], [[1, 1], [31, 41]])
    assert np.allclose(gt["pos_gt_src"].transpose(2, 0, 1) - 1, s.joints) and not gt["jnt_missing"].any()
    assert mpii.load_split(root, "train").head_boxes is None       # no gt_train.mat: the head segment


def test_gt_mat_mismatch_is_an_error(tmp_path):
    root = make_mpii(tmp_path / "mpii", n_train=2, n_valid=3)
    boxes = np.tile([[[0.0, 0.0], [30.0, 40.0]]], (3, 1, 1))
    _write_gt(root, "valid", boxes, order=[1, 0, 2])
    with pytest.raises(ValueError, match=r"gt_valid.mat: pos_gt_src of annotation 0 differs .* not in the same order"):
        mpii.load_split(root, "valid")
    s = mpii.load_split(root, "train")
    mpii.gt_path(root, "valid").write_bytes(mpii.gt_mat_bytes(s.joints, s.visible, boxes[:2]))
    with pytest.raises(ValueError, match=r"gt_valid.mat: headboxes_src \(2, 2, 2\).*json's 3 annotations"):
        mpii.load_split(root, "valid")
    mpii.gt_path(root, "valid").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="gt_valid.mat: not a readable MATLAB file"):
        mpii.load_split(root, "valid")
