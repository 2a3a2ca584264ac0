"""The native (C++) fast step against the eager fast step, the reference everything else is tested against.

The extension is built once per test session (about a minute with gcc, or loaded from the cache).
"""
import os
import warnings

import pytest
import torch

from sashimi.generation import GenerationError, Sampler, SamplingSettings, generate, native, sample
from sashimi.generation.fast import FastLM
from sashimi.jit import Extension
from tests.generation.conftest import small_model


@pytest.fixture(scope="session")
def built():
    try:
        return native.load()
    except native.NativeUnavailable as err:  # CI has gcc: a failed build is a failure, not a skip
        pytest.fail(f"the native step did not build: {err.__cause__!r}")


def _run(fast, first, u, tokens=None):
    """Steps with uniforms u (n B); feeds back its own samples (or ``tokens`` (B n) if given)."""
    prev, out = first, []
    for k in range(u.shape[0]):
        tok, logp, logits = fast.step(prev, u[k])
        out.append((tok, logp, logits))
        prev = tok if tokens is None else tokens[:, k]
    return [torch.stack(x) for x in zip(*out)]  # tokens (n B), log-probs (n B), logits (n B C)


CASES = [  # layer, unet, batch, settings: every layer / U-Net / batch combination, each sampling feature
    ("s4", False, 1, SamplingSettings()),
    ("s4", False, 3, SamplingSettings(temperature=0.7, top_p=0.9)),
    ("s4d", False, 1, SamplingSettings(top_k=5, temperature=1.3)),
    ("s4d", False, 3, SamplingSettings(top_p=0.95, top_k=20)),
    ("s4", True, 1, SamplingSettings(top_p=0.8)),
    ("s4", True, 3, SamplingSettings(temperature=1.5)),
    ("s4d", True, 1, SamplingSettings(temperature=0.5, top_k=40)),
    ("s4d", True, 3, SamplingSettings()),
]


