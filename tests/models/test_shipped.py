"""The models shipped in the package: they load by name and from their folder, their config and weights agree
with their model card (bits per sample, or a diffusion model's denoising loss, on the card set), they fit the
size budget, and the README's main job runs end to end with them."""
import json
import re
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.models import pretrained
from sashimi.train.package import card_set_score, load_card_set

REPO = Path(__file__).resolve().parents[2]
SHIPPED = pretrained.shipped()
BUDGET = 25 * 2**20  # all shipped models together


def test_the_digits_model_is_shipped():
    assert "digits" in SHIPPED, f"no 'digits' model under {pretrained.SHIPPED_ROOT}"


def test_shipped_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in pretrained.SHIPPED_ROOT.rglob("*") if p.is_file())
    assert total <= BUDGET, f"{total / 2**20:.1f} MB shipped, budget {BUDGET / 2**20:.0f} MB"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_bits_reproduce_from_name_and_folder(name):
    """The card's bits per sample on its card set, recomputed from the shipped config and weights (within 0.01)."""
    folder = SHIPPED[name].folder
    card = (folder / "README.md").read_text(encoding="utf-8")
    written = float(re.search(r"test clips\): \*\*([0-9.]+) (bits per sample|denoising loss)", card).group(1))
    tokens = load_card_set(folder)
    by_name, by_folder = sashimi.load_model(name), sashimi.load_model(folder)
    for a, b in zip(by_name.state_dict().values(), by_folder.state_dict().values()):
        assert torch.equal(a, b)
    assert abs(card_set_score(by_name, tokens) - written) < 0.01
    config = json.loads((folder / "config.json").read_text())["config"]
    assert config == by_name.config.to_dict()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_torch_hub_loads_every_shipped_model_offline(name):
    entry = "sashimi_" + name.replace("-", "_")
    assert f"def {entry}()" in (REPO / "hubconf.py").read_text(), f"hubconf.py has no {entry}"
    model = torch.hub.load(str(REPO), entry, source="local", trust_repo=True)
    shipped = sashimi.load_model(name)
    assert type(model) is type(shipped) and model.config.to_dict() == shipped.config.to_dict()


def test_the_readme_main_job_runs_with_the_shipped_model(tmp_path, capsys):
    """README's main job at a reduced --n and length: samples, manifest and a report with what the classifier
    hears beside each sample."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    job = re.search(r"## Run the main job.*?```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    assert job.startswith("sashimi generate digits-m1 "), job
    args = job.split()[1:]
    out = tmp_path / "digits"
    args[args.index("--out") + 1] = str(out)
    args[args.index("--n") + 1] = "2"
    args[args.index("--seconds") + 1] = "0.05"
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["samples"]) == 2
    assert "classifier hears" in (out / "index.html").read_text()
    assert main(["models"]) == 0
    assert "digits" in capsys.readouterr().out
