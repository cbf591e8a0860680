"""CPU performance settings: the allocator, measured on this project's 2-core machines.

glibc's malloc returns a large freed block (a logits tensor, an activation) to the kernel at once
(``mmap``/``munmap`` above a threshold, heap trimming below it), so the next training step's
allocation of the same size page-faults all of it in again, zero-filled. :func:`keep_freed_memory`
raises both thresholds so freed memory is reused. Measured (``benchmarks/cpu_allocator.py``: the
tiny profile's pretraining stage, fresh processes alternating, medians of 3): kernel time per 3
steps 1.27 s -> 0.08 s, minor page faults 686k -> 41k, a step x1.10 faster, the same losses, about
1% more resident memory. Before trl's per-step entropy over the full logits was cut
(``StageConfig.token_metrics``), the same change took two pretraining runs side by side from
7.6 s to 4.9 s a step (kernel time 40% -> 5%; observed before and after a restart, not side by
side). It changes where memory comes from, never a number computed.
``SPREC_MALLOC=0`` leaves the allocator alone. Not glibc (macOS, Windows, musl): nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_THRESHOLD = 2**30  # 1 GiB: every tensor of the tiny and small profiles stays in the heap
_tuned: bool | None = None


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has tuned this process's allocator (a record, no change)."""
    return bool(_tuned)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); True if it did. Once per process."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if os.environ.get("SPREC_MALLOC", "1").strip() != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return _tuned
            _tuned = bool(mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_THRESHOLD))) and bool(
                mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_THRESHOLD)))
    return _tuned


# The ISA extensions that decide which float kernels MKL and oneDNN run (and so the rounding of a
# sum). torch's capability string says AVX512 for an AMD EPYC and for a CPU with AMX alike, and two
# AVX512 machines (the 2026-12-04 one had AMX) pretrained Steam's tiny stage with the same code,
# packages, seed and one thread each to losses that part at step 30 (results/runs/Steam-tiny:
# sft-seed2 against sprec-nosft-seed2, whose final losses are 0.8040 and 0.7913).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def parse_cpuinfo(text: str) -> dict:
    """The first processor's ``vendor`` and ``model`` and the :data:`KERNEL_FLAGS` it has (``isa``),
    from ``/proc/cpuinfo``'s text; empty strings and no flags for what the text does not say."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:  # a blank line ends the first processor's block
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("vendor_id", "model name", "flags"):
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"vendor": fields.get("vendor_id", ""), "model": fields.get("model name", ""),
            "isa": [f for f in KERNEL_FLAGS if f in flags]}


def cpu_identity() -> dict:
    """:func:`parse_cpuinfo` of this machine (empty fields where there is no ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)
