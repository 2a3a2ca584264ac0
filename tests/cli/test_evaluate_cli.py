"""`sashimi evaluate`: exact test bits/sample of a run, an exported model, and clear errors."""
import json
import math

import pytest
import torch

from sashimi.cli.main import main
from sashimi.data import build_dataset
from sashimi.train.config import load_config
from sashimi.train.evaluate import load_for_evaluation


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    assert main(["data", "synth-digits", "--root", str(tmp / "digits"), "--n-clips", "80", "--workers", "1"]) == 0
    args = ["train", "demo", f"data.root={tmp / 'digits'}", "data.sample_len=800", "model.l_max=800",
            "trainer.batch_size=4", "trainer.max_steps=2", "trainer.val_every=2", "trainer.progress_bar=false"]
    assert main([*args, "--run-dir", str(tmp / "run")]) == 0
    return tmp / "run"


def hand_bits(model, dataset) -> tuple[float, int]:
    """Per example, unbatched: -sum log softmax(logits)[token], in bits per sample."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for x in dataset:
            logp = torch.log_softmax(model(x[None])[0].double(), dim=-1)  # (L C)
            nll -= float(logp[torch.arange(len(x)), x].sum())
            n += len(x)
    return nll / n / math.log(2), n


def test_evaluate_run_json_equals_hand_computation(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--json", "--batch-size", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    model, config = load_for_evaluation(run)
    expected, n = hand_bits(model.eval(), build_dataset(config.data, "test"))
    assert result["samples"] == n and result["split"] == "test"
    assert result["bits_per_sample"] == pytest.approx(expected, rel=1e-6)
    assert result["loss"] == pytest.approx(expected * math.log(2), rel=1e-6)


def test_exported_model_needs_a_config_for_its_data(run, capsys):
    assert main(["evaluate", str(run / "model"), "--split", "valid"]) == 2
    assert "pass --config CONFIG" in capsys.readouterr().err
    assert main(["evaluate", str(run / "model"), "--config", str(run / "config.yaml"), "--split", "valid"]) == 0
    assert "bits/sample" in capsys.readouterr().out


def test_checkpoint_errors(tmp_path, capsys):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(bad)]) == 2
    assert "not a readable sashimi training checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none")]) == 2
    assert "not a run directory, a .ckpt file or an exported model" in capsys.readouterr().err
    assert load_config("demo").data.name == "digits"


@pytest.mark.parametrize("content", [
    {"weight": torch.zeros(2)},  # a plain torch.save of a state dict
    {"hyper_parameters": {"lr": 1.0}, "state_dict": {"w": torch.zeros(1)}},  # another program's checkpoint
    torch.zeros(3),
])
def test_a_torch_file_that_is_not_a_training_checkpoint_is_a_clear_error(tmp_path, capsys, content):
    path = tmp_path / "model.ckpt"
    torch.save(content, path)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sashimi evaluate: error: {path}: not a sashimi training checkpoint")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_training_checkpoint_whose_weights_do_not_fit_its_config_is_a_clear_error(run, tmp_path, capsys):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"].pop(next(iter(ckpt["state_dict"])))
    torch.save(ckpt, tmp_path / "cut.ckpt")
    assert main(["evaluate", str(tmp_path / "cut.ckpt")]) == 2
    assert "weights do not match the config (missing" in capsys.readouterr().err
