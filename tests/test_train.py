import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from epipose.train import (CHECKPOINT_NAME, EpochBatchSampler, ModelEMA, TrainParams, fit, lr_lambda,
                           param_groups, recalibrate_bn)
from train_fixture import TINY, Tiny, TinyLoss, overfit_pose_net, tiny_data

ROOT = Path(__file__).resolve().parents[1]


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def test_resume_continues_at_the_right_epoch(tmp_path):
    torch.manual_seed(0)
    straight = fit(Tiny(), tiny_data(), TinyLoss(), TINY, tmp_path / "a", progress=False)
    assert straight.epochs_run == 3 and straight.resumed_from == 0

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):     # killed in the middle of epoch 3 (4 steps per epoch)
        fit(Tiny(), tiny_data(), TinyLoss(fail_at_call=4 * 2 + 2), TINY, tmp_path / "b", progress=False)
    saved = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=False)
    assert saved["epoch"] == 2 and saved["step"] == 8 and "final" not in saved

    torch.manual_seed(123)                     # a different init: everything must come from the checkpoint
    loss = TinyLoss()
    resumed = fit(Tiny(), tiny_data(), loss, TINY, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 2 and resumed.epochs_run == 1 and loss.calls == 4
    # Identical weights at the end: model, Adam moments, schedule and augmentation seeds all resumed.
    assert torch.equal(_weights(straight.model), _weights(resumed.model))

    # The optimizer state that was resumed is the one saved at epoch 2.
    optimizer = torch.optim.Adam(Tiny().parameters(), lr=TINY.lr)
    optimizer.load_state_dict(saved["optimizer"])
    assert optimizer.state_dict()["state"][0]["step"] == 8
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], saved["optimizer"]["state"][0]["exp_avg"])

    # A rerun of a finished training loads the final weights without training.
    again = fit(Tiny(), tiny_data(), TinyLoss(fail_at_call=1), TINY, tmp_path / "b", progress=False)
    assert again.epochs_run == 0 and torch.equal(_weights(again.model), _weights(resumed.model))
    # ... and the whole run's history, as the uninterrupted run's (a rerun writes the same metrics)
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.history == resumed.history == straight.history


def test_stale_checkpoint_is_not_resumed(tmp_path, caplog):
    fit(Tiny(), tiny_data(), TinyLoss(), TINY, tmp_path / "c", progress=False)
    other = TrainParams(**{**TINY.__dict__, "lr": 5e-3})
    with caplog.at_level(logging.WARNING):
        r = fit(Tiny(), tiny_data(), TinyLoss(), other, tmp_path / "c", progress=False)
    assert r.resumed_from == 0 and r.epochs_run == 3
    assert "other params/model/data" in caplog.text


def test_training_is_deterministic_on_cpu(tmp_path):
    torch.manual_seed(0)
    a = fit(Tiny(), tiny_data(), TinyLoss(), TINY, tmp_path / "x", progress=False)
    torch.manual_seed(0)
    b = fit(Tiny(), tiny_data(), TinyLoss(), TINY, tmp_path / "y", progress=False)
    assert torch.equal(_weights(a.model), _weights(b.model))


def test_lr_factors_hold_a_prefix_and_a_factor_of_one_changes_nothing(tmp_path):
    torch.manual_seed(0)
    start = Tiny().state_dict()
    def trained(name, factors):
        model = Tiny()
        model.load_state_dict(start)
        return fit(model, tiny_data(), TinyLoss(), TINY, tmp_path / name, progress=False, lr_factors=factors).model
    held = trained("held", {"net.0.": 0.0}).state_dict()
    assert torch.equal(held["net.0.weight"], start["net.0.weight"])        # lr 0: the first conv never moves
    assert not torch.equal(held["net.5.weight"], start["net.5.weight"])    # the rest trains at lr
    assert torch.equal(_weights(trained("ones", {"net.0.": 1.0})), _weights(trained("none", None)))
    groups = param_groups(Tiny(), 0.01, {"net.0.": 0.1})
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)] and sum(len(g["params"]) for g in groups) == 6
    with pytest.raises(ValueError, match="net.9"):
        param_groups(Tiny(), 0.01, {"net.9.": 0.5})


