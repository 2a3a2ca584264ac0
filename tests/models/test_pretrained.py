"""Models by name (sashimi/models/pretrained.py): shipped in the package, local folders, Hugging Face hub ids
(offline only: nothing downloads in tests), torch.hub, and the CLI."""
import json
import time
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.errors import CheckpointError
from sashimi.models import pretrained

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped_root(tmp_path, monkeypatch):
    """A package folder of shipped models holding a tiny 'digits' model with its card."""
    root = tmp_path / "pretrained"
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64))
    sashimi.save_model(model, root / "digits")
    (root / "digits" / "README.md").write_text("# digits: a tiny test model\n\nmore text\n")
    monkeypatch.setattr(pretrained, "SHIPPED_ROOT", root)
    return root


def test_a_shipped_model_loads_by_name(shipped_root):
    assert list(pretrained.shipped()) == ["digits"]
    assert pretrained.shipped()["digits"].summary == "digits: a tiny test model"
    by_name = sashimi.load_model("digits")
    from_folder = sashimi.load_model(shipped_root / "digits")
    assert isinstance(by_name, sashimi.SaShiMiLM)
    for a, b in zip(by_name.state_dict().values(), from_folder.state_dict().values()):
        assert torch.equal(a, b)
    assert isinstance(sashimi.SaShiMiLM.from_pretrained("digits"), sashimi.SaShiMiLM)
    assert isinstance(sashimi.SaShiMiLM.from_pretrained(str(shipped_root / "digits")), sashimi.SaShiMiLM)


def test_a_local_path_wins_over_a_name(shipped_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    other = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=16, d_state=8, n_layers=1, l_max=64))
    sashimi.save_model(other, tmp_path / "digits")
    assert sashimi.load_model("digits").config.d_model == 16


def test_an_unknown_name_lists_the_shipped_ones(shipped_root):
    with pytest.raises(CheckpointError, match=r"not a shipped model \(shipped: digits\)"):
        sashimi.load_model("speech")


def test_a_hub_id_offline_is_a_clear_error_not_a_hang(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="offline and not in the local cache"):
        pretrained.resolve("someone/sashimi-digits", offline=True, cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 10


def test_hf_hub_offline_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="offline"):
        sashimi.load_model("someone/sashimi-digits")


def test_a_hub_id_from_the_local_cache(tmp_path):
    """A snapshot already in the hub cache loads offline (the cache layout huggingface_hub reads)."""
    repo = tmp_path / "models--someone--digits"
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    torch.manual_seed(0)
    sashimi.save_model(sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)), snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    folder = pretrained.resolve("someone/digits", offline=True, cache_dir=tmp_path)
    assert (folder / "model.safetensors").is_file()


def test_a_classifier_is_not_an_lm(tmp_path):
    from sashimi.metrics.score import SHIPPED_CLASSIFIER

    with pytest.raises(CheckpointError):
        sashimi.SaShiMiLM.from_pretrained(str(SHIPPED_CLASSIFIER))


def test_torch_hub_loads_a_shipped_model_offline(shipped_root):
    model = torch.hub.load(str(REPO), "sashimi_digits", source="local", trust_repo=True)
    assert isinstance(model, sashimi.SaShiMiLM)


def test_the_cli_lists_and_generates_by_name(shipped_root, tmp_path, capsys):
    assert main(["models"]) == 0
    assert "digits" in capsys.readouterr().out
    out = tmp_path / "gen"
    assert main(["generate", "digits", "--n", "2", "--seconds", "0.01", "--backend", "eager", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["samples"]) == 2


def test_no_models_shipped_is_said_plainly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "SHIPPED_ROOT", tmp_path / "none")
    assert main(["models"]) == 0
    assert "no models are shipped" in capsys.readouterr().out
