"""The user path of a diffusion model through the CLI: `sashimi train` -> `sashimi evaluate` -> `sashimi generate`
(DDPM and the fast DDIM sampler) -> `sashimi score`, and the one-line errors for options of the other model kind."""
import json

import numpy as np
import pytest
import soundfile as sf

from sashimi.cli.main import main
from sashimi.train.logs import read_metrics

from .conftest import tiny_diffusion

T = 20  # diffusion steps of the test model: DDPM runs all of them


@pytest.fixture(scope="module")
def run(tone_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("diffusion") / "run"
    over = tiny_diffusion(tone_root, **{"trainer.max_steps": 4, "trainer.val_every": 2, "trainer.val_batches": "null",
                                        "model.diffusion_steps": T})
    assert main(["train", "demo-diffwave", *over, "--run-dir", str(run)]) == 0
    return run


def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().split("\n")[-1]
    assert err.startswith(f"sashimi {argv[0]}: error: ") and "Traceback" not in err
    return err


def test_evaluate_reports_the_band_losses_validation_logged(run, capsys):
    assert main(["evaluate", str(run), "--split", "valid", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "diffwave" and result["examples"] == 10 and result["samples"] == 10 * 512
    best_step = min(read_metrics(run)["val/loss"], key=lambda sv: sv[1])[0]  # evaluate reads best.ckpt
    logged = {k[4:]: dict(v)[best_step] for k, v in read_metrics(run).items() if k.startswith("val/loss")}
    assert {k: result[k] for k in logged} == pytest.approx(logged, rel=1e-5)  # same noise, same numbers
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test: denoising loss ") and "t 00-05: " in out and "t 15-20: " in out


@pytest.mark.parametrize("steps,weights", [(None, "float32"), (4, "float32"), (4, "bf16")])
def test_a_seed_gives_the_same_audio_in_any_batch(run, tmp_path, steps, weights):
    fast = ([] if steps is None else ["--steps", str(steps)]) + ["--weights", weights]
    for name, batch in (("one", "1"), ("three", "3")):
        assert main(["generate", str(run / "model"), "--n", "3", "--seconds", "0.03", "--batch-size", batch,
                     "--seed", "4", *fast, "--out", str(tmp_path / name)]) == 0
    manifest = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert [r["seed"] for r in manifest["samples"]] == [4, 5, 6] and "log_likelihood" not in manifest["samples"][0]
    assert manifest["settings"]["sampler"] == ("ddpm" if steps is None else "ddim")
    assert manifest["settings"]["network_evaluations"] == (T if steps is None else 4)
    waves = {name: [sf.read(str(tmp_path / name / r["file"]), dtype="int16")[0] for r in manifest["samples"]]
             for name in ("one", "three")}
    assert all(len(w) == 480 for w in waves["three"])
    assert all(np.array_equal(a, b) for a, b in zip(waves["one"], waves["three"]))
    assert not np.array_equal(waves["three"][0], waves["three"][1])


def test_generate_report_then_score(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["generate", str(run / "model"), "--n", "3", "--seconds", "1", "--steps", "2", "--out", str(out),
                 "--report"]) == 0
    assert "seed 0" in (out / "index.html").read_text() and len(list(out.glob("*.wav"))) == 3
    capsys.readouterr()
    assert main(["score", str(out), "--json"]) == 0  # the quality metrics, unchanged
    result = json.loads(capsys.readouterr().out)
    assert result["n_samples"] == 3 and np.isfinite(result["fid"])
    assert "a diffusion model's have none" in _error(capsys, "score", out, "--select", "official")


@pytest.mark.parametrize("option, message", [
    (["--temperature", "0.9"], "--temperature applies to autoregressive models"),
    (["--top-k", "5"], "--top-k applies to autoregressive models"),
    (["--prime", "x.wav"], "--prime applies to autoregressive models"),
    (["--backend", "eager"], "--backend applies to autoregressive models"),
    (["--steps", "21"], "--steps must be in 1..20 (the model's diffusion steps), got 21"),
    (["--seconds", "1e-5"], "--seconds 1e-05 is less than one sample"),
])
def test_options_of_the_other_kind_are_one_line_errors(run, tmp_path, capsys, option, message):
    assert message in _error(capsys, "generate", run / "model", *option, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_steps_with_an_autoregressive_model_is_an_error(checkpoint, tmp_path, capsys):
    err = _error(capsys, "generate", checkpoint, "--steps", "10", "--out", tmp_path / "o")
    assert "--steps applies to diffusion models (model.kind: diffwave)" in err


@pytest.fixture
def checkpoint(tmp_path):
    import sashimi

    path = tmp_path / "ar.safetensors"
    sashimi.save_model(sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)), path)
    return path


def test_an_interrupted_set_resumes_to_the_same_audio(run, tmp_path, capsys, monkeypatch):
    from sashimi.cli import generate_diffusion

    args = ["generate", str(run / "model"), "--n", "3", "--batch-size", "1", "--seconds", "0.02", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    sample = generate_diffusion.generate
    monkeypatch.setattr(generate_diffusion, "generate", lambda model, seeds, *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt) if seeds == [1] else sample(model, seeds, *a, **k))
    with pytest.raises(KeyboardInterrupt):  # killed in the second batch: the first sample is kept
        main([*args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert "other settings" in _error(capsys, *args[:-2], "--steps", "3", "--out", tmp_path / "cut", "--resume")
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert "1 kept from the interrupted run" in capsys.readouterr().out
    for name in ("1_seed0.wav", "2_seed1.wav", "3_seed2.wav"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_bf16_linear_layers_sample_close_to_float32_and_are_recorded(run, tmp_path):
    args = ["generate", str(run / "model"), "--n", "2", "--seconds", "0.03", "--steps", "3"]
    assert main([*args, "--out", str(tmp_path / "f32")]) == 0
    assert main([*args, "--weights", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["settings"]["weights"] == "bf16"
    for row in manifest["samples"]:
        ours = sf.read(str(tmp_path / "bf16" / row["file"]))[0]
        reference = sf.read(str(tmp_path / "f32" / row["file"]))[0]
        assert np.abs(ours - reference).max() < 0.05 * max(np.abs(reference).max(), 1e-3)


def test_bf16_weights_on_a_cpu_without_bf16_units_warn_that_they_are_slow(run, tmp_path, monkeypatch):
    from sashimi.cli import generate_diffusion

    monkeypatch.setattr(generate_diffusion, "bf16_matmul_fast", lambda: False)
    with pytest.warns(RuntimeWarning, match="no bfloat16 matrix units"):
        assert main(["generate", str(run / "model"), "--n", "1", "--seconds", "0.01", "--steps", "1", "--weights",
                     "bf16", "--out", str(tmp_path / "o")]) == 0
