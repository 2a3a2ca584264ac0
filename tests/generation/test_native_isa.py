"""The native step's kernels for other vector units than this CPU's (simd.h): each -march variant this machine
can run is built and checked against the eager fast step, whatever CPU the tests run on.

On x86-64: "x86-64-v3" (AVX2 + FMA: 8-float vectors, 16 registers) and "x86-64" (SSE2: 4-float vectors). On
AArch64 "armv8-a" (NEON). Each build takes about 30 s (cached per machine and source).
"""
import platform

import pytest
import torch

import sashimi
from sashimi.generation import native
from sashimi.generation.fast import FastLM
from tests.generation.conftest import small_model

ARCH = platform.machine().lower()
VARIANTS = {"x86-64-v3": "avx2", "x86-64": "sse2"} if ARCH in ("x86_64", "amd64") else (
    {"armv8-a": "neon"} if ARCH in ("aarch64", "arm64") else {})
if not VARIANTS:
    pytest.skip(f"no other -march variants known for {ARCH}", allow_module_level=True)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def march(request):
    try:
        mod = native.load(request.param)
    except native.NativeUnavailable as err:  # CI has gcc: a failed build is a failure, not a skip
        pytest.fail(f"the native step did not build with -march={request.param}: {err.__cause__!r}")
    assert mod.isa() == VARIANTS[request.param]
    return request.param


def _run(fast, u):
    """Steps with uniforms u (n B), feeding back its own samples."""
    prev, out = torch.full((u.shape[1],), fast._model().bos), []
    for k in range(u.shape[0]):
        prev, logp, logits = fast.step(prev, u[k])
        out.append((prev, logp, logits))
    return [torch.stack(x) for x in zip(*out)]


@pytest.mark.parametrize("layer,unet,B", [("s4", True, 1), ("s4d", False, 3), ("s4", False, 7)])
@torch.no_grad()
def test_variant_equals_eager_fast_step(march, layer, unet, B):
    """B = 7: GEMM row blocks of 4 and 3, the chunk table (batch >= 4) with partial row blocks."""
    model = small_model(layer, unet)
    u = torch.rand(75, B)
    nat = FastLM(model, B, backend="native", march=march)
    assert nat.backend == "native" and nat._native.isa == VARIANTS[march]
    tok_n, lp_n, logits_n = _run(nat, u)
    tok_e, lp_e, logits_e = _run(FastLM(model, B, backend="eager"), u)
    torch.testing.assert_close(logits_n, logits_e, atol=2e-5, rtol=1e-4)
    assert torch.equal(tok_n, tok_e)
    torch.testing.assert_close(lp_n, lp_e, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_variant_on_wide_layers_and_rank_two(march):
    """Widths that fill 64- and 32-column panels and partial ones; a rank-2 DPLR (legt); steps() in one call."""
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=40, d_state=8, n_layers=1, l_max=64, init="legt",
                                             pool=(2,))).eval()
    u = torch.rand(40, 5)
    nat = FastLM(model, 5, backend="native", march=march)
    tokens, logp, _ = nat.steps(torch.full((5,), model.bos), u)
    tok_e, lp_e, _ = _run(FastLM(model, 5, backend="eager"), u)
    assert torch.equal(tokens, tok_e)
    torch.testing.assert_close(logp, lp_e, atol=1e-5, rtol=1e-5)


def test_variant_threads_are_bit_identical(march):
    model = small_model("s4", True)
    u = torch.rand(40, 6)
    runs = []
    for threads in (1, 2):
        fast = FastLM(model, 6, backend="native", march=march)
        fast.threads = threads
        runs.append(fast.steps(torch.full((6,), model.bos), u)[:2])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_variant_gelu_is_accurate(march):
    mod = native.load(march)
    x = torch.linspace(-12, 12, 20_001)
    y, r = mod.elementwise("gelu", x).double(), torch.nn.functional.gelu(x.double())
    assert (y - r).abs().max() < 1e-6


def test_bad_march_is_refused():
    with pytest.raises(ValueError, match="march"):
        native.load("native; rm -rf /")
