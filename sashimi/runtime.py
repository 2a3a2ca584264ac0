"""Process-level settings for sashimi's own entry points (the ``sashimi`` command and the benchmarks).

Library code never calls this: importing sashimi changes nothing in the process.

``tune_malloc()``: glibc hands allocations above a dynamic threshold (128 KB to 32 MB) to mmap and returns
them to the OS on free, and trims the top of the heap, so a training step that allocates and frees the same
multi-megabyte activations again and again pays for fresh zeroed pages every time (~35,000 page faults per
forward+backward of the sc09 model). With the threshold pinned at 32 MB and trimming off, freed blocks are
reused: ~7,000 faults, and 2-4% less time per step on the machine of benchmarks/RESULTS.md. This is the same
cure as running with jemalloc or tcmalloc, without the preload. ``SASHIMI_MALLOC_TUNE=0`` skips it; non-glibc
systems are left alone. Memory freed by the process is kept for reuse instead of returned to the OS.

``usable_cpus()`` only asks: how many CPUs this process may run on (library code uses it to size thread pools).
``bf16_matmul_fast()`` only asks too: whether bfloat16 matrix products have vector units here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def tune_malloc() -> bool:
    """Pin glibc's mmap threshold and stop heap trimming (see the module docstring); True if applied."""
    if os.environ.get("SASHIMI_MALLOC_TUNE", "1").strip() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (``platform`` on other systems), for benchmark rows and cards."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def bf16_matmul_fast() -> bool:
    """Whether PyTorch's CPU matrix products in bfloat16 run on units made for them (oneDNN's bf16 kernels:
    AVX-512 or AMX on x86, the BF16 extension on ARM). Without them they are emulated: on a Zen 4 limited to AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``) a bf16 Linear layer ran 4.5x slower than float32 and bf16-mixed training of the
    digits recipe 10x slower (benchmarks/RESULTS.md). True where torch cannot say."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return True if check is None else bool(check())
    except RuntimeError:
        return True
