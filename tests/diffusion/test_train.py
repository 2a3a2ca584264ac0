"""Training the diffusion model on the Lightning trainer: run files, band metrics, export, exact resume, and noise
that belongs to the example (gradient accumulation and DDP see the noise of the larger batch)."""
import pytest
import torch

import sashimi
from sashimi.errors import ConfigError
from sashimi.train import load_config, resume, train
from sashimi.train.callbacks import read_checkpoint
from sashimi.train.logs import read_metrics

BANDS = ("val/loss_t000_050", "val/loss_t050_100", "val/loss_t100_150", "val/loss_t150_200")


def weights(path):
    return sashimi.load_model(path).state_dict()


def test_a_run_logs_band_losses_and_exports_a_diffwave(tone_root, tiny, tmp_path):
    run = tmp_path / "run"
    model_dir = train(load_config("demo-diffwave", tiny(tone_root)), run)
    m = read_metrics(run)
    for key in ("train/loss", "train/lr", "train/samples_per_s", "val/loss", *BANDS):
        assert key in m, key
    (step, val), = [(s, v) for s, v in m["val/loss"] if s == 5]
    assert val == pytest.approx(sum(dict(m[k])[5] for k in BANDS) / 4, rel=1e-6)  # the mean of the bands
    model = sashimi.load_model(model_dir)
    assert isinstance(model, sashimi.DiffWave) and model.config.d_model == 8
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["config"]["model"]["kind"] == "diffwave"
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"]), k


def test_the_checkpoint_is_exported_when_the_export_was_lost(tone_root, tiny, tmp_path):
    run = tmp_path / "run"
    train(load_config("demo-diffwave", tiny(tone_root, **{"trainer.max_steps": 2, "trainer.val_every": 2})), run)
    before = weights(run / "model")
    for f in (run / "model").iterdir():
        f.unlink()
    assert resume(run) == run / "model"  # Lightning checkpoint -> export, no training
    after = weights(run / "model")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_equals_uninterrupted_run(tone_root, tiny, tmp_path):
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.val_every": 2, "trainer.val_batches": 1,
                              "schedule.total_steps": 4})
    straight = train(load_config("demo-diffwave", over + ["trainer.max_steps=4"]), tmp_path / "a")
    train(load_config("demo-diffwave", over + ["trainer.max_steps=2"]), tmp_path / "b")
    resumed = resume(tmp_path / "b", ["trainer.max_steps=4"])
    a, b = weights(straight), weights(resumed)
    assert next(iter(a.values())).dtype == torch.float64
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert dict(read_metrics(tmp_path / "a")["train/loss"]) == dict(read_metrics(tmp_path / "b")["train/loss"])


def test_gradient_accumulation_equals_the_larger_batch(tone_root, tiny, tmp_path):
    """Each example's step and noise come from its stream position, not from the batch it lands in."""
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 2, "trainer.val_every": 2,
                              "trainer.val_batches": 1})
    big = train(load_config("demo-diffwave", over + ["trainer.batch_size=4"]), tmp_path / "big")
    acc = train(load_config("demo-diffwave", over + ["trainer.batch_size=2", "trainer.accumulate=2"]), tmp_path / "acc")
    a, b = weights(big), weights(acc)
    assert all(torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


@pytest.mark.parametrize("override, message", [
    ("data.quantization=mu-law", "model.kind diffwave learns float waveforms: set data.quantization: none"),
    ("model.bits=8", "model.bits is an option of autoregressive models"),
    ("model.sample_rate=8000", "model.sample_rate=8000 disagrees with data.sample_rate=16000"),
])
def test_config_mismatches_are_clear(tone_root, tiny, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo-diffwave", tiny(tone_root) + [override])


def test_an_autoregressive_model_refuses_float_data():
    with pytest.raises(ConfigError, match="data.quantization: none gives float waveforms, which only a diffusion"):
        load_config("demo", ["data.quantization=none"])


def test_bf16_mixed_precision_trains_on_the_cpu(tone_root, tiny, tmp_path):
    """trainer.precision=bf16-mixed trains (the S4 kernels stay float32 under autocast)."""
    over = tiny(tone_root, **{"trainer.precision": "bf16-mixed", "trainer.max_steps": 2, "trainer.val_every": 2})
    model_dir = train(load_config("demo-diffwave", over), tmp_path / "run")
    losses = dict(read_metrics(tmp_path / "run")["val/loss"])
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert all(v.dtype == torch.float32 for v in weights(model_dir).values() if v.is_floating_point())