@pytest.mark.parametrize("layer,unet,B,settings", CASES)
@torch.no_grad()
def test_native_step_equals_eager_fast_step(built, layer, unet, B, settings):
    model = small_model(layer, unet)
    u = torch.rand(75, B)  # 75 steps: more than 4 periods of the 4 x 4 pools, every tier runs several times
    bos = torch.full((B,), model.bos)
    nat = FastLM(model, B, settings, backend="native")
    assert nat.backend == "native"
    eager = FastLM(model, B, settings, backend="eager")
    tok_n, lp_n, logits_n = _run(nat, bos, u)
    tok_e, lp_e, logits_e = _run(eager, bos, u)
    torch.testing.assert_close(logits_n, logits_e, atol=2e-5, rtol=1e-4)
    assert torch.equal(tok_n, tok_e)
    torch.testing.assert_close(lp_n, lp_e, atol=1e-5, rtol=1e-5)
    assert nat.t == eager.t == 75
    for a, b in zip(nat._state_tensors(), eager._state_tensors()):  # the state is updated in place
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("T", [1, 15, 33])
@torch.no_grad()
def test_native_step_continues_from_prefill_state(built, T):
    model = small_model("s4")
    tokens = torch.randint(0, 256, (2, 50))
    conv = model(tokens)
    logits, state = model.prefill(tokens[:, :T])
    fast = FastLM(model, 2, backend="native")
    fast.load_state(state)
    assert fast.t == T + 1
    _, _, cont = _run(fast, tokens[:, T], torch.rand(50 - T - 1, 2), tokens[:, T + 1:])
    torch.testing.assert_close(cont.transpose(0, 1), conv[:, T + 1:], atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_steps_runs_the_loop_in_one_call(built):
    model = small_model("s4d", unet=True)
    settings = SamplingSettings(top_p=0.9)
    u = torch.rand(40, 3)
    bos = torch.full((3,), model.bos)
    one = FastLM(model, 3, settings, backend="native")
    tok_1, lp_1, logits_1 = _run(one, bos, u)
    many = FastLM(model, 3, settings, backend="native")
    tok_n, lp_n, last = many.steps(bos, u)
    assert torch.equal(tok_n, tok_1) and torch.equal(lp_n, lp_1) and torch.equal(last, logits_1[-1])
    assert many.t == 40


def _threaded_run(model, B, settings, threads, u, chunks, rows_from=None, row_levels=None, row_split=None):
    """Tokens, log-probs, last logits and final state of steps() over u (n B) cut at ``chunks`` (None: one
    step() call per step) on ``threads`` threads (with the row split from batch ``rows_from`` over ``row_levels``
    levels, where given; ``row_split``: fixed shares of the rows instead of balanced ones)."""
    fast = FastLM(model, B, settings, backend="native")
    assert fast.backend == "native"
    fast._native.threads = threads
    if rows_from is not None:
        fast._native.rows_from = rows_from
    if row_levels is not None:
        fast._native.row_levels = row_levels
    if row_split is not None:
        fast._native.balance = False
        fast._native.row_split = row_split
    prev, toks, lps, logits = torch.full((B,), model.bos), [], [], None
    if chunks is None:
        for k in range(u.shape[0]):
            prev, lp, logits = fast.step(prev, u[k])
            toks.append(prev[None])
            lps.append(lp[None])
    else:
        for a, b in zip([0, *chunks], [*chunks, u.shape[0]]):
            tok, lp, logits = fast.steps(prev, u[a:b])
            toks.append(tok)
            lps.append(lp)
            prev = tok[-1]
    return torch.cat(toks), torch.cat(lps), logits, [t.clone() for t in fast._state_tensors()], fast.t


def _assert_identical(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and a[4] == b[4]
    assert len(a[3]) == len(b[3]) and all(torch.equal(x, y) for x, y in zip(a[3], b[3]))


@pytest.mark.parametrize("layer,unet,B,settings", CASES)
@torch.no_grad()
def test_threads_give_bit_identical_samples_and_state(built, layer, unet, B, settings):
    # 300 steps: every tier runs many times. Chunks of 260 (>= 256: private SSM states, see Net::steps), 17
    # (the shared states) and 23; and one step() call per step (at B = 3 the recurrences split rows there).
    model = small_model(layer, unet)
    u = torch.rand(300, B)
    ref = _threaded_run(model, B, settings, 1, u, [260, 277])
    for threads, chunks in ((2, [260, 277]), (2, None), (3, [23, 283])):
        _assert_identical(_threaded_run(model, B, settings, threads, u, chunks), ref)


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("B,rows_from,row_levels", [
    (8, None, None),  # the defaults: tiers 0 and 1 by rows from batch 8
    (2, 2, 1),  # one row per thread, tier 0 by rows
    (5, 1, 2),  # 2 + 3 rows (row blocks of the kernels differ from the one-thread step's 4 + 1)
    (3, 1, 3),  # every level by rows, centre included (the tiny preset has 2 pooled tiers)
    (4, 4, 64),  # more levels than there are
])
@torch.no_grad()
def test_row_split_gives_bit_identical_samples_and_state(built, unet, B, rows_from, row_levels):
    # the outer levels split by batch rows between threads, the deeper ones by columns: the same bits as one
    # thread, through steps() with private (260) and shared (17) states and through step()
    model = small_model("s4", unet)
    u = torch.rand(300, B)
    settings = SamplingSettings(top_p=0.9)
    ref = _threaded_run(model, B, settings, 1, u, [260, 277])
    for threads, chunks in ((2, [260, 277]), (2, None), (3, [23, 283])):
        _assert_identical(_threaded_run(model, B, settings, threads, u, chunks, rows_from, row_levels), ref)


@pytest.mark.parametrize("row_split", [[0, 1, 6], [0, 5, 6], [0, 0, 6], None])  # None: balanced, moving
def test_uneven_row_shares_give_bit_identical_results(built, row_split):
    # the balance gives the faster thread more rows: any shares (even none) give the same bits as one thread;
    # 600 steps: the balance runs twice (every 256 steps) and may move rows mid-run
    model = small_model("s4")
    u = torch.rand(600, 6)
    ref = _threaded_run(model, 6, SamplingSettings(), 1, u, [300, 317])
    got = _threaded_run(model, 6, SamplingSettings(), 2, u, [300, 317], 2, 1, row_split)
    _assert_identical(got, ref)


@pytest.mark.parametrize("overrides", [
    dict(),  # the tiny preset itself: widths 16, 32, 64, a recurrence of 16 modes
    dict(d_model=24, init="legt"),  # widths not multiples of 16 / 32 (padded panels and lane groups); rank 2
    dict(d_model=10, pool=(2,), layer="s4d", unet=True),  # odd widths, one pooled tier
    dict(d_model=64, n_layers=1, d_state=8, pool=(2, 2)),  # two lane groups and 32-column panels, as sc09
])
@torch.no_grad()
def test_threads_give_bit_identical_results_on_other_shapes(built, overrides):
    import sashimi

    torch.manual_seed(0)
    kw = {**dict(l_max=64), **overrides}
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", **kw)).eval()
    for B in (1, 2):
        u = torch.rand(270, B)
        ref = _threaded_run(model, B, SamplingSettings(), 1, u, [])
        for threads, chunks in ((2, []), (2, None)):
            _assert_identical(_threaded_run(model, B, SamplingSettings(), threads, u, chunks), ref)


def test_default_threads():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert native.default_threads() == min(2, cpus)


def test_threads_come_from_the_caller_not_the_environment(built, monkeypatch):
    monkeypatch.setenv("SASHIMI_NATIVE_THREADS", "1")  # read by the CLI only
    fast = FastLM(small_model(), 1, backend="native")
    assert fast.threads == native.default_threads()
    assert FastLM(small_model(), 1, backend="native", threads=1).threads == 1


def test_threads_setting_is_checked(built):
    fast = FastLM(small_model(), 1, backend="native")
    with pytest.raises(RuntimeError, match="threads"):
        fast._native.threads = 0
    fast._native.threads = 1
    assert fast._native.threads == 1
    with pytest.raises(RuntimeError, match="rows_from"):
        fast._native.rows_from = 0
    with pytest.raises(RuntimeError, match="row_levels"):
        fast._native.row_levels = 0
    fast._native.rows_from, fast._native.row_levels = 4, 1
    assert (fast._native.rows_from, fast._native.row_levels) == (4, 1)
    fast._native.threads = 2
    for bad in ([0, 1], [0, 1, 2], [1, 1, 1], [0, 2, 1]):  # batch 1, two threads
        with pytest.raises(RuntimeError, match="row_split"):
            fast._native.row_split = bad
    fast._native.row_split = [0, 0, 1]
    assert fast._native.row_split == [0, 0, 1]


_LIFECYCLE = """
import os, sys, time
import torch
from sashimi.generation.fast import FastLM
from sashimi.jit import Extension
from tests.generation.conftest import small_model

torch.set_num_threads(1)
model = small_model("s4d")
bos = torch.full((2,), model.bos)
for i in range(40):  # create, step, destroy; some workers asleep when woken or destroyed
    fast = FastLM(model, 2, backend="native")
    fast._native.threads = 2 + i % 2
    fast.steps(bos, torch.rand(5, 2))
    if i % 10 == 0:
        time.sleep(0.01)  # past the workers' spin: they sleep
        fast.steps(bos, torch.rand(3, 2))
    del fast
fast = FastLM(model, 2, backend="native")
fast._native.threads = 2
tok = fast.steps(bos, torch.rand(3, 2))[0]
if hasattr(os, "fork"):
    pid = os.fork()  # the child has no workers: it must start its own, and exit cleanly
    if pid == 0:
        child = fast.steps(tok[-1], torch.rand(300, 2))[0]
        os._exit(0 if child.shape == (300, 2) else 1)
    assert os.waitpid(pid, 0)[1] == 0
fast.steps(tok[-1], torch.rand(300, 2))
keep = fast  # alive at interpreter exit, its workers idle
print("ok")
"""


def test_threads_start_and_stop_without_hanging(built, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "lifecycle.py"
    script.write_text(_LIFECYCLE)
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_sampler_uses_native_by_default_and_samples_like_eager(built):
    model = small_model("s4")
    settings = SamplingSettings(temperature=0.9, top_p=0.95)
    sampler = Sampler(model, [3, 4], settings)
    assert sampler.backend.backend == "native"
    prime = torch.randint(0, 256, (9,))
    fast = generate(model, 45, [3, 4], settings, prime=prime, chunk_size=16)
    eager = generate(model, 45, [3, 4], settings, prime=prime, backend="eager", chunk_size=16)
    assert torch.equal(fast.tokens, eager.tokens)
    torch.testing.assert_close(fast.log_likelihood, eager.log_likelihood, rtol=1e-5, atol=1e-4)


@torch.no_grad()
def test_native_sampling_matches_the_reference_on_tied_logits(built):
    model = small_model("s4d")
    model.head.weight.zero_()
    model.head.bias.copy_(torch.randint(0, 6, (256,)).float() / 2)  # logits = bias, with many exact ties
    bos = torch.full((64,), model.bos)
    for settings in (SamplingSettings(), SamplingSettings(top_p=0.7), SamplingSettings(top_k=10, temperature=0.8),
                     SamplingSettings(top_p=0.5, top_k=3), SamplingSettings(top_p=0.999, temperature=2.0)):
        u = torch.rand(64)
        token, logp, logits = FastLM(model, 64, settings, backend="native").step(bos, u)
        assert torch.equal(logits, model.head.bias.expand(64, -1))
        ref_token, ref_logp = sample(logits, u, settings)
        assert torch.equal(token, ref_token), settings
        torch.testing.assert_close(logp, ref_logp)


def test_nan_state_stops_native_generation(built):
    sampler = Sampler(small_model(), [0])
    list(sampler.chunks(10))
    for blk in sampler.backend.center:  # the native step shares the FastLM's state tensors
        for s in sampler.backend.states[id(blk)]:
            s.fill_(float("nan"))
    with pytest.raises(GenerationError, match=r"generated sample 20 .*seed 0"):
        list(sampler.chunks(20))


def test_bad_tokens_are_an_error_not_a_crash(built):
    fast = FastLM(small_model(), 2, backend="native")
    with pytest.raises(IndexError, match="out of range"):
        fast.step(torch.tensor([0, 257]), torch.rand(2))
    with pytest.raises(RuntimeError, match="shape"):
        fast.step(torch.tensor([0, 1, 2]), torch.rand(3))


def test_failed_build_falls_back_with_a_warning(monkeypatch):
    from torch.utils import cpp_extension

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Error building extension 'sashimi_fast_step'")

    monkeypatch.setattr(cpp_extension, "load", broken)
    ext = native._EXTENSION
    monkeypatch.setattr(native, "_EXTENSION", Extension(ext.name, ext.source, ext.what))  # nothing loaded yet
    model = small_model("s4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = FastLM(model, 2, backend="eager")  # not compiled: the eager fast step
    assert fast.backend == "eager" and not calls  # nothing is built unless the native step is asked for
    with pytest.warns(RuntimeWarning, match="native fast step unavailable.*Error building extension"):
        fast = FastLM(model, 2, backend="native")
    with pytest.warns(RuntimeWarning, match="Error building extension"):
        again = FastLM(model, 2, backend="native")
    assert fast.backend == again.backend == "inductor" and len(calls) == 1  # the failure is remembered
    tokens = torch.randint(0, 256, (2, 20))
    logits = torch.stack([fast.step(t, torch.rand(2))[2] for t in [torch.full((2,), 256), *tokens.T[:-1]]], 1)
    torch.testing.assert_close(logits, model(tokens), atol=2e-5, rtol=1e-4)


def test_other_dtypes_fall_back_with_a_warning(built):
    model = small_model("s4d").double()
    with pytest.warns(RuntimeWarning, match="float32 on CPU only"):
        fast = FastLM(model, 1, backend="native")
    assert fast.backend == "inductor"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast.step(torch.full((1,), model.bos), torch.rand(1))


@pytest.mark.parametrize("overrides", [
    dict(init="legt"),  # DPLR rank 2
    dict(pool=(), d_model=24),  # no pooling; channels not a multiple of the SIMD lane group
    dict(pool=(3, 2), unet=True, ff=0),
])
@torch.no_grad()
def test_native_step_on_other_shapes(built, overrides):
    import sashimi

    torch.manual_seed(0)
    kw = {**dict(layer="s4", d_model=8, d_state=8, n_layers=1, l_max=64, pool=(4, 4)), **overrides}
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", **kw)).eval()
    u, bos = torch.rand(30, 2), torch.full((2,), model.bos)
    nat = FastLM(model, 2, backend="native")
    assert nat.backend == "native"
    tok_n, lp_n, logits_n = _run(nat, bos, u)
    tok_e, lp_e, logits_e = _run(FastLM(model, 2, backend="eager"), bos, u)
    torch.testing.assert_close(logits_n, logits_e, atol=2e-5, rtol=1e-4)
    assert torch.equal(tok_n, tok_e)


def test_native_gelu_and_sigmoid_are_accurate(built):
    x = torch.linspace(-12, 12, 200_001)
    for name, ref in (("gelu", torch.nn.functional.gelu), ("sigmoid", torch.sigmoid)):
        y, r = built.elementwise(name, x).double(), ref(x.double())
        assert (y - r).abs().max() < 1e-6, name
        big = r.abs() > 1e-3
        assert ((y - r).abs() / r.abs())[big].max() < 3e-6, name  # a few float32 ulp
    assert built.elementwise("gelu", torch.tensor([float("nan")])).isnan().all()


def test_generate_cli_runs_native_by_default_and_matches_eager(built, tmp_path):
    import json

    import soundfile as sf

    import sashimi
    from sashimi.cli.main import main

    threads = torch.get_num_threads()
    model = small_model("s4")
    sashimi.save_model(model, tmp_path / "tiny.safetensors")
    audio = {}
    try:
        for backend in ("native", "eager"):
            out = tmp_path / backend
            args = ["generate", str(tmp_path / "tiny.safetensors"), "--n", "2", "--seconds", "0.004", "--top-p",
                    "0.9", "--out", str(out)] + ([] if backend == "native" else ["--backend", "eager"])
            assert main(args) == 0
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["settings"]["backend"] == backend
            audio[backend] = {r["seed"]: sf.read(str(out / r["file"]))[0] for r in manifest["samples"]}
    finally:
        torch.set_num_threads(threads)
    for seed in (0, 1):
        assert (audio["native"][seed] == audio["eager"][seed]).all()


def test_forced_steps_equal_the_eager_fast_step_and_refuse_bad_tokens():
    """Teacher forcing (``forced``, the loop in C++) gives the logits of the eager fast step, every step, and
    checks the tokens before the state changes."""
    import pytest

    import sashimi
    from sashimi.generation import FastLM

    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)).eval()
    tokens = torch.randint(0, 256, (300, 2))  # past a pooling period and a chunk of the chunked recurrence
    native, eager = FastLM(model, 2, backend="native"), FastLM(model, 2, backend="eager")
    assert native.backend == "native"
    a, b = native.forced(tokens), eager.forced(tokens)
    assert a.shape == (300, 2, 256)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    t = native._native.t
    with pytest.raises(IndexError, match="out of range"):
        native.forced(torch.full((3, 2), 999))
    assert native._native.t == t
