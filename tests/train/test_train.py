"""Training in-process on a small tone dataset: run files, export, exact resume, SSM groups, non-finite losses."""
import math

import pytest
import torch
import yaml

import sashimi
from sashimi.train import load_config, resume, train
from sashimi.train.callbacks import read_checkpoint
from sashimi.train.data import StreamSampler
from sashimi.train.module import SaShiMiTask, TrainingDiverged, cosine_with_warmup


def weights(path):
    return sashimi.load_model(path).state_dict()


def test_run_directory_export_and_plain_checkpoints(tone_root, tiny, tmp_path):
    config = load_config("demo", tiny(tone_root, **{"trainer.max_steps": 3}))
    model_dir = train(config, tmp_path / "run")
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text()) == config.to_dict()
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only=True
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["config"] == config.to_dict()
    assert (run / "checkpoints" / "best.ckpt").is_file()
    exported = weights(model_dir)
    for k, v in exported.items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"])
    rows = (run / "csv" / "version_0" / "metrics.csv").read_text()
    for key in ("train/loss", "train/lr", "train/samples_per_s", "val/loss", "val/bits_per_sample", "val/accuracy"):
        assert key in rows
    with pytest.raises(sashimi.errors.ConfigError, match="already holds a run"):
        train(config, run)
    with pytest.raises(sashimi.errors.ConfigError, match="already at step 3, and trainer.max_steps is 3"):
        resume(run)  # nothing left to train: an error, not a claimed export


@pytest.mark.parametrize("precision, dtype", [("64-true", torch.float64), ("32-true", torch.float32)])
def test_resume_equals_uninterrupted_run(precision, dtype, tone_root, tiny, tmp_path):
    over = tiny(tone_root, **{"trainer.precision": precision, "trainer.val_every": 2, "schedule.patience": 0})
    straight = train(load_config("demo", over + ["trainer.max_steps=5"]), tmp_path / "a")
    train(load_config("demo", over + ["trainer.max_steps=3"]), tmp_path / "b")
    resumed = resume(tmp_path / "b", ["trainer.max_steps=5"])
    a, b = weights(straight), weights(resumed)
    assert a["head.weight"].dtype == dtype
    if dtype == torch.float64:
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:  # the bar for float32; on one CPU it is in fact exact too
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


# Dropout draws from the torch RNG, and with lr 1e-7 everywhere (ssm_lr null) val/loss never improves by the
# plateau threshold, so patience 0 halves the lr at every validation after the first. A resume that lost the
# RNG state draws other dropout masks; one that lost the scheduler state starts its "best" over and skips a
# halving. Either gives other float64 weights and another logged lr.
PLATEAU_AND_DROPOUT = {"trainer.precision": "64-true", "trainer.val_every": 2, "model.dropout": 0.25,
                       "schedule.patience": 0, "optim.lr": 1e-7, "model.ssm_lr": "null"}


def test_resume_restores_dropout_rng_and_plateau_state(tone_root, tiny, tmp_path):
    from sashimi.train.logs import read_metrics

    over = tiny(tone_root, **PLATEAU_AND_DROPOUT)
    straight = train(load_config("demo", over + ["trainer.max_steps=6"]), tmp_path / "a")
    train(load_config("demo", over + ["trainer.max_steps=3"]), tmp_path / "b")
    resumed = resume(tmp_path / "b", ["trainer.max_steps=6"])  # validations at steps 2 (before), 4 and 6
    lrs = dict(read_metrics(tmp_path / "a")["train/lr"])
    assert lrs[3] == 1e-7 and lrs[4] == 5e-8  # the plateau did act, after the resume
    assert dict(read_metrics(tmp_path / "b")["train/lr"]) == lrs
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


