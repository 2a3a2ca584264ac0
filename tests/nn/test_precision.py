"""bf16 Linear copies for inference (``sashimi.nn.precision``): what each layer computes, that the copy leaves the
model alone, and that DiffWave sampling through it stays close to the float32 reference."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.diffusion.generate import generate
from sashimi.models.diffwave import DiffWave
from sashimi.models.diffwave_config import DiffWaveConfig
from sashimi.nn.precision import BF16Linear, bf16_linears

SMALL = {"kind": "diffwave", "d_model": 8, "n_layers": 1, "pool": [2, 2], "d_state": 8, "l_max": 64, "embed_in": 8,
         "embed_mid": 16, "embed_out": 16, "diffusion_steps": 20}


def test_a_bf16_linear_is_the_product_of_bf16_rounded_operands_in_the_inputs_dtype():
    torch.manual_seed(0)
    linear, x = nn.Linear(24, 40), torch.randn(5, 7, 24)
    fast = BF16Linear(linear)
    y = fast(x)
    assert y.dtype == torch.float32 and y.shape == (5, 7, 40)
    rounded = F.linear(x.bfloat16().float(), linear.weight.bfloat16().float(), linear.bias.bfloat16().float())
    assert torch.allclose(y, rounded, rtol=1e-2, atol=1e-2)  # the output is rounded to bf16 once
    reference = linear(x)
    assert ((y - reference).norm() / reference.norm()) < 1e-2
    assert list(fast.parameters()) == [] and fast.weight.dtype == torch.bfloat16


def test_the_copy_replaces_every_linear_and_leaves_the_model_as_it_was():
    model = DiffWave(DiffWaveConfig.from_dict(SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = bf16_linears(model)
    assert not any(type(m) is nn.Linear for m in fast.modules())
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert n_linear > 10 and sum(isinstance(m, BF16Linear) for m in fast.modules()) == n_linear
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in fast.parameters())  # S4 kernels, norms: untouched
    assert not fast.training


def test_diffwave_sampling_with_bf16_linears_stays_close_to_float32_and_is_seeded():
    torch.manual_seed(0)
    model = DiffWave(DiffWaveConfig.from_dict(SMALL)).eval()
    nn.init.normal_(model.backbone.out.weight, std=0.3)  # an untrained head predicts zero noise: make it speak
    fast = bf16_linears(model)
    reference = generate(model, [3, 4], 64, steps=5)
    a, b = generate(fast, [3, 4], 64, steps=5), generate(fast, [3, 4], 64, steps=5)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert ((a - reference).norm() / reference.norm()) < 5e-2
