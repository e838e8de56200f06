"""One training loop for every training stage (pretrain_2d now, train_3d later).

Read it top to bottom in ``fit``: set up (distributed, device, seeds) → model, optimiser, schedule,
EMA → resume from the stage's checkpoint → epochs of steps → per-epoch evaluation, logging and an
atomic checkpoint → the final weights (EMA, optionally with BatchNorm recalibrated).

What a stage supplies:
* ``dataset``: a map-style dataset with ``__getitems__`` (one call per batch), e.g. ``TensorSet``
  of crops decoded once into memory;
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
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from epipose.compute import use_cuda
from epipose.io import remove_stale_temporaries, write_torch
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
    threads: int = in_range(0, 256, default=0)                           # CPU threads; 0 = all cores
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


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The CPU generator for one step's augmentation: a function of (seed, step, rank) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


# --- environment -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(threads: int = 0) -> Runtime:
    """Device and process group: DDP when launched by torchrun (``WORLD_SIZE`` > 1); CUDA or CPU
    as ``compute.device`` says (``epipose.compute``; default: CUDA when available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = use_cuda()
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local)
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
    else:
        rank, local = 0, 0
        device = torch.device("cuda") if cuda else torch.device("cpu")
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(threads or max(1, cores // world))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, rank, world, local)


class ProcessGroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: the per-process sums are
    all-reduced (autograd-aware, two passes for the variance). ``nn.SyncBatchNorm`` does this on
    CUDA only; this one runs on any device (gloo on CPU). Outside a process group, or in eval
    mode, it is a plain BatchNorm. Same parameters and buffers as the BatchNorm it replaces."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        local_n = torch.tensor([x.numel() // c], dtype=xf.dtype, device=x.device)
        sums = all_reduce(torch.cat([xf.sum(dims), local_n]))
        n = sums[c]
        mean = sums[:c] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``model`` (in place, same parameter objects) by one that uses the
    global batch's statistics: ``nn.SyncBatchNorm`` on CUDA, ``ProcessGroupBatchNorm`` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, ProcessGroupBatchNorm):
            out = ProcessGroupBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats)
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            if module.track_running_stats:
                out.running_mean, out.running_var = module.running_mean, module.running_var
                out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto: bf16 on CUDA if supported else fp16; bf16 on CPUs
    with native bf16 units; else none)."""
    if amp == "none":
        return None
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if amp == "fp16":
        raise ValueError("amp fp16 is for CUDA; on CPU use bf16 or none")
    if amp == "bf16" or (amp == "auto" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


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
def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (params, model config, data signature)."""
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    history: list[dict] = field(default_factory=list)   # per-epoch evaluation metrics of this call
    runtime: Runtime | None = None


def fit(model: nn.Module, dataset: Dataset, loss_fn: LossFn, cfg: TrainParams, ckpt_dir: str | Path,
        live_dir: str | Path | None = None, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        data_signature: Any = None, runtime: Runtime | None = None, progress: bool = True) -> FitResult:
    rt = runtime or setup_runtime(cfg.threads)
    seed_everything(cfg.seed)
    device = rt.device
    dtype = amp_dtype(cfg.amp, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    if rt.distributed:
        model = sync_batchnorm(model, device)
    config = getattr(model, "config", None)
    fp = fingerprint(cfg, config.to_dict() if hasattr(config, "to_dict") else repr(model), data_signature,
                     rt.world_size)

    sampler = EpochBatchSampler(len(dataset), cfg.batch_size, cfg.seed, rt.rank, rt.world_size)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    # fused: one kernel for the whole update instead of ~10 per parameter tensor (-10% of a CPU step here).
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    # Resume.
    ckpt_path = Path(ckpt_dir) / CHECKPOINT_NAME
    if rt.is_main:
        remove_stale_temporaries(ckpt_path)         # of a run killed while saving
    start_epoch = 0
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("fingerprint") != fp:
        log.warning("%s was written with other params/model/data; training from scratch", ckpt_path)
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        log.info("resuming from %s at epoch %d/%d", ckpt_path, start_epoch, cfg.epochs)
    if ckpt is not None and start_epoch >= cfg.epochs and "final" in ckpt:
        final = copy.deepcopy(model)
        final.load_state_dict(ckpt["final"])
        return FitResult(final.eval(), 0, start_epoch, [], rt)

    train_model: nn.Module = model
    if rt.distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.local_rank] if device.type == "cuda" else None)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_batch_collate, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)

    live = None
    if live_dir is not None and rt.is_main:
        from dvclive import Live

        if start_epoch > 0:
            _trim_live_dir(Path(live_dir), start_epoch * steps_per_epoch)
        live = Live(str(live_dir), dvcyaml=False, resume=start_epoch > 0, save_dvc_exp=False)

    def eval_model() -> nn.Module:
        return ema.module if ema is not None else model

    history: list[dict] = []
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        train_model.train()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                   disable=not (progress and rt.is_main), dynamic_ncols=True, mininterval=1.0)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            gen = step_generator(cfg.seed, step, rt.rank)
            with autocast(device, dtype):
                loss, logs = loss_fn(train_model, batch, gen)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            logs = {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            count += 1
            if count % cfg.log_every == 0 or count == steps_per_epoch:
                means = {k: float(v) / count for k, v in sums.items()}
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
                if live is not None:
                    live.step = step
                    for k, v in means.items():
                        live.log_metric(f"train/{k}", v)
                    live.log_metric("train/lr", scheduler.get_last_lr()[0])
            bar.update(1)
        bar.close()
        if not math.isfinite(float(sums["loss"])):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss is not finite); lower the lr")

        done = epoch + 1
        if done == cfg.epochs:           # the weights to keep; the last evaluation scores them
            final = _finalise(eval_model(), cfg, loader, sampler, loss_fn, device, dtype, epoch)
        metrics: dict[str, float] = {}
        if evaluate is not None and rt.is_main and (done % cfg.eval_every == 0 or done == cfg.epochs):
            m = final if done == cfg.epochs else eval_model()
            m.eval()
            metrics = {k: float(v) for k, v in evaluate(m).items()}
            model.train()
            log.info("epoch %d/%d: %s", done, cfg.epochs, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            if live is not None:
                live.step = step
                for k, v in metrics.items():
                    live.log_metric(f"valid/{k}", v)
        history.append({"epoch": done, "train_loss": float(sums["loss"]) / count, **metrics})
        state = {
            "epoch": done, "step": step, "fingerprint": fp, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state(), "history": history,
        }
        if done == cfg.epochs:
            state["final"] = final.state_dict()
        if rt.is_main:
            save_checkpoint(ckpt_path, state)
        if rt.distributed:
            dist.barrier()
    if live is not None:
        live.end()
    if start_epoch >= cfg.epochs:         # complete checkpoint of an older version without "final"
        final = _finalise(eval_model(), cfg, loader, sampler, loss_fn, device, dtype, cfg.epochs - 1)
    return FitResult(final.eval(), cfg.epochs - start_epoch, start_epoch, history, rt)


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