@pytest.mark.slow
def test_sigkill_resume_restores_dropout_rng_and_plateau_state(tone_root, tiny, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    over = tiny(tone_root, **PLATEAU_AND_DROPOUT, **{"trainer.max_steps": 10, "trainer.checkpoint_every": 1})
    straight = train(load_config("demo", over), tmp_path / "a")
    run = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "sashimi", "train", "demo", *over, "--run-dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    while not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 5):  # past two validations
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists()
    a, b = weights(straight), weights(resume(run))
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_missing_data_root_is_a_clear_error(tmp_path):
    config = load_config("demo", [f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(sashimi.errors.ConfigError, match=r"data.root: .*nope is not a directory.*synth-digits"):
        train(config, tmp_path / "run")


def test_ssm_parameters_keep_their_lr_and_no_weight_decay(tone_root, tiny):
    config = load_config("demo", tiny(tone_root, **{"optim.lr": 0.004, "optim.weight_decay": 0.1}))
    optimizer = SaShiMiTask(config.to_dict()).configure_optimizers()["optimizer"]
    by_name = {n: g for g in optimizer.param_groups for n in g["names"]}
    ssm = [n for n in by_name if n.split(".")[-1] in ("log_dt", "dt", "A_real", "A_imag", "P", "B", "inv_dt")]
    assert ssm, sorted(by_name)[:20]
    for n in ssm:
        assert (by_name[n]["lr"], by_name[n]["weight_decay"]) == (0.001, 0.0), n
    assert (by_name["head.weight"]["lr"], by_name["head.weight"]["weight_decay"]) == (0.004, 0.1)


def test_onset_weight_weights_the_loss_around_each_onset(tone_root, tiny):
    from sashimi.audio.onsets import loud_tokens, onset_weights
    from sashimi.audio.quantize import make_quantizer
    from sashimi.metrics import token_nll

    over = tiny(tone_root, **{"optim.onset_weight": 5, "optim.onset_window": "[0.002, 0.001]"})
    config = load_config("demo", over)
    task, rate = SaShiMiTask(config.to_dict()), config.model.sample_rate
    tokens = torch.full((2, 256), 128)
    tokens[0, 100:] = torch.randint(0, 256, (156,))  # a loud start at 100 (almost surely), then noise
    with torch.no_grad():
        nll = token_nll(task.model(tokens), tokens)  # (B L)
        weights = onset_weights(tokens, loud_tokens(make_quantizer("mu-law", 8)), round(0.002 * rate),
                                round(0.001 * rate), 5.0)
        assert (weights == 5).sum() > 0
        torch.testing.assert_close(task.training_loss(tokens), (nll * weights).sum() / weights.sum())
        plain = SaShiMiTask(load_config("demo", tiny(tone_root)).to_dict())
        plain.model.load_state_dict(task.model.state_dict())
        torch.testing.assert_close(plain.training_loss(tokens), nll.mean())


def test_onset_weight_is_refused_for_a_diffusion_model():
    with pytest.raises(sashimi.errors.ConfigError, match="optim.onset_weight weights an autoregressive model"):
        load_config("demo-diffwave", ["optim.onset_weight=2"])


@pytest.mark.parametrize("clip,precision,fused", [("null", "32-true", True), (1.0, "32-true", True),
                                                   (1.0, "bf16-mixed", False)])
def test_optimizer_is_fused_unless_lightning_must_clip_mixed_precision(tone_root, tiny, clip, precision, fused):
    config = load_config("demo", tiny(tone_root, **{"optim.grad_clip": clip, "trainer.precision": precision}))
    optimizer = SaShiMiTask(config.to_dict()).configure_optimizers()["optimizer"]
    assert bool(optimizer.defaults["fused"]) == fused


def test_nonfinite_losses_are_skipped_then_stop_the_run(tone_root, tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = sashimi.SaShiMiLM.forward

    def sometimes_nan(self, tokens, labels=None):
        calls["n"] += 1
        logits = forward(self, tokens, labels)
        return logits * math.nan if calls["n"] == 2 or calls["n"] >= 4 else logits

    monkeypatch.setattr(sashimi.SaShiMiLM, "forward", sometimes_nan)
    config = load_config("demo", tiny(tone_root, **{"trainer.max_steps": 50, "trainer.val_every": 50,
                                                             "trainer.max_nonfinite": 3}))
    with pytest.warns(RuntimeWarning, match="non-finite loss"), pytest.raises(TrainingDiverged, match="3 consecutive"):
        train(config, tmp_path / "run")
    assert calls["n"] == 6  # batch 2 skipped (warned), 3 trained, 4-6 skipped, stop


def test_cosine_warmup_schedule():
    f = cosine_with_warmup(10, 110, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_stream_ranks_split_the_single_process_batches():
    single = iter(StreamSampler(10, batch_size=4, seed=3))
    ranks = [iter(StreamSampler(10, batch_size=2, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(6):  # crosses epochs (8 examples per epoch: 10 truncated to whole global batches)
        batch = [next(single) for _ in range(4)]
        shards = [[next(it) for _ in range(2)] for it in ranks]
        assert sorted(batch) == sorted(shards[0] + shards[1])
    resumed = iter(StreamSampler(10, batch_size=4, seed=3, start_batch=6))
    assert [next(resumed) for _ in range(4)] == [next(single) for _ in range(4)]


def test_metrics_merge_attempts_and_plot(tmp_path):
    from sashimi.train.logs import plot_curves, read_metrics

    for version, rows in enumerate(["0,5.5,\n1,5.0,\n2,4.9,\n2,,4.8\n", "2,4.7,\n3,4.5,\n"]):
        path = tmp_path / "csv" / f"version_{version}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text("step,train/loss,val/loss\n" + rows)
    m = read_metrics(tmp_path)
    assert m["train/loss"] == [(0, 5.5), (1, 5.0), (2, 4.7), (3, 4.5)] and m["val/loss"] == [(2, 4.8)]
    png = plot_curves(tmp_path, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_accumulation_equals_the_larger_batch(tone_root, tiny, tmp_path):
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 2, "trainer.val_every": 2})
    big = train(load_config("demo", over + ["trainer.batch_size=4"]), tmp_path / "big")
    acc = train(load_config("demo", over + ["trainer.batch_size=2", "trainer.accumulate=2"]), tmp_path / "acc")
    a, b = weights(big), weights(acc)
    assert all(torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


def test_cosine_schedule_drives_the_logged_lr(tone_root, tiny, tmp_path):
    from sashimi.train.logs import read_metrics

    over = tiny(tone_root, **{"schedule.name": "cosine", "schedule.warmup_steps": 2, "schedule.total_steps": 4,
                              "optim.lr": 0.01, "trainer.max_steps": 4, "trainer.val_every": 4})
    train(load_config("demo", over), tmp_path / "run")
    lrs = [lr for _, lr in read_metrics(tmp_path / "run")["train/lr"]]
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.005], rel=1e-6)


def test_bf16_mixed_precision_trains_on_the_cpu(tone_root, tiny, tmp_path, monkeypatch):
    """trainer.precision=bf16-mixed trains (the S4 kernels stay float32 under autocast); on a CPU without bf16
    matrix units it says that it will be slow."""
    from sashimi.train import run
    from sashimi.train.logs import read_metrics

    monkeypatch.setattr(run, "bf16_matmul_fast", lambda: False)
    over = tiny(tone_root, **{"trainer.precision": "bf16-mixed", "trainer.max_steps": 2, "trainer.val_every": 2})
    with pytest.warns(RuntimeWarning, match="no bfloat16 matrix units"):
        model_dir = train(load_config("demo", over), tmp_path / "run")
    assert all(math.isfinite(v) for _, v in read_metrics(tmp_path / "run")["val/loss"])
    assert all(v.dtype == torch.float32 for v in weights(model_dir).values() if v.is_floating_point())


def test_init_from_starts_from_trained_weights_and_resumes_exactly(tone_root, tiny, tmp_path):
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 2})
    source = train(load_config("demo", over), tmp_path / "source")
    warm = over + [f"trainer.init_from={source}", "model.dropout=0.1"]  # dropout may differ from the source's
    frozen = train(load_config("demo", warm + ["optim.lr=1e-30", "model.ssm_lr=1e-30"]), tmp_path / "frozen")
    a, b = weights(source), weights(frozen)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a)  # the new run began at the source
    straight = train(load_config("demo", warm + ["trainer.max_steps=4"]), tmp_path / "straight")
    train(load_config("demo", warm + ["trainer.max_steps=3"]), tmp_path / "cut")
    resumed = resume(tmp_path / "cut", ["trainer.max_steps=4"])  # its own weights, not the source's again
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_refuses_another_architecture(tone_root, tiny, tmp_path):
    source = train(load_config("demo", tiny(tone_root, **{"trainer.max_steps": 1})), tmp_path / "source")
    config = load_config("demo", tiny(tone_root, **{"trainer.init_from": str(source), "model.d_model": 8}))
    with pytest.raises(sashimi.errors.ConfigError, match=r"init_from=.*model\.d_model=8 \(it has 16\)"):
        train(config, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # refused before the run wrote anything
    diffusion = load_config("demo-diffwave", tiny(tone_root, **{"trainer.init_from": str(source)}))
    with pytest.raises(sashimi.errors.ConfigError, match="is a model of kind 'ar'; this config's model.kind is 'diffwave'"):
        train(diffusion, tmp_path / "dw")


def test_init_from_a_shallower_model_begins_as_it_and_trains_the_new_layers(tone_root, tiny, tmp_path):
    """model.n_layers above the trained model's: its blocks come first in every stack, the new ones start as
    identities (so step 0 computes the trained function), and training moves them."""
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 1})
    source = train(load_config("demo", over), tmp_path / "source")
    n = sashimi.load_model(source).config.n_layers
    warm = over + [f"trainer.init_from={source}", f"model.n_layers={n + 1}"]
    frozen = sashimi.load_model(train(load_config("demo", warm + ["optim.lr=1e-30", "model.ssm_lr=1e-30"]),
                                      tmp_path / "frozen"))
    shallow = sashimi.load_model(source)
    assert frozen.config.n_layers == n + 1
    assert sum(p.numel() for p in frozen.parameters()) > sum(p.numel() for p in shallow.parameters())
    tokens = torch.randint(0, 256, (2, 200))
    with torch.no_grad():
        torch.testing.assert_close(frozen(tokens), shallow(tokens), rtol=0, atol=1e-9)
    moved = weights(train(load_config("demo", warm + ["trainer.max_steps=2", "optim.lr=0.01"]), tmp_path / "moved"))
    per_layer = frozen.backbone.blocks_per_layer
    new = f"backbone.center.{n * per_layer}.layer.output_linear.weight"  # the first new S4 block's value half
    value_half = moved[new][: moved[new].shape[0] // 2]  # zero at the start (output_linear is (2H, H))
    assert value_half.abs().max() > 0


def test_init_from_refuses_fewer_layers_and_new_layers_with_unet_skips(tone_root, tiny, tmp_path):
    over = tiny(tone_root, **{"trainer.max_steps": 1})
    source = train(load_config("demo", over), tmp_path / "source")
    n = sashimi.load_model(source).config.n_layers
    fewer = load_config("demo", over + [f"trainer.init_from={source}", f"model.n_layers={n - 1}"])
    with pytest.raises(sashimi.errors.ConfigError, match=rf"model\.n_layers={n - 1} \(it has {n}\)"):
        train(fewer, tmp_path / "fewer")
    unet = train(load_config("demo", over + ["model.unet=true"]), tmp_path / "unet")
    deeper = load_config("demo", over + [f"trainer.init_from={unet}", "model.unet=true", f"model.n_layers={n + 1}"])
    with pytest.raises(sashimi.errors.ConfigError, match=r"adds layers only to a model without U-Net skips"):
        train(deeper, tmp_path / "deeper")
    assert not (tmp_path / "fewer").exists() and not (tmp_path / "deeper").exists()


def test_init_from_at_another_sample_rate_carries_the_per_sample_function(tone_root, tiny, tmp_path):
    """model.sample_rate and model.l_max may differ from the trained model's: the weights (the S4 kernels'
    stored length included) carry over unchanged, so step 0 computes the trained per-sample function."""
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 1})
    source = train(load_config("demo", over), tmp_path / "source")
    trained = sashimi.load_model(source)
    rate = trained.config.sample_rate // 2
    warm = over + [f"trainer.init_from={source}", f"model.sample_rate={rate}", f"data.sample_rate={rate}",
                   "model.l_max=1024", "data.sample_len=1024", "optim.lr=1e-30", "model.ssm_lr=1e-30"]
    moved = sashimi.load_model(train(load_config("demo", warm), tmp_path / "moved"))
    assert (moved.config.sample_rate, moved.config.l_max) == (rate, 1024)
    tokens = torch.randint(0, 256, (2, 700))
    with torch.no_grad():
        torch.testing.assert_close(moved(tokens), trained(tokens), rtol=0, atol=1e-9)


def test_input_jitter_moves_the_inputs_and_scores_the_clean_tokens(tone_root, tiny, monkeypatch):
    from sashimi.metrics import token_nll

    config = load_config("demo", tiny(tone_root, **{"optim.input_jitter": 2}))
    task = SaShiMiTask(config.to_dict())
    tokens = torch.randint(0, 256, (2, 256))
    tokens[:, :8] = torch.tensor([0, 1, 255, 254, 0, 255, 1, 128])  # the ends of the codebook clamp
    seen = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda t, labels=None: seen.append(t) or forward(t, labels))
    torch.manual_seed(0)
    with torch.no_grad():
        loss = task.training_loss(tokens)
        moved = seen[0]
        assert moved.shape == tokens.shape and (moved != tokens).float().mean() > 0.5
        assert (moved - tokens).abs().max() <= 2 and moved.min() >= 0 and moved.max() <= 255
        torch.testing.assert_close(loss, token_nll(forward(moved), tokens).mean())  # targets: the clean tokens


