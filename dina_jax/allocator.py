"""glibc malloc settings that keep XLA:CPU's per-step buffers out of fresh pages.

XLA:CPU allocates a compiled program's temporaries with ``malloc`` on every call, from the
threads of its pool. With glibc's defaults each pool thread gets its own arena, whose heaps
cannot hold a block over 64 MB, and blocks above the (dynamic, at most 32 MB) mmap threshold are
``mmap``-ed and unmapped again on ``free``: every step then faults its temporaries in page by
page. The demo's train step took ~86,000 minor page faults per step that way (0.18 s of system
time in a ~1 s step); with one arena and thresholds far above any buffer it takes none
(benchmarks/README.md, "The loop and the compilation cache").

:func:`tune` sets, through ``mallopt`` and before JAX starts its threads, one arena
(``M_ARENA_MAX``), an mmap threshold and a trim threshold of 1 GiB (freed memory is kept for the
next step instead of being returned to the OS). ``import dina_jax`` calls it. It does nothing on
a libc other than glibc, for a setting whose ``MALLOC_*`` environment variable the user has set
(``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), or when
``DINA_JAX_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers (glibc's malloc.h) and the environment variable of each.
_SETTINGS = (
    ("MALLOC_ARENA_MAX", -8, 1),  # M_ARENA_MAX
    ("MALLOC_MMAP_THRESHOLD_", -3, 1 << 30),  # M_MMAP_THRESHOLD
    ("MALLOC_TRIM_THRESHOLD_", -1, 1 << 30),  # M_TRIM_THRESHOLD
)
OPT_OUT = "DINA_JAX_MALLOC"

_applied: dict[str, int] | None = None


def tune() -> dict[str, int]:
    """Applies the settings above once per process; returns those applied ({} if none)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = {}
    if os.environ.get(OPT_OUT, "") == "default":
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl, macOS: no mallopt)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _applied
    for variable, param, value in _SETTINGS:
        if variable not in os.environ and mallopt(param, value) == 1:
            _applied[variable] = value
    return _applied
