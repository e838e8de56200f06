"""Atomic, deterministic file writers: every output is written beside its target and renamed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


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


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporaries that killed writers of file ``target`` left beside it.

    Only for targets with a single writer (e.g. a training checkpoint): a concurrent writer's
    temporary would be removed too. Returns the removed paths.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.stem)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(target.suffix)}")
    removed = [p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def write_json(obj, path: str | os.PathLike) -> None:
    """Pretty, key-sorted JSON (stable bytes for dvc metrics)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a file object: torch then names the archive's inner folder
    "archive" (given a path it takes the file's name, here the temporary's random one, and the bytes
    would differ on every write)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


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
