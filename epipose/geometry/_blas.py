"""Run a block with single-threaded OpenBLAS (numpy's and scipy's bundled copies).

``least_squares``' LSMR solver makes thousands of BLAS calls on long vectors; multithreaded
OpenBLAS on a busy machine turns each into a spin-wait (measured: 52 s instead of 5 s for one
bundle adjustment on 2 shared cores). This is what threadpoolctl does, without the dependency:
find the loaded OpenBLAS libraries and call their ``*_set_num_threads``. Anything unexpected
(another BLAS, another OS) makes it a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


def _libraries() -> list[tuple]:
    found = []
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({p for p in (line.split()[-1] for line in fh if line.strip())
                            if "openblas" in p.rsplit("/", 1)[-1].lower() and ".so" in p})
    except OSError:
        return found
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, g) for g in _GETTERS if hasattr(lib, g)), None)
        if setter is not None and getter is not None:
            found.append((setter, getter))
    return found


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    libs = _libraries()
    before = []
    for setter, getter in libs:
        try:
            before.append((setter, int(getter())))
            setter(1)
        except Exception:  # pragma: no cover - exotic BLAS builds
            pass
    try:
        yield
    finally:
        for setter, n in before:
            try:
                setter(n)
            except Exception:  # pragma: no cover
                pass
