"""Classifier-free guidance (``Sampler(guidance=w)``): w = 1 is plain conditional sampling, w = 0 the model's
unconditional mode, every backend draws the same guided samples, and a prime is consumed by both halves."""
import pytest
import torch

import sashimi
from sashimi.errors import ConfigError
from sashimi.generation import Sampler, SamplingSettings, generate
from sashimi.generation.guidance import GuidedStep
from sashimi.models.lm import NO_LABEL
from tests.generation.test_labels import conditional_model
from tests.generation.test_native import built  # noqa: F401  (the session fixture)


def guided_model() -> sashimi.SaShiMiLM:
    model = conditional_model()
    model.config = sashimi.SaShiMiConfig.from_dict({**model.config.to_dict(), "label_dropout": 0.2})
    return model


def test_no_label_is_the_zero_vector_and_other_values_are_refused():
    model = guided_model()
    vectors = model.label_vectors(torch.tensor([1, NO_LABEL, 2]), 3)  # (B H)
    assert torch.equal(vectors[1], torch.zeros_like(vectors[1]))
    assert torch.equal(vectors[0], model.label_embedding.weight[1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) \(or -1: no label\)"):
        model.label_vectors(torch.tensor([0, -2]), 2)


@pytest.mark.parametrize("backend", ["native", "reference"])
@torch.no_grad()
def test_weight_one_is_conditional_sampling_and_zero_the_unconditional_mode(built, backend):
    model = guided_model()
    seeds, labels = [3, 4, 5], [0, 2, 1]
    plain = generate(model, 40, seeds, labels=labels, backend=backend)
    one = generate(model, 40, seeds, labels=labels, backend=backend, guidance=1.0)
    assert torch.equal(one.tokens, plain.tokens)
    torch.testing.assert_close(one.log_likelihood, plain.log_likelihood, atol=1e-4, rtol=1e-5)
    zero = generate(model, 40, seeds, labels=labels, backend=backend, guidance=0.0)
    assert torch.equal(zero.tokens, generate(model.unconditional(), 40, seeds, backend=backend).tokens)


@torch.no_grad()
def test_backends_agree_and_a_sequence_depends_on_its_own_seed_and_label(built):
    model = guided_model()
    native = generate(model, 60, [7, 8], labels=[1, 2], backend="native", guidance=3.0)
    eager = generate(model, 60, [7, 8], labels=[1, 2], backend="eager", guidance=3.0)
    reference = generate(model, 60, [7, 8], labels=[1, 2], backend="reference", guidance=3.0)
    assert torch.equal(native.tokens, eager.tokens) and torch.equal(native.tokens, reference.tokens)
    alone = generate(model, 60, [8], labels=[2], backend="native", guidance=3.0)
    assert torch.equal(alone.tokens[0], native.tokens[1])
    plain = generate(model, 60, [7, 8], labels=[1, 2], backend="native")
    assert not torch.equal(native.tokens, plain.tokens)  # the weight changes what is drawn


@torch.no_grad()
def test_a_prime_is_consumed_by_both_halves(built):
    model = guided_model()
    prime = torch.randint(0, 256, (2, 12))
    plain = generate(model, 20, [1, 2], prime=prime, labels=[0, 1], backend="native")
    one = generate(model, 20, [1, 2], prime=prime, labels=[0, 1], backend="native", guidance=1.0)
    assert one.tokens.shape == (2, 32) and torch.equal(one.tokens, plain.tokens)
    sampler = Sampler(model, [1, 2], SamplingSettings(), prime=prime, labels=[0, 1], guidance=2.0)
    assert isinstance(sampler.backend, GuidedStep) and next(sampler.chunks(5)).shape == (2, 5)


def test_guidance_needs_a_model_trained_with_label_dropout_and_a_sane_weight():
    with pytest.raises(ConfigError, match="label_dropout > 0"):
        Sampler(conditional_model(), [0], labels=[0], guidance=2.0)
    plain = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64))
    with pytest.raises(ConfigError, match="needs a conditional model"):
        Sampler(plain, [0], guidance=2.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="guidance must be a finite number >= 0"):
            Sampler(guided_model(), [0], labels=[0], guidance=bad)
    with pytest.raises(ValueError, match="conditioned on a label"):
        Sampler(guided_model(), [0], guidance=2.0)


@torch.no_grad()
def test_a_long_prime_is_teacher_forced_through_both_halves(built, monkeypatch):
    import sashimi.generation.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "PREFILL_CONV_SAMPLES", 8)  # most of the prime goes through `forced`
    model = guided_model()
    prime = torch.randint(0, 256, (2, 12))
    plain = generate(model, 20, [1, 2], prime=prime, labels=[0, 1], backend="native")
    one = generate(model, 20, [1, 2], prime=prime, labels=[0, 1], backend="native", guidance=1.0)
    assert torch.equal(one.tokens, plain.tokens)
    torch.testing.assert_close(one.log_likelihood, plain.log_likelihood, atol=1e-4, rtol=1e-5)
