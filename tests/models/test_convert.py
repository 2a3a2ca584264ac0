"""Official-weight import: parity with the reference fixture and conversion of other layouts."""
import pytest
import torch

from sashimi import load_model
from sashimi.cli.main import main
from sashimi.errors import CheckpointError
from sashimi.models import SaShiMi
from sashimi.models.convert import convert_official_backbone, load_official_backbone
from tests.conftest import rel_err, unroll


def test_reference_fixture_parity(reference_path):
    ref = torch.load(reference_path, weights_only=True)
    _, model = load_official_backbone(str(reference_path), dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        assert rel_err(model(ref["input"]), ref["output"]) < 1e-8
        assert rel_err(unroll(model, ref["input"])[0], ref["output"]) < 1e-8


def test_cli_convert_then_load(reference_path, tmp_path, capsys):
    assert main(["convert-official", str(reference_path), str(tmp_path / "bb"), "--dtype", "float64"]) == 0
    assert "parameters" in capsys.readouterr().out
    ref = torch.load(reference_path, weights_only=True)
    model = load_model(tmp_path / "bb")
    with torch.no_grad():
        assert rel_err(model(ref["input"]), ref["output"]) < 1e-8


def to_official(model: SaShiMi) -> dict:
    """Our backbone in the official key layout (the inverse mapping), to test other sizes and layouts."""
    sd = model.state_dict()
    cfg = model.init_kwargs
    per_tier = 2 * cfg["n_layers"]
    out, k = {"norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}, 0
    names = {}
    for i in range(len(cfg["pool"])):
        for j in range(per_tier if cfg["unet"] else 0):
            names[f"down_blocks.{i}.{j}"] = f"d_layers.{k}"
            k += 1
        names[f"down.{i}"] = f"d_layers.{k}"
        k += 1
    for j in range(per_tier):
        names[f"center.{j}"] = f"c_layers.{j}"
    n = len(cfg["pool"])
    for u in range(n):
        names[f"up.{n - 1 - u}"] = f"u_layers.{u}.0"
        for j in range(per_tier):
            names[f"up_blocks.{n - 1 - u}.{j}"] = f"u_layers.{u}.{j + 1}"
    for ours, theirs in names.items():
        get = lambda key: sd[f"{ours}.{key}"]
        if f"{ours}.linear.weight" in sd:
            out[f"{theirs}.linear.weight"] = get("linear.weight")[..., None]
            out[f"{theirs}.linear.bias"] = get("linear.bias")
            continue
        out[f"{theirs}.norm.weight"], out[f"{theirs}.norm.bias"] = get("norm.weight"), get("norm.bias")
        if f"{ours}.linear_in.weight" in sd:
            out[f"{theirs}.layer.ff.0.0.weight"] = get("linear_in.weight")[..., None]
            out[f"{theirs}.layer.ff.0.0.bias"] = get("linear_in.bias")
            out[f"{theirs}.layer.ff.2.weight"] = get("linear_out.weight")[..., None]
            out[f"{theirs}.layer.ff.2.bias"] = get("linear_out.bias")
            continue
        kern = f"{theirs}.layer.layer.kernel"
        out[f"{theirs}.layer.layer.D"] = get("layer.D")[None]
        out[f"{kern}.inv_dt"] = get("layer.kernel.log_dt")[:, None]
        for name in ["A_real", "A_imag", "P", "C", "l_kernel"]:
            out[f"{kern}.{name}"] = get(f"layer.kernel.{name}")
        out[f"{kern}.B"] = get("layer.kernel.B")[None]
        out[f"{theirs}.layer.output_linear.0.weight"] = get("layer.output_linear.weight")
        out[f"{theirs}.layer.output_linear.0.bias"] = get("layer.output_linear.bias")
    return out


@pytest.mark.parametrize("kwargs", [
    dict(d_model=8, n_layers=1, pool=(2, 3, 2), expand=2, ff=2, d_state=16, l_max=48),
    dict(d_model=6, n_layers=2, pool=(4,), expand=3, ff=4, d_state=8, l_max=32, unet=True),
])
def test_other_sizes_and_layouts_convert(kwargs):
    ours = SaShiMi(**kwargs).double().eval()
    cfg, converted = convert_official_backbone({f"model.backbone.{k}": v for k, v in to_official(ours).items()})
    assert cfg["pool"] == tuple(kwargs["pool"]) and cfg["unet"] == kwargs.get("unet", False)
    assert cfg["d_state"] == kwargs["d_state"] and cfg["expand"] == kwargs["expand"] and cfg["ff"] == kwargs["ff"]
    back = SaShiMi(**cfg).double().eval()
    back.load_state_dict(converted)
    x = torch.randn(2, 48, kwargs["d_model"], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_backbone(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        load_official_backbone(str(tmp_path / "junk.pt"))
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="could not find an official SaShiMi backbone"):
        load_official_backbone(str(tmp_path / "other.pt"))
    assert main(["convert-official", str(tmp_path / "junk.pt"), str(tmp_path / "out")]) == 2


def test_presets_command_prints_sizes(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "sc09" in out and "5,447,744" in out and "4.1M-6.8M" in out and "tiny" in out
