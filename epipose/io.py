"""Atomic, deterministic file writers: every output is written beside its target and renamed."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from epipose.stage import Folder, StageResult


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    With ``directory=True`` the temporary path is a fresh directory and replaces the target
    directory as a whole (temporaries that a killed run left beside it are removed first: a
    directory output has one writer). On any exception the temporary is removed and the target
    untouched; a killed process leaves only a hidden ``.<name>.*.tmp`` beside the target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o755)
    else:
        # Keep the extension last: some writers (cv2, cdflib) choose or append formats by it.
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_writable(*paths: str | os.PathLike | None) -> None:
    """Before a stage's work: every output (a ``Folder`` or a file; None skipped) can be created or
    replaced — where it exists it is a folder if a folder is expected and a file if a file is, and the
    nearest existing folder on its way is a writable folder. Raises OSError naming the output."""
    for p in paths:
        if p is None:
            continue
        folder, p = isinstance(p, Folder), Path(p)
        if p.exists() and p.is_dir() != folder:
            if folder:
                raise NotADirectoryError(f"{p}: cannot write this folder: a file of that name is there")
            raise IsADirectoryError(f"{p}: cannot write this file: a folder of that name is there")
        existing = next(a for a in p.parents if a.exists() or a == a.parent)
        if not existing.is_dir():
            raise NotADirectoryError(f"{p}: cannot write there: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{p}: cannot write there: {existing} is not writable")


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporaries that killed writers of ``target`` left beside it (``atomic_path``'s:
    ``.<stem>.XXXXXXXX.tmp<suffix>`` of a file, ``.<name>.*.tmp`` and ``.<name>.old`` of a ``Folder``,
    and those of the files a ``Folder`` holds, written one by one).

    Only for targets with a single writer (a stage's outputs, a training checkpoint): a concurrent
    writer's temporary would be removed too. Returns the removed paths.
    """
    folder, target = isinstance(target, Folder), Path(target)
    if not target.parent.is_dir():
        return []
    if folder:
        removed = [*target.parent.glob(f".{glob.escape(target.name)}.*.tmp"), target.with_name(f".{target.name}.old")]
        removed = [p for p in removed if p.is_dir()]
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        inside = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?")
        files = [p for p in target.iterdir() if inside.fullmatch(p.name) and p.is_file()] if target.is_dir() else []
        for p in files:
            p.unlink(missing_ok=True)
        return removed + files
    pattern = re.compile(rf"\.{re.escape(target.stem)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(target.suffix)}")
    removed = [p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def write_json(obj, path: str | os.PathLike) -> None:
    """Pretty, key-sorted JSON (stable bytes for dvc metrics)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def json_float(v: float | None, nd: int = 4) -> float | None:
    """A number for a JSON report: rounded to ``nd`` decimals; None for None, NaN and infinities."""
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def write_metrics(summary: dict, path: str | os.PathLike) -> None:
    """A stage's DVC metrics: one flat mapping of stable names (``group.name``) to numbers — what
    ``dvc metrics show`` / ``dvc exp show`` compare. Details go to the stage's report, timings to its
    timings file."""
    bad = [k for k, v in summary.items() if isinstance(v, bool) or not (v is None or isinstance(v, (int, float)))]
    if bad:
        raise TypeError(f"{path}: metrics must be flat numbers, not {', '.join(bad)}")
    write_json(summary, path)


def write_results(result: StageResult | None, metrics_path=None, report_path=None, timings_path=None) -> None:
    """A stage's result files, each where a path is given: the flat metrics (``write_metrics``), the
    detailed report and the seconds taken (JSON, never compared). ``None`` (a stage's process that
    is not the main one) writes nothing."""
    if result is None:
        return
    if report_path:
        write_json(result.report, report_path)
    if metrics_path:
        write_metrics(result.metrics, metrics_path)
    if timings_path:
        write_json(result.timings, timings_path)


def write_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a file object: torch then names the archive's inner folder
    "archive" (given a path it takes the file's name, here the temporary's random one, and the bytes
    would differ on every write)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


def first_line(exc: BaseException) -> str:
    """An exception's type and the first line of its message (torch.load's run to a page of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def read_model_file(path: Path, what: str, kind: str, writer: str, map_location="cpu") -> dict:
    """The ``{"config", "state_dict", ...}`` payload of a model file; errors name the file and what
    writes it (``what``: e.g. "model checkpoint"; ``kind``: what the payload must be)."""
    import torch

    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (run {writer} first)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable {what} ({first_line(exc)})") from None
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path}: not a {kind} (expected keys 'config' and 'state_dict')")
    return payload


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                  schema: pa.Schema | None = None) -> None:
    """Write ``df`` without its index, zstd-compressed, with optional key/value file metadata."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in sorted(metadata.items())})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The key/value metadata of a Parquet file, decoded (pandas' own entry dropped)."""
    md = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if k != b"pandas"}


# --- content hashes ----------------------------------------------------------------------------------
def content_hash(*parts, length: int = 16) -> str:
    """A SHA-256 hex digest (first ``length`` characters) of the full content of ``parts``.

    The one hash of the project (training fingerprints, data signatures). Each part may be a numpy
    array or torch tensor (dtype, shape and every byte), ``bytes``, a ``pathlib.Path`` (the file's
    bytes), a pandas DataFrame (column names and every value), a dataclass (its fields, less those
    ``epipose.params.in_range(hash_omits=v)`` marks while they hold v), or a JSON-like value
    (dict, list, tuple, str, number, bool, None) of these.
    """
    h = hashlib.sha256()
    for part in parts:
        _hash_into(h, part)
    return h.hexdigest()[:length]


def _hash_into(h, x) -> None:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        import torch

        t = x.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(x, np.ndarray):
        h.update(f"ndarray {x.dtype.str} {x.shape}|".encode())
        h.update(np.ascontiguousarray(x).data)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        h.update(b"bytes|")
        h.update(x)
    elif isinstance(x, Path):
        h.update(b"file|")
        with open(x, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(x, pd.DataFrame):
        h.update(f"frame {list(map(str, x.columns))}|".encode())
        h.update(pd.util.hash_pandas_object(x, index=False).to_numpy().data)
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        h.update(f"{type(x).__name__}|".encode())
        _hash_into(h, {f.name: getattr(x, f.name) for f in dataclasses.fields(x)
                       if not ("hash_omits" in f.metadata and getattr(x, f.name) == f.metadata["hash_omits"])})
    elif isinstance(x, dict):
        h.update(f"dict {len(x)}|".encode())
        for k in sorted(x, key=str):
            _hash_into(h, str(k))
            _hash_into(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"list {len(x)}|".encode())
        for v in x:
            _hash_into(h, v)
    else:
        h.update(f"{type(x).__name__} {json.dumps(x, default=str)}|".encode())
