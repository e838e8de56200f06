"""Typed, validated access to params.yaml, the one source of truth for params.

Each stage declares the sections it reads as dataclasses; ``load_section`` checks every key
(missing and unknown keys, types, ``Literal`` choices, ranges from ``field(metadata={"min": ..,
"max": ..})``) and names the offending ``section.key`` in its error. A key missing from
params.yaml is an error, never a silent fallback: the dataclasses' defaults are params.yaml's
values (``tests/test_params.py`` holds them equal) for code that builds a section itself.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ParamError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file not found: {path.resolve()}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: top level must be a mapping of sections")
    return data


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ParamError(f"param {key}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in get_args(tp):
            if alt is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check(value, alt, key)
            except ParamError as exc:
                errors.append(str(exc))
        raise ParamError(errors[0] if len(errors) == 1 else f"param {key}: {value!r} matches none of {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"param {key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        return [_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamError(f"param {key}: expected a mapping, got {type(value).__name__}")
        _, vt = get_args(tp) or (Any, Any)
        return {k: _check(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(f"param {key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"param {key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"param {key}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ParamError(f"param {key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(f"param {key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise TypeError(f"unsupported param type {tp!r} for {key}")


def from_dict(cls: type[T], data: Any, section: str, optional: frozenset[str] | set[str] = frozenset()) -> T:
    """Build dataclass ``cls`` from ``data``, validating every key under the name ``section``; every
    field must be given, except those in ``optional`` (they keep their defaults)."""
    if not isinstance(data, dict):
        raise ParamError(f"param {section}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamError(f"param {section}.{unknown[0]}: unknown key (known: {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name not in data:
            if name not in optional:
                raise ParamError(f"param {key}: missing")
            continue
        value = _check(data[name], hints[name], key)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and value is not None and value < lo:
            raise ParamError(f"param {key}: {value!r} is below the minimum {lo}")
        if hi is not None and value is not None and value > hi:
            raise ParamError(f"param {key}: {value!r} is above the maximum {hi}")
        kwargs[name] = value
    return cls(**kwargs)


_READ_KEYS: set[str] = set()


def _write_trace(script: str | None = None) -> None:
    trace = os.environ.get("EPIPOSE_PARAMS_TRACE")
    if trace and _READ_KEYS:
        script = script or Path(sys.argv[0]).stem
        with open(trace, "a") as f:
            f.writelines(f"{script} {key}\n" for key in sorted(_READ_KEYS))


atexit.register(_write_trace)


# What this process (and the launcher before it) read: (params file, section.key) → the value then. A
# stage compares them with the file when it ends (``changed_since_read``): a `dvc exp run -S` refused
# by DVC's lock while `dvc repro` runs has already written its value into params.yaml, and DVC would
# record the new value beside outputs made with the old one.
_READ_VALUES: dict[tuple[str, str], Any] = {}
_ABSENT = "<absent>"
READ_VALUES_ENV = "EPIPOSE_PARAMS_READ"


def _record(path: str | Path, section: str, values: dict, names: list[str]) -> None:
    where = str(Path(path).resolve())
    for name in names:
        _READ_VALUES[(where, f"{section}.{name}")] = values.get(name, _ABSENT) if isinstance(values, dict) else _ABSENT


def read_values_env() -> str:
    """What was read so far, for the environment of the stage a launcher starts (``adopt_read_values``)."""
    return json.dumps([[f, k, v] for (f, k), v in sorted(_READ_VALUES.items())])


def adopt_read_values(environ: dict | None = None) -> None:
    """A stage starts: forget earlier reads (of another stage run in this process) and take over what
    the launcher read on its behalf (``READ_VALUES_ENV``)."""
    _READ_VALUES.clear()
    for f, k, v in json.loads((environ if environ is not None else os.environ).get(READ_VALUES_ENV) or "[]"):
        _READ_VALUES.setdefault((f, k), v)


def changed_since_read() -> list[tuple[str, str, Any, Any]]:
    """The keys read whose value in their params file is not the value read: [(file, key, then, now)]."""
    changed, files = [], {}
    for (f, key), then in sorted(_READ_VALUES.items()):
        if f not in files:
            try:
                files[f] = read_params(f)
            except (OSError, ParamError):
                files[f] = {}
        section, _, name = key.partition(".")
        values = files[f].get(section)
        now = values.get(name, _ABSENT) if isinstance(values, dict) else _ABSENT
        if now != then:
            changed.append((f, key, then, now))
    return changed


def flush_trace(script: str) -> None:
    """Record the keys read so far as ``script``'s and forget them: a launcher about to replace itself with
    the stage (``os.exec*``: no atexit) reads params on the stage's behalf."""
    _write_trace(script)
    _READ_KEYS.clear()


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Read ``section`` of params.yaml into the dataclass ``cls``.

    Every key read is recorded; with ``EPIPOSE_PARAMS_TRACE=<file>`` set, a stage appends
    ``<script> <section.key>`` lines to that file at exit (the pipeline tests compare them
    with dvc.yaml's ``params:`` lists).
    """
    data = read_params(path)
    if section not in data:
        raise ParamError(f"param {section}: section missing from {path}")
    _READ_KEYS.update(param_keys(cls, section))
    _record(path, section, data[section], [f.name for f in dataclasses.fields(cls)])
    return from_dict(cls, data[section], section)


def load_value(section: str, key: str, tp: type[T] = str, path: str | Path = "params.yaml") -> T:
    """One validated value, e.g. ``load_value("data", "h36m_root")``."""
    data = read_params(path)
    if section not in data or not isinstance(data[section], dict) or key not in data[section]:
        raise ParamError(f"param {section}.{key}: missing from {path}")
    _READ_KEYS.add(f"{section}.{key}")
    _record(path, section, data[section], [key])
    return _check(data[section][key], tp, f"{section}.{key}")


def param_keys(cls: type, section: str) -> list[str]:
    """Every dotted key a dataclass section reads (for checking dvc.yaml's params lists)."""
    return [f"{section}.{f.name}" for f in dataclasses.fields(cls)]


_KEEP = object()


def in_range(lo: float | None = None, hi: float | None = None, hash_omits: Any = _KEEP, **kw) -> Any:
    """``dataclasses.field`` with a validated range. ``hash_omits``: ``epipose.io.content_hash`` leaves
    the field out while it holds this value — the one that trains as before the param existed — so a new
    param keeps the fingerprints (training checkpoints) of the sections it was added to at that value, and
    any other value, a changed default included, is a new fingerprint (never a stale checkpoint)."""
    metadata = {"min": lo, "max": hi, **({"hash_omits": hash_omits} if hash_omits is not _KEEP else {})}
    return dataclasses.field(metadata=metadata, **kw)


def redefault(base: type, name: str, value: Any) -> Any:
    """Field ``name`` of dataclass ``base`` (its validated range) with another default: a section
    that extends a shared one (``epipose.train.TrainParams``) states its own params.yaml values."""
    f = {f.name: f for f in dataclasses.fields(base)}[name]
    if isinstance(value, list):
        return dataclasses.field(default_factory=lambda: list(value), metadata=f.metadata)
    return dataclasses.field(default=value, metadata=f.metadata)


def check_machines(nnodes: int, node_rank: int | str, endpoint: str) -> None:
    """Section ``compute``'s machine keys (``compute.ComputeParams``; read alone by the torch-free launcher):
    a host:port rendezvous when there are several machines, a node rank that is ``auto`` or one of them."""
    host, _, port = endpoint.rpartition(":")
    if nnodes > 1 and (not host or not port.isdigit()):
        raise ParamError(f"param compute.rdzv_endpoint: {endpoint!r} is not host:port (the rendezvous every one "
                         f"of compute.nnodes {nnodes} machines reaches)")
    if node_rank != "auto" and not 0 <= int(node_rank) < nnodes:
        raise ParamError(f"param compute.node_rank: {node_rank!r} is not auto or 0..{nnodes - 1}")
