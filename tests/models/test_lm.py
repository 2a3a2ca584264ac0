"""Whole-model invariants: convolution == recurrence, prefill, causality, presets."""
import pytest
import torch

from sashimi import SaShiMiLM, preset
from sashimi.errors import ConfigError
from sashimi.models import SaShiMiConfig
from tests.conftest import rel_err

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def small(layer="s4", pool=(4, 4), unet=False, l_max=64, **kw):
    cfg = preset("tiny", layer=layer, pool=pool, unet=unet, l_max=l_max, d_model=8, d_state=8, **kw)
    return SaShiMiLM(cfg)


def step_logits(model, tokens):
    state = model.default_state(tokens.shape[0])
    prev = torch.full((tokens.shape[0],), model.bos)
    out = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(prev, state)
        out.append(logits)
        prev = tokens[:, t]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layer", ["s4", "s4d"])
@pytest.mark.parametrize("pool,unet,L", [((4, 4), False, 64), ((2,), False, 37), ((2, 3, 2), False, 50),
                                         ((4, 4), True, 45), ((2, 2), True, 16)])
def test_convolution_equals_recurrence(dtype, layer, pool, unet, L):
    model = small(layer, pool, unet).to(dtype).eval()
    tokens = torch.randint(0, 256, (2, L))
    with torch.no_grad():
        assert rel_err(step_logits(model, tokens), model(tokens)) < TOL[dtype]


@pytest.mark.parametrize("layer", ["s4", "s4d"])
@pytest.mark.parametrize("T", [0, 1, 15, 16, 33])
def test_prefill_then_step_equals_forward(layer, T):
    model = small(layer, pool=(4, 2)).double().eval()
    tokens = torch.randint(0, 256, (2, 48))
    with torch.no_grad():
        full = model(tokens)
        logits, state = model.prefill(tokens[:, :T])
        assert rel_err(logits, full[:, T]) < 1e-8
        for t in range(T, T + 10):
            logits, state = model.step(tokens[:, t], state)
            assert rel_err(logits, full[:, t + 1]) < 1e-8


@pytest.mark.parametrize("layer,unet", [("s4", False), ("s4d", True)])
def test_causal_gradient_is_exactly_zero(layer, unet):
    model = small(layer, unet=unet).double()
    tokens = torch.randint(0, 256, (1, 64))
    inputs = {}
    hook = model.embedding.register_forward_hook(lambda m, i, o: inputs.setdefault("x", o.requires_grad_().retain_grad() or o))
    logits = model(tokens)
    hook.remove()
    t = 29
    logits[0, t].sum().backward()
    grad = inputs["x"].grad[0].abs().sum(-1)  # (L): input position p holds token p-1 (position 0 is BOS)
    assert torch.all(grad[t + 1:] == 0)  # tokens[>= t] have exactly zero influence on logits[t]
    assert torch.all(grad[: t + 1] > 0)


def test_parameter_counts_of_presets():
    count = lambda name: sum(p.numel() for p in SaShiMiLM(preset(name)).parameters())
    assert 4.1e6 <= count("sc09") <= 6.8e6  # the papers' range for SC09 SaShiMi
    assert count("tiny") < 200_000
    assert count("youtubemix") == count("sc09")  # same backbone, longer kernels


def test_config_validation_is_clear():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_layer'\]"):
        SaShiMiConfig.from_dict({"n_layer": 3})
    with pytest.raises(ConfigError, match="model.d_model: expected an integer"):
        SaShiMiConfig.from_dict({"d_model": "big"})
    with pytest.raises(ConfigError, match="quantization"):
        SaShiMiConfig(quantization="ulaw")
    with pytest.raises(ConfigError, match="unknown model preset"):
        preset("huge")


def test_tokens_out_of_range_are_rejected():
    model = small()
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 256\)"):
        model(torch.full((1, 8), 256))
