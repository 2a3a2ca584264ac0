"""An independent, plainly written reference forward of the SaShiMi backbone (paper Figure 1).

Convolution == recurrence runs both modes through the one tier recursion of ``SaShiMi._tier``, so a wiring
bug shared by both (a dropped U-Net skip, blocks in the wrong order, a residual around the wrong part) passes
it. ``reference_forward`` below re-derives the wiring without calling the backbone's forward, ``_tier``,
``_blocks`` or the pool modules' forward: it walks down the tiers, through the centre and back up with plain
loops, applying only leaf modules (each residual S4 / FF block as a unit, the final LayerNorm) and the
pooling Linear layers by their weights. Folding, unfolding and the causal shift of the up-pool are written
with explicit indexing from the documented semantics (``sashimi/nn/pool.py``, docs/model.md "The backbone"):

  DownPool: fold p consecutive steps into features, feature h*p + s = channel h at sub-step s; Linear.
  UpPool:   Linear to H*p features, unfold (same feature order), shift right by one pooled step: the p outputs
            of pooled step k come from the deeper tier's output k - 1 (zeros for k = 0).
  Tier i, no U-Net:  y = UpPool(deeper(DownPool(x))) + x;  out = blocks(y) + y.
  Tier i, U-Net:     d_0 = x, d_j = down block j (d_{j-1}) for j = 1..m;  y = UpPool(deeper(DownPool(d_m))) + d_m;
                     then up block j: y = block(y) + d_{m-j}  (the last one gets the tier input d_0).
  Centre:            out = blocks(x) + x.
  Output:            LayerNorm(tier 0)[:, :L], the input zero-padded at the end to a multiple of prod(pool).

This is the data flow of the official state-spaces/s4 ``models/sashimi/sashimi.py`` (its skip stack written
out per tier). The mutation tests apply a wiring bug to the package's own code (a copy of ``_tier`` /
``_blocks`` / a pool ``forward`` with one line changed, bound to the model instance), and check that the
reference then disagrees, while convolution == recurrence does not notice the shared ones.
"""
from __future__ import annotations

import __future__
import inspect
import sys
import textwrap
import types

import pytest
import torch

from sashimi.models.backbone import SaShiMi
from sashimi.nn.blocks import FFBlock, ResidualS4Block
from sashimi.nn.pool import DownPool, UpPool

TOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: intra-op threads only cost time here (100x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# The reference
# ----------------------------------------------------------------------------------------------------------

def ref_linear(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """x @ W^T + b, from the layer's weights (not its forward)."""
    return x @ linear.weight.T + linear.bias


def ref_down_pool(x: torch.Tensor, linear: torch.nn.Linear, p: int) -> torch.Tensor:
    """(B L H) -> (B L/p H'): pooled step k sees steps k*p .. k*p+p-1 only, feature h*p + s = x[k*p + s, h]."""
    B, L, H = x.shape
    assert L % p == 0
    folded = x.new_zeros(B, L // p, H * p)
    for k in range(L // p):
        for s in range(p):
            for h in range(H):
                folded[:, k, h * p + s] = x[:, k * p + s, h]
    return ref_linear(folded, linear)


def ref_up_pool(z: torch.Tensor, linear: torch.nn.Linear, p: int) -> torch.Tensor:
    """(B K H') -> (B K*p H): outputs k*p .. k*p+p-1 come from z[k - 1] (zeros for k = 0): causal shift."""
    u = ref_linear(z, linear)  # (B K H*p), feature h*p + s = channel h at sub-step s
    B, K, Hp = u.shape
    H = Hp // p
    y = u.new_zeros(B, K * p, H)
    for k in range(1, K):
        for s in range(p):
            for h in range(H):
                y[:, k * p + s, h] = u[:, k - 1, h * p + s]
    return y


def stack_layout(model: SaShiMi) -> list[type]:
    """The block types of one stack by the config: n_layers x (S4 block, FF block if ff > 0)."""
    cfg = model.init_kwargs
    return [ResidualS4Block, FFBlock][: 2 if cfg["ff"] > 0 else 1] * cfg["n_layers"]


def run_stack(blocks, layout: list[type], x: torch.Tensor) -> list[torch.Tensor]:
    """Apply the blocks in order; return the output after each block (the input excluded)."""
    assert [type(b) for b in blocks] == layout, "stack does not have the configured layout"
    outs = []
    for blk in blocks:
        x = blk(x)
        outs.append(x)
    return outs


def reference_forward(model: SaShiMi, x: torch.Tensor) -> torch.Tensor:
    cfg = model.init_kwargs
    pools, unet = [int(p) for p in cfg["pool"]], cfg["unet"]
    layout = stack_layout(model)
    B, L, H = x.shape
    assert H == cfg["d_model"]

    total = 1
    for p in pools:
        total *= p
    padded = -(-L // total) * total
    h = x.new_zeros(B, padded, H)
    h[:, :L] = x

    # Down: for each tier keep its input and its U-Net block outputs (d_0 .. d_m), then pool.
    down_skips: list[list[torch.Tensor]] = []
    for i, p in enumerate(pools):
        d = [h]
        if unet:
            d += run_stack(model.down_blocks[i], layout, h)
        else:
            assert len(model.down_blocks[i]) == 0
        down_skips.append(d)
        width = h.shape[-1]
        h = ref_down_pool(d[-1], model.down[i].linear, p)
        assert h.shape == (B, padded // _prod(pools[: i + 1]), width * cfg["expand"])

    # Centre: its blocks with one residual around them all.
    centre = run_stack(model.center, layout, h)
    h = (centre[-1] if centre else h) + h

    # Up: innermost tier first.
    for i in reversed(range(len(pools))):
        d = down_skips[i]
        y = ref_up_pool(h, model.up[i].linear, pools[i])
        if unet:
            m = len(d) - 1
            y = y + d[m]
            assert len(model.up_blocks[i]) == m
            for j, blk in enumerate(model.up_blocks[i], start=1):
                assert type(blk) is layout[j - 1]
                y = blk(y) + d[m - j]
            h = y
        else:
            y = y + d[0]
            outs = run_stack(model.up_blocks[i], layout, y)
            h = (outs[-1] if outs else y) + y
        assert h.shape == d[0].shape

    return model.norm(h)[:, :L]


def _prod(xs) -> int:
    out = 1
    for v in xs:
        out *= v
    return out


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------

def make(pool=(4, 4), unet=False, layer="s4", expand=2, n_layers=1, ff=2, bidirectional=False, d_model=8):
    model = SaShiMi(d_model=d_model, n_layers=n_layers, pool=pool, expand=expand, ff=ff, layer=layer,
                    unet=unet, bidirectional=bidirectional, d_state=8, l_max=64).double().eval()
    with torch.no_grad():  # LayerNorms off their (1, 0) init, so a norm applied at the wrong place shows
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.add_(0.3 * torch.randn_like(mod.weight))
                mod.bias.add_(0.3 * torch.randn_like(mod.bias))
    return model


def inputs(L=64, d_model=8, B=2):
    return torch.randn(B, L, d_model, dtype=torch.float64)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


CASES = {
    "pool44": dict(pool=(4, 4)),
    "pool44-unet": dict(pool=(4, 4), unet=True),
    "pool44-2layers": dict(pool=(4, 4), n_layers=2),
    "pool44-unet-2layers": dict(pool=(4, 4), unet=True, n_layers=2),
    "pool4-expand1": dict(pool=(4,), expand=1),
    "pool4-unet": dict(pool=(4,), unet=True, n_layers=2),
    "pool222": dict(pool=(2, 2, 2)),
    "pool222-unet": dict(pool=(2, 2, 2), unet=True),
    "pool232-expand1-unet": dict(pool=(2, 3, 2), expand=1, unet=True),
    "pool44-noff-unet": dict(pool=(4, 4), ff=0, unet=True, n_layers=2),
    "pool44-nolayers": dict(pool=(4, 4), n_layers=0),
    "pool44-bidirectional-unet": dict(pool=(4, 4), unet=True, bidirectional=True),
}


# ----------------------------------------------------------------------------------------------------------
# The reference's own building blocks against the documented semantics
# ----------------------------------------------------------------------------------------------------------

def test_reference_fold_unfold_follow_the_documented_feature_order_and_shift():
    H, p, K = 3, 4, 5
    lin = torch.nn.Linear(H * p, H * p).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(H * p))
        lin.bias.zero_()
    t = torch.arange(K * p, dtype=torch.float64)[:, None]
    x = (100 * t + torch.arange(H))[None]  # x[0, t, h] = 100 t + h
    folded = ref_down_pool(x, lin, p)
    for k in range(K):
        for h in range(H):
            for s in range(p):
                assert folded[0, k, h * p + s] == 100 * (k * p + s) + h
    unfolded = ref_up_pool(folded, lin, p)  # identity unfold, shifted by one pooled step (p samples)
    assert torch.equal(unfolded[0, :p], torch.zeros(p, H, dtype=torch.float64))
    assert torch.equal(unfolded[0, p:], x[0, :-p])


# ----------------------------------------------------------------------------------------------------------
# Reference == model
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["s4", "s4d"])
@pytest.mark.parametrize("case", list(CASES))
def test_model_equals_reference(case, layer):
    model = make(layer=layer, **CASES[case])
    x = inputs()
    with torch.no_grad():
        assert max_err(reference_forward(model, x), model(x)) < TOL


def test_reference_reproduces_the_official_implementation(reference_path):
    """Anchor the reference's reading of the wiring to the official backbone's output (no U-Net there)."""
    from sashimi.models.convert import load_official_backbone

    fixture = torch.load(reference_path, weights_only=True)
    _, model = load_official_backbone(str(reference_path), dtype=torch.float64)
    with torch.no_grad():
        assert max_err(reference_forward(model.eval(), fixture["input"]), fixture["output"]) < 1e-8


@pytest.mark.parametrize("L", [1, 13, 50])
def test_model_equals_reference_on_lengths_that_need_padding(L):
    model = make(pool=(4, 4), unet=True)
    x = inputs(L)
    with torch.no_grad():
        assert max_err(reference_forward(model, x), model(x)) < TOL


@pytest.mark.parametrize("case", ["pool44", "pool44-unet", "pool222-unet"])
def test_reference_and_model_are_causal(case):
    model = make(layer="s4d", **CASES[case])
    x = inputs()
    with torch.no_grad():
        for f in (lambda v: reference_forward(model, v), model):
            y = f(x)
            for t in (1, 5, 16, 31, 63):
                x2 = x.clone()
                x2[:, t] += torch.randn_like(x2[:, t])
                y2 = f(x2)
                assert (y2[:, :t] - y[:, :t]).abs().max().item() < 1e-12
                assert (y2[:, t] - y[:, t]).abs().max().item() > 1e-3


# ----------------------------------------------------------------------------------------------------------
# Wiring bugs applied to the package's own code are caught by the reference
# ----------------------------------------------------------------------------------------------------------

def _mutant(func, old: str, new: str):
    """``func`` recompiled from its source with ``old`` replaced by ``new`` (in its module's namespace)."""
    src = textwrap.dedent(inspect.getsource(func))
    assert src.count(old) == 1, f"mutation target {old!r} not found once in {func.__qualname__}: update the test"
    code = compile(src.replace(old, new), f"<mutant of {func.__qualname__}>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: dict = {}
    exec(code, vars(sys.modules[func.__module__]), namespace)
    out = namespace[func.__name__]
    return out.__func__ if isinstance(out, staticmethod) else out


def _tier_mutant(old, new):
    def apply(monkeypatch, model):
        monkeypatch.setattr(model, "_tier", types.MethodType(_mutant(SaShiMi._tier, old, new), model))
    return apply


def _blocks_mutant(old, new):
    def apply(monkeypatch, model):  # a static method: the instance attribute is called unbound, as the original
        monkeypatch.setattr(model, "_blocks", _mutant(SaShiMi._blocks, old, new))
    return apply


def _pool_mutant(attr, cls, old, new):
    def apply(monkeypatch, model):
        for mod in getattr(model, attr):
            monkeypatch.setattr(mod, "forward", types.MethodType(_mutant(cls.forward, old, new), mod))
    return apply


MUTATIONS = {
    # U-Net: up blocks without their skip connection from the down blocks
    "unet-skip-dropped": (_tier_mutant("y = run(blk, y, tau) + skips.pop()", "y = run(blk, y, tau); skips.pop()"),
                          dict(pool=(4, 4), unet=True)),
    # U-Net: skips taken from the wrong end (first down output to the first up block)
    "unet-skips-reversed": (_tier_mutant("y = run(blk, y, tau) + skips.pop()", "y = run(blk, y, tau) + skips.pop(0)"),
                            dict(pool=(4, 4), unet=True, n_layers=2)),
    # U-Net: down blocks run in reverse order (FF before S4)
    "unet-down-blocks-swapped": (_tier_mutant("for blk in self.down_blocks[i]:",
                                              "for blk in reversed(self.down_blocks[i]):"),
                                 dict(pool=(4, 4), unet=True)),
    # the residual around the up-pool dropped (up-pool output not added to the tier input)
    "up-pool-skip-dropped": (_tier_mutant("y = run(self.up[i], deeper, tau) + skips.pop()",
                                          "y = run(self.up[i], deeper, tau) + 0 * skips.pop()"),
                             dict(pool=(4, 4))),
    # centre tier without the residual around its blocks
    "centre-residual-dropped": (_tier_mutant("return self._blocks(self.center, x, run) + x",
                                             "return self._blocks(self.center, x, run)"),
                                dict(pool=(2, 2, 2))),
    # every stack run in reverse order (FF block before S4 block)
    "blocks-swapped": (_blocks_mutant("for blk in blocks:", "for blk in reversed(list(blocks)):"),
                       dict(pool=(4, 4), n_layers=1)),
    # up-pool without the causal shift (sees its own pooled step: the future)
    "up-pool-shift-removed": (_pool_mutant("up", UpPool, "x = F.pad(x[:, :-1], (0, 0, 1, 0))", "pass"),
                              dict(pool=(4, 4))),
    # down-pool folding in (s, h) feature order instead of (h, s)
    "down-pool-fold-order": (_pool_mutant("down", DownPool, ".transpose(-1, -2)  # (B L/p H p)", ""),
                             dict(pool=(4, 4))),
}


def test_unchanged_recompiled_code_still_equals_the_reference(monkeypatch):
    """Control: the mutation machinery alone (recompiling and binding the package's code) changes nothing."""
    model = make(layer="s4d", pool=(4, 2), unet=True)
    _tier_mutant("skips = [x]", "skips = [x]")(monkeypatch, model)
    _blocks_mutant("for blk in blocks:", "for blk in blocks:")(monkeypatch, model)
    _pool_mutant("up", UpPool, "F.pad", "F.pad")(monkeypatch, model)
    _pool_mutant("down", DownPool, "self.linear", "self.linear")(monkeypatch, model)
    assert all(isinstance(m.__dict__.get("forward"), types.MethodType) for m in [*model.up, *model.down])
    x = inputs()
    with torch.no_grad():
        assert max_err(reference_forward(model, x), model(x)) < TOL


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_reference_catches_wiring_bugs(name, monkeypatch):
    apply, kwargs = MUTATIONS[name]
    model = make(layer="s4d", **kwargs)
    x = inputs()
    with torch.no_grad():
        ref = reference_forward(model, x)
        assert max_err(ref, model(x)) < TOL
        apply(monkeypatch, model)
        assert max_err(reference_forward(model, x), ref) == 0  # the reference does not use the mutated code
        assert max_err(model(x), ref) > 1e-3


@pytest.mark.parametrize("name", ["unet-skip-dropped", "centre-residual-dropped"])
def test_shared_wiring_bugs_pass_convolution_equals_recurrence_but_not_the_reference(name, monkeypatch):
    apply, kwargs = MUTATIONS[name]
    model = make(layer="s4d", **kwargs)
    x = inputs(32)
    apply(monkeypatch, model)
    with torch.no_grad():
        conv = model(x)
        state = model.default_state(x.shape[0])
        steps = []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            steps.append(y)
        assert max_err(torch.stack(steps, 1), conv) < 1e-8  # both modes share the bug
        assert max_err(conv, reference_forward(model, x)) > 1e-3
