"""One training loop for every training stage (pretrain_2d, train_3d, train_refiner).

Read it top to bottom in ``fit``: set up (device, seeds, model, optimiser, schedule, EMA) → resume
from the stage's checkpoint (``_resume``) → epochs of steps (``_train_epoch``) → per-epoch
evaluation, logging and an atomic checkpoint (``_end_epoch``) → the final weights (EMA, optionally
with BatchNorm recalibrated). The device, process group and mixed precision come from
``epipose.compute``.

What a stage supplies:
* ``dataset``: a map-style dataset with ``__getitems__`` (one call per batch), e.g. ``TensorSet``
  of crops decoded once into memory, or a ``MixedSet`` of two such (every batch drawn from both in a
  fixed proportion: train_3d's frames and MPII stills);
* ``loss_fn(model, batch, gen) -> (loss, logs)``: moves/augments the batch (on the device, with
  the CPU generator ``gen`` seeded per step and rank, so augmentation is reproducible), runs the
  model and returns the scalar loss plus a dict of scalar tensors to log;
* ``evaluate(model) -> dict[str, float]`` (optional): validation metrics, logged every ``eval_every``
  epochs; the last epoch's scores the weights ``fit`` returns (EMA / BN recalibration applied).

Engineering: Adam with a step or cosine schedule (+ linear warm-up); AMP (bf16, or fp16 with a
gradient scaler) on CUDA and bf16 on CPUs with native bf16 (AMX / AVX512-BF16), channels_last;
DataLoader workers and pinned memory; seeded (deterministic on CPU given the seed and thread
count); a checkpoint every epoch, resumed on rerun (``persist: true`` in dvc.yaml) when its
fingerprint (params, model config, data) matches; DistributedDataParallel when launched by
``torchrun`` (gloo on CPU, nccl on GPU; the batch size is global) with BatchNorm statistics
synchronised over the processes (``sync_batchnorm``), so N processes train what one process
trains with the same global batch (up to float rounding; the stage's augmentation draws its
randomness per rank); dvclive logging with ``dvcyaml=False``; a tqdm progress bar on stderr.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from epipose.compute import ComputeParams, Runtime, amp_dtype, autocast, setup_runtime, sync_batchnorm
from epipose.io import content_hash, remove_stale_temporaries, write_torch
from epipose.params import in_range

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class TrainParams:
    """The loop's params; a stage's section (e.g. ``pretrain_2d``) extends this dataclass."""

    epochs: int = in_range(1, 100000, default=10)
    batch_size: int = in_range(1, 65536, default=32)     # global (split over DDP ranks)
    lr: float = in_range(0.0, 10.0, default=1e-3)
    weight_decay: float = in_range(0.0, 1.0, default=0.0)
    schedule: Literal["step", "cosine"] = "step"
    lr_steps: list[float] = field(default_factory=lambda: [0.7, 0.9])   # step: fractions of training
    lr_factor: float = in_range(0.0, 1.0, default=0.1)                   # step: factor at each; cosine: final
    warmup_steps: int = in_range(0, 1000000, default=0)
    grad_clip: float = in_range(0.0, 1e6, default=0.0)                   # 0 = off
    ema_decay: float = in_range(0.0, 1.0, default=0.0)                   # 0 = off; else evaluate/save the EMA
    bn_recalib_batches: int = in_range(0, 100000, default=0)             # 0 = off
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    channels_last: bool = True
    workers: int = in_range(0, 64, default=0)
    threads: int = in_range(0, 256, default=0)                           # 0 = auto: the cores other work leaves free
    seed: int = 0
    eval_every: int = in_range(1, 100000, default=1)                     # epochs
    log_every: int = in_range(1, 100000, default=20)                     # steps


LossFn = Callable[[nn.Module, dict, torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


# --- data ------------------------------------------------------------------------------------------
class TensorSet(Dataset):
    """Aligned tensors held in memory; ``__getitems__`` returns a whole batch by one index op."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


