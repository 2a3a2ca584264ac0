"""Conditional models (``model.labels``): every step backend and the prefill agree with the convolution mode given
the same labels, and each sequence follows its own label."""
import pytest
import torch

import sashimi
from sashimi.generation import Sampler, SamplingSettings, generate
from sashimi.generation.backends import make_step
from sashimi.generation.fast import FastLM
from sashimi.models.lm import NO_LABEL
from tests.generation.test_native import _run, built  # noqa: F401  (the session fixture)

NAMES = ("a", "b", "c")


def conditional_model(layer: str = "s4", unet: bool = False) -> sashimi.SaShiMiLM:
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", layer=layer, unet=unet, d_model=8, d_state=8, n_layers=1, l_max=64, labels=NAMES)
    model = sashimi.SaShiMiLM(cfg).eval()
    with torch.no_grad():  # zeros at initialization; give the labels distinct vectors
        model.label_embedding.weight.normal_(0, 1)
    return model


@pytest.mark.parametrize("backend", ["native", "eager", "reference"])
@pytest.mark.parametrize("layer,unet", [("s4", False), ("s4d", True)])
@torch.no_grad()
def test_every_backend_teacher_forced_matches_convolution_mode(built, backend, layer, unet):
    model = conditional_model(layer, unet)
    tokens = torch.randint(0, 256, (3, 40))
    labels = torch.tensor([2, 0, 1])
    conv = model(tokens, labels)  # (B L C)
    step = make_step(model, 3, backend=backend, labels=labels)
    bos = torch.full((3,), model.bos)
    inputs = torch.cat([bos[:, None], tokens[:, :-1]], dim=1)  # (B L)
    logits = step.forced(inputs.T.contiguous())  # (L B C)
    torch.testing.assert_close(logits.transpose(0, 1), conv, atol=3e-5, rtol=1e-4)


@torch.no_grad()
def test_native_step_equals_eager_step_with_labels(built):
    model = conditional_model()
    labels = torch.tensor([1, 2])
    u = torch.rand(40, 2)
    bos = torch.full((2,), model.bos)
    nat = FastLM(model, 2, backend="native", labels=labels)
    eager = FastLM(model, 2, backend="eager", labels=labels)
    tok_n, lp_n, logits_n = _run(nat, bos, u)
    tok_e, lp_e, logits_e = _run(eager, bos, u)
    torch.testing.assert_close(logits_n, logits_e, atol=2e-5, rtol=1e-4)
    assert torch.equal(tok_n, tok_e)


@torch.no_grad()
def test_prefill_with_labels_continues_the_convolution_mode(built):
    model = conditional_model()
    tokens = torch.randint(0, 256, (2, 30))
    labels = torch.tensor([0, 2])
    conv = model(tokens, labels)
    logits, state = model.prefill(tokens[:, :10], labels)
    torch.testing.assert_close(logits, conv[:, 10], atol=2e-5, rtol=1e-4)
    fast = FastLM(model, 2, backend="native", labels=labels)
    fast.load_state(state)
    _, _, cont = _run(fast, tokens[:, 10], torch.rand(19, 2), tokens[:, 11:])
    torch.testing.assert_close(cont.transpose(0, 1), conv[:, 11:], atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_a_sequence_depends_on_its_own_label_and_seed_only(built):
    model = conditional_model()
    together = generate(model, 50, seeds=[5, 6, 7], labels=[0, 1, 2])
    alone = generate(model, 50, seeds=[6], labels=[1])
    assert torch.equal(together.tokens[1], alone.tokens[0])
    other = generate(model, 50, seeds=[6], labels=[2])
    assert not torch.equal(other.tokens[0], alone.tokens[0])  # the label changes what is drawn


def test_labels_are_required_by_a_conditional_model_and_refused_by_others():
    model = conditional_model()
    tokens = torch.randint(0, 256, (2, 8))
    with pytest.raises(ValueError, match="conditioned on a label"):
        model(tokens)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(tokens, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be \(2,\)"):
        model(tokens, torch.tensor([0]))
    with pytest.raises(ValueError, match="conditioned on a label"):
        Sampler(model, [0, 1], SamplingSettings(), backend="eager")
    plain = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64))
    with pytest.raises(ValueError, match="unconditional"):
        plain(tokens, torch.tensor([0, 1]))


def test_label_names_are_validated():
    with pytest.raises(sashimi.errors.ConfigError, match="model.labels"):
        sashimi.preset("tiny", labels=("a", "a"))
    with pytest.raises(sashimi.errors.ConfigError, match="model.labels"):
        sashimi.preset("tiny", labels=("a",))
    cfg = sashimi.preset("tiny", labels=NAMES)
    assert cfg.estimate_parameters() == sum(p.numel() for p in sashimi.SaShiMiLM(cfg).parameters())


def test_label_dropout_trains_the_zero_vector_which_unconditional_gives():
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, labels=NAMES, label_dropout=0.5)
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(cfg)
    with torch.no_grad():
        model.label_embedding.weight.normal_(0, 1)
    labels = torch.zeros(64, dtype=torch.long)
    model.train()
    drawn = model.drop_labels(labels)
    assert 0.3 < (drawn == NO_LABEL).float().mean() < 0.7  # about half of the sequences train without a label
    assert ((model.label_vectors(drawn, 64).abs().sum(1) == 0) == (drawn == NO_LABEL)).all()  # the zero vector
    assert (model.label_vectors(labels, 64).abs().sum(1) > 0).all()  # the draw is the trainer's, once per step
    model.eval()
    assert torch.equal(model.drop_labels(labels), labels)  # never at evaluation or generation
    plain = model.unconditional()
    assert plain.n_labels == 0 and not plain.training
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        zero = model.label_embedding.weight.clone()
        model.label_embedding.weight.zero_()
        torch.testing.assert_close(plain(tokens), model(tokens, torch.tensor([0, 1])), rtol=0, atol=0)
        model.label_embedding.weight.copy_(zero)
    with pytest.raises(sashimi.errors.ConfigError, match="label_dropout applies to a conditional model"):
        sashimi.preset("tiny", label_dropout=0.1)
    with pytest.raises(sashimi.errors.ConfigError, match=r"label_dropout must be in \[0, 1\)"):
        sashimi.preset("tiny", labels=NAMES, label_dropout=1.0)


def test_rival_labels_name_the_other_label_with_the_nearest_vector():
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, labels=("a", "b", "c", "d"))
    model = sashimi.SaShiMiLM(cfg)
    with torch.no_grad():  # a and b nearly parallel, c and d nearly parallel, the pairs orthogonal
        model.label_embedding.weight.copy_(torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 2.0]]).repeat(1, 4))
    rivals = model.rival_labels(torch.tensor([0, 1, 2, 3, NO_LABEL, 0]))
    assert rivals.tolist() == [1, 0, 3, 2, NO_LABEL, 1]  # by direction (cosine), never the label itself
    plain = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64))
    with pytest.raises(ValueError, match="at least two labels"):
        plain.rival_labels(torch.tensor([0]))
