"""Benchmark: the generalisation issue's levers, each alone, over seeds — and the spread of one training run.

Each *variant* is a set of params overrides (``name:section.key=value,...``; ``base`` = params.yaml as it
is). For every variant and seed, the 3D networks are trained again on the committed pseudo-labels and 2D
network — the self-supervised one (``train_3d``, with its training-frame predictions), the refiner on them,
and the fully supervised one (``train_3d.target: gt``) — with ``train_3d.seed`` = ``refiner.seed`` = the
seed, and evaluated with evaluate's code on the unseen test people (``evaluate.subjects``) and on seen
training people (``--seen``). With ``--label-noise-mm σ --perturbations K``, each variant also trains the
self-supervised network (+ refiner) K more times at the first seed on pseudo-labels with N(0, σ²) added to
every coordinate (noise seeds 1..K): the spread a change of the labels far below their error causes.

The stages' ``run`` are called directly (the same code as ``dvc repro``) in a temp folder, with threads
pinned (``--threads``, default all cores: what ``threads: 0`` picks on an idle machine, so seed 0 of
``base`` reproduces the committed ``metrics/eval.json``). Run it in a clone after ``dvc repro``, on an
otherwise idle machine (~4.5 min per variant and seed on 2 cores; a perturbation ~3 min)::

    python benchmarks/ablation.py --variants base mpii:train_3d.mpii_share=0.5 --seeds 0-4
    python benchmarks/ablation.py --variants base --label-noise-mm 0.1 --perturbations 5 --networks self
    python benchmarks/ablation.py --variants base freestyle@../fs --seeds 0-4    # ../fs: another clone, repro'd

Results go to ``benchmarks/out/ablation.json`` after every run; a run already there (same variant
overrides, seed, noise) is not repeated, so an interrupted sweep resumes; the 3D networks are kept in
``benchmarks/out/ablation_cache/`` (``--cache``), so a variant that changes only ``refiner.*`` keys trains
the refiner alone on the same seed's 3D network (delete the folder after a code change). Prints, per variant, each
network's MPJPE (mm) on unseen and seen people as mean ± sd (sample, n−1) over the seeds and over the
perturbations (with the unperturbed run), unseen / seen, self / fully supervised, and the difference to
``base`` (the baseline measured in the same sweep; ``--reference`` another variant), the seeds paired. A
variant that sets ``train_3d.exclude_actions`` is also scored on the unseen people's held-out and trained
actions (the held-out-motion protocol of ``held_out_motion.py``, over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import yaml

from epipose.compute import select_device, setup_runtime
from epipose.data.frames import list_shards, parse_shard_path
from epipose.data.h36m import action_name
from epipose.data.pose_tables import read_pseudo3d, write_pseudo3d
from epipose.pipeline import train_3d, train_refiner
from epipose.pipeline.evaluate import EvaluateParams, run_evaluation
from epipose.params import load_section, load_value, read_params

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {"self": "pose3d", "refiner": "pose3d_refined", "full": "baseline_gt"}


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``name[@root]:section.key=value,...`` (values as YAML) or ``base`` → (name, overrides); ``@root``: the
    variant's data is another workspace's dvc repro outputs (e.g. a clone whose synth params differ), kept in
    the overrides under ``@root``."""
    head, _, rest = text.partition(":")
    name, _, root = head.partition("@")
    overrides: dict[str, object] = {"@root": str(Path(root).resolve())} if root else {}
    for item in filter(None, re.split(r",(?![^\[]*\])", rest)) if rest else []:     # not the commas of a [list]
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def write_params(source: Path, overrides: dict[str, object], dest: Path) -> Path:
    """params.yaml with ``overrides`` (dotted keys, each must exist) → ``dest``."""
    params = read_params(source)
    for key, value in overrides.items():
        if key == "@root":
            continue
        section, _, name = key.rpartition(".")
        node = params
        for part in section.split("."):
            node = node[part]
        if name not in node:
            raise SystemExit(f"--variants: param {key} is not in {source}")
        node[name] = value
    dest.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def perturbed_labels(path: Path, sigma_mm: float, seed: int, dest: Path) -> Path:
    """The pseudo-label table with N(0, σ²) mm added to every x, y, z (its labelled rows) → ``dest``."""
    df = read_pseudo3d(path)
    rng = np.random.default_rng(seed)
    for c in ("x", "y", "z"):
        df[c] = df[c] + rng.normal(0.0, sigma_mm, len(df))
    write_pseudo3d(df, dest)
    return dest


