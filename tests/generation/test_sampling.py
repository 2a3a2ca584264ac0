import pytest
import torch

from sashimi.errors import ConfigError
from sashimi.generation.sampling import SamplingSettings, sample


def test_tiny_top_p_and_top_k_1_are_argmax():
    logits = torch.randn(64, 256)
    u = torch.rand(64)
    for settings in (SamplingSettings(top_p=1e-6), SamplingSettings(top_k=1), SamplingSettings(temperature=3.0, top_p=1e-9)):
        token, _ = sample(logits, u, settings)
        assert torch.equal(token, logits.argmax(-1))


def test_log_prob_is_the_models_not_the_tempered_one():
    logits = torch.randn(8, 16)
    token, logp = sample(logits, torch.rand(8), SamplingSettings(temperature=0.5, top_p=0.9))
    assert torch.allclose(logp, torch.log_softmax(logits, -1).gather(-1, token[:, None])[:, 0])


def test_inverse_cdf_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    token, _ = sample(probs.log().expand(20000, 4), u, SamplingSettings())
    freq = torch.bincount(token, minlength=4).float() / 20000
    assert freq[1] == 0 and torch.allclose(freq, probs, atol=0.015)


def test_top_p_keeps_the_nucleus_and_top_k_the_k_best():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().expand(4000, 4)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(1))
    nucleus, _ = sample(logits, u, SamplingSettings(top_p=0.7))  # 0.5 + 0.3 reaches 0.7
    assert set(nucleus.tolist()) == {0, 1}
    best2, _ = sample(logits, u, SamplingSettings(top_k=2))
    assert set(best2.tolist()) == {0, 1}


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5),
                                    dict(top_k=-1), dict(top_k=1.5)])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        SamplingSettings(**kwargs)
