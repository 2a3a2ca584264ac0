"""Shared benchmark helpers: best-of-N timing, peak memory of a call, machine description."""
from __future__ import annotations

import os
import resource
import statistics
import time

import torch

from sashimi.runtime import cpu_name, tune_malloc

# The benchmarks run with the process settings of the `sashimi` command (sashimi/runtime.py).
MALLOC_TUNED = tune_malloc()


def machine() -> str:
    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    malloc = "glibc malloc tuned (sashimi.runtime)" if MALLOC_TUNED else "default malloc"
    return (f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{malloc}")


def cpu_flags() -> str:
    """The vector-unit flags of this CPU that decide which native kernels run (lscpu's Flags, filtered)."""
    wanted = ("avx512f", "avx512bw", "avx512_bf16", "avx2", "fma", "sse4_2", "asimd", "sve", "bf16")
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return "flags unknown"
    have = set(line.split(":", 1)[1].split())
    return " ".join(w for w in wanted if w in have) or "no SIMD flags listed"


def timeit(fn, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> tuple[float, float]:
    """(best, median) wall seconds of fn() over ``repeat`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def peak_extra_bytes(fn, device: str = "cpu") -> int:
    """Peak memory added by fn() above what was in use before it.

    CPU: the process's peak resident set size (ru_maxrss), so call this first thing in a fresh process
    (each benchmark case runs in its own subprocess). GPU: torch's peak allocated bytes.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _rss_now()
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