def cached_3d(cache: Path | None, role: str, needs_pred: bool) -> tuple[Path, Path, float] | None:
    """A 3D network of the same (non-refiner) overrides, seed and labels trained by an earlier run:
    (its weights, its training-frame predictions, its fit), or None."""
    if cache is None or not (cache / f"{role}.json").exists():
        return None
    model, pred = cache / f"{role}.pt", cache / f"{role}_pred3d_train.parquet"
    if not model.exists() or (needs_pred and not pred.exists()):
        return None
    return model, pred, json.loads((cache / f"{role}.json").read_text())["fit"]


def keep_3d(cache: Path | None, role: str, model: Path, pred: Path | None, fit: float) -> None:
    """Copy a freshly trained 3D network (and its predictions) into ``cache``; the record last (complete)."""
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, cache / f"{role}.pt")
    if pred is not None and pred.exists():
        shutil.copyfile(pred, cache / f"{role}_pred3d_train.parquet")
    (cache / f"{role}.json").write_text(json.dumps({"fit": fit}) + "\n")


def train(root: Path, params_path: Path, labels: Path, networks: set[str], work: Path, cache: Path | None = None
          ) -> tuple[dict[str, Path], dict[str, float]]:
    """The networks asked for (self, refiner, full) trained with ``params_path`` → (their paths, each 3D
    network's fit to its own labels: root-relative MPJPE in mm on training frames). ``cache``: a folder
    where 3D networks trained with the same non-refiner params are kept and taken from (a variant that
    changes only ``refiner.*`` keys trains the refiner alone)."""
    models = {"pose3d": work / "pose3d.pt", "baseline_gt": work / "pose3d_gt.pt", "refiner": work / "refiner.pt"}
    pred3d = work / "pred3d_train.parquet"
    fits = {}
    for name, role, target in (("self", "pose3d", None), ("full", "baseline_gt", "gt")):
        if name not in networks and not (name == "self" and "refiner" in networks):
            models.pop(role)
            continue
        needs_pred = "refiner" in networks and role == "pose3d"
        if hit := cached_3d(cache, role, needs_pred):
            models[role], fits[name] = hit[0], hit[2]
            if needs_pred:
                pred3d = hit[1]
            continue
        config = train_3d.load_params(params_path, target=target)
        config = dataclasses.replace(config, h36m_root=str(root / config.h36m_root),
                                     mpii_root=str(root / config.mpii_root))
        paths = train_3d.Train3DPaths(str(root / "data" / "frames"), str(root / "models" / "pose2d.pt"), str(labels),
                                      str(models[role]), str(work / "live" / role), str(work / "ckpt" / role),
                                      str(pred3d) if needs_pred else None)
        result = train_3d.run(paths, config, setup_runtime(config.compute, config.train_3d.threads, progress=False))
        fits[name] = result.metrics["fit.mpjpe"]
        keep_3d(cache, role, models[role], pred3d if needs_pred else None, fits[name])
    if "refiner" not in networks:
        models.pop("refiner")
        return models, fits
    config = train_refiner.load_params(params_path)
    paths = train_refiner.TrainRefinerPaths(str(pred3d), str(labels), str(models["refiner"]),
                                            str(work / "live" / "refiner"), str(work / "ckpt" / "refiner"))
    train_refiner.run(paths, config, setup_runtime(config.compute, config.refiner.threads, progress=False))
    return models, fits


def evaluate(root: Path, params_path: Path, models: dict[str, Path], subjects: list[str],
             actions: list[str] | None = None) -> dict[str, float]:
    """MPJPE (mm) of each trained network on ``subjects``' frames (of ``actions``; None: all), evaluate's protocol."""
    p = dataclasses.replace(load_section(EvaluateParams, "evaluate", params_path), subjects=subjects, pss_k=[],
                            actions=actions or [], seen_subjects=True)      # seen people scored on purpose
    h36m_root = root / load_value("data", "h36m_root", str, params_path)
    main = models.get("pose3d", models.get("baseline_gt"))
    res, _ = run_evaluation(root / "data" / "frames", h36m_root, main, p, refiner_path=models.get("refiner"),
                            baseline_path=models.get("baseline_gt") if "pose3d" in models else None,
                            device=select_device("auto", p.threads), progress=False)
    return {name: round(res[role]["mpjpe"], 2) for name, role in NETWORKS.items() if role in res}


