"""CUDA graphs of the fast step (graphs.py). On CPU the graphs come from ``FakeGraphs``, a stand-in with the
same contract (capture runs the function, as CUDA's warm-up does; replay reruns it into static outputs), so
the plumbing around them (static inputs, period alignment, state snapshots, the replay check, the fallback)
is tested everywhere; the real capture is tested where a GPU is present."""
import warnings

import pytest
import torch

import sashimi
from sashimi.errors import ConfigError
from sashimi.generation import graphs
from sashimi.generation.fast import FastLM
from tests.generation.conftest import small_model


class FakeGraphs:
    def __init__(self, corrupt: bool = False):
        self.corrupt, self.captured = corrupt, 0

    def check(self, device):
        pass

    def capture(self, fn):
        self.captured += 1
        out = tuple(o.clone() for o in fn())

        def replay():
            for o, new in zip(out, fn()):
                o.copy_(new)
            if self.corrupt:
                out[2].add_(1e-3)  # the logits

        return replay, out


@pytest.fixture
def fake(monkeypatch):
    api = FakeGraphs()
    monkeypatch.setattr(graphs, "api_for", lambda device: api)
    return api


def _run(fast, token, u, split):
    """steps() over u in calls of the given lengths, plus single step() calls where a length is 0."""
    tokens, logps, k, logits = [], [], 0, None
    for n in split:
        if n == 0:
            token, logp, logits = fast.step(token, u[k])
            tokens.append(token[None])
            logps.append(logp[None])
            k += 1
        else:
            t, lp, logits = fast.steps(token, u[k : k + n])
            tokens.append(t)
            logps.append(lp)
            token, k = t[-1], k + n
    return torch.cat(tokens), torch.cat(logps), logits


@pytest.mark.parametrize("split", [[70], [0, 0, 3, 40, 0, 26], [16, 16, 0, 15, 22]])
@torch.no_grad()
def test_graphed_steps_equal_plain_steps_aligned_or_not(fake, split):
    model = small_model("s4")
    bos = torch.full((3,), model.bos)
    u = torch.rand(70, 3)
    plain = FastLM(model, 3, backend="eager")
    graphed = FastLM(model, 3, backend="eager", cuda_graphs=True)
    assert graphed.cuda_graphs and not plain.cuda_graphs
    assert fake.captured == 3 + 1  # a graph per depth (two pooling levels) and one of the 16-step period
    assert all(s.abs().max() == 0 for s in graphed.snapshot())  # capture and check left the state as built
    want = plain.steps(bos, u)
    got = _run(graphed, bos, u, split)
    assert graphed.t == plain.t == 70
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])
    for a, b in zip(graphed.snapshot(), plain.snapshot()):
        torch.testing.assert_close(a, b)


@torch.no_grad()
def test_graphed_steps_continue_from_a_prefill_state(fake):
    model = small_model("s4")
    prime = torch.randint(0, 256, (2, 21))
    _, state = model.prefill(prime)
    plain, graphed = FastLM(model, 2, backend="eager"), FastLM(model, 2, backend="eager", cuda_graphs=True)
    plain.load_state(state)
    graphed.load_state(state)
    u = torch.rand(40, 2)
    want, got = plain.steps(prime[:, -1], u), graphed.steps(prime[:, -1], u)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1])


@torch.no_grad()
def test_graphs_of_a_model_with_few_classes(fake):
    """The replay check feeds tokens the model accepts (an out-of-range token would be a device-side assert)."""
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, bits=3, quantization="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert FastLM(sashimi.SaShiMiLM(cfg).eval(), 2, backend="eager", cuda_graphs=True).cuda_graphs


def test_a_replay_that_differs_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(graphs, "api_for", lambda device: FakeGraphs(corrupt=True))
    model = small_model("s4")
    with pytest.warns(RuntimeWarning, match="CUDA graphs of the fast step unavailable.*differs.*logits"):
        fast = FastLM(model, 2, backend="eager", cuda_graphs=True)
    assert not fast.cuda_graphs
    assert all(s.abs().max() == 0 for s in fast.snapshot())
    u = torch.rand(20, 2)
    bos = torch.full((2,), model.bos)
    torch.testing.assert_close(fast.steps(bos, u)[2], FastLM(model, 2, backend="eager").steps(bos, u)[2])


def test_graphs_are_refused_off_a_gpu_and_for_the_native_step():
    model = small_model("s4")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA device"):
            FastLM(model, 2, backend="eager", cuda_graphs=True)
    with pytest.raises(ConfigError, match="native"):
        FastLM(model, 2, backend="native", cuda_graphs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CPU model: no graphs by default, and no warning about them
        assert not FastLM(model, 2, backend="eager").cuda_graphs


def test_graphed_state_tensors_cannot_be_replaced(fake):
    fast = FastLM(small_model("s4"), 2, backend="eager", cuda_graphs=True)
    with pytest.raises(ConfigError, match="in place"):
        fast.states = {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["eager", "inductor"])
@torch.no_grad()
def test_cuda_graphs_on_a_gpu(backend):
    model = small_model("s4").cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        graphed = FastLM(model, 4, backend=backend)
    assert graphed.cuda_graphs and graphed.backend == backend
    plain = FastLM(model, 4, backend=backend, cuda_graphs=False)
    bos = torch.full((4,), model.bos, device="cuda")
    u = torch.rand(70, 4, device="cuda")
    want, got = plain.steps(bos, u), _run(graphed, bos, u, [0, 3, 40, 0, 26])
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[2], want[2], atol=1e-5, rtol=1e-5)
