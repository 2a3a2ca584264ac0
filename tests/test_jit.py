"""Build folders of the JIT extensions: keyed by source content and flags, not by where the source lies."""
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