def one_run(root: Path, params: Path, overrides: dict, seed: int, noise: tuple[float, int] | None,
            networks: set[str], seen: list[str], threads: int, cache: Path | None = None) -> dict:
    """Train and evaluate one (variant, seed, perturbation) → its record. ``cache``: the folder of 3D networks
    kept by earlier runs (one subfolder per non-refiner overrides, seed, perturbation and threads)."""
    with tempfile.TemporaryDirectory(prefix="ablation.") as tmp:
        work = Path(tmp)
        pinned = {f"{s}.threads": threads for s in ("train_3d", "refiner", "evaluate")}
        params_path = write_params(params, {**overrides, **pinned, "train_3d.seed": seed, "refiner.seed": seed},
                                   work / "params.yaml")
        labels = root / "data" / "pseudo3d.parquet"
        if noise is not None:
            labels = perturbed_labels(labels, noise[0], noise[1], work / "pseudo3d.parquet")
        net_key = json.dumps([{k: v for k, v in overrides.items() if not k.startswith("refiner.")}, seed,
                              list(noise) if noise else None, threads], sort_keys=True)
        where = cache / hashlib.sha256(net_key.encode()).hexdigest()[:16] if cache else None
        models, fits = train(root, params_path, labels, networks, work, where)
        test = list(load_section(EvaluateParams, "evaluate", params_path).subjects)
        record = {"unseen": evaluate(root, params_path, models, test), "seen": evaluate(root, params_path, models, seen),
                  "fit": fits}
        held_out = list(load_section(train_3d.Train3DParams, "train_3d", params_path).exclude_actions)
        if held_out:            # the held-out-motion protocol: the unseen people's held-out vs trained actions
            every = {action_name(parse_shard_path(f)[1]) for f in list_shards(root / "data" / "frames", test)}
            trained = sorted(every - set(held_out))
            record["held_out_motion"] = evaluate(root, params_path, models, test, held_out)
            record["trained_motion"] = evaluate(root, params_path, models, test, trained)
        return record


def parse_seeds(text: str) -> list[int]:
    """--seeds: a range ``a-b`` or a comma-separated list."""
    a, _, b = text.partition("-")
    return list(range(int(a), int(b) + 1)) if b else [int(s) for s in text.split(",")]


def run_key(variant: str, overrides: dict, seed: int, noise: tuple[float, int] | None) -> str:
    return json.dumps([variant, overrides, seed, list(noise) if noise else None], sort_keys=True)


def mean_sd(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2),
            "sd": round(statistics.stdev(values), 2) if len(values) > 1 else None, "n": len(values), "values": values}


def network_summary(net: str, by_seed: dict[int, dict], perturbed: list[dict], reference: dict[int, dict] | None
                    ) -> dict:
    """One network of one variant: unseen and seen MPJPE over the seeds, unseen / seen, over the label
    perturbations (the unperturbed first seed among them), held-out / trained motion, − the reference."""
    runs = list(by_seed.values())
    v = {"unseen": mean_sd([r["unseen"][net] for r in runs]), "seen": mean_sd([r["seen"][net] for r in runs]),
         "unseen_over_seen": mean_sd([round(r["unseen"][net] / r["seen"][net], 3) for r in runs])}
    if len(perturbed) > 1 and all(net in r["unseen"] for r in perturbed):   # the full network: no labels
        v["perturbed_unseen"] = mean_sd([r["unseen"][net] for r in perturbed])
    if "held_out_motion" in runs[0]:
        v["held_out_motion"] = mean_sd([r["held_out_motion"][net] for r in runs])
        v["held_out_over_trained"] = mean_sd([round(r["held_out_motion"][net] / r["trained_motion"][net], 3)
                                              for r in runs])
    if reference:
        pairs = [round(r["unseen"][net] - reference[s]["unseen"][net], 2) for s, r in by_seed.items()
                 if s in reference and net in reference[s]["unseen"]]
        if pairs:
            v["minus_reference"] = mean_sd(pairs)
    return v