def test_input_jitter_is_refused_for_a_diffusion_model_and_beyond_the_codebook():
    with pytest.raises(sashimi.errors.ConfigError, match="optim.input_jitter moves an autoregressive model's input"):
        load_config("demo-diffwave", ["optim.input_jitter=1"])
    with pytest.raises(sashimi.errors.ConfigError, match="optim.input_jitter must be below the 256 quantization"):
        load_config("demo", ["optim.input_jitter=256"])


def test_self_feed_reads_the_models_own_draws_and_scores_the_clean_tokens(tone_root, tiny, monkeypatch):
    from sashimi.metrics import token_nll

    config = load_config("demo", tiny(tone_root, **{"optim.self_feed": 1.0}))
    task = SaShiMiTask(config.to_dict())
    head = task.model.head
    with torch.no_grad():  # a model sure of token 7 wherever the true past is odd-length, unsure elsewhere
        head.weight.zero_()
        head.bias.zero_()
    tokens = torch.randint(0, 256, (2, 512))
    seen = []
    forward = task.model.forward

    def sure_at_odd(t, labels=None):
        logits = forward(t, labels)
        logits[:, 1::2] = -1e4
        logits[:, 1::2, 7] = 1e4
        seen.append(t)
        return logits

    monkeypatch.setattr(task.model, "forward", sure_at_odd)
    torch.manual_seed(0)
    loss = task.training_loss(tokens)
    fed = seen[1]  # seen[0]: the clean tokens the draws are made from
    assert torch.equal(seen[0], tokens) and fed.shape == tokens.shape
    assert (fed[:, 1::2] == 7).all()  # where the model is sure, it reads what it would say
    assert 0.9 < (fed[:, ::2] != tokens[:, ::2]).float().mean() <= 1  # uniform draws elsewhere
    with torch.no_grad():
        torch.testing.assert_close(loss, token_nll(sure_at_odd(fed), tokens).mean())  # targets: the clean tokens
    half = SaShiMiTask(load_config("demo", tiny(tone_root, **{"optim.self_feed": 0.5})).to_dict())
    torch.manual_seed(1)
    mixed = half.self_fed(tokens, None, 0.5)
    kept = (mixed == tokens).float().mean()
    assert 0.4 < kept < 0.6  # about half drawn (a draw rarely equals the true token: 1 in 256 untrained)


