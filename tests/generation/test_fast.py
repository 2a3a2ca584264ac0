import math
import warnings

import pytest
import torch

import sashimi
from sashimi.generation.fast import FastLM
from tests.generation.conftest import small_model


def _eager_logits(model, tokens):
    """Logits (B L C) from SaShiMiLM.step, BOS first."""
    state = model.default_state(tokens.shape[0])
    prev, out = torch.full_like(tokens[:, 0], model.bos), []
    for t in range(tokens.shape[1]):
        logits, state = model.step(prev, state)
        out.append(logits)
        prev = tokens[:, t]
    return torch.stack(out, 1)


def _fast_logits(fast, tokens, first):
    prev, out = first, []
    for t in range(tokens.shape[1]):
        out.append(fast.step(prev, torch.zeros(tokens.shape[0]))[2])
        prev = tokens[:, t]
    return torch.stack(out, 1)


@pytest.mark.parametrize("layer,unet", [("s4", False), ("s4d", False), ("s4", True)])
@torch.no_grad()
def test_fast_step_equals_eager_step_equals_convolution(layer, unet):
    model = small_model(layer, unet)
    tokens = torch.randint(0, 256, (3, 70))  # > 4 pooling periods of 16
    conv = model(tokens)
    eager = _eager_logits(model, tokens)
    fast = _fast_logits(FastLM(model, 3, backend="eager"), tokens, torch.full((3,), model.bos))
    torch.testing.assert_close(eager, conv, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fast, eager, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("T", [1, 7, 16, 33])
@torch.no_grad()
def test_fast_step_continues_from_prefill_state(T):
    model = small_model("s4")
    tokens = torch.randint(0, 256, (2, 50))
    conv = model(tokens)
    logits, state = model.prefill(tokens[:, :T])
    fast = FastLM(model, 2, backend="eager")
    fast.load_state(state)
    assert fast.t == T + 1  # BOS and the T prime tokens
    cont = _fast_logits(fast, tokens[:, T + 1 :], tokens[:, T])  # logits for samples T+1 ..
    torch.testing.assert_close(logits, conv[:, T], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(cont, conv[:, T + 1 :], atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_compiled_fast_step_equals_eager_step():
    model = small_model("s4", pool=(4,))  # one pooling level: two graphs to compile, keeps the test short
    tokens = torch.randint(0, 256, (2, 40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = FastLM(model, 2, backend="inductor")
    assert fast.compiled and fast.backend == "inductor", [str(w.message) for w in caught]  # not a fallback
    torch.testing.assert_close(_fast_logits(fast, tokens, torch.full((2,), model.bos)), model(tokens),
                               atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_every_fastlm_of_a_process_compiles():
    """Each FastLM compiles its own graphs: they must not pile up on one code object until dynamo's recompile
    limit turns the next FastLM into a fallback (it did from the third FastLM on, at the default limit 8)."""
    model = small_model("s4", pool=(4,))  # two graphs per FastLM
    with torch._dynamo.config.patch(recompile_limit=2), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning
        fasts = [FastLM(model, b, backend="inductor") for b in (1, 2)]
    assert [f.backend for f in fasts] == ["inductor", "inductor"]


def test_bidirectional_model_cannot_generate():
    from sashimi.errors import ConfigError
    model = small_model("s4")
    model.backbone.center[0].layer.bidirectional = True
    with pytest.raises(ConfigError, match="bidirectional"):
        FastLM(model, 1, backend="eager")


def test_threads_of_a_torch_backend_are_torchs_and_not_settable_per_step():
    from sashimi.errors import ConfigError
    fast = FastLM(small_model("s4"), 1, backend="eager")
    assert fast.threads == torch.get_num_threads()
    with pytest.raises(ConfigError, match="torch.set_num_threads"):
        fast.threads = 2


@pytest.mark.slow
@torch.no_grad()
def test_compiled_and_native_fast_steps_on_the_sc09_preset():
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("sc09")).eval()
    tokens = torch.randint(0, 256, (2, 40))
    for backend in ("inductor", "native"):
        fast = FastLM(model, 2, backend=backend)
        assert fast.backend == backend
        torch.testing.assert_close(_fast_logits(fast, tokens, torch.full((2,), model.bos)), model(tokens),
                                   atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", ["eager", "native"])
@torch.no_grad()
def test_a_fastlm_like_another_reuses_its_conversion_and_steps_the_same(backend):
    model = small_model("s4")
    first = FastLM(model, 2, backend=backend)
    second = FastLM(model, 3, backend=backend, like=first)
    fresh = FastLM(model, 3, backend=backend)
    assert second.backend == fresh.backend == backend
    assert second.center[0] is first.center[0]  # the converted blocks are shared, not rebuilt
    u, bos = torch.rand(40, 3), torch.full((3,), model.bos)
    for a, b in zip(second.steps(bos, u), fresh.steps(bos, u)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(sashimi.errors.ConfigError, match="same model"):
        FastLM(small_model("s4"), 2, backend="eager", like=first)


def test_zoh_dplr_layers_step_their_own_recurrence(tmp_path, recwarn):
    """A ZOH DPLR layer steps dA = exp(dt A) (the dense recurrence sashimi.ssm hands out), not the bilinear
    Woodbury step: the fast step's logits equal SaShiMiLM.step, and the log-likelihood that generate reports
    equals a teacher-forced pass over its samples. The native step has none: FastLM falls back with a warning."""
    import warnings

    import sashimi
    from sashimi.cli.main import main
    from sashimi.generation import FastLM, generate

    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, disc="zoh")).eval()
    with torch.no_grad():  # dt near 0.4, where ZOH and bilinear differ most (the issue measured 0.24 there)
        for m in model.modules():
            if hasattr(m, "log_dt"):
                m.log_dt.fill_(math.log(0.4))
    fast = FastLM(model, 2, backend="eager")
    state = model.default_state(2)
    token = torch.full((2,), model.bos)
    u = torch.full((2,), 0.5)
    for t in range(40):
        ref, state = model.step(token, state)
        token_fast, _, logits = fast.step(token, u)
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
        token = torch.randint(0, 256, (2,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = generate(model, 50, seeds=[1, 2])  # the default backend: native, falling back
    assert any("no dense (ZOH DPLR) recurrence" in str(w.message) for w in caught)
    with torch.no_grad():
        logp = torch.log_softmax(model(g.tokens), -1).gather(-1, g.tokens[..., None])[..., 0].double().sum(1)
    torch.testing.assert_close(g.log_likelihood, logp, rtol=1e-5, atol=1e-3)
    sashimi.save_model(model, tmp_path / "zoh")
    assert main(["generate", str(tmp_path / "zoh"), "--n", "1", "--seconds", "0.001", "--out", str(tmp_path / "o")]) == 0