def summarise(runs: dict, variants: dict[str, dict], seeds: list[int], reference: str = "base") -> dict:
    """Per variant and network ``network_summary``, and self / fully supervised over the seeds."""
    def of(name: str) -> dict[int, dict]:
        return {s: runs[k] for s in seeds if (k := run_key(name, variants[name], s, None)) in runs}

    out = {}
    for name, overrides in variants.items():
        by_seed = of(name)
        perturbed = [r for k, r in runs.items() if json.loads(k)[:3] == [name, overrides, seeds[0]]]
        ref = of(reference) if name != reference and reference in variants else None
        v: dict = {net: network_summary(net, by_seed, perturbed, ref)
                   for net in NETWORKS if by_seed and net in next(iter(by_seed.values()))["unseen"]}
        if {"self", "full"} <= set(v):
            v["self_over_full"] = mean_sd([round(r["unseen"]["self"] / r["unseen"]["full"], 3)
                                           for r in by_seed.values()])
        out[name] = {"overrides": overrides, "reference": reference, **v}
    return out


def print_table(summary: dict) -> None:
    fmt = lambda m: "—" if m is None else f"{m['mean']:.1f} ± {m['sd'] or 0:.1f}"  # noqa: E731
    print(f"{'variant':<14}{'network':<9}{'unseen (mm)':>16}{'seen (mm)':>16}{'unseen/seen':>13}"
          f"{'− reference':>16}{'perturbed':>16}{'held-out/trained':>18}")
    for name, v in summary.items():
        for net in NETWORKS:
            if net in v:
                r = v[net]
                held = r.get("held_out_over_trained")
                print(f"{name:<14}{net:<9}{fmt(r['unseen']):>16}{fmt(r['seen']):>16}{r['unseen_over_seen']['mean']:>13.2f}"
                      f"{fmt(r.get('minus_reference')):>16}{fmt(r.get('perturbed_unseen')):>16}"
                      f"{held['mean'] if held else float('nan'):>18.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["base"], help="name:section.key=value,... (or base)")
    parser.add_argument("--seeds", default="0-4", help="a range a-b or a comma-separated list")
    parser.add_argument("--networks", default="self,refiner,full", help="of self, refiner, full")
    parser.add_argument("--reference", default="base", help="the variant the others are compared with (same seeds)")
    parser.add_argument("--seen", default="S1,S5", help="training subjects to evaluate on (comma-separated)")
    parser.add_argument("--label-noise-mm", type=float, default=0.0)
    parser.add_argument("--perturbations", type=int, default=0, help="noisy-label runs per variant (first seed)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--root", default=str(ROOT), help="the workspace whose dvc repro outputs are used")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "ablation.json"))
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "ablation_cache"),
                        help="3D networks kept for variants that differ only in refiner.* keys ('' : none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root).resolve()
    seeds = parse_seeds(args.seeds)
    variants = dict(parse_variant(v) for v in args.variants)
    networks = set(args.networks.split(","))
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if out.exists() else {}
    todo = [(n, o, s, None) for s in seeds for n, o in variants.items()]      # seeds outermost: pairs first
    todo += [(n, o, seeds[0], (args.label_noise_mm, k)) for n, o in variants.items()
             for k in range(1, args.perturbations + 1)]
    for name, overrides, seed, noise in todo:
        key = run_key(name, overrides, seed, noise)
        if key in runs:
            continue
        where = Path(overrides.get("@root", root))
        runs[key] = one_run(where, where / "params.yaml", overrides, seed, noise, networks, args.seen.split(","),
                            args.threads, Path(args.cache) if args.cache else None)
        print(f"{name} seed {seed} noise {noise}: {runs[key]}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"runs": runs, "summary": summarise(runs, variants, seeds, args.reference)}, indent=1) + "\n")
    summary = summarise(runs, variants, seeds, args.reference)
    out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1) + "\n")
    print_table(summary)


if __name__ == "__main__":
    main()
