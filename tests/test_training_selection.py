"""Which frames train the 3D network on what: train_3d.gt_subjects (the semi-supervised setting: exactly the
named subjects' ground truth, nothing else) and the held-out-motion protocol (train_3d.exclude_actions never
trained on, evaluate.actions scores only those)."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import torch

from epipose.camera import load_rig
from epipose.data.frames import ActionSelection, load_frames
from epipose.data.h36m import H36MDataset
from epipose.data.transforms import AugmentParams
from epipose.data.targets import NoGroundTruth, pseudo3d_targets, semi_supervised_targets
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig, save_pose_net
from epipose.params import ParamError, from_dict
from epipose.pipeline.evaluate import METHOD_LABELS, EvaluateParams, method_of, run_evaluation
from epipose.pipeline.train_3d import (Train3DParams, frame_weights, score_on_labels, smooth_l1_3d,
                                       smooth_l1_mixed, train_3d, training_set, training_targets)
from mpii_fixture import make_mpii
from pose2d_fixture import tiny_pose_net
from pose3d_fixture import FRAMES, gt_table, make_root, small_rig, write_table

OFFSET_MM = 100.0     # the pseudo-labels are the truth shifted by this along x: the source of a label is recognisable
SUBJECTS = ["S1", "S9"]
NO_AUG = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)
TINY_MODEL = ModelParams(backbone=18, input_size=32, backbone_stages=4, deconv_layers=3, deconv_channels=8,
                         depth_bins=8)


class RecordingTruth:
    """The dataset class, recording whose ground truth is read; reading any of ``forbidden`` raises."""

    def __init__(self, root, forbidden=()):
        self.dataset, self.forbidden, self.read = H36MDataset(root), set(forbidden), set()

    def _check(self, subject):
        if subject in self.forbidden:
            raise AssertionError(f"ground truth of {subject} read")
        self.read.add(subject)

    def poses_mpii_camera(self, subject, action, camera):
        self._check(subject)
        return self.dataset.poses_mpii_camera(subject, action, camera)

    def has_ground_truth(self, subject, action, camera):
        self._check(subject)
        return self.dataset.has_ground_truth(subject, action, camera)

    def pose_path(self, subject, action):
        return self.dataset.pose_path(subject, action)


@pytest.fixture
def data(tmp_path, real_rig):
    h36m, frames_root = make_root(tmp_path, small_rig(real_rig))
    table = gt_table(h36m, tuple(SUBJECTS))
    table["x"] += OFFSET_MM
    pseudo = write_table(table, tmp_path / "pseudo3d.parquet")
    return h36m, frames_root, pseudo, load_rig(h36m / "cameras.json")


def _truth(h36m, keys):
    ds = H36MDataset(h36m)
    return np.stack([ds.poses_mpii_camera(s, a, c)[f] for s, a, c, f in keys.itertuples(index=False)])


def test_gt_subjects_select_exactly_the_named_subjects_truth(data):
    h36m, frames_root, pseudo, _ = data
    cache = load_frames(frames_root, SUBJECTS, progress=False)
    truth = RecordingTruth(h36m, forbidden={"S9"})
    targets = semi_supervised_targets(cache.keys, pseudo, truth, ["S1"])
    assert truth.read == {"S1"} and targets.valid.all()
    on_truth = (cache.keys["subject"] == "S1").to_numpy()
    expected = _truth(h36m, cache.keys)
    expected[~on_truth, :, 0] += OFFSET_MM                       # S9: its pseudo-labels, the truth never
    np.testing.assert_allclose(targets.pose_cam, expected, atol=1e-6)
    # Every subject on the truth: the pseudo-label table is not needed.
    every = semi_supervised_targets(cache.keys, "no-such-table.parquet", H36MDataset(h36m), SUBJECTS)
    np.testing.assert_allclose(every.pose_cam, _truth(h36m, cache.keys), atol=1e-6)


def test_gt_weight_weights_exactly_the_ground_truth_frames(data, tmp_path):
    _, frames_root, _, _ = data
    mpii = make_mpii(tmp_path / "mpii", n_train=6, n_valid=2, image_size=96)
    cache = load_frames(frames_root, SUBJECTS, progress=False)
    p = Train3DParams(subjects=SUBJECTS, gt_subjects=["S1"], gt_weight=4.0, mpii_share=0.0)
    weight = frame_weights(cache, p).numpy()
    on_truth = (cache.keys["subject"] == "S1").to_numpy()
    assert on_truth.any() and (~on_truth).any()
    assert (weight[on_truth] == 4.0).all() and (weight[~on_truth] == 1.0).all()
    uvd, valid = np.zeros((len(cache), 16, 3), np.float32), np.ones((len(cache), 16), bool)
    dataset, _, _ = training_set(cache, uvd, valid, p, None, 1)
    assert torch.equal(dataset.tensors["weight"], torch.from_numpy(weight))
    mixed, _, _ = training_set(cache, uvd, valid, dataclasses.replace(p, mpii_share=0.5), mpii, 1)   # with stills:
    batch = mixed.__getitems__(list(range(len(mixed))))                                            # weight 1
    assert torch.equal(batch["weight"], torch.cat([torch.from_numpy(weight), torch.ones(len(mixed.extra))]))
    # nothing weighted — the unweighted loss of before, no weight in the batches: weight 1, no ground-truth
    # subjects, or the fully supervised target (every frame on its truth)
    for q in (dataclasses.replace(p, gt_weight=1.0), dataclasses.replace(p, gt_subjects=[]),
              dataclasses.replace(p, target="gt")):
        assert frame_weights(cache, q) is None
        assert "weight" not in training_set(cache, uvd, valid, q, None, 1)[0].tensors


def test_a_sample_weighted_w_counts_as_w_copies_of_it():
    """The weighted loss (train_3d.gt_weight) is the unweighted loss of a batch holding each sample as many
    times as its weight — for 3D batches and for batches mixed with 2D-only stills alike."""
    g = torch.Generator().manual_seed(0)
    xy, z, target = torch.rand(3, 16, 2, generator=g) * 32, torch.rand(3, 16, generator=g), torch.rand(3, 16, 3, generator=g)
    target[..., :2] *= 32
    valid = torch.rand(3, 16, generator=g) > 0.2
    has_depth = torch.tensor([True, True, False])
    copies = torch.tensor([0, 0, 0, 1, 2])                     # sample 0 three times: weight 3
    weighted, _ = smooth_l1_3d(xy, z, target, valid, 32, 0.02, torch.tensor([3.0, 1.0, 1.0]))
    repeated, _ = smooth_l1_3d(xy[copies], z[copies], target[copies], valid[copies], 32, 0.02)
    torch.testing.assert_close(weighted, repeated)
    weighted, _ = smooth_l1_mixed(xy, z, target, valid, has_depth, 32, 0.02, torch.tensor([3.0, 1.0, 1.0]))
    repeated, _ = smooth_l1_mixed(xy[copies], z[copies], target[copies], valid[copies], has_depth[copies], 32, 0.02)
    torch.testing.assert_close(weighted, repeated)
    ones, _ = smooth_l1_mixed(xy, z, target, valid, has_depth, 32, 0.02, torch.ones(3))
    torch.testing.assert_close(ones, smooth_l1_mixed(xy, z, target, valid, has_depth, 32, 0.02)[0])


def test_without_gt_subjects_no_ground_truth_is_read(data, tmp_path):
    h36m, frames_root, pseudo, _ = data
    no_truth = tmp_path / "no_truth"
    shutil.copytree(h36m, no_truth)
    for subject in SUBJECTS:
        shutil.rmtree(no_truth / subject / "MyPoseFeatures")
    cache = load_frames(frames_root, SUBJECTS, progress=False)
    p = Train3DParams(subjects=SUBJECTS)
    targets = training_targets(cache, p, pseudo, no_truth)      # a root without D3_Positions: works
    np.testing.assert_array_equal(targets.pose_cam, pseudo3d_targets(cache.keys, pseudo).pose_cam)
    assert training_targets(cache, p, pseudo, None).source == "pseudo3d"
    with pytest.raises(NoGroundTruth, match="param train_3d.gt_subjects"):   # the param is what reads it
        training_targets(cache, dataclasses.replace(p, gt_subjects=["S1"]), pseudo, no_truth)


def test_gt_subjects_params(data, caplog):
    with pytest.raises(ParamError, match=r"^param train_3d.gt_subjects: \['S9'\] are not among train_3d.subjects \['S1'\]$"):
        from_dict(Train3DParams, {**dataclasses.asdict(Train3DParams(subjects=["S1"])), "gt_subjects": ["S9"]}, "train_3d")
    h36m, frames_root, pseudo, _ = data
    cache = load_frames(frames_root, SUBJECTS, progress=False)
    p = Train3DParams(subjects=SUBJECTS, gt_subjects=["S1"], target="gt")
    with caplog.at_level(logging.WARNING):
        targets = training_targets(cache, p, pseudo, h36m)      # target gt: ignored, with a warning; all on truth
    assert "train_3d.gt_subjects is ignored with target gt" in caplog.text
    np.testing.assert_allclose(targets.pose_cam, _truth(h36m, cache.keys), atol=1e-6)


def test_a_semi_supervised_network_is_named_so_in_the_results():
    assert method_of({"target": "pseudo3d", "gt_subjects": ["S1"]}, "m.pt") == "semi_supervised"
    assert method_of({"target": "pseudo3d"}, "m.pt") == "self_supervised"            # the default: no key
    assert method_of({"target": "gt", "gt_subjects": ["S1"]}, "m.pt") == "fully_supervised"
    assert {"semi_supervised", "semi_supervised+refiner"} <= set(METHOD_LABELS)


def test_action_selection_and_unknown_actions(data):
    _, frames_root, _, _ = data
    held_out = ActionSelection(("Walking",), True, "train_3d.exclude_actions")
    trained = load_frames(frames_root, SUBJECTS, progress=False, actions=held_out)
    assert set(trained.keys["action"]) == {"Greeting"} and len(trained) == 2 * 2 * len(FRAMES)
    only = load_frames(frames_root, SUBJECTS, progress=False, actions=dataclasses.replace(held_out, exclude=False))
    assert set(only.keys["action"]) == {"Walking 1"}                # takes belong to their action
    with pytest.raises(ParamError, match=r"^param evaluate.actions: unknown action\(s\) \['Jumping'\] "
                                         r"\(the data's actions: \['Greeting', 'Walking'\]\)$"):
        load_frames(frames_root, SUBJECTS, progress=False, actions=ActionSelection(("Jumping",), False, "evaluate.actions"))


@pytest.mark.slow
def test_held_out_actions_never_appear_in_training(data, tmp_path):
    """train_3d without Walking: its frames, labels, fit curve and the refiner's input hold only Greeting;
    with S1 on its truth the report counts its frames."""
    h36m, frames_root, pseudo, rig = data
    pose2d = tiny_pose_net(tmp_path / "pose2d.pt", 16, 32, backbone_stages=4, deconv_layers=3)
    p = Train3DParams(mpii_share=0.0, epochs=1, batch_size=8, amp="none", channels_last=False, subjects=SUBJECTS, fit_frames=4,
                      eval_batch_size=16, warmup_steps=0, threads=2, exclude_actions=["Walking"], gt_subjects=["S1"])
    run = train_3d(frames_root, pose2d, rig, TINY_MODEL, p, NO_AUG, tmp_path / "ckpt", pseudo3d_path=pseudo,
                   h36m_root=h36m, progress=False)
    assert set(run.cache.keys["action"]) == {"Greeting"} and len(run.targets.pose_cam) == len(run.cache)
    assert set(run.cache.keys["action"].iloc[run.fit_frames]) == {"Greeting"}
    assert run.info["excluded_actions"] == ["Walking"]
    assert run.info["gt_subjects"] == ["S1"] and run.info["gt_frames"] == 2 * len(FRAMES)   # S1 Greeting, 2 cameras
    scored, _, _ = score_on_labels(run, rig, p, for_refiner=True, progress=False)
    assert set(scored.keys["action"]) == {"Greeting"}


def test_evaluate_actions_scores_only_those(data, tmp_path):
    h36m, frames_root, _, _ = data
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=18, deconv_channels=8, input_size=32, depth_bins=4))
    save_pose_net(net, tmp_path / "pose3d.pt", meta={"depth_range_mm": 2000.0, "target": "pseudo3d"})
    p = EvaluateParams(subjects=["S9"], pss_k=[5], amp="none", channels_last=False, flip_test=False, actions=["Walking"])
    results, info = run_evaluation(frames_root, h36m, tmp_path / "pose3d.pt", p, progress=False)
    assert list(results["pose3d"]["per_action"]) == ["Walking"] and info["actions"] == ["Walking"]
    assert results["pose3d"]["frames"] == info["frames"] == 2 * len(FRAMES)
    _, every = run_evaluation(frames_root, h36m, tmp_path / "pose3d.pt", dataclasses.replace(p, actions=[]),
                              progress=False)
    assert every["frames"] == 2 * info["frames"] and "actions" not in every
