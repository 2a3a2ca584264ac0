"""Build folders of the JIT extensions: keyed by source content and flags, not by where the source lies."""
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from sashimi import jit


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """Record what cpp_extension.load is asked to build, without compiling."""
    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw) or object())
    return calls


def _source(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ext.cpp"
    path.write_text(text)
    return path


def test_two_checkouts_of_one_source_share_a_build(loads, tmp_path):
    a = jit.Extension("demo_ext", _source(tmp_path / "checkout_a", "int f() { return 1; }\n"), "demo")
    b = jit.Extension("demo_ext", _source(tmp_path / "checkout_b", "int f() { return 1; }\n"), "demo")
    a.load(), b.load()
    assert loads[0]["build_directory"] == loads[1]["build_directory"]
    assert loads[0]["sources"] == loads[1]["sources"]  # the same path: ninja has nothing to rebuild
    built_from = Path(loads[0]["sources"][0])
    assert built_from.parent == Path(loads[0]["build_directory"])
    assert built_from.read_text() == "int f() { return 1; }\n"


def test_another_source_or_flags_get_their_own_build(loads, tmp_path):
    old = jit.Extension("demo_ext", _source(tmp_path / "old", "int f() { return 1; }\n"), "demo")
    new = jit.Extension("demo_ext", _source(tmp_path / "new", "int f() { return 2; }\n"), "demo")
    omp = jit.Extension("demo_ext", _source(tmp_path / "omp", "int f() { return 1; }\n"), "demo", openmp=True)
    for ext in (old, new, omp):
        ext.load()
    folders = {call["build_directory"] for call in loads}
    assert len(folders) == 3
    assert all(Path(f).parent == jit.build_directory() for f in folders)
    assert Path(loads[0]["sources"][0]).read_text() == "int f() { return 1; }\n"  # the old build keeps its source
    fresh = lambda ext: jit.Extension("demo_ext", ext.source, "demo")  # nothing loaded in this process
    assert not fresh(old).built()  # no .so yet (load is faked): built() looks in this source's folder
    (Path(loads[0]["build_directory"]) / "demo_ext.so").write_bytes(b"")
    assert fresh(old).built() and not fresh(new).built()


def test_headers_beside_the_source_are_copied_and_name_the_build(loads, tmp_path):
    source = _source(tmp_path / "src", '#include "part.h"\nint f() { return g(); }\n')
    (source.parent / "part.h").write_text("int g() { return 1; }\n")
    jit.Extension("demo_ext", source, "demo").load()
    (source.parent / "part.h").write_text("int g() { return 2; }\n")
    jit.Extension("demo_ext", source, "demo").load()
    first, second = (Path(call["build_directory"]) for call in loads)
    assert first != second
    assert (first / "part.h").read_text() == "int g() { return 1; }\n"
    assert (second / "part.h").read_text() == "int g() { return 2; }\n"


def test_a_first_build_says_so_and_a_cached_one_is_silent(loads, tmp_path, capsys):
    source = _source(tmp_path / "src", "int f() { return 1; }\n")
    jit.Extension("demo_ext", source, "the demo step").load()
    err = capsys.readouterr().err
    assert "compiling the demo step" in err and "about a minute" in err and "compiled in" in err
    (Path(loads[0]["build_directory"]) / "demo_ext.so").write_bytes(b"")
    jit.Extension("demo_ext", source, "the demo step").load()
    assert capsys.readouterr().err == ""



@pytest.fixture
def builds(monkeypatch, tmp_path):
    """cpp_extension.load faked as a build that writes the library: a stdlib extension module stands in for it
    (so no compiler is needed), copied to BUILD/NAME.so and imported. Returns the build folders, one per call."""
    from torch.utils import cpp_extension

    stand_in = Path(importlib.util.find_spec("_bisect").origin)
    if stand_in.suffix != ".so":
        pytest.skip("this Python has _bisect built in: no extension module to stand in for a build")
    folders = []

    def build(name, build_directory, **kw):
        folders.append(Path(build_directory))
        # a new file, as the linker writes (rewriting a library in place would corrupt a copy already loaded)
        shutil.copy(stand_in, folders[-1] / "new.so")
        os.replace(folders[-1] / "new.so", folders[-1] / f"{name}.so")
        return importlib.import_module(name)

    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpp_extension, "load", build)
    return folders


def _no_lock(monkeypatch):
    """cpp_extension.load fails the way it does in a folder the user may not write: at its lock file."""
    from torch.utils import cpp_extension

    def load(build_directory, **kw):
        raise PermissionError(13, "Permission denied", os.path.join(build_directory, "lock"))

    monkeypatch.setattr(cpp_extension, "load", load)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _set_writable(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200 if writable else p.stat().st_mode & ~0o222)


def test_a_read_only_cache_that_holds_the_build_is_imported_without_a_lock(builds, monkeypatch, tmp_path):
    """A prebuilt cache the user may not write to (shared, or read-only) is used as it is. The cache is made
    read-only with chmod, but tests run as root, where chmod does not stop writes: so taking the build lock
    (cpp_extension.load creates BUILD/lock, then runs ninja) fails here the way it does without write access."""
    source = _source(tmp_path / "src", "int f() { return 1; }\n")
    jit.Extension("_bisect", source, "the demo step").load()  # the build, on a writable cache
    _no_lock(monkeypatch)
    cache = tmp_path / "cache"
    _set_writable(cache, False)
    try:
        before = _tree(cache)
        module = jit.Extension("_bisect", source, "the demo step").load()  # a later process's first load
        assert module.bisect_left([1, 2, 3], 2) == 1
        assert _tree(cache) == before  # nothing written or touched
        # another source has no build in the cache: building needs the lock, and its failure is the
        # extension's (its callers fall back to PyTorch)
        other = jit.Extension("_bisect", _source(tmp_path / "other", "int f() { return 2; }\n"), "the demo step")
        with pytest.raises(jit.NativeUnavailable, match="the demo step could not be built .PermissionError"):
            other.load()
    finally:
        _set_writable(cache, True)


def test_where_no_lock_can_be_taken_only_a_finished_build_is_imported(builds, monkeypatch, tmp_path):
    """Only a library that its build stamped when it finished is imported without the lock: one half-written
    by a killed build (importing it could crash the process with SIGBUS), or never stamped, is not, and the
    extension is unavailable (its callers fall back to PyTorch)."""
    source = _source(tmp_path / "src", "int f() { return 1; }\n")
    jit.Extension("_bisect", source, "demo").load()
    library = builds[0] / "_bisect.so"
    whole = library.read_bytes()
    library.unlink()
    library.write_bytes(whole[:1000])  # rebuilt later, by a build killed while linking
    _no_lock(monkeypatch)
    with pytest.raises(jit.NativeUnavailable, match="demo could not be built .PermissionError"):
        jit.Extension("_bisect", source, "demo").load()
    library.unlink()
    library.write_bytes(whole)  # whole, but no finished build stamped it
    (builds[0] / "_bisect.so.done").unlink()
    with pytest.raises(jit.NativeUnavailable, match="PermissionError"):
        jit.Extension("_bisect", source, "demo").load()
