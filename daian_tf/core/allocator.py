"""Freed tensor memory stays in the process (glibc's malloc), instead of going back to
the OS and being faulted in again on the next call.

TensorFlow allocates its CPU tensors with `malloc`. glibc serves an allocation at or
above its mmap threshold with a fresh `mmap` and unmaps it when it is freed, and it
returns the free top of a heap to the OS once it exceeds the trim threshold. Both
thresholds start at 128 KiB and adapt upwards only to sizes that were freed before, per
process, so a server whose tensors change size with every request (`rank` with N
candidates: the pooling's first layer is N × 12.8 KB) keeps mapping fresh pages, and
each first touch of a page is a page fault in the kernel. `bench/bench_allocator.py` on
the quick start's `rank` (in process, medians of 3 rounds of 100 calls):

| candidates | minor faults a call, glibc default | with `keep_freed_memory` |
|---:|---:|---:|
| 200 | 449 (2.0 ms of system CPU, p50 6.7 ms) | 3.7 (0.8 ms, p50 5.3 ms) |
| 500 | 1,693 (4.8 ms, p50 13.2 ms) | 12 (1.2 ms, p50 10.2 ms) |

`keep_freed_memory()` sets `M_MMAP_THRESHOLD` to 32 MiB (glibc's largest; setting it
also stops the adaptation) and `M_TRIM_THRESHOLD` to 1 GiB with `mallopt`, for this
process, at run time. The cost is memory: the process keeps what it freed (up to its
peak) for its next allocations, as tcmalloc or jemalloc would. Tensors above 32 MiB are
still mapped and unmapped per allocation (training at batch 1024 has some; `daian
train` measured the same time and faults with and without: README "Memory").

`daian` (every command) and the gRPC server (`serving.server.serve`) call it at start.
`DAIAN_KEEP_FREED_MEMORY=0` turns it off. Elsewhere than glibc (macOS, musl) it does
nothing. Child processes (Beam's worker processes, a Kubeflow component's container)
are not covered by a call here: glibc reads the same settings from
`GLIBC_TUNABLES` at start (`GLIBC_TUNABLES_VALUE`, set in the Dockerfile).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Dict, Optional

ENV_SWITCH = "DAIAN_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the same settings for a process glibc starts (the environment of a container)
GLIBC_TUNABLES_VALUE = (f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:"
                        f"glibc.malloc.trim_threshold={TRIM_THRESHOLD}")

_applied: Optional[Dict[str, int]] = None


def keep_freed_memory() -> Optional[Dict[str, int]]:
    """Sets glibc's mmap and trim thresholds for this process (module docstring).

    Returns:
        The settings now in force (`{"mmap_threshold": ..., "trim_threshold": ...}`),
        or None where nothing was set: `DAIAN_KEEP_FREED_MEMORY=0`, or the C library
        is not glibc. Calling it again returns the same without calling glibc again.

    Raises:
        RuntimeError: glibc refused a setting (`mallopt` returned 0).
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)  # the C library this process runs on
    for name, number, value in (("mmap_threshold", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                ("trim_threshold", _M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(number, value) != 1:
            raise RuntimeError(f"glibc's mallopt refused M_{name.upper()}={value}")
    _applied = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    return dict(_applied)
