"""Bits per sample equals a hand computation from the model's logits, with padding masked out."""
import math

import torch

import sashimi
from sashimi.metrics import LikelihoodTotals, bits_per_sample
from sashimi.train.evaluate import evaluate


def hand_nll(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """-sum_t log softmax(logits_t)[x_t], written out: logsumexp minus the picked logit."""
    total = 0.0
    for t in range(tokens.shape[0]):
        row = logits[t].double()
        total += float(torch.log(torch.exp(row - row.max()).sum()) + row.max() - row[tokens[t]])
    return total


def test_totals_match_hand_computation_with_padding():
    torch.manual_seed(0)
    logits, tokens = torch.randn(2, 5, 4), torch.randint(0, 4, (2, 5))
    lengths = torch.tensor([5, 3])
    totals = LikelihoodTotals()
    totals.add(logits, tokens, lengths)
    expected = hand_nll(logits[0], tokens[0]) + hand_nll(logits[1, :3], tokens[1, :3])
    assert totals.samples == 8
    assert math.isclose(totals.loss, expected / 8, rel_tol=1e-6)
    assert math.isclose(totals.bits_per_sample, expected / 8 / math.log(2), rel_tol=1e-6)
    correct = (logits[0].argmax(-1) == tokens[0]).sum() + (logits[1, :3].argmax(-1) == tokens[1, :3]).sum()
    assert totals.correct == int(correct)


def test_uniform_model_is_exactly_bits():
    totals = LikelihoodTotals()
    totals.add(torch.zeros(3, 7, 256), torch.randint(0, 256, (3, 7)))
    assert math.isclose(totals.bits_per_sample, 8.0, rel_tol=1e-6)  # float32 logits
    assert bits_per_sample(math.log(2)) == 1.0


def test_evaluate_tiny_model_equals_hand_computation():
    """Batched, padded evaluation of variable-length examples == per-example logits summed by hand."""
    torch.manual_seed(1)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", l_max=64)).double().eval()
    examples = [torch.randint(0, 256, (n,)) for n in (64, 40, 17, 64, 33)]
    result = evaluate(model, examples, batch_size=2, progress=False)
    with torch.no_grad():
        nll = sum(hand_nll(model(x[None])[0], x) for x in examples)
    n = sum(len(x) for x in examples)
    assert result.samples == n
    assert math.isclose(result.bits_per_sample, nll / n / math.log(2), rel_tol=1e-10)
