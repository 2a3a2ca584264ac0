import json

import pytest
import torch
from safetensors.torch import save_file

from sashimi import SaShiMiLM, load_model, preset, save_model
from sashimi.errors import CheckpointError


@pytest.fixture
def model():
    return SaShiMiLM(preset("tiny", l_max=64)).eval()


@pytest.mark.parametrize("name", ["run", "weights.safetensors"])
def test_round_trip_gives_identical_logits(model, tmp_path, name):
    save_model(model, tmp_path / name)
    loaded = load_model(tmp_path / name)
    tokens = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.config == model.config
    if name == "run":
        assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["d_model"] == 16


def test_round_trip_keeps_float64(model, tmp_path):
    save_model(model.double(), tmp_path / "m.safetensors")
    assert next(load_model(tmp_path / "m.safetensors").parameters()).dtype == torch.float64


def test_corrupted_checkpoint_is_a_clear_error(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_model(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(path)


def test_wrong_version_and_foreign_files_are_clear_errors(model, tmp_path):
    header = {"format_version": 99, "kind": "lm", "config": model.config.to_dict()}
    save_file({"x": torch.zeros(1)}, tmp_path / "v99.safetensors", metadata={"sashimi": json.dumps(header)})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(tmp_path / "v99.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not saved by sashimi"):
        load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing")


def test_weights_that_do_not_match_the_config_are_refused(model, tmp_path):
    save_model(model, tmp_path / "m.safetensors")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    header = {"format_version": 1, "kind": "lm", "config": model.config.to_dict()}
    save_file(state, tmp_path / "bad.safetensors", metadata={"sashimi": json.dumps(header)})
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "bad.safetensors")


def test_saved_files_get_the_mode_the_umask_gives(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_model(SaShiMiLM(preset("tiny", n_layers=1, d_model=8, d_state=8)), tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644
