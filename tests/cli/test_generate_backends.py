"""`sashimi generate` with every backend and every fallback, with default arguments, the way a user runs it; and
the one-line errors for checkpoints it cannot use and for less than one sample.

The torch steps are compiled once, then stepped on the loop's threads: a compile under any other thread count
broke every run that did not use the native step ("Recompilation triggered with skip_guard_eval_unsafe
stance"). The tests set torch's default for the set-up to 2 threads against the loop's 1, so that the case is
exercised on any machine, a one-CPU one included.
"""
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import sashimi
from sashimi.cli import generate as generate_cli
from sashimi.cli.main import main
from sashimi.generation import native
from sashimi.jit import Extension, NativeUnavailable

FALLBACK = "native fast step unavailable"


@pytest.fixture(autouse=True)
def _set_up_on_two_threads(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(generate_cli, "_DEFAULT_THREADS", 2)
    yield
    torch.set_num_threads(threads)


def _generate(checkpoint, out, *options, n: int = 2) -> dict:
    """Run the CLI; returns the manifest's settings, and the fallback warnings as "warnings"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["generate", str(checkpoint), "--n", str(n), "--seconds", "0.01", "--out", str(out), *options])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(row["file"] for row in manifest["samples"])
    assert len(manifest["samples"]) == n
    settings = manifest["settings"]
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
                 and ("unavailable" in str(w.message) or "falling back" in str(w.message))]
    return {**settings, "warnings": fallbacks}


@pytest.mark.parametrize("options, ran", [
    (["--backend", "native"], "native"),
    (["--backend", "inductor"], "inductor"),
    (["--backend", "eager"], "eager"),
    ([], "native"),  # the default
    (["--backend", "reference"], "reference"),
])
def test_every_backend_generates_and_says_what_ran(checkpoint, tmp_path, options, ran):
    fallback = ran == "native" and not native.available()  # a machine that cannot build the native step
    settings = _generate(checkpoint, tmp_path / "out", *options)
    assert settings["backend"] == ("inductor" if fallback else ran)
    assert settings["compiled"] == (settings["backend"] in ("native", "inductor"))
    if fallback:  # a warning says so
        assert any(FALLBACK in w for w in settings["warnings"])
    else:
        assert settings["warnings"] == []


def test_threads_option_runs_the_compiled_step_on_that_many_threads(checkpoint, tmp_path):
    settings = _generate(checkpoint, tmp_path / "out", "--backend", "inductor", "--threads", "3", "--batch-size", "1")
    # two batches: the second FastLM reuses the first's conversion and compiles its own steps
    assert settings["backend"] == "inductor" and settings["warnings"] == []


def _native_fails_to_load(monkeypatch, tmp_path):
    def load():
        raise NativeUnavailable("the native generation step could not be built (simulated)")

    monkeypatch.setattr(native, "load", load)


def _cache_is_not_writable(monkeypatch, tmp_path):
    # a file where the cache folder should be: nothing can be created under it, not even by root
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_EXTENSION", Extension("sashimi_fast_step", native._EXTENSION.source,
                                                        "the native generation step"))


def _no_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path / "cache"))  # an empty cache: the step must be built
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "_EXTENSION", Extension("sashimi_fast_step", native._EXTENSION.source,
                                                        "the native generation step"))


@pytest.mark.parametrize("make_unavailable", [_native_fails_to_load, _cache_is_not_writable, _no_compiler])
def test_without_the_native_step_the_default_falls_back_to_inductor(checkpoint, tmp_path, monkeypatch,
                                                                      make_unavailable):
    make_unavailable(monkeypatch, tmp_path)
    settings = _generate(checkpoint, tmp_path / "out")
    assert settings["backend"] == "inductor" and settings["compiled"]
    assert any(FALLBACK in w for w in settings["warnings"])


def test_a_compiled_fast_step_runs_on_the_threads_it_was_built_for(checkpoint):
    """The library: torch.set_num_threads after building a FastLM no longer breaks its compiled steps."""
    from sashimi.generation.fast import FastLM

    model = sashimi.load_model(checkpoint)
    fast = FastLM(model, 2, backend="inductor", threads=1)
    assert fast.backend == "inductor" and fast.threads == 1
    torch.set_num_threads(2)
    token = torch.full((2,), model.bos)
    tokens, logps, _ = fast.steps(token, torch.rand(5, 2))
    fast.step(tokens[-1], torch.rand(2))
    assert torch.get_num_threads() == 2 and fast.t == 6 and torch.isfinite(logps).all()


def _error(capsys, *argv) -> str:
    """Run the CLI expecting a user error: exit status 2 and one line on stderr, which is returned."""
    capsys.readouterr()
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sashimi {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("zipfile", [True, False])
def test_a_training_checkpoint_is_named_as_such(checkpoint, tmp_path, capsys, zipfile):
    model = sashimi.load_model(checkpoint)
    run = tmp_path / "run"
    sashimi.save_model(model, run / "model")
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"config": {"model": model.config.to_dict()}}}, ckpt,
               _use_new_zipfile_serialization=zipfile)
    err = _error(capsys, "generate", ckpt, "--out", tmp_path / "out")
    assert "this is a PyTorch checkpoint" in err and f"use the run's exported model {run / 'model'}" in err
    assert not (tmp_path / "out").exists()
    plain = tmp_path / "weights.pt"
    plain.write_bytes(ckpt.read_bytes())
    assert "use a run's exported model (RUN/model" in _error(capsys, "generate", plain)


@pytest.mark.parametrize("metadata, expected", [
    ({"format_version": 1, "kind": "nonsense", "config": {}}, "unknown model kind 'nonsense'"),
    ({"format_version": 1, "config": {}}, "unknown model kind None"),
    ({"format_version": 1, "kind": "lm", "config": [1, 2]}, "no config mapping"),
    ({"format_version": 1, "kind": "backbone", "config": {"d_modle": 8}}, "backbone config does not fit SaShiMi"),
    ("[not json", "not valid JSON"),
    ([1, "lm"], "not a JSON object"),
])
def test_bad_metadata_is_a_clear_error(tmp_path, capsys, metadata, expected):
    path = tmp_path / "bad.safetensors"
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file({"x": torch.zeros(1)}, path, metadata={"sashimi": text})
    err = _error(capsys, "generate", path)
    assert str(path) in err and expected in err
    if "kind" in expected:
        assert "expected one of 'lm', 'backbone', 'classifier'" in err


def test_an_exported_models_config_json_must_agree_with_its_weights(checkpoint, tmp_path, capsys):
    folder = tmp_path / "model"
    sashimi.save_model(sashimi.load_model(checkpoint), folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["d_model"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    err = _error(capsys, "generate", folder, "--out", tmp_path / "out")
    assert f"{folder / 'config.json'}: contradicts the metadata of {folder / 'model.safetensors'}" in err
    assert "config.d_model: 32 here, 8 in the weights" in err
    (folder / "config.json").write_text("{ truncated")
    assert "config.json: not a readable JSON file" in _error(capsys, "generate", folder)
    (folder / "config.json").unlink()  # the weights alone rebuild the model
    assert main(["generate", str(folder), "--n", "1", "--seconds", "0.01", "--backend", "eager",
                 "--out", str(tmp_path / "out")]) == 0


def test_less_than_one_sample_is_refused(checkpoint, tmp_path, capsys):
    err = _error(capsys, "generate", checkpoint, "--seconds", "1e-5", "--out", tmp_path / "out")
    assert "--seconds 1e-05 is less than one sample at the model's 8000 Hz; use at least 0.000125" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--eager", "--no-compile"])
def test_renamed_backend_flags_say_what_replaced_them(checkpoint, tmp_path, flag, capsys):
    code = main(["generate", str(checkpoint), "--n", "1", "--seconds", "0.01", flag, "--out", str(tmp_path / "o")])
    assert code != 0
    err = capsys.readouterr().err
    assert "--backend reference" in err and "--backend eager" in err and "Traceback" not in err


def test_native_threads_and_chunking_from_the_environment_at_the_cli(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SASHIMI_NATIVE_THREADS", "1")
    monkeypatch.setenv("SASHIMI_NATIVE_CHUNK", "0")
    seen = {}
    from sashimi.generation import fast as fast_module
    real = fast_module.FastLM.__init__

    def spy(self, *a, **kw):
        seen.update(threads=kw.get("threads"), chunked=kw.get("chunked"))
        real(self, *a, **kw)

    monkeypatch.setattr(fast_module.FastLM, "__init__", spy)
    _generate(checkpoint, tmp_path / "out", "--backend", "native")
    assert seen == {"threads": 1, "chunked": False}


def test_generate_gives_the_callers_torch_threads_back(checkpoint, tmp_path):
    before = torch.get_num_threads()
    _generate(checkpoint, tmp_path / "out", "--backend", "eager", "--threads", "1")
    assert torch.get_num_threads() == before
