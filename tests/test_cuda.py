"""The CUDA-only paths, each run where a CUDA device is and skipped cleanly where none is (this project's CI
has none): AMP fp16 with its gradient scaler and bf16 in the training loop, channels_last and bf16
autocast in inference (against float32), and NCCL DistributedDataParallel (tests/test_distributed.py,
with two devices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epipose.compute import ComputeParams, amp_dtype, setup_runtime
from epipose.data.transforms import AugmentParams
from epipose.models.inference import predict_pose
from epipose.models.pose_net import PoseNet, PoseNetConfig
from epipose.pipeline.pretrain_2d import Loss2D, Pretrain2DParams, build_cache
from epipose.train import CHECKPOINT_NAME, TensorSet, fit
from mpii_fixture import make_mpii

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
NO_AUG = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_a_pose_net_learns_on_cuda_under_autocast(tmp_path, amp):
    """40 steps over 8 images on the GPU: the loss falls and stays finite; fp16 trains through the gradient
    scaler (its state saved with the checkpoint), bf16 without one."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    root = make_mpii(tmp_path / "mpii", n_train=8, n_valid=1, seed=2)
    p = Pretrain2DParams(epochs=1, batch_size=8, lr=1e-2, schedule="step", lr_steps=[], warmup_steps=0, amp=amp,
                         bn_recalib_batches=2, flip_test=False, channels_last=True, head="integral",
                         swap_tolerance=0.0)
    cache = build_cache(root, "train", 64, p)
    torch.manual_seed(0)
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=16, input_size=64))
    data = TensorSet(images=cache.images.repeat(40, 1, 1, 1), joints=cache.joints.repeat(40, 1, 1),
                     visible=cache.visible.repeat(40, 1))
    losses = []

    def loss_fn(m, batch, gen):
        loss, logs = Loss2D(cache.src_box, 64, NO_AUG, p)(m, batch, gen)
        losses.append(loss.item())
        return loss, logs

    rt = setup_runtime(ComputeParams(device="cuda"), threads=1, progress=False)
    assert amp_dtype(amp, rt.device) == {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    result = fit(model, data, loss_fn, p, tmp_path / "ck", progress=False, runtime=rt)
    assert next(result.model.parameters()).is_cuda and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    scaler = torch.load(tmp_path / "ck" / CHECKPOINT_NAME, weights_only=False)["scaler"]
    assert bool(scaler) == (amp == "fp16")              # GradScaler enabled for fp16 only (empty state otherwise)


def test_channels_last_and_bf16_inference_agree_with_float32_on_cuda():
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=18, deconv_channels=32, input_size=64, depth_bins=8)).cuda().eval()
    torch.nn.init.normal_(net.final.weight, std=0.5)
    images = torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8, device="cuda")
    plain = predict_pose(net, images, 80.0, flip_test=True, amp=None, channels_last=False)
    fast = predict_pose(net.to(memory_format=torch.channels_last), images, 80.0, flip_test=True, amp=None,
                        channels_last=True)
    assert torch.allclose(plain["xy"], fast["xy"], atol=1e-2) and torch.allclose(plain["z"], fast["z"], atol=1e-4)
    if torch.cuda.is_bf16_supported():
        half = predict_pose(net, images, 80.0, flip_test=True, amp=torch.bfloat16, channels_last=True)
        assert (half["xy"] - plain["xy"]).abs().max() < 1.0 and (half["z"] - plain["z"]).abs().max() < 0.02
    assert plain["xy"].is_cuda
