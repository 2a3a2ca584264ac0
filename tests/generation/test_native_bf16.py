"""The native step with bfloat16 Linear weights (``weights="bf16"``): exactly the float32 step of a model whose
Linear weights were rounded to bfloat16 (float32 accumulation either way), on this CPU's kernels and the AVX2
ones; refused elsewhere with a clear message."""
import copy
import platform

import pytest
import torch

from sashimi.errors import ConfigError
from sashimi.generation import make_step, native
from sashimi.generation.fast import FastLM
from tests.generation.conftest import small_model

MARCHES = ["native"] + (["x86-64-v3"] if platform.machine().lower() in ("x86_64", "amd64") else [])


def _rounded(model):
    """A copy whose Linear weights (not biases, not the embedding) are rounded to bfloat16."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(m.weight.to(torch.bfloat16).float())
    return out


@pytest.mark.parametrize("march", MARCHES)
@pytest.mark.parametrize("layer,unet,B", [("s4", True, 3), ("s4d", False, 6)])
def test_bf16_weights_equal_the_float32_step_of_the_rounded_model(march, layer, unet, B):
    if not native.available():
        pytest.fail("the native step did not build")
    model = small_model(layer, unet)
    tokens = torch.randint(0, model.n_classes, (40, B))
    bf16 = FastLM(model, B, backend="native", weights="bf16", march=march)
    assert bf16.backend == "native" and bf16._native.weights == "bf16"
    got = bf16.forced(tokens)
    want = FastLM(_rounded(model), B, backend="eager").forced(tokens)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    full = FastLM(model, B, backend="native").forced(tokens)
    assert (got - full).abs().max() > 0  # the rounding is real
    torch.testing.assert_close(got, full, atol=0.05, rtol=0.05)


def test_bf16_threads_are_bit_identical():
    model = small_model("s4", True)
    u = torch.rand(40, 5)
    runs = []
    for threads in (1, 2):
        fast = FastLM(model, 5, backend="native", weights="bf16", threads=threads)
        runs.append(fast.steps(torch.full((5,), model.bos), u)[:2])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["eager", "reference"])
def test_bf16_weights_are_a_native_option(backend):
    with pytest.raises(ConfigError, match="native"):
        make_step(small_model(), 1, backend=backend, weights="bf16")
    with pytest.raises(ConfigError, match="weights"):
        make_step(small_model(), 1, weights="fp8")
