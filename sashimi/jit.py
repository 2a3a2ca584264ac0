"""Optional C++ extensions, JIT-built once per machine with the system compiler.

Each ``Extension`` is one C++ source built on first use (``torch.utils.cpp_extension.load``, ninja,
``-O3 -march=native``) into ``$SASHIMI_CACHE/torch_extensions`` or ``~/.cache/sashimi/torch_extensions``, under a
folder named after the Python and torch versions and the CPU, so a build made for one machine is never loaded
on another. Within it each build has a folder named after the extension and a hash of its source (with the
headers beside it), its flags and the torch installation it compiles against (ninja rebuilds whenever a path
in its commands changes), holding a copy of the sources that it is built from. Checkouts of the same source
share one build; other versions or environments keep theirs side by side instead of rebuilding over each
other. Later processes load the cached build in well under a second (ninja finds it up to date). Loading is
serialised by a lock in the build folder; where that folder cannot be written (a shared or read-only cache,
so no lock can be taken), a finished build in it is imported as it is, writing nothing. A build is finished
when its stamp (``{name}.so.done``, written after it imported: the library's size and mtime) matches the
library: one half-written by a killed build would crash the process that imports it. A failure is remembered,
so a process tries to build each extension only once. Every extension has a pure-PyTorch equivalent that its callers fall back to, so
nothing here is required: without a compiler, sashimi still works.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import re
import sys
import sysconfig
import threading
import time
from pathlib import Path

import torch

CFLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast"]
X86 = platform.machine().lower() in ("x86_64", "amd64")
if X86:
    CFLAGS.append("-mprefer-vector-width=512")  # gcc defaults to 256-bit vectors on AVX-512 machines
STALE_LOCK_S = 600  # a build lock older than this was left by a killed build


class NativeUnavailable(RuntimeError):
    """A native extension could not be built or loaded (no compiler, no ninja, a compile error, ...)."""


def _cpu_tag() -> str:
    """A short hash of what -march=native compiles for: the CPU model and its feature flags."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.strip() == "":
                    break  # the first CPU is enough
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def build_directory() -> Path:
    root = os.environ.get("SASHIMI_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "sashimi"
    torch_tag = torch.__version__.replace("+", "_")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch_tag}_{_cpu_tag()}"
    return base / "torch_extensions" / tag


def _stamp(library: Path) -> str:
    st = library.stat()
    return f"{st.st_size} {st.st_mtime_ns}\n"


def _finished(library: Path) -> bool:
    """Whether ``library`` is the one a completed build wrote (its stamp matches): a library half-written by a
    killed build, or being rewritten by a running one, is not (importing it could crash the process)."""
    try:
        return (library.parent / f"{library.name}.done").read_text() == _stamp(library)
    except OSError:
        return False


def _mark_finished(library: Path) -> None:
    """Stamp a library that was just built and imported (size and mtime), for ``_finished``."""
    done = library.parent / f"{library.name}.done"
    tmp = done.with_name(f"{done.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_stamp(library))
        os.replace(tmp, done)
    except OSError:  # a cache we may not write to: later processes take the locked path again
        tmp.unlink(missing_ok=True)


class Extension:
    """One C++ source, built and loaded on first ``load()``.

    ``what`` names it in error messages; ``openmp`` compiles and links with OpenMP (for ``at::parallel_for``).
    With the pip wheels of torch for Linux, whose bundled runtime is named libgomp.so.1, the extension binds to
    that same already-loaded runtime and honours ``torch.set_num_threads``; a torch build with another OpenMP
    runtime (libomp, a renamed libgomp) would load a second one.
    """

    def __init__(self, name: str, source: Path, what: str, *, openmp: bool = False, march: str = "native"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", march):
            raise ValueError(f"march must be a -march= value such as 'native' or 'x86-64-v3', got {march!r}")
        self.name, self.source, self.what, self.openmp, self.march = name, Path(source), what, openmp, march
        self._lock = threading.Lock()
        self._module = None
        self._error: Exception | None = None

    def _omp(self) -> list[str]:
        return ["-fopenmp"] if self.openmp else []

    def _flags(self) -> list[str]:
        return [f"-march={self.march}"] + CFLAGS + self._omp()

    def _files(self) -> list[Path]:
        """The source and the headers beside it, which it may include."""
        headers = sorted(p for p in self.source.parent.iterdir() if p.suffix in (".h", ".hpp"))
        return [self.source] + headers

    def _build_folder(self) -> Path:
        """This machine's build folder for the current sources and flags."""
        digest = hashlib.sha1(" ".join(self._flags() + [torch.__file__, sysconfig.get_paths()["include"]]).encode())
        for path in self._files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return build_directory() / f"{self.name}-{digest.hexdigest()[:12]}"

    def _build_or_import(self):
        """Build under the lock (or find the build up to date); where the build folder cannot be written, so
        that no lock can be taken, import the finished build in it instead."""
        try:
            return self._compile()
        except OSError:
            module = self._import_built()
            if module is None:
                raise
            return module

    def _import_built(self):
        """The module from this source's build folder if that holds a finished build of it, imported as is (no
        lock, no ninja, nothing written); else None (no build, a killed or a running one, or a library that
        does not import)."""
        library = self._build_folder() / f"{self.name}.so"
        if not _finished(library):
            return None
        spec = importlib.util.spec_from_file_location(self.name, library)
        try:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except (ImportError, OSError):
            return None
        return module

    def _compile(self):
        from torch.utils import cpp_extension

        build = self._build_folder()
        build.mkdir(parents=True, exist_ok=True)
        for path in self._files():
            copy = build / path.name
            if not copy.exists():  # written once, atomically: concurrent builders see the whole file or none
                tmp = copy.with_name(f"{copy.name}.{os.getpid()}.tmp")
                tmp.write_bytes(path.read_bytes())
                os.replace(tmp, copy)
        source = build / self.source.name
        lock = build / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)  # else cpp_extension waits forever for a build that died
        compiling = not self.built()
        if compiling:  # a silent minute would look like a hang
            print(f"sashimi: compiling {self.what} with the system C++ compiler, once for this machine and "
                  f"version (about a minute) into {build}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        module = cpp_extension.load(name=self.name, sources=[str(source)], extra_cflags=self._flags(),
                                    extra_ldflags=self._omp(), build_directory=str(build), verbose=False)
        _mark_finished(build / f"{self.name}.so")
        if compiling:
            print(f"sashimi: {self.what} compiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return module

    def load(self):
        """The extension module, built on first call; raises ``NativeUnavailable`` if it cannot be had."""
        with self._lock:
            if self._module is None and self._error is None:
                try:
                    self._module = self._build_or_import()
                except Exception as err:  # noqa: BLE001 - build failures come in many types
                    self._error = err
            if self._module is None:
                err = self._error
                last = str(err).strip().splitlines()[-1] if str(err).strip() else ""
                raise NativeUnavailable(f"{self.what} could not be built ({type(err).__name__}: {last})") from err
            return self._module

    def available(self) -> bool:
        """Whether the extension can be used (builds it if needed)."""
        try:
            self.load()
            return True
        except NativeUnavailable:
            return False

    def built(self) -> bool:
        """Whether a build for this machine is on disk or loaded (a ``load()`` will not compile)."""
        return self._module is not None or any(self._build_folder().glob(f"{self.name}*.so"))

    def failed(self) -> bool:
        """Whether a build was tried in this process and failed (builds nothing)."""
        return self._error is not None