def test_each_self_fed_pass_draws_given_the_previous_pass(tone_root, tiny, monkeypatch):
    """A model sure that each token is the one before it plus 1: pass 1 reads the true past (tokens[t-1] + 1),
    pass 2 reads pass 1's draws (tokens[t-2] + 2), pass 3 three steps of drift."""
    task = SaShiMiTask(load_config("demo", tiny(tone_root, **{"optim.self_feed": 1.0,
                                                               "optim.self_feed_passes": 3})).to_dict())

    def next_is_one_more(t, labels=None):  # (B L) -> (B L C): sure of t[:, i-1] + 1 at i, of 0 at 0
        want = torch.cat([torch.zeros_like(t[:, :1]), (t[:, :-1] + 1) % 256], 1)
        return torch.nn.functional.one_hot(want.long(), 256).float() * 1e4

    monkeypatch.setattr(task.model, "forward", next_is_one_more)
    tokens = torch.randint(0, 256, (2, 64))
    for passes in (1, 2, 3):
        fed = task.self_fed(tokens, None, 1.0, passes)
        assert torch.equal(fed[:, passes:], (tokens[:, :-passes] + passes) % 256), passes
    assert torch.equal(task.self_fed(tokens, None, 0.0, 3), tokens)  # share 0: no pass runs


