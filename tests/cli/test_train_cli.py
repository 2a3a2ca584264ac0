"""`sashimi train` the way a user runs it: demo.yaml on the built-in digits set, errors, kill -9 and resume, DDP."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.train.logs import read_metrics as metrics

UNIFORM_NATS = math.log(256)  # 8 bits
FAST = ["data.sample_len=1024", "model.l_max=1024", "trainer.batch_size=4", "trainer.log_every=1",
        "trainer.progress_bar=false", "trainer.val_batches=2", "optim.lr=0.02"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    assert main(["data", "synth-digits", "--root", str(root), "--n-clips", "60", "--workers", "1"]) == 0
    return root


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sashimi", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_learns_well_below_8_bits(digits, tmp_path):
    run = tmp_path / "run"
    args = ["train", "demo", f"data.root={digits}", *FAST, "trainer.max_steps=20", "trainer.val_every=20"]
    assert main([*args, "--run-dir", str(run)]) == 0
    m = metrics(run)
    train_loss = [v for _, v in m["train/loss"]]
    assert train_loss[0] > 0.95 * UNIFORM_NATS
    assert sum(train_loss[-5:]) / 5 < 0.8 * UNIFORM_NATS  # below 6.4 bits after 20 steps
    (step, val_bits), = m["val/bits_per_sample"]
    assert step == 19 and val_bits < 6.5
    model = sashimi.load_model(run / "model")
    assert model.config.d_model == 16 and (run / "config.yaml").is_file()


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "optim: unknown key(s) ['lrr']"),
    ("trainer.batch_size=four", "trainer.batch_size: expected an integer, got 'four'"),
    ("data.root=/no/such/dir", "data.root: /no/such/dir is not a directory"),
])
def test_config_errors_are_one_clear_line(override, message, capsys, tmp_path):
    assert main(["train", "demo", override, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_run(capsys, tmp_path):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "last.ckpt: no such checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_and_resume_reach_identical_float64_weights(digits, tmp_path):
    over = [f"data.root={digits}", *FAST, "trainer.precision=64-true", "trainer.max_steps=10",
            "trainer.val_every=4", "trainer.checkpoint_every=2", "schedule.patience=0"]
    done = cli("train", "demo", *over, "--run-dir", str(tmp_path / "straight"))
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sashimi", "train", "demo", *over, "--run-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    while not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 4):  # past a validation
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists()
    resumed = cli("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    a, b = sashimi.load_model(tmp_path / "straight" / "model"), sashimi.load_model(killed / "model")
    assert next(a.parameters()).dtype == torch.float64
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    for key in ("train/loss", "val/loss", "train/lr"):  # same values at the same steps (later attempts win)
        assert dict(metrics(tmp_path / "straight")[key]) == dict(metrics(killed)[key]), key


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process_on_the_same_global_batch(digits, tmp_path):
    over = [f"data.root={digits}", *FAST, "trainer.precision=64-true", "trainer.max_steps=3",
            "trainer.val_every=3", "trainer.accelerator=cpu"]
    one = cli("train", "demo", *over, "trainer.batch_size=4", "--run-dir", str(tmp_path / "one"))
    two = cli("train", "demo", *over, "trainer.batch_size=2", "trainer.devices=2", "--run-dir", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "distributed_backend=gloo" in two.stderr and "All distributed processes registered" in two.stderr
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for key in ("train/loss", "val/loss"):
        assert [s for s, _ in m1[key]] == [s for s, _ in m2[key]]
        assert [v for _, v in m1[key]] == pytest.approx([v for _, v in m2[key]], rel=1e-12, abs=0)
    a, b = sashimi.load_model(tmp_path / "one" / "model"), sashimi.load_model(tmp_path / "two" / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12), name


def test_overrides_may_follow_options():
    from sashimi.cli.main import parse

    _, args = parse(["train", "demo", "--run-dir", "runs/x", "trainer.max_steps=3", "optim.lr=0.01"])
    assert args.args == ["demo", "trainer.max_steps=3", "optim.lr=0.01"] and str(args.run_dir) == "runs/x"
    _, args = parse(["evaluate", "runs/x", "--split", "test", "data.root=d"])
    assert args.overrides == ["data.root=d"] and args.split == "test"
    with pytest.raises(SystemExit):  # a real unknown option is still an error
        parse(["train", "demo", "--run-dri", "runs/x"])
