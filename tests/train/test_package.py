"""`sashimi package`: a finished run as a model folder with a card set and a model card that agree."""
import json

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.errors import ConfigError
from sashimi.models import pretrained
from sashimi.train import load_config, train
from sashimi.train.package import card_set_score, load_card_set


@pytest.fixture(scope="module")
def run_dir(tone_root, tmp_path_factory):
    from tests.train.conftest import tiny_overrides

    run = tmp_path_factory.mktemp("pkg") / "run"
    train(load_config("demo", tiny_overrides(tone_root, **{"trainer.max_steps": 2})), run)
    return run


def _scores(path):
    row = {"fid": 1.5, "is": 2.0, "mis": 3.0, "am": 0.5, "ndb": 4.0, "mean_confidence": 0.9}
    path.write_text(json.dumps({**row, "n_samples": 4, "class_counts": {"one": 3, "two": 1},
                                "reference": {"train": row, "test": row}}))
    return path


def test_package_writes_a_folder_whose_card_bits_reproduce(run_dir, tmp_path, capsys):
    out = tmp_path / "shipped" / "tones"
    assert main(["package", str(run_dir), "--out", str(out), "--summary", "tones, for the tests",
                 "--scores", str(_scores(tmp_path / "s.json")), "--card-clips", "3", "--trained", "2 steps"]) == 0
    assert "card set" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert card.splitlines()[0] == "# tones: tones, for the tests"
    assert "| model samples (4) |" in card and "Heard as: one 3, two 1" in card and "2 steps" in card
    tokens = load_card_set(out)
    assert tokens.shape == (3, 512)
    written = float(card.split("the first 3 test clips): **")[1].split(" bits")[0])
    model = sashimi.load_model(out)
    assert abs(card_set_score(model, tokens) - written) < 1e-4
    test_bits = float(card.split("training): **")[1].split(" bits")[0])
    assert 0 < test_bits < 12  # two steps of training: near log2(256)
    exported = sashimi.load_model(run_dir / "model").state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, exported[k])


def test_a_packaged_folder_is_a_shipped_model_by_name(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "pretrained" / "tones"
    assert main(["package", str(run_dir), "--out", str(out), "--summary", "tones", "--no-test-split",
                 "--card-clips", "2"]) == 0
    monkeypatch.setattr(pretrained, "SHIPPED_ROOT", tmp_path / "pretrained")
    assert pretrained.shipped()["tones"].summary == "tones: tones"
    assert isinstance(sashimi.load_model("tones"), sashimi.SaShiMiLM)


@pytest.mark.parametrize("case, message", [
    ("not-a-run", "not a finished run directory"),
    ("bad-scores", "not a readable `sashimi score --json` file"),
    ("clips", "--card-clips: expected 1.."),
    ("exists", "already holds a model"),
])
def test_bad_input_is_one_clear_error(run_dir, tmp_path, case, message):
    args = [str(run_dir), "--out", str(tmp_path / "x"), "--summary", "s", "--no-test-split"]
    if case == "not-a-run":
        args[0] = str(tmp_path)
    elif case == "bad-scores":
        (tmp_path / "s.json").write_text("{")
        args += ["--scores", str(tmp_path / "s.json")]
    elif case == "clips":
        args += ["--card-clips", "1000"]
    elif case == "exists":
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "model.safetensors").write_bytes(b"a user's model")
    from sashimi.cli.main import build_parser

    parsed = build_parser().parse_args(["package", *args])
    with pytest.raises(ConfigError, match=message):
        parsed.handler(parsed)


def test_overwrite_replaces_a_packaged_model(run_dir, tmp_path):
    out = tmp_path / "m"
    args = ["package", str(run_dir), "--out", str(out), "--summary", "s", "--no-test-split", "--card-clips", "1"]
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0


def test_a_diffusion_run_packages_with_its_denoising_loss(tone_root, tmp_path):
    """A DiffWave's card set is float audio and its card number the seeded denoising loss, reproduced on load;
    the test-split number is the mean over bands that `sashimi evaluate` gives."""
    from sashimi.train.evaluate import evaluate_checkpoint
    from tests.train.conftest import tiny_overrides

    run = tmp_path / "dw"
    train(load_config("demo-diffwave", tiny_overrides(tone_root, **{"trainer.max_steps": 2})), run)
    out = tmp_path / "shipped" / "dw"
    assert main(["package", str(run), "--out", str(out), "--summary", "a diffusion model", "--card-clips", "2"]) == 0
    audio = load_card_set(out).rows
    assert audio.dtype == torch.float32 and audio.shape == (2, 512) and audio.abs().max() <= 1
    card = (out / "README.md").read_text()
    assert "diffusion steps" in card and "Held-out denoising loss" in card and "--n 8 --steps 50 --report" in card
    written = float(card.split("the first 2 test clips): **")[1].split(" denoising loss")[0])
    model = sashimi.load_model(out)
    assert isinstance(model, sashimi.DiffWave)
    assert abs(card_set_score(model, audio) - written) < 1e-4
    test_loss = float(card.split("training): **")[1].split(" denoising loss")[0])
    assert test_loss == pytest.approx(evaluate_checkpoint(run, progress=False)["loss"], abs=1e-4)
