"""Generation speed: samples/s of recurrent sampling (step + sampling) for the sc09-preset model, float32.

    python benchmarks/generate.py                    # batch 1 and 16: native and compiled fast step, references
    python benchmarks/generate.py --batch 1 16 --backends native --march native x86-64-v3   # the AVX2 kernels too
    python benchmarks/generate.py --batch 1 2 4 8 16 32 64 --reference-steps 0   # native against inductor
    python benchmarks/generate.py --batch 1 --backends native --depths
    python benchmarks/generate.py --batch 1 --profile
    python benchmarks/generate.py --batch 1 16 --backends native --compare-chunked 8
    python benchmarks/generate.py --batch 8 16 --backends native --reference-steps 0 --compare-split 10
    python benchmarks/generate.py --batch 16 --backends native --reference-steps 0 --compare-balance 12
    python benchmarks/generate.py --device cuda     # GPU: batch 1, 64 and 1024, with and without CUDA graphs

Random weights (speed does not depend on them). ``--march`` builds the native step for other vector units
too (``x86-64-v3``: the AVX2 / FMA kernels; ``x86-64``: SSE2), each its own row, labelled with the ISA the
kernels were built for. Each row also shows the batch's memory-roofline ceiling (``roofline.py``: the read
bandwidth of this machine for the model's working set, times the batch, over the parameter bytes a sample
streams at batch 1): a step that reaches it is bound by streaming the weights. Each row times ``--steps`` calls of ``step(token, u)`` after a
warm-up, best of ``--repeat``; "samples/s" counts every sequence of the batch. "native, chunk" times the same
steps as one ``steps(token, u)`` call (the loop in C++, as ``Sampler`` runs it). The official implementation's
figures (its recurrent generation of the same model measured on this machine, per the issue) are printed
beside ours. ``--depths`` prints the native step's median time per step depth (how many pooled tiers run).
``--compare-chunked R`` times R rounds of ``steps()`` alternating the native step's chunked recurrence on and
off in one process (on this noisy VM, the only fair A/B); ``--compare-split R`` alternates the row split of the
outer levels off / over tier 0 / over tiers 0 and 1 / over every level the same way; ``--compare-balance R``
its row shares kept even / balanced between the threads (``NativeStep.balance``).

``--device cuda`` times the torch fast step on the GPU instead (batch 1, 64 and 1024 unless ``--batch`` is
given): compiled (inductor) and eager, each with CUDA graphs (``steps()`` in chunks: one replay per pooling
period; and per-step replays) and without, synchronising before the clock stops.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, machine  # noqa: E402
from roofline import read_bandwidth, tiers  # noqa: E402

import sashimi  # noqa: E402
from sashimi.generation.fast import FastLM  # noqa: E402
from sashimi.generation.backends import ReferenceStep  # noqa: E402
from sashimi.generation.sampling import SamplingSettings  # noqa: E402

OFFICIAL = {1: (227, 435), 16: (1463, 3193)}  # (dense step, diagonal step) samples/s
TARGET = {1: 16000, 16: 50000}
GPU_BATCHES = [1, 64, 1024]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rate(step, batch: int, steps: int, repeat: int, device: str = "cpu") -> float:
    """Best samples/s of ``steps`` calls of step(token, u) -> (token, logp, logits)."""
    token, best = torch.zeros(batch, dtype=torch.long, device=device), 0.0
    u = torch.rand(steps, batch, device=device)
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        for k in range(steps):
            token, _, _ = step(token, u[k])
        _sync(device)
        best = max(best, steps * batch / (time.perf_counter() - t0))
    return best


def chunk_rate(fast: FastLM, batch: int, steps: int, repeat: int, device: str = "cpu") -> float:
    """Best samples/s of one ``steps(token, u)`` call over ``steps`` steps."""
    token, best = torch.zeros(batch, dtype=torch.long, device=device), 0.0
    u = torch.rand(steps, batch, device=device)
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        token = fast.steps(token, u)[0][-1]
        _sync(device)
        best = max(best, steps * batch / (time.perf_counter() - t0))
    return best


def fmt(x: float) -> str:
    return "-" if x != x else f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 16; 1 64 1024 on a GPU)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=4096, help="timed steps per repeat (a multiple of 16)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the inductor and eager rows)")
    ap.add_argument("--native-threads", type=int,
                    help="threads of the native step (default: its own, 2 where there are 2+ CPUs)")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--march", nargs="+", default=["native"],
                    help="-march builds of the native step to time (native x86-64-v3 x86-64 armv8-a ...)")
    ap.add_argument("--backends", nargs="+", default=["native", "inductor"], choices=("native", "inductor"),
                    help="fast-step backends to time (the eager rows are --reference-steps)")
    ap.add_argument("--reference-steps", type=int, default=32, help="steps for the slow eager rows (0: skip)")
    ap.add_argument("--depths", action="store_true", help="median native step time per step depth")
    ap.add_argument("--profile", action="store_true", help="print where the time of the compiled step goes")
    ap.add_argument("--compare-chunked", type=int, default=0, metavar="ROUNDS",
                    help="alternate the native chunked recurrence on / off for ROUNDS rounds of steps()")
    ap.add_argument("--compare-split", type=int, default=0, metavar="ROUNDS",
                    help="alternate the native row split off / 1 / 2 / all levels for ROUNDS rounds of steps()")
    ap.add_argument("--compare-balance", type=int, default=0, metavar="ROUNDS",
                    help="alternate even / balanced row shares of the native row split for ROUNDS rounds")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset(args.preset)).eval()
    settings = SamplingSettings(top_p=args.top_p)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {args.preset}, float32, {machine()}; CPU flags: {cpu_flags()}; load average {load:.2f} at start")
    if args.device == "cuda":
        return gpu_table(model.cuda(), settings, args.batch or GPU_BATCHES, args.steps, args.repeat)
    ceiling = roofline(model)
    rows = []
    for B in args.batch or [1, 16]:
        row = dict(B=B, native={}, inductor=float("nan"), compiled=True)
        with torch.no_grad():
            if "native" in args.backends:
                for march in args.march:
                    native_rows(model, settings, B, march, args, row)
            if "inductor" in args.backends:
                t0 = time.perf_counter()
                fast = FastLM(model, B, settings, backend="inductor")
                build = time.perf_counter() - t0
                rate(fast.step, B, 64, 1)
                row["inductor"], row["compiled"] = rate(fast.step, B, args.steps, args.repeat), fast.compiled
                print(f"batch {B}: inductor {row['inductor']:,.0f} samples/s (build + compile {build:.0f} s)",
                      flush=True)
                if args.profile:
                    profile(fast, B)
            row["eager"] = rate(FastLM(model, B, settings, backend="eager").step, B, args.reference_steps, 1) \
                if args.reference_steps else float("nan")
            row["ref"] = rate(ReferenceStep(model, B, settings).step, B, args.reference_steps, 1) \
                if args.reference_steps else float("nan")
        rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average {load:.2f} at the end")
    print("\n| batch | native build (ISA) | native step | native, chunk | fast step, compiled | fast step, eager | "
          "`SaShiMiLM.step` (reference) | official dense | official diagonal | roofline ceiling | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        off = OFFICIAL.get(r["B"], (nan, nan))
        natives = r["native"] or {"-": ("-", nan, nan)}
        for march, (isa, step, chunk) in natives.items():
            print(f"| {r['B']} | {march} ({isa}) | {fmt(step)} | {fmt(chunk)} | "
                  f"{fmt(r['inductor'])}{'' if r['compiled'] else ' (compile failed: eager)'} | {fmt(r['eager'])} | "
                  f"{fmt(r['ref'])} | {fmt(off[0])} | {fmt(off[1])} | {fmt(ceiling * r['B'])} | "
                  f"{fmt(TARGET.get(r['B'], nan))} |")


def roofline(model) -> float:
    """samples/s at batch 1 if the step were bound by streaming its parameters at this machine's read bandwidth
    for the working set (``roofline.py``); batch B shares each read between B rows."""
    with torch.no_grad():
        parts = tiers(FastLM(model, 1, backend="eager"), 16)
    held = sum(h for _, _, h, _ in parts)
    per_sample = sum(r / every for _, r, _, every in parts)
    threads = torch.get_num_threads()
    bandwidth = read_bandwidth(int(held), 2)
    torch.set_num_threads(threads)
    print(f"# roofline: {held / 1e6:.1f} MB working set, {per_sample / 1e6:.2f} MB of parameters per sample at "
          f"batch 1, read at {bandwidth / 1e9:.0f} GB/s (2 threads): {bandwidth / per_sample:,.0f} samples/s at "
          "batch 1", flush=True)
    return bandwidth / per_sample


def native_rows(model, settings, B: int, march: str, args, row: dict) -> None:
    """Time the native step built with -march=march at batch B into row["native"][march]."""
    t0 = time.perf_counter()
    fast = FastLM(model, B, settings, backend="native", march=march)
    build = time.perf_counter() - t0
    if fast.backend != "native":
        return
    if args.native_threads:
        fast.threads = args.native_threads
    rate(fast.step, B, 64, 1)  # warm-up
    step = rate(fast.step, B, args.steps, args.repeat)
    chunk = chunk_rate(fast, B, args.steps, args.repeat)
    row["native"][march] = (fast._native.isa, step, chunk)
    print(f"batch {B}: native ({march}: {fast._native.isa}) {step:,.0f} samples/s, in chunks {chunk:,.0f} "
          f"({fast.threads} threads; set-up {build:.1f} s)", flush=True)
    if args.depths:
        depths(fast, B)
    if args.compare_chunked:
        alternate(fast, B, args.steps, args.compare_chunked, "chunked recurrence",
                  {"off": dict(chunked=False), "on": dict(chunked=True)})
    if args.compare_split:
        off = dict(rows_from=B + 1, row_levels=fast._native.row_levels)
        alternate(fast, B, args.steps, args.compare_split, "row split",
                  {"off": off, "tier 0": dict(rows_from=1, row_levels=1),
                   "tiers 0-1": dict(rows_from=1, row_levels=2), "all levels": dict(rows_from=1, row_levels=64)})
    if args.compare_balance:
        alternate(fast, B, args.steps, args.compare_balance, "row shares",
                  {"even": dict(balance=False), "balanced": dict(balance=True)})


def gpu_table(model, settings: SamplingSettings, batches: list[int], steps: int, repeat: int) -> None:
    """samples/s of the torch fast step on the GPU, with and without CUDA graphs."""
    variants = {"compiled + graphs": dict(backend="inductor", cuda_graphs=True),
                "compiled": dict(backend="inductor", cuda_graphs=False),
                "eager + graphs": dict(backend="eager", cuda_graphs=True),
                "eager": dict(backend="eager", cuda_graphs=False)}
    rows = []
    for B in batches:
        row = {"B": B}
        with torch.no_grad():
            for name, kw in variants.items():
                t0 = time.perf_counter()
                fast = FastLM(model, B, settings, **kw)
                build = time.perf_counter() - t0
                if (kw["cuda_graphs"] and not fast.cuda_graphs) or fast.backend != kw["backend"]:
                    print(f"batch {B}: {name}: fell back to {fast.backend}, graphs {fast.cuda_graphs}", flush=True)
                rate(fast.step, B, 64, 1, "cuda")  # warm-up
                row[name] = rate(fast.step, B, steps, repeat, "cuda")
                row[name + ", chunk"] = chunk_rate(fast, B, steps, repeat, "cuda")
                print(f"batch {B}: {name}: {row[name]:,.0f} samples/s, in chunks {row[name + ', chunk']:,.0f} "
                      f"(set-up {build:.1f} s)", flush=True)
        rows.append(row)
    names = [n + c for n in variants for c in (", chunk", "")]
    print("\n| batch | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['B']} | " + " | ".join(fmt(r[n]) for n in names) + " |")


def depths(fast: FastLM, B: int, steps: int = 2048) -> None:
    """Median time of a native step by depth: 0 = outer tier only, d = the d pooled tiers below also run."""
    token, u, times = torch.zeros(B, dtype=torch.long), torch.rand(steps, B), {}
    for k in range(steps):
        d = fast.depth(fast.t)
        t0 = time.perf_counter()
        token, _, _ = fast.step(token, u[k])
        times.setdefault(d, []).append(time.perf_counter() - t0)
    period = fast.period
    for d, ts in sorted(times.items()):
        share = len(ts) / steps
        med = statistics.median(ts)
        print(f"  depth {d}: median {med * 1e6:,.0f} us per step, {share * period:.0f} of every {period} steps, "
              f"{med * share * 1e6:,.0f} us per step on average")


def alternate(fast: FastLM, B: int, steps: int, rounds: int, what: str, variants: dict[str, dict]) -> None:
    """samples/s of steps() under each variant (native step settings), alternating round by round; the settings
    in force before are restored."""
    before = {k: getattr(fast._native, k) for v in variants.values() for k in v}
    rates = {label: [] for label in variants}
    for _ in range(rounds):
        for label, settings in variants.items():
            for k, v in settings.items():
                setattr(fast._native, k, v)
            rates[label].append(chunk_rate(fast, B, steps, 1))
    for k, v in before.items():
        setattr(fast._native, k, v)
    for label, v in rates.items():
        v = sorted(v)
        print(f"  batch {B}, {what} {label}: best {v[-1]:,.0f}, median {statistics.median(v):,.0f}, "
              f"worst {v[0]:,.0f} samples/s over {rounds} rounds")


def profile(fast: FastLM, B: int) -> None:
    from torch.profiler import profile as torch_profile

    with torch.no_grad(), torch_profile() as prof:
        rate(fast.step, B, 256, 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
