"""`sashimi generate` end to end, the way a user runs it: a checkpoint on disk in, WAVs + manifest out."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import sashimi
from sashimi.audio.quantize import make_quantizer
from sashimi.cli.main import main

from tests.cli.conftest import SR  # the checkpoint fixture's rate


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _prime(path, sr=SR, channels=1, seconds=0.02):
    wave = 0.4 * np.sin(np.linspace(0, 60, int(sr * seconds)))
    sf.write(str(path), np.stack([wave] * channels, 1) if channels > 1 else wave, sr, subtype="PCM_16")
    return str(path)


def _teacher_forced(model, wav_path, start):
    wave, sr = sf.read(str(wav_path), dtype="float32")
    tokens = make_quantizer("mu-law", 8).encode(torch.from_numpy(wave))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens), -1).gather(-1, tokens[..., None])[..., 0]
    return float(logp[0, start:].double().sum())


def test_generate_writes_sorted_wavs_and_a_true_manifest(checkpoint, tmp_path):
    out = tmp_path / "out"
    prime = _prime(tmp_path / "prime.wav")
    rc = main(["generate", str(checkpoint), "--n", "3", "--seconds", "0.01", "--top-p", "0.95", "--seed", "5",
               "--prime", prime, "--prime-seconds", "0.015", "--out", str(out), "--backend", "eager",
               "--stream", str(tmp_path / "live.wav")])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["samples"]
    assert [r["seed"] for r in sorted(rows, key=lambda r: r["seed"])] == [5, 6, 7]
    assert [r["log_likelihood"] for r in rows] == sorted((r["log_likelihood"] for r in rows), reverse=True)
    assert manifest["settings"]["top_p"] == 0.95 and manifest["sample_rate"] == SR
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(r["file"] for r in rows)
    model = sashimi.load_model(checkpoint)
    prime_tokens = make_quantizer("mu-law", 8).encode(torch.from_numpy(sf.read(prime, dtype="float32")[0][:120]))
    for r in rows:
        wave, sr = sf.read(str(out / r["file"]), dtype="float32")
        assert sr == SR and len(wave) == 120 + 80
        assert torch.equal(make_quantizer("mu-law", 8).encode(torch.from_numpy(wave[:120])), prime_tokens)
        assert r["log_likelihood"] == pytest.approx(_teacher_forced(model, out / r["file"], 120), abs=1e-3)
        assert r["bits_per_sample"] == pytest.approx(-r["log_likelihood"] / 80 / np.log(2))
    seed5 = next(r["file"] for r in rows if r["seed"] == 5)
    assert np.array_equal(sf.read(str(tmp_path / "live.wav"))[0], sf.read(str(out / seed5))[0])


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_same_seed_same_audio_through_the_cli(checkpoint, tmp_path, monkeypatch, backend):
    from sashimi.generation import blocks as fast_blocks

    conversions = []
    convert = fast_blocks.fast_blocks
    monkeypatch.setattr(fast_blocks, "fast_blocks", lambda blocks: conversions.append(1) or convert(blocks))
    audio = []
    for name, batch in (("a", "3"), ("b", "1")):  # batch composition must not matter either
        assert main(["generate", str(checkpoint), "--n", "3", "--seconds", "0.005", "--out", str(tmp_path / name),
                     "--backend", backend, "--batch-size", batch]) == 0
        rows = json.loads((tmp_path / name / "manifest.json").read_text())["samples"]
        audio.append({r["seed"]: sf.read(str(tmp_path / name / r["file"]))[0] for r in rows})
    assert sorted(audio[0]) == [0, 1, 2]
    for seed in (0, 1, 2):
        assert np.array_equal(audio[0][seed], audio[1][seed])
    assert len(conversions) == 2  # one per command: the batches of a command share the converted model


def test_thread_count_does_not_change_the_audio(checkpoint, tmp_path):
    audio = []
    for name, threads in (("one", ["--threads", "1"]), ("default", []), ("three", ["--threads", "3"])):
        assert main(["generate", str(checkpoint), "--n", "2", "--seconds", "0.02", "--out", str(tmp_path / name),
                     *threads]) == 0
        audio.append([sf.read(str(p))[0] for p in sorted((tmp_path / name).glob("*.wav"))])
    assert len(audio[0]) == 2
    for other in audio[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(audio[0], other))


@pytest.mark.parametrize("args,match", [
    (["--seconds", "-1"], "--seconds must be > 0"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--n", "0"], "--n must be >= 1"),
    (["--prime-seconds", "1"], "--prime-seconds needs --prime"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_arguments_give_clear_errors(checkpoint, tmp_path, capsys, args, match):
    assert main(["generate", str(checkpoint), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(match, err), err


@pytest.mark.parametrize("make,match", [
    (lambda p: _prime(p, sr=16000), "16000 Hz but the model generates at 8000 Hz"),
    (lambda p: _prime(p, channels=2), "2 channels; expected mono"),
    (lambda p: p.write_bytes(b"RIFF....WAVEfmt garbage" * 8) and str(p), "cannot read audio header"),
])
def test_bad_primes_give_clear_errors(checkpoint, tmp_path, capsys, make, match):
    prime = make(tmp_path / "prime.wav")
    assert main(["generate", str(checkpoint), "--seconds", "0.01", "--prime", str(prime),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert match in err and "prime.wav" in err and "Traceback" not in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "evaluate"])
@pytest.mark.parametrize("device,match", [
    ("bogus", "'bogus' is not a device"),
    ("mps", "expected a cpu or cuda device"),
    pytest.param("cuda", "torch sees no CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                            reason="this machine has a GPU")),
])
def test_bad_devices_are_refused_when_parsing(checkpoint, tmp_path, capsys, command, device, match):
    with pytest.raises(SystemExit) as exit_:
        main([command, str(checkpoint), "--device", device])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --device" in err and match in err and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_generate_on_a_gpu_writes_a_true_manifest(checkpoint, tmp_path, backend):
    out = tmp_path / "gpu"
    assert main(["generate", str(checkpoint), "--n", "2", "--seconds", "0.02", "--seed", "3", "--device", "cuda",
                 "--backend", backend, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["device"] == "cuda" and manifest["settings"]["backend"] == backend
    model = sashimi.load_model(checkpoint)
    for r in manifest["samples"]:
        assert r["log_likelihood"] == pytest.approx(_teacher_forced(model, out / r["file"], 0), abs=1e-3)
    assert main(["generate", str(checkpoint), "--device", "cuda", "--backend", "native", "--out", str(out)]) == 2


def _audio_by_seed(out):
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    return {r["seed"]: sf.read(str(out / r["file"]))[0] for r in rows}, rows


def test_an_interrupted_run_resumes_without_redoing_finished_files(checkpoint, tmp_path, monkeypatch):
    from sashimi.generation import sampler as sampler_module

    args = ["--n", "5", "--seconds", "0.01", "--batch-size", "2", "--backend", "eager"]
    assert main(["generate", str(checkpoint), *args, "--out", str(tmp_path / "whole")]) == 0
    whole, _ = _audio_by_seed(tmp_path / "whole")

    out, calls = tmp_path / "cut", []
    chunks = sampler_module.Sampler.chunks

    def dies_in_the_second_batch(self, n):
        calls.append(list(self.seeds))
        if len(calls) == 2:
            raise KeyboardInterrupt  # like a kill between two batches' ends
        return chunks(self, n)

    monkeypatch.setattr(sampler_module.Sampler, "chunks", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        main(["generate", str(checkpoint), *args, "--out", str(out)])
    assert not (out / "manifest.json").exists() and not (out / ".batch.raw").exists()
    assert sorted(p.name for p in out.glob(".seed*.wav")) == [".seed0.wav", ".seed1.wav"]
    assert main(["generate", str(checkpoint), *args, "--out", str(out)]) == 2  # not without --resume
    calls.clear()
    monkeypatch.setattr(sampler_module.Sampler, "chunks", lambda self, n: calls.append(list(self.seeds)) or chunks(self, n))
    assert main(["generate", str(checkpoint), *args, "--out", str(out), "--resume"]) == 0
    assert calls == [[2, 3], [4]]  # only the unfinished seeds were generated
    resumed, rows = _audio_by_seed(out)
    assert sorted(resumed) == sorted(whole) and all(np.array_equal(resumed[s], whole[s]) for s in whole)
    assert sorted(p.name for p in out.iterdir()) == sorted([r["file"] for r in rows] + ["manifest.json"])


def test_an_existing_sample_set_is_never_replaced_silently(checkpoint, tmp_path, capsys):
    out, live = tmp_path / "out", tmp_path / "live.wav"
    args = [str(checkpoint), "--n", "2", "--seconds", "0.01", "--backend", "eager", "--out", str(out)]
    assert main(["generate", *args, "--seed", "0"]) == 0
    first = sorted(p.name for p in out.iterdir())
    assert main(["generate", *args, "--seed", "7"]) == 2
    assert "already holds a sample set" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == first
    assert main(["generate", *args, "--seed", "7", "--resume"]) == 2  # complete: nothing to resume
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["generate", *args, "--seed", "7", "--overwrite"]) == 0  # the whole earlier set is replaced
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    assert sorted(r["seed"] for r in rows) == [7, 8]
    assert sorted(p.name for p in out.iterdir()) == sorted([r["file"] for r in rows] + ["manifest.json"])
    live.write_text("my notes")
    assert main(["generate", str(checkpoint), "--n", "1", "--seconds", "0.01", "--backend", "eager",
                 "--out", str(tmp_path / "o2"), "--stream", str(live)]) == 2
    assert "--stream" in capsys.readouterr().err and live.read_text() == "my notes"
    assert main(["generate", *args[:-1], str(tmp_path / "live.wav")]) == 2  # --out names a file
    assert "is a file" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(checkpoint, tmp_path, capsys, monkeypatch):
    from sashimi.generation import sampler as sampler_module

    out, chunks = tmp_path / "out", sampler_module.Sampler.chunks
    monkeypatch.setattr(sampler_module.Sampler, "chunks", lambda self, n: (_ for _ in ()).throw(KeyboardInterrupt)
                        if self.seeds == [1] else chunks(self, n))
    with pytest.raises(KeyboardInterrupt):  # killed in the second batch: the first one is kept
        main(["generate", str(checkpoint), "--n", "2", "--batch-size", "1", "--seconds", "0.01", "--backend", "eager",
              "--out", str(out)])
    monkeypatch.undo()
    assert main(["generate", str(checkpoint), "--n", "2", "--seconds", "0.01", "--backend", "eager", "--out", str(out),
                 "--resume", "--temperature", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("errno_name, message", [("ENOSPC", "no space left on device"),
                                                 ("EROFS", "read-only file system"),
                                                 ("EMFILE", "too many open files")])
def test_os_faults_while_generating_are_one_line_and_resumable(checkpoint, tmp_path, capsys, monkeypatch,
                                                               errno_name, message):
    """The disk fills (or turns read-only) in the second batch: one line, the first batch kept for --resume."""
    import errno

    from sashimi.generation import output

    out, finish = tmp_path / "out", output.OutputFolder.finish_batch

    def fails_in_the_second_batch(self, audio, rows, sample_rate):
        if self.rows:
            raise OSError(getattr(errno, errno_name), "simulated", str(self.folder / ".seed1.wav"))
        return finish(self, audio, rows, sample_rate)

    monkeypatch.setattr(output.OutputFolder, "finish_batch", fails_in_the_second_batch)
    args = [str(checkpoint), "--n", "2", "--batch-size", "1", "--seconds", "0.01", "--backend", "eager", "--out", str(out)]
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.split("\n") if "error:" in line]  # the rest is the progress bar
    assert len(errors) == 1 and message in errors[0] and "--resume" in errors[0] and "Traceback" not in err
    monkeypatch.undo()
    assert main(["generate", *args, "--resume"]) == 0
    assert sorted(r["seed"] for r in json.loads((out / "manifest.json").read_text())["samples"]) == [0, 1]
