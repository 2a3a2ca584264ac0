"""Evaluation of items longer than the convolution budget: convolution mode over the head, the recurrent step
after it; the same NLL as one convolution pass, in bounded memory."""
import pytest
import torch

import sashimi
from sashimi.train import evaluate as evaluate_module


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("backend_default", [True, False])
def test_long_items_give_the_convolution_nll(monkeypatch, backend_default):
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)).eval()
    items = [torch.randint(0, 256, (n,)) for n in (150, 37, 90)]
    whole = evaluate_module.evaluate(model, _Items(items), batch_size=2, progress=False)
    monkeypatch.setattr(evaluate_module, "CONV_SAMPLES", 40)  # every batch is "long": head 40, then steps
    monkeypatch.setattr(evaluate_module, "STEP_CHUNK", 16)
    if not backend_default:  # the eager fast step instead of the native one
        from sashimi.generation import fast

        monkeypatch.setattr(fast.FastLM, "__init__", _with_backend(fast.FastLM.__init__, "eager"))
    long = evaluate_module.evaluate(model, _Items(items), batch_size=2, progress=False)
    assert long.samples == whole.samples == 277
    assert long.nll == pytest.approx(whole.nll, rel=1e-5)
    assert abs(long.correct - whole.correct) <= 1  # an argmax tie may flip at float32 rounding


def _with_backend(init, backend):
    def wrapped(self, model, batch_size, *args, **kwargs):
        kwargs["backend"] = backend
        return init(self, model, batch_size, *args, **kwargs)

    return wrapped
