"""The refiner: normalisation statistics (round trip, masks, checkpoint), training, its inference path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from epipose import skeleton
from epipose.models.refiner import MIN_STD_MM, Refiner, load_refiner, save_refiner
from epipose.metrics import root_relative
from epipose.pipeline.train_refiner import RefinerParams, refiner_data, train_refiner
from epipose.models.refiner import refine_poses
from epipose.data.pose_tables import write_pred3d
from pose3d_fixture import gt_table, make_root, small_rig, write_table


def _poses(n=200, seed=0):
    g = np.random.default_rng(seed)
    base = g.normal(scale=300.0, size=(1, 16, 3)) + g.normal(scale=60.0, size=(n, 16, 3))
    return root_relative(base)


@pytest.mark.parametrize("residual", [False, True])
def test_normalisation_round_trip_and_checkpoint(tmp_path, residual):
    x = torch.from_numpy(_poses(seed=1)).float()
    y = torch.from_numpy(_poses(seed=2)).float()
    model = Refiner(width=32, blocks=1, residual=residual)
    model.set_stats(x, y)
    z = model.normalise_input(x)
    # Non-root coordinates standardised; the root's (always 0) keep their floor std.
    flat = z.reshape(len(z), 16, 3)
    keep = [j for j in range(16) if j != skeleton.PELVIS]
    torch.testing.assert_close(flat[:, keep].mean(0), torch.zeros(15, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat[:, keep].std(0), torch.ones(15, 3), atol=1e-4, rtol=0)
    assert torch.all(model.in_std.reshape(16, 3)[skeleton.PELVIS] == MIN_STD_MM)
    torch.testing.assert_close((z * model.in_std + model.in_mean).reshape(x.shape), x, atol=1e-3, rtol=0)
    out_space = (y - x) if residual else y
    norm_out = (out_space.reshape(len(y), -1) - model.out_mean) / model.out_std
    torch.testing.assert_close(model.denormalise_output(norm_out), out_space, atol=1e-3, rtol=0)
    # The statistics travel with the checkpoint: identical outputs after a reload.
    model.eval()
    save_refiner(model, tmp_path / "refiner.pt", meta={"target": "pseudo3d"})
    loaded, meta = load_refiner(tmp_path / "refiner.pt", num_joints=16)
    assert meta == {"target": "pseudo3d"} and loaded.residual == residual
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        assert torch.all(loaded(x)[:, skeleton.PELVIS] == 0)         # root-relative output


def test_masked_statistics_ignore_masked_joints():
    x = torch.from_numpy(_poses(seed=3)).float()
    y = torch.from_numpy(_poses(seed=4)).float()
    mask = torch.ones(len(x), 16, dtype=torch.bool)
    mask[::3, 10] = False
    a, b = Refiner(width=16, blocks=0), Refiner(width=16, blocks=0)
    a.set_stats(x, y, mask)
    y2 = y.clone()
    y2[~mask] = 1e6                                  # garbage where masked
    b.set_stats(x, y2, mask)
    torch.testing.assert_close(a.out_mean, b.out_mean)
    torch.testing.assert_close(a.out_std, b.out_std)
    # … and differ from the unmasked statistics of the garbage.
    c = Refiner(width=16, blocks=0)
    c.set_stats(x, y2)
    assert not torch.allclose(c.out_std, a.out_std)


def test_refine_poses_keeps_nan_frames_and_batches():
    model = Refiner(width=16, blocks=1, residual=True)
    x = _poses(n=10, seed=5)
    model.set_stats(torch.from_numpy(x).float(), torch.from_numpy(x * 1.1).float())
    x[3] = np.nan
    out = refine_poses(model, x, batch_size=4)
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, axis=0)).all()
    np.testing.assert_allclose(np.delete(out, 3, 0), refine_poses(model, np.delete(x, 3, 0), batch_size=100), atol=1e-4)


def test_refiner_learns_a_systematic_error(tmp_path, real_rig):
    """Predictions = labels shrunk by 15 % plus noise: the refiner must undo most of it on the training frames."""
    h36m, _ = make_root(tmp_path, small_rig(real_rig))
    labels = gt_table(h36m, ("S1", "S9"))
    pseudo = write_table(labels, tmp_path / "pseudo3d.parquet")
    from epipose.data.pose_tables import to_dense
    keys, pose = to_dense(labels, ["x", "y", "z"])
    rng = np.random.default_rng(0)
    pelvis = pose[:, skeleton.PELVIS : skeleton.PELVIS + 1]
    pred = pelvis + 0.85 * (pose - pelvis) + rng.normal(scale=5.0, size=pose.shape)
    write_pred3d(tmp_path / "pred.parquet", keys, pred, np.full(pose.shape[:2], 0.5))
    data = refiner_data(tmp_path / "pred.parquet", pseudo)
    assert data.mask.all() and data.inputs.shape == (len(keys), 16, 3)
    p = RefinerParams(epochs=15, batch_size=16, lr=2e-3, width=64, blocks=1, dropout=0.1, amp="none",
                      channels_last=False, schedule="cosine", lr_factor=0.1, threads=2)
    result, info = train_refiner(data, p, tmp_path / "ckpt", num_joints=16, progress=False)
    assert info["train_mpjpe_after_mm"] < 0.6 * info["train_mpjpe_before_mm"]
    with pytest.raises(ValueError, match="param model.num_joints is 15"):
        train_refiner(data, p, tmp_path / "ckpt2", num_joints=15, progress=False)
    save_refiner(result.model, tmp_path / "refiner.pt")
    with pytest.raises(ValueError, match="refiner.pt: the refiner is for 16 joints but param model.num_joints is 17"):
        load_refiner(tmp_path / "refiner.pt", num_joints=17)
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_refiner(tmp_path / "nothere.pt")
    with pytest.raises(ValueError, match=r"s1.parquet: no pseudo-labels for subject\(s\) \['S9'\] of the 3D network's predictions .*pred.parquet"):
        refiner_data(tmp_path / "pred.parquet", write_table(gt_table(h36m, ("S1",)), tmp_path / "s1.parquet"))

    # A rerun resumes its complete checkpoint only for the same data: labels with the wrists swapped
    # (every sum unchanged) train afresh.
    again, _ = train_refiner(data, p, tmp_path / "ckpt", num_joints=16, progress=False)
    assert again.resumed_from == p.epochs and again.epochs_run == 0
    lw, rw = skeleton.JOINT_INDEX["l_wrist"], skeleton.JOINT_INDEX["r_wrist"]
    swapped = data.targets.copy()
    swapped[:, [lw, rw]] = swapped[:, [rw, lw]]
    assert swapped.sum() == data.targets.sum()
    other, _ = train_refiner(dataclasses.replace(data, targets=swapped), p, tmp_path / "ckpt", num_joints=16,
                             progress=False)
    assert other.resumed_from == 0 and other.epochs_run == p.epochs


def test_mirror_augmentation_is_an_involution_and_swaps_sides():
    from epipose.models.refiner import mirror

    x = torch.from_numpy(_poses(n=6, seed=7)).float()
    flip = torch.tensor([True, False, True, False, True, True])
    m = mirror(x, flip)
    torch.testing.assert_close(m[~flip], x[~flip])
    l_wrist, r_wrist = skeleton.JOINT_INDEX["l_wrist"], skeleton.JOINT_INDEX["r_wrist"]
    torch.testing.assert_close(m[flip][:, l_wrist], x[flip][:, r_wrist] * torch.tensor([-1.0, 1.0, 1.0]))
    torch.testing.assert_close(mirror(m, flip), x)


def test_turn_augmentation_keeps_bones_height_and_the_camera_frame_error():
    """Turning about the people's up axis is a rotation (bone lengths, heights along up kept; −θ undoes θ);
    the loss's turned pair keeps each valid joint's error (input − label) exactly as it was."""
    from epipose.models.refiner import turn, up_axis
    from epipose.pipeline.train_refiner import RefinerLoss

    g = np.random.default_rng(3)
    tilt = np.deg2rad(12.0)                       # a camera looking down: up is −y tilted towards z
    up_true = np.array([0.0, -np.cos(tilt), np.sin(tilt)])
    poses = torch.from_numpy(_poses(n=8, seed=5)).double()
    poses[:, skeleton.THORAX] = torch.from_numpy(500.0 * up_true + g.normal(scale=30.0, size=(8, 3)))
    mask = torch.ones(8, 16, dtype=torch.bool)
    up = up_axis(poses, mask)
    assert float(up @ torch.from_numpy(up_true)) > 0.99
    angles = torch.from_numpy(g.uniform(-np.pi, np.pi, 8))
    moved = turn(poses, up, angles)
    bones = lambda p: torch.stack([(p[:, a] - p[:, b]).norm(dim=-1) for a, b in skeleton.BONES], 1)  # noqa: E731
    torch.testing.assert_close(bones(moved), bones(poses))
    torch.testing.assert_close(moved @ up, poses @ up)
    torch.testing.assert_close(turn(moved, up, -angles), poses)
    assert (moved - poses).norm(dim=-1).max() > 100.0

    inputs = poses + torch.from_numpy(g.normal(scale=40.0, size=poses.shape))
    mask[0, 3] = False
    loss = RefinerLoss(yaw_deg=90.0, up=up.float())
    t_in, t_out = loss.turned(inputs.float(), poses.float(), mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close((t_in - t_out)[mask], (inputs - poses).float()[mask], atol=1e-3, rtol=0)
    assert (t_out - poses.float()).norm(dim=-1).max() > 100.0
    torch.testing.assert_close(t_in[0, 3].norm(), inputs[0, 3].float().norm(), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="up axis"):
        RefinerLoss(yaw_deg=10.0)
