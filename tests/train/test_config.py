"""Training configs: shipped presets, base chains, overrides, and errors that name the field."""
from pathlib import Path

import pytest
import yaml

from sashimi.errors import ConfigError
from sashimi.train.config import find_config, load_config

PUBLISHED = {  # preset: (sequence length, quantization, batch, lr, weight decay, schedule)
    "sc09": (16000, "mu-law", 32, 0.001, 0.0, "plateau"),
    "sc09-unet": (16000, "mu-law", 16, 0.001, 0.1, "cosine"),
    "youtubemix": (131072, "mu-law", 1, 0.004, 0.0, "plateau"),
    "beethoven": (128000, "linear", 1, 0.004, 0.0, "plateau"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_carry_published_hyperparameters(name):
    c = load_config(name)
    assert (c.data.sample_len, c.data.quantization, c.trainer.batch_size, c.optim.lr, c.optim.weight_decay,
            c.schedule.name) == PUBLISHED[name]
    assert c.model.quantization == c.data.quantization and c.model.bits == c.data.bits == 8
    assert c.model.ssm_lr == 0.001


def test_unet_preset_is_sc09_with_changes():
    c = load_config("sc09-unet.yaml")
    assert c.model.unet and c.schedule.warmup_steps == 1000 and c.schedule.total_steps == 200_000
    assert c.model.n_layers == load_config("sc09").model.n_layers


def test_demo_uses_tiny_model_on_digits():
    c = load_config("demo")
    assert c.data.name == "digits" and (c.model.d_model, c.model.n_layers) == (16, 2)


def test_overrides_parse_yaml_values():
    c = load_config("demo", ["model.n_layers=4", "optim.lr=1e-3", "model.pool=[2, 2]", "data.root=/data/x",
                             "trainer.progress_bar=false", "trainer.val_batches=null"])
    assert (c.model.n_layers, c.optim.lr, c.model.pool, c.data.root) == (4, 0.001, (2, 2), "/data/x")
    assert c.trainer.progress_bar is False and c.trainer.val_batches is None


def test_config_path_and_to_dict_roundtrip(tmp_path):
    c = load_config("sc09")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(c.to_dict()))
    assert load_config(path).to_dict() == c.to_dict()
    assert find_config(path) == path


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=1"], "optim: unknown key(s) ['lrr']"),
    (["model.d_modle=8"], "model: unknown key(s) ['d_modle']"),
    (["trainers.devices=2"], "unknown section 'trainers'"),
    (["optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
    (["model.n_layers=2.5"], "model.n_layers: expected an integer"),
    (["trainer.precision=8-true"], "trainer.precision must be one of"),
    (["data.bits=4"], "model.bits=8 disagrees with data.bits=4"),
    (["model.quantization=linear"], "model.quantization='linear' disagrees with data.quantization='mu-law'"),
    (["optim.lr"], "expected section.key=value"),
    (["optim.label_lr=0.01"], "optim.label_lr is the lr of a conditional model's label embedding: set model.labels"),
    (["optim.label_lr=-1", "model.labels=[a,b]"], "optim.label_lr must be a finite number > 0 (or null: optim.lr), "
                                                   "got -1"),
    (["optim.input_jitter=-1"], "optim.input_jitter must be a whole number of quantization steps >= 0 (0: off), "
                                "got -1"),
    (["optim.input_jitter=1.5"], "optim.input_jitter: expected an integer, got 1.5"),
    (["optim.self_feed=1.5"], "optim.self_feed must be a share in [0, 1] of the input tokens (0: off), got 1.5"),
    (["optim.self_feed=-0.1"], "optim.self_feed must be a share in [0, 1] of the input tokens (0: off), got -0.1"),
    (["optim.self_feed=1", "optim.self_feed_passes=0"], "optim.self_feed_passes must be a whole number of passes "
                                                         ">= 1, got 0"),
    (["optim.self_feed=1", "optim.self_feed_passes=1.5"], "optim.self_feed_passes: expected an integer, got 1.5"),
    (["optim.self_feed_passes=2"], "optim.self_feed_passes is 2 but optim.self_feed is 0: set the share"),
    (["optim.label_margin=-1", "model.labels=[a,b]"], "optim.label_margin must be a finite number of bits per clip "
                                                       ">= 0 (0: off), got -1"),
    (["optim.label_margin=50", "optim.label_margin_weight=0", "model.labels=[a,b]"],
     "optim.label_margin_weight must be a finite number > 0, got 0"),
    (["optim.label_margin=50"], "optim.label_margin parts a conditional model's labels: set model.labels to two or "
                                "more names"),
    (["optim.label_margin=50", "optim.label_margin_window=[0.1]", "model.labels=[a,b]"],
     "optim.label_margin_window must be two numbers of seconds >= 0, not both 0 (before, after the onset), or null"),
    (["optim.label_margin_window=[0.05,0.05]"], "optim.label_margin_window is set but optim.label_margin is 0"),
    (["optim.onset_weight=0"], "optim.onset_weight must be a finite number > 0 (1: plain NLL), got 0"),
    (["optim.onset_window=[0.1]"], "optim.onset_window must be two numbers of seconds >= 0 (before, after the "
                                   "onset), got [0.1]"),
])
def test_config_errors_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("demo", override)
    assert message in str(err.value)


def test_unknown_config_name_lists_presets():
    with pytest.raises(ConfigError, match="not a shipped config.*sc09"):
        load_config("sc10")


def test_base_chain_and_unknown_section(tmp_path):
    (tmp_path / "a.yaml").write_text("base: sc09.yaml\noptim: {lr: 0.002}\n")
    assert load_config(tmp_path / "a.yaml").optim.lr == 0.002
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptimizer: {lr: 0.002}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "c.yaml")


RECIPES = sorted((Path(__file__).resolve().parents[2] / "docs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_documented_recipe_validates(path):
    """The recipes RESULTS.md cites are configs a user can run: each one passes the same validation as a preset."""
    config = load_config(path)
    assert config.trainer.max_steps > 0


def test_recipes_are_found():
    assert len(RECIPES) >= 20