def test_dvclive_curves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainParams(**{**TINY.__dict__, "epochs": 2})
    fit(Tiny(), tiny_data(), TinyLoss(), cfg, tmp_path / "ck", live_dir=tmp_path / "live",
        evaluate=lambda m: {"score": 1.5}, progress=False)
    metrics = tmp_path / "live" / "plots" / "metrics"
    loss = (metrics / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and len(loss) == 1 + 4   # log_every 2, 4 steps/epoch
    assert [ln.split("\t")[0] for ln in (metrics / "valid" / "score.tsv").read_text().splitlines()[1:]] == ["4", "8"]
    assert (metrics / "train" / "lr.tsv").exists() and (metrics / "train" / "abs.tsv").exists()
    assert not (tmp_path / "dvc.yaml").exists() and not (tmp_path / "live" / "dvc.yaml").exists()


def test_lr_schedules():
    step = TrainParams(schedule="step", lr_steps=[0.5, 0.75], lr_factor=0.1)
    f = lr_lambda(step, 100)
    assert [f(0), f(49), f(50), f(74), f(75), f(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = lr_lambda(TrainParams(schedule="cosine", lr_factor=0.01, warmup_steps=10), 100)
    assert cos(0) == pytest.approx(0.1, rel=0.01) and cos(9) == pytest.approx(0.98, abs=0.01)
    assert cos(99) == pytest.approx(0.01) and cos(50) == pytest.approx(0.505, abs=0.02)


def test_sampler_shards_global_batches():
    full = list(EpochBatchSampler(20, 8, seed=1))
    r0 = list(EpochBatchSampler(20, 8, seed=1, rank=0, world_size=2))
    r1 = list(EpochBatchSampler(20, 8, seed=1, rank=1, world_size=2))
    assert len(full) == 2 and [a + b for a, b in zip(r0, r1)] == full
    assert len(set(sum(full, []))) == 16
    assert list(EpochBatchSampler(3, 8, seed=0)) and len(list(EpochBatchSampler(3, 8, seed=0))[0]) == 8


def test_bn_recalibration_and_ema():
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    nn.init.ones_(model[0].weight)
    batches = [{"x": torch.full((2, 1, 4, 4), float(v))} for v in (1.0, 3.0, 5.0)]
    recalibrate_bn(model, iter(batches), lambda m, b, i: m(b["x"]), n_batches=3)
    assert model[1].running_mean.item() == pytest.approx(3.0) and model[1].momentum == 0.1
    target = nn.Linear(2, 2)
    ema = ModelEMA(nn.Linear(2, 2), decay=0.9)
    for _ in range(200):
        ema.update(target)
    assert torch.allclose(ema.module.weight, target.weight, atol=1e-6)


@pytest.mark.slow
def test_tiny_pose_net_overfits_a_handful_of_images(tmp_path):
    before, after, losses, _ = overfit_pose_net(tmp_path, lr=1e-2)      # 40 steps over the same 8 images
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:5])
    assert after["pckh@0.5"] > before["pckh@0.5"] + 20
    assert after["per_joint@0.5"]["head_top"] > before["per_joint@0.5"]["head_top"]


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from train_fixture import Tiny, TinyLoss, tiny_data, TINY
from epipose.train import fit
torch.manual_seed(dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"]))
r = fit(Tiny(), tiny_data(), TinyLoss(), TINY, {ckpt!r}, progress=False)
assert r.runtime.world_size == 2 and dist.get_backend() == "gloo"
torch.save(torch.cat([p.detach().flatten() for p in r.model.parameters()]), {out!r} + f"/w{{dist.get_rank()}}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_distributed_data_parallel_with_torchrun(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests"), ckpt=str(tmp_path / "ck"), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)       # torchrun and its workers, started in their own session
        raise
    assert proc.returncode == 0, err[-3000:]
    w0, w1 = torch.load(tmp_path / "w0.pt"), torch.load(tmp_path / "w1.pt")
    # The ranks started from different inits and saw different halves of each batch: DDP synchronised them.
    assert torch.equal(w0, w1)
    assert (tmp_path / "ck" / CHECKPOINT_NAME).exists()
    shutil.rmtree(tmp_path / "ck")


def _stat(*cores: tuple[int, int]) -> list[str]:
    """``/proc/stat`` lines: the all-cores line, then per core (busy jiffies, idle jiffies), the busy
    ones split over user and system, the idle ones over idle and iowait (iowait counts as idle)."""
    lines = ["cpu  999 0 999 999 0 0 0 0 0 0"]
    for i, (busy, idle) in enumerate(cores):
        lines.append(f"cpu{i} {busy - busy // 2} 0 {busy // 2} {idle - idle // 3} {idle // 3} 0 0 0 0 0")
    return lines + ["intr 12345 0 0", "ctxt 6789", "btime 1700000000"]


def test_busy_cores_sums_each_cores_busy_fraction_between_two_samples():
    from epipose.compute import busy_between, cpu_times

    first = cpu_times(_stat((100, 900), (500, 500), (0, 1000), (7, 3)))
    assert first == {0: (1000, 900), 1: (1000, 500), 2: (1000, 1000), 3: (10, 3)}     # the all-cores line ignored
    # over the interval: core 0 fully busy, core 1 half, core 2 idle, core 3 (not ours) fully busy
    second = cpu_times(_stat((200, 900), (550, 550), (0, 1100), (17, 3)))
    assert busy_between(first, second, {0, 1, 2}) == pytest.approx(1.5)
    assert busy_between(first, second, {0, 1, 2, 3}) == pytest.approx(2.5)
    # a core missing from a sample, or with no time elapsed, counts as idle
    assert busy_between(first, {0: second[0]}, {0, 1, 2}) == pytest.approx(1.0)
    assert busy_between(first, first, {0, 1, 2}) == 0.0


def test_cpu_times_reads_this_machines_proc_stat():
    """Every core this process may run on has its line (else ``busy_cores`` would count it idle)."""
    from epipose.compute import cpu_times

    path = Path("/proc/stat")
    if not path.exists() or not hasattr(os, "sched_getaffinity"):
        pytest.skip("no /proc/stat here (not Linux)")
    with path.open() as f:
        times = cpu_times(f)
    assert os.sched_getaffinity(0) <= times.keys()


@pytest.mark.parametrize("cores, busy, threads", [(2, 0.0, 2), (2, 0.49, 2), (2, 0.7, 1), (2, 1.0, 1), (2, 2.0, 1),
                                                  (8, 2.6, 5), (8, 8.0, 1), (1, 0.9, 1)])
def test_threads_auto_leaves_the_busy_cores_to_their_processes(monkeypatch, cores, busy, threads):
    """``threads: 0`` counts the cores other work keeps busy when a stage starts (a core at least half busy is
    taken): beside a process spinning on one core it takes one thread fewer (every step would otherwise wait
    for the thread sharing that core: benchmarks/threads_under_load.py); always at least one."""
    from epipose import compute

    monkeypatch.setattr(compute, "cpu_cores", lambda: cores)
    monkeypatch.setattr(compute, "busy_cores", lambda sample_s=0.3: busy)
    assert compute.auto_threads() == threads


def test_threads_auto_under_torchrun_divides_the_cores_whatever_the_load(monkeypatch):
    from epipose import compute

    def unused(sample_s=0.3):
        raise AssertionError("torchrun's processes share the cores: the load is not measured")

    monkeypatch.setattr(compute, "cpu_cores", lambda: 16)
    monkeypatch.setattr(compute, "busy_cores", unused)
    assert [compute.auto_threads(world=w) for w in (2, 3, 16, 32)] == [8, 5, 1, 1]
