"""The native step's chunked recurrence (fast_step.cpp, chunk_run): its tables reproduce the recurrence, and the
step with it equals the step without it and the eager fast step, across many chunks, mid-chunk state reads and
writes, both ways of computing the free response (batch below / from 4) and any number of threads."""
import pytest
import torch

import sashimi
from sashimi.generation import SamplingSettings, native
from sashimi.generation.fast import FastLM, FastS4Block
from tests.generation.test_native import _assert_identical, _run, _threaded_run, built  # noqa: F401


def _model(layer: str = "s4", **overrides) -> sashimi.SaShiMiLM:
    """Widths 24 / 48 / 96: lane groups of 32 with a partial one, a half group of 8 lanes; 8 modes."""
    torch.manual_seed(0)
    cfg = {**dict(layer=layer, d_model=24, d_state=16, n_layers=1, l_max=64, pool=(4, 4)), **overrides}
    return sashimi.SaShiMiLM(sashimi.preset("tiny", **cfg)).eval()


def _folded_recurrence(w, beta, r, D, x, u):
    """The folded step of fast_step.cpp in float64 from state x (H M) complex over inputs u (H n) -> y (H n)."""
    H = w.shape[0]
    z = w.double().view(H, 2 * r + 3, 2, -1)
    z = torch.complex(z[:, :, 0], z[:, :, 1])
    G, DE, Q, Db, c = z[:, :r], z[:, r], z[:, r + 1 : 2 * r + 1], z[:, 2 * r + 1], z[:, 2 * r + 2]
    ys = []
    for i in range(u.shape[1]):
        ui = u[:, i]
        k = beta.double() * ui[:, None] + (G * x[:, None]).sum(-1).real  # (H r)
        x = DE * x - (Q * k[..., None]).sum(1) + Db * ui[:, None]
        ys.append((c * x).sum(-1).real + D.double() * ui)
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("layer,init", [("s4", None), ("s4", "legt"), ("s4d", None)])
def test_chunk_tables_reproduce_the_recurrence(layer, init):
    model = _model(layer, init=init)
    blk = FastS4Block(next(b for b in model.backbone.modules() if type(b).__name__ == "ResidualS4Block"))
    w, beta, r = native._ssm_arrays(blk)
    D = blk.D.detach().float()
    T = 16
    F, h = native._chunk_tables(blk, T)  # (H M T 2), (H T)
    H, M = F.shape[:2]
    torch.manual_seed(1)
    x0 = torch.randn(H, M, dtype=torch.complex128)
    u = torch.randn(H, T, dtype=torch.float64)
    want = _folded_recurrence(w, beta, r, D, x0, u)
    Fc = torch.complex(F[..., 0].double(), F[..., 1].double())  # (H M T)
    free = (Fc * x0[..., None]).sum(1).real  # (H T)
    forced = torch.stack([(h.double()[:, : i + 1].flip(1) * u[:, : i + 1]).sum(1) for i in range(T)], dim=1)
    torch.testing.assert_close(free + forced, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def _teacher_forced(model, B, steps, chunked=True, read_states_at=()):
    """Logits (n B C) and final states of the native step fed the tokens the eager step sampled."""
    u = torch.rand(steps, B)
    bos = torch.full((B,), model.bos)
    eager = FastLM(model, B, backend="eager")
    tok_e, _, logits_e = _run(eager, bos, u)
    nat = FastLM(model, B, backend="native")
    assert nat.backend == "native"
    nat._native.chunked = chunked
    tokens = tok_e.transpose(0, 1)  # (B n)
    prev, logits = bos, []
    for k in range(steps):
        if k in read_states_at:  # mid-chunk: the states are brought up to date, then the step goes on
            for a, b in zip(nat._state_tensors(), eager_states_at(model, B, tokens, k)):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
        logits.append(nat.step(prev, u[k])[2])
        prev = tokens[:, k]
    return torch.stack(logits), logits_e, nat._state_tensors(), eager._state_tensors()


def eager_states_at(model, B, tokens, k):
    """The eager fast step's states after k teacher-forced steps."""
    eager = FastLM(model, B, backend="eager")
    prev = torch.full((B,), model.bos)
    for i in range(k):
        eager.step(prev, torch.rand(B))
        prev = tokens[:, i]
    return eager._state_tensors()


@pytest.mark.parametrize("layer,B", [("s4", 1), ("s4", 5), ("s4d", 2), ("s4d", 4)])
@torch.no_grad()
def test_chunked_step_equals_eager_over_many_chunks(built, layer, B):
    # 290 steps: the centre tier (every 16th step) runs 18 times, more than one chunk of 16
    model = _model(layer)
    logits, logits_e, states, states_e = _teacher_forced(model, B, 290)
    torch.testing.assert_close(logits, logits_e, atol=2e-5, rtol=1e-4)
    for a, b in zip(states, states_e):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_chunked_and_unchunked_native_steps_agree(built):
    model = _model("s4", init="legt")  # rank 2: the generic-rank kernels
    torch.manual_seed(3)
    on = _teacher_forced(model, 5, 150, chunked=True)
    torch.manual_seed(3)
    off = _teacher_forced(model, 5, 150, chunked=False)
    torch.testing.assert_close(on[0], off[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("B", [1, 4])
@torch.no_grad()
def test_states_read_mid_chunk_are_current_and_the_step_goes_on(built, B):
    model = _model("s4")
    logits, logits_e, _, _ = _teacher_forced(model, B, 120, read_states_at=(7, 37, 69))
    torch.testing.assert_close(logits, logits_e, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_state_loaded_mid_chunk_replaces_the_buffered_one(built):
    model = _model("s4")
    tokens = torch.randint(0, 256, (4, 60))
    conv = model(tokens)
    fast = FastLM(model, 4, backend="native")
    fast.steps(torch.full((4,), model.bos), torch.rand(23, 4))  # mid-chunk in every tier
    _, state = model.prefill(tokens[:, :20])
    fast.load_state(state)
    _, _, cont = _run(fast, tokens[:, 20], torch.rand(39, 4), tokens[:, 21:])
    torch.testing.assert_close(cont.transpose(0, 1), conv[:, 21:], atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_switching_the_chunked_recurrence_mid_run_keeps_the_state(built):
    model = _model("s4d")
    u = torch.rand(100, 2)
    bos = torch.full((2,), model.bos)
    eager = FastLM(model, 2, backend="eager")
    tok_e, _, logits_e = _run(eager, bos, u)
    nat = FastLM(model, 2, backend="native")
    first = _run(nat, bos, u[:41], tok_e[:41].transpose(0, 1))[2]
    nat._native.chunked = False
    second = _run(nat, tok_e[40], u[41:70], tok_e[41:70].transpose(0, 1))[2]
    nat._native.chunked = True
    third = _run(nat, tok_e[69], u[70:], tok_e[70:].transpose(0, 1))[2]
    torch.testing.assert_close(torch.cat([first, second, third]), logits_e, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("B", [4, 5])
@torch.no_grad()
def test_threads_give_bit_identical_results_with_the_f_table(built, B):
    # batch >= 4: f from the table, in blocks of 4 rows (5: a block of 4 and one of 1, or 3 + 2 per thread)
    model = _model("s4")
    u = torch.rand(300, B)
    settings = SamplingSettings(top_p=0.9)
    ref = _threaded_run(model, B, settings, 1, u, [260, 277])
    for threads, chunks in ((2, [260, 277]), (2, None), (3, [23, 283])):
        _assert_identical(_threaded_run(model, B, settings, threads, u, chunks), ref)


@pytest.mark.parametrize("B", [1, 4])
@torch.no_grad()
def test_many_modes(built, B):
    # d_state 320: 160 modes per channel, more than fit in L1 (the chunk kernels size their scratch by the model)
    model = _model("s4", d_state=320, d_model=16)
    logits, logits_e, states, states_e = _teacher_forced(model, B, 40)
    torch.testing.assert_close(logits, logits_e, atol=2e-5, rtol=1e-4)
    for a, b in zip(states, states_e):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_chunked_recurrence_can_be_turned_off(built):
    model = _model("s4")
    assert FastLM(model, 1, backend="native")._native.chunked
    assert not FastLM(model, 1, backend="native", chunked=False)._native.chunked


def test_replacing_the_native_states_is_refused(built):
    from sashimi.errors import ConfigError

    fast = FastLM(_model("s4"), 1, backend="native")
    with pytest.raises(ConfigError, match="in place"):
        fast.states = {}
