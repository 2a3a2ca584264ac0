import pytest
import torch

from sashimi.generation import GenerationError, Sampler, SamplingSettings, generate
from tests.generation.conftest import small_model


def _teacher_forced_ll(model, tokens, start):
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens), -1).gather(-1, tokens[..., None])[..., 0]
    return logp[:, start:].double().sum(1)


def test_fixed_seed_gives_identical_audio_and_seeds_are_batch_independent():
    model = small_model()
    a = generate(model, 40, [3, 4], backend="eager")
    b = generate(model, 40, [3, 4], backend="eager")
    alone = generate(model, 40, [4], backend="eager")
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_likelihood, b.log_likelihood)
    assert torch.equal(a.tokens[1:], alone.tokens)  # seed 4 samples the same audio in any batch
    assert not torch.equal(a.tokens[0], a.tokens[1])


def test_fast_and_eager_sampling_agree():
    model = small_model("s4d")
    fast = generate(model, 50, [0, 1], backend="eager")
    eager = generate(model, 50, [0, 1], backend="reference")
    assert torch.equal(fast.tokens, eager.tokens)
    torch.testing.assert_close(fast.log_likelihood, eager.log_likelihood, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", ["eager", "reference"])
def test_log_likelihood_equals_teacher_forced_forward_pass(backend):
    model = small_model()
    g = generate(model, 45, [0, 1, 2], SamplingSettings(temperature=0.8, top_p=0.9), backend=backend)
    torch.testing.assert_close(g.log_likelihood, _teacher_forced_ll(model, g.tokens, 0), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("T", [5, 16, 21])
def test_priming_reproduces_the_prime_and_continues(T):
    model = small_model()
    prime = torch.randint(0, 256, (T,))
    g = generate(model, 30, [7, 8], prime=prime, backend="eager")
    assert g.tokens.shape == (2, T + 30)
    assert torch.equal(g.tokens[:, :T], prime.expand(2, T))
    torch.testing.assert_close(g.log_likelihood, _teacher_forced_ll(model, g.tokens, T), rtol=1e-5, atol=1e-3)
    eager = generate(model, 30, [7, 8], prime=prime, backend="reference")
    assert torch.equal(eager.tokens, g.tokens)


def test_tiny_top_p_generates_the_greedy_continuation():
    model = small_model()
    g = generate(model, 20, [0, 1], SamplingSettings(top_p=1e-9), backend="eager")
    assert torch.equal(g.tokens[0], g.tokens[1])  # the seed no longer matters
    with torch.no_grad():
        greedy = model(g.tokens).argmax(-1)
    assert torch.equal(greedy, g.tokens)


def test_chunks_stream_the_same_tokens_as_one_call():
    model = small_model()
    sampler = Sampler(model, [5], backend="eager")
    chunks = list(sampler.chunks(50, chunk_size=16))
    assert [c.shape[1] for c in chunks] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(chunks, 1), generate(model, 50, [5], backend="eager").tokens)


def test_nan_logits_raise_an_error_naming_the_step():
    model = small_model()
    sampler = Sampler(model, [0], backend="eager")
    list(sampler.chunks(10))
    with torch.no_grad():
        for blk in sampler.backend.center:  # poison the deepest tier: it runs at step 15, its output
            for s in sampler.backend.states[id(blk)]:  # reaches the outer tier 4 + 1 steps later (causal pools)
                s.fill_(float("nan"))
    with pytest.raises(GenerationError, match=r"generated sample 20 .*seed 0"):
        list(sampler.chunks(20))


import pytest as _pytest


@_pytest.mark.parametrize("backend", ["eager", "native"])
def test_a_long_prime_is_stepped_past_the_convolution_budget_with_the_same_result(monkeypatch, backend):
    """Beyond PREFILL_CONV_SAMPLES the prime is teacher-forced through the step (bounded memory): the samples
    and their log-likelihoods equal those after a prime consumed whole in convolution mode."""
    import torch

    import sashimi
    from sashimi.generation import sampler as sampler_module

    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)).eval()
    prime = torch.randint(0, 256, (2, 37))
    whole = sampler_module.Sampler(model, [3, 4], prime=prime, backend=backend)
    monkeypatch.setattr(sampler_module, "PREFILL_CONV_SAMPLES", 2 * 5)  # 5 samples per sequence, then steps
    stepped = sampler_module.Sampler(model, [3, 4], prime=prime, backend=backend)
    assert stepped.backend.backend == backend
    a, b = next(whole.chunks(40)), next(stepped.chunks(40))
    assert torch.equal(a, b)
    torch.testing.assert_close(whole.log_likelihood, stepped.log_likelihood, rtol=1e-6, atol=1e-4)