def test_self_feed_is_refused_for_a_diffusion_model():
    with pytest.raises(sashimi.errors.ConfigError, match="optim.self_feed feeds an autoregressive model its own"):
        load_config("demo-diffwave", ["optim.self_feed=0.5"])


DIGIT_NAMES = "[zero,one,two,three,four,five,six,seven,eight,nine]"


@pytest.mark.parametrize("options", [{"optim.input_jitter": 2}, {"optim.self_feed": 0.5},
                                     {"optim.self_feed": 1.0, "optim.self_feed_passes": 2},
                                     {"optim.label_margin": 1e4, "optim.label_margin_window": "[0.001,0.01]",
                                      "model.labels": DIGIT_NAMES, "model.label_dropout": 0.3, "optim.self_feed": 0.5}])
def test_a_run_with_altered_inputs_resumes_to_the_same_weights(tone_root, tiny, tmp_path, options):
    """The jitter and the self-fed draws come from the torch RNG that exact resume restores: 3 + 2 steps equal 5."""
    over = tiny(tone_root, **{"trainer.precision": "64-true", "trainer.val_every": 2, **options})
    straight = train(load_config("demo", over + ["trainer.max_steps=5"]), tmp_path / "a")
    train(load_config("demo", over + ["trainer.max_steps=3"]), tmp_path / "b")
    a, b = weights(straight), weights(resume(tmp_path / "b", ["trainer.max_steps=5"]))
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