class MixedSet(Dataset):
    """Two ``TensorSet`` s with the same keys as one dataset: indices ``0 … len(primary) − 1`` are the
    primary's, the rest the extra set's. ``fit`` draws every batch from both
    (``MixedBatchSampler``): ``batch_size − extra_per_batch`` primary samples, ``extra_per_batch`` extra."""

    def __init__(self, primary: TensorSet, extra: TensorSet, extra_per_batch: int):
        if set(primary.tensors) != set(extra.tensors):
            raise ValueError(f"mixed sets with other keys: {sorted(primary.tensors)} and {sorted(extra.tensors)}")
        self.primary, self.extra, self.extra_per_batch = primary, extra, extra_per_batch

    def __len__(self) -> int:
        return len(self.primary) + len(self.extra)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        is_extra = idx >= len(self.primary)
        a = self.primary.__getitems__(idx[~is_extra].tolist())
        b = self.extra.__getitems__((idx[is_extra] - len(self.primary)).tolist())
        out = {}
        for k, v in a.items():
            out[k] = v.new_empty((len(idx), *v.shape[1:]))
            out[k][~is_extra], out[k][is_extra] = v, b[k]
        return out


def _batch_collate(batch):
    return batch          # ``__getitems__`` already built the batch


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffling into global batches, each rank taking its slice.

    ``len(self)`` steps per epoch (at least 1: a set smaller than a batch is repeated).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        need = len(self) * self.batch_size
        perm = torch.cat([torch.randperm(self.n, generator=g) for _ in range(-(-need // self.n))])
        per_rank = self.batch_size // self.world_size
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * per_rank
            yield perm[start : start + per_rank].tolist()


class MixedBatchSampler(EpochBatchSampler):
    """``EpochBatchSampler`` over a ``MixedSet``: as many steps per epoch as the primary set alone
    gives (``len(primary) // batch_size``), each global batch ``batch_size − extra_per_batch``
    primary samples (their own seeded shuffle, as ``EpochBatchSampler``'s) followed by
    ``extra_per_batch`` extra ones (a second seeded shuffle); each rank takes its slice of both."""

    EXTRA_STREAM = 1 << 40      # the extra set's shuffle: another seed than every (seed, epoch) of the primary's

    def __init__(self, n: int, n_extra: int, extra_per_batch: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        super().__init__(n, batch_size, seed, rank, world_size)
        m = batch_size - extra_per_batch
        if n_extra <= 0 or not 0 < extra_per_batch < batch_size:
            raise ValueError(f"cannot mix {extra_per_batch} of {n_extra} extra samples into batches of {batch_size}")
        if m % world_size or extra_per_batch % world_size:
            raise ValueError(f"batches of {m} + {extra_per_batch} mixed samples do not split over {world_size} processes")
        self.n_extra, self.extra_per_batch = n_extra, extra_per_batch

    def __iter__(self) -> Iterator[list[int]]:
        k, steps, w = self.extra_per_batch, len(self), self.world_size
        m = self.batch_size - k
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        ge = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + self.EXTRA_STREAM)
        perm = torch.cat([torch.randperm(self.n, generator=g) for _ in range(-(-steps * m // self.n))])
        extra = torch.cat([torch.randperm(self.n_extra, generator=ge) for _ in range(-(-steps * k // self.n_extra))])
        for b in range(steps):
            p0, e0 = b * m + self.rank * (m // w), b * k + self.rank * (k // w)
            yield perm[p0 : p0 + m // w].tolist() + (extra[e0 : e0 + k // w] + self.n).tolist()


def batch_sampler(dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> EpochBatchSampler:
    """The sampler ``fit`` draws its batches with: mixed for a ``MixedSet``, else ``EpochBatchSampler``."""
    if isinstance(dataset, MixedSet):
        return MixedBatchSampler(len(dataset.primary), len(dataset.extra), dataset.extra_per_batch, batch_size, seed,
                                 rank, world_size)
    return EpochBatchSampler(len(dataset), batch_size, seed, rank, world_size)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The CPU generator for one step's augmentation: a function of (seed, step, rank) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


# --- reproducibility -----------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- schedule, EMA, BN --------------------------------------------------------------------------------
def lr_lambda(cfg: TrainParams, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at optimiser step ``t`` (0-based)."""
    milestones = sorted(round(f * total_steps) for f in cfg.lr_steps)

    def f(t: int) -> float:
        warm = min(1.0, (t + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "step":
            return warm * cfg.lr_factor ** sum(t >= m for m in milestones)
        progress = min(1.0, t / max(1, total_steps - 1))
        return warm * (cfg.lr_factor + (1.0 - cfg.lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return f


class ModelEMA:
    """Exponential moving average of a model's parameters (buffers copied), with warm-up."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        ema_p = [p for p in self.module.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[dict], forward: Callable[[nn.Module, dict, int], Any],
                   n_batches: int) -> None:
    """Recompute BatchNorm running statistics as a plain average over ``n_batches`` batches.

    ``forward(model, batch, i)`` runs the model in training mode on the i-th batch.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or n_batches <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for i, batch in enumerate(batches):
        if i >= n_batches:
            break
        forward(model, batch, i)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)


# --- checkpoints -----------------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    write_torch(state, path)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable training checkpoint ({type(exc).__name__}: {exc}); "
                         "delete it to start the training afresh") from None


def _trim_live_dir(live_dir: Path, last_step: int) -> None:
    """Drop dvclive TSV rows logged after the checkpoint we resume from (they will be redone)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\n").split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) <= last_step]
        tsv.write_text("".join(kept))


# --- the loop ----------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    model: nn.Module                  # the final weights (EMA if enabled), on the device, eval mode
    epochs_run: int                   # epochs trained in this call (0 when the checkpoint was complete)
    resumed_from: int                 # epoch the run started from (0 = fresh)
    history: list[dict] = field(default_factory=list)   # per-epoch train loss + evaluation, the whole run
    #                                                        (a resumed run's earlier epochs from its checkpoint)
    runtime: Runtime | None = None


@dataclass
class _Run:
    """What the loop carries from epoch to epoch."""

    cfg: TrainParams
    rt: Runtime
    dtype: torch.dtype | None
    model: nn.Module                  # the weights (unwrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    sampler: EpochBatchSampler
    fingerprint: str
    ckpt_path: Path
    step: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state(self, epoch: int) -> dict:
        return {"epoch": epoch, "step": self.step, "fingerprint": self.fingerprint, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rng_state(), "history": self.history}


def fit(model: nn.Module, dataset: Dataset, loss_fn: LossFn, cfg: TrainParams, ckpt_dir: str | Path,
        live_dir: str | Path | None = None, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        data_signature: Any = None, runtime: Runtime | None = None, progress: bool = True,
        lr_factors: dict[str, float] | None = None) -> FitResult:
    """Train ``model`` on ``dataset`` with ``loss_fn`` for ``cfg.epochs`` epochs (module docstring).

    ``data_signature``: anything ``content_hash`` takes that identifies the data; with ``cfg``, the
    model's config and the number of processes it keys the checkpoint a rerun resumes from.
    ``runtime``: the stage's (``epipose.compute.setup_runtime``); default: one process, device auto.
    ``lr_factors``: parameter-name prefix → factor on ``cfg.lr`` (and its schedule) for those parameters,
    e.g. ``{"backbone.": 0.1}``; the rest train at ``cfg.lr`` (None or all 1: one group, as without it).
    """
    rt = runtime or setup_runtime(ComputeParams(), cfg.threads)
    run = _setup(model, dataset, cfg, rt, data_signature, Path(ckpt_dir), lr_factors or {})
    start_epoch, final = _resume(run)
    if final is not None:                 # the checkpoint holds a complete run: its final weights
        return FitResult(final.eval(), 0, start_epoch, run.history, rt)
    train_model: nn.Module = run.model
    if rt.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
    loader = DataLoader(dataset, batch_sampler=run.sampler, collate_fn=_batch_collate, num_workers=cfg.workers,
                        pin_memory=rt.device.type == "cuda", persistent_workers=cfg.workers > 0)
    live = _open_live(live_dir, rt, start_epoch, len(run.sampler))
    run.step = start_epoch * len(run.sampler)
    for epoch in range(start_epoch, cfg.epochs):
        means = _train_epoch(run, train_model, loader, loss_fn, epoch, live, progress)
        if epoch + 1 == cfg.epochs:       # the weights to keep; the last evaluation scores them
            final = _finalise(run.eval_model, cfg, loader, run.sampler, loss_fn, rt.device, run.dtype, epoch)
        _end_epoch(run, epoch, means, evaluate, final, live)
    if live is not None:
        live.end()
    if final is None:                     # complete checkpoint of an older version without "final"
        final = _finalise(run.eval_model, cfg, loader, run.sampler, loss_fn, rt.device, run.dtype, cfg.epochs - 1)
    return FitResult(final.eval(), cfg.epochs - start_epoch, start_epoch, run.history, rt)


def param_groups(model: nn.Module, lr: float, lr_factors: dict[str, float]) -> list[dict]:
    """The optimiser's parameter groups: one per factor of ``lr_factors`` (name prefix → factor on ``lr``;
    the first matching prefix counts), the other parameters at ``lr`` (first: the lr that dvclive's curve
    shows); one group when every factor is 1
    (the parameters in ``model.parameters()``' order, exactly as without factors). ValueError naming a
    prefix that matches no parameter."""
    named = list(model.named_parameters())
    if all(f == 1.0 for f in lr_factors.values()):
        return [{"params": [p for _, p in named], "lr": lr}]
    unused = [k for k in lr_factors if not any(n.startswith(k) for n, _ in named)]
    if unused:
        raise ValueError(f"lr factors name no parameter of the model: {unused}")
    factor_of = {n: next((f for k, f in lr_factors.items() if n.startswith(k)), 1.0) for n, _ in named}
    factors = sorted(dict.fromkeys(factor_of.values()), key=lambda f: f != 1.0)   # lr's own group first: the curve's
    return [{"params": [p for n, p in named if factor_of[n] == f], "lr": lr * f} for f in factors]


def _setup(model: nn.Module, dataset: Dataset, cfg: TrainParams, rt: Runtime, data_signature: Any,
           ckpt_dir: Path, lr_factors: dict[str, float]) -> _Run:
    """Seeds, the model on the device, sampler, optimiser, schedule, gradient scaler and EMA."""
    seed_everything(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=rt.device, memory_format=memory_format)
    if rt.distributed:
        model = sync_batchnorm(model, rt.device)
    config = getattr(model, "config", None)
    fp = content_hash(cfg, config.to_dict() if hasattr(config, "to_dict") else repr(model), data_signature,
                      rt.world_size, *([lr_factors] if any(f != 1.0 for f in lr_factors.values()) else []))
    sampler = batch_sampler(dataset, cfg.batch_size, cfg.seed, rt.rank, rt.world_size)
    dtype = amp_dtype(cfg.amp, rt.device)
    # fused: one kernel for the whole update instead of ~10 per parameter tensor (-10% of a CPU step here).
    optimizer = torch.optim.Adam(param_groups(model, cfg.lr, lr_factors), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=rt.device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(sampler) * cfg.epochs))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=(dtype == torch.float16))
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    return _Run(cfg, rt, dtype, model, optimizer, scheduler, scaler, ema, sampler, fp, ckpt_dir / CHECKPOINT_NAME)


def _resume(run: _Run) -> tuple[int, nn.Module | None]:
    """Load the stage's checkpoint when its fingerprint matches → (epoch to start from, the final
    weights when the checkpoint holds a complete run, else None)."""
    if run.rt.is_main:
        remove_stale_temporaries(run.ckpt_path)         # of a run killed while saving
    ckpt = load_checkpoint(run.ckpt_path)
    if ckpt is not None and ckpt.get("fingerprint") != run.fingerprint:
        log.warning("%s was written with other params/model/data; training from scratch", run.ckpt_path)
        ckpt = None
    if ckpt is None:
        return 0, None
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(ckpt["ema"])
    set_rng_state(ckpt["rng"])
    run.history = list(ckpt.get("history", []))
    start_epoch = int(ckpt["epoch"])
    log.info("resuming from %s at epoch %d/%d", run.ckpt_path, start_epoch, run.cfg.epochs)
    if start_epoch >= run.cfg.epochs and "final" in ckpt:
        final = copy.deepcopy(run.model)
        final.load_state_dict(ckpt["final"])
        return start_epoch, final
    return start_epoch, None


def _open_live(live_dir: str | Path | None, rt: Runtime, start_epoch: int, steps_per_epoch: int):
    """dvclive on the main process (its curves trimmed to the resumed step), else None."""
    if live_dir is None or not rt.is_main:
        return None
    from dvclive import Live

    if start_epoch > 0:
        _trim_live_dir(Path(live_dir), start_epoch * steps_per_epoch)
    return Live(str(live_dir), dvcyaml=False, resume=start_epoch > 0, save_dvc_exp=False)


def _train_epoch(run: _Run, train_model: nn.Module, loader: DataLoader, loss_fn: LossFn, epoch: int, live,
                 progress: bool) -> dict[str, float]:
    """One epoch of optimiser steps → the epoch's mean of every logged value (``loss`` first)."""
    cfg, rt = run.cfg, run.rt
    steps = len(run.sampler)
    run.sampler.set_epoch(epoch)
    train_model.train()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
               disable=not (progress and rt.is_main), dynamic_ncols=True, mininterval=1.0)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in loader:
        batch = {k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast(rt.device, run.dtype):
            loss, logs = loss_fn(train_model, batch, step_generator(cfg.seed, run.step, rt.rank))
        _optimiser_step(run, loss)
        run.step += 1
        for k, v in {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v.float()
        count += 1
        if count % cfg.log_every == 0 or count == steps:
            means = {k: float(v) / count for k, v in sums.items()}
            lr = run.scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            if live is not None:
                live.step = run.step
                for k, v in means.items():
                    live.log_metric(f"train/{k}", v)
                live.log_metric("train/lr", lr)
        bar.update(1)
    bar.close()
    if not math.isfinite(float(sums["loss"])):
        raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss is not finite); lower the lr")
    return {k: float(v) / count for k, v in sums.items()}


def _optimiser_step(run: _Run, loss: torch.Tensor) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)


def _end_epoch(run: _Run, epoch: int, means: dict[str, float], evaluate: Callable | None,
               final: nn.Module | None, live) -> None:
    """Evaluate (every ``eval_every`` epochs and at the end: the final weights), log, checkpoint."""
    cfg, rt = run.cfg, run.rt
    done = epoch + 1
    metrics: dict[str, float] = {}
    if evaluate is not None and rt.is_main and (done % cfg.eval_every == 0 or done == cfg.epochs):
        m = final if done == cfg.epochs else run.eval_model
        m.eval()
        metrics = {k: float(v) for k, v in evaluate(m).items()}
        run.model.train()
        log.info("epoch %d/%d: %s", done, cfg.epochs, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if live is not None:
            live.step = run.step
            for k, v in metrics.items():
                live.log_metric(f"valid/{k}", v)
    run.history.append({"epoch": done, "train_loss": means["loss"], **metrics})
    state = run.state(done)
    if done == cfg.epochs:
        state["final"] = final.state_dict()
    if rt.is_main:
        save_checkpoint(run.ckpt_path, state)
    if rt.distributed:
        dist.barrier()


def _finalise(model: nn.Module, cfg: TrainParams, loader: DataLoader, sampler: EpochBatchSampler, loss_fn: LossFn,
              device: torch.device, dtype: torch.dtype | None, epoch: int) -> nn.Module:
    """The weights to keep: a copy of ``model``, BatchNorm statistics recalibrated if asked."""
    final = copy.deepcopy(model)
    if cfg.bn_recalib_batches > 0:
        sampler.set_epoch(epoch + 10_000)

        def forward(m: nn.Module, batch: dict, i: int) -> None:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            with autocast(device, dtype):
                loss_fn(m, batch, step_generator(cfg.seed + 1, i, 0))

        recalibrate_bn(final, iter(loader), forward, cfg.bn_recalib_batches)
    return final.eval()
