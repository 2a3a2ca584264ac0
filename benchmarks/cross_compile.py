"""Cross-compile the native extensions for another CPU (default: 64-bit ARM) to check that the port builds.

    pip install ziglang        # a self-contained clang for every target; not a dependency of sashimi
    python benchmarks/cross_compile.py [--target aarch64-linux-gnu] [--out /tmp/cross]

Compiles sashimi/generation/csrc/fast_step.cpp and sashimi/ssm/csrc/kernel_ops.cpp to object files for the
target (the torch headers are architecture-independent), and checks which blocking simd.h chooses there. Nothing
runs on the target: that needs the hardware (or an emulator).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "sashimi/generation/csrc/fast_step.cpp", ROOT / "sashimi/ssm/csrc/kernel_ops.cpp"]
ISA_PROBE = """#include "simd.h"
#include <cstdio>
static_assert(VW * NREG > 0, "simd.h chose no blocking");
template <int W, int R> struct Chosen;
Chosen<VW, NREG> shown;  // incomplete type: the error message names VW and NREG
"""


def zig(target: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ziglang", "c++", "-target", target, "-std=c++17", *args],
                          capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="aarch64-linux-gnu")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "sashimi-cross")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    probe = args.out / "isa_probe.cpp"
    probe.write_text(ISA_PROBE)
    r = zig(args.target, "-fsyntax-only", f"-I{ROOT / 'sashimi/generation/csrc'}", str(probe))
    chosen = next((ln.split("'")[1] for ln in r.stderr.splitlines() if "Chosen<" in ln and "'" in ln), "?")
    print(f"target {args.target}: simd.h blocking {chosen} (VW floats per vector, NREG registers)")
    failed = 0
    for src in SOURCES:
        obj = args.out / f"{src.stem}.o"
        t0 = time.perf_counter()
        r = zig(args.target, "-O3", "-w", "-c", "-o", str(obj), *includes, "-DTORCH_EXTENSION_NAME=cross", str(src))
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        ok = r.returncode == 0 and obj.is_file()
        failed += not ok
        print(f"{src.relative_to(ROOT)}: {'ok' if ok else 'FAILED'} ({time.perf_counter() - t0:.0f} s)"
              + ("".join(f"\n  {e}" for e in errors[:10]) if not ok else f", {obj.stat().st_size >> 10} KiB object"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
