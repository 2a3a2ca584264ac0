"""S4 layer behaviour: convolution == recurrence, causality, gradients, stability, errors."""
import pytest
import torch

from sashimi import param_groups
from sashimi.errors import ConfigError
from sashimi.ssm import S4
from tests.conftest import rel_err, unroll

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode,step_mode,disc", [("dplr", "linear", None), ("dplr", "dense", None),
                                                 ("diag", "diagonal", "zoh"), ("diag", "diagonal", "bilinear")])
@pytest.mark.parametrize("H,N,L,l_max", [(4, 8, 37, None), (8, 16, 100, 100), (3, 64, 129, 64)])
def test_convolution_equals_recurrence(dtype, mode, step_mode, disc, H, N, L, l_max):
    layer = S4(H, N, mode=mode, disc=disc, l_max=l_max).to(dtype).eval()
    layer.setup_step(step_mode)
    x = torch.randn(2, L, H, dtype=dtype)
    with torch.no_grad():
        y_conv = layer(x)
        y_step, _ = unroll(layer, x)
    assert rel_err(y_step, y_conv) < TOL[dtype]


def test_dplr_zoh_convolution_equals_dense_recurrence():
    layer = S4(4, 16, mode="dplr", disc="zoh").double().eval()
    assert layer.step_mode == "dense"
    x = torch.randn(2, 70, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(unroll(layer, x)[0], layer(x)) < 1e-8
    with pytest.raises(ConfigError, match="not available"):
        layer.setup_step("linear")


def test_dplr_diagonal_step_where_well_conditioned_and_refused_where_not():
    layer = S4(4, 16, mode="dplr", l_max=64).double().eval()
    layer.setup_step("diagonal")  # float64, N=16: cond(V) * eps is small enough
    x = torch.randn(1, 64, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(unroll(layer, x)[0], layer(x)) < 1e-6
    with pytest.raises(ConfigError, match="not stably diagonalizable in torch.float32"):
        S4(4, 64, mode="dplr").setup_step("diagonal")


@pytest.mark.parametrize("mode,step_mode", [("dplr", "linear"), ("dplr", "dense"), ("diag", "diagonal")])
def test_forward_state_equals_stepping(mode, step_mode):
    layer = S4(4, 8, mode=mode, l_max=50).double().eval()
    layer.setup_step(step_mode)
    x = torch.randn(2, 45, 4, dtype=torch.float64)
    with torch.no_grad():
        _, stepped = unroll(layer, x)
        assert rel_err(layer.forward_state(x), stepped) < 1e-10
        half = layer.forward_state(x[:, :20])
        assert rel_err(layer.forward_state(x[:, 20:], half), stepped) < 1e-10


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_causal(mode):
    layer = S4(4, 8, mode=mode, l_max=64).double()
    x = torch.randn(1, 64, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 40] += 1.0
    y, y2 = layer(x), layer(x2)
    assert torch.equal(y[:, :40], y2[:, :40]) or (y[:, :40] - y2[:, :40]).abs().max() < 1e-13
    assert (y[:, 40:] - y2[:, 40:]).abs().max() > 1e-6


def test_bidirectional_sees_both_sides_and_has_no_step():
    layer = S4(4, 8, bidirectional=True, l_max=32).double()
    x = torch.randn(2, 32, 4, dtype=torch.float64)
    y = layer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 20] += 1.0
    assert (layer(x2)[:, :20] - y[:, :20]).abs().max() > 1e-6  # the past now depends on the future
    with pytest.raises(ConfigError, match="bidirectional"):
        layer.default_state(1)


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_gradients_reach_every_parameter(mode):
    layer = S4(4, 8, mode=mode, l_max=32, dropout=0.1)
    layer(torch.randn(2, 32, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_layer_gradients_match_finite_differences(mode):
    layer = S4(2, 4, mode=mode, l_max=10).double()
    x = torch.randn(1, 10, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_hurwitz_stability_after_perturbations(mode):
    layer = S4(8, 16, mode=mode, l_max=64).double()
    for _ in range(5):
        with torch.no_grad():
            for p in layer.kernel.parameters():
                p.add_(torch.randn_like(p) * 0.5 * p.abs().mean())
        eig = _discrete_eigenvalues(layer)
        assert eig.abs().max() < 1.0


def _discrete_eigenvalues(layer):
    system = layer.kernel.discretize("dense" if layer.mode == "dplr" else "diagonal")  # eigenvalues of dA
    return torch.linalg.eigvals(system.A) if hasattr(system, "A") else system.mu


def test_step_never_stale_after_optimizer_step():
    layer = S4(4, 8, l_max=16).double()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(1, 16, 4, dtype=torch.float64)
    unroll(layer, x)  # builds the cached recurrence
    layer(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        assert rel_err(unroll(layer, x)[0], layer(x)) < 1e-8
        layer.load_state_dict(S4(4, 8, l_max=16).double().state_dict())
        assert rel_err(unroll(layer, x)[0], layer(x)) < 1e-8


def test_optimizer_hints_become_parameter_groups():
    model = torch.nn.Sequential(S4(4, 8), S4(4, 8, mode="diag"))
    groups = param_groups(model, lr=0.004, weight_decay=0.1)
    ssm = [g for g in groups if g["lr"] == 0.001]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    names = set(ssm[0]["names"])
    assert {"0.kernel.A_real", "0.kernel.P", "0.kernel.log_dt", "1.kernel.B"} <= names
    assert "0.kernel.C" not in names and "0.output_linear.weight" not in names
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups)  # accepted as is


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_state=7), "d_state must be a positive even"),
    (dict(mode="s5"), "unknown mode 's5'"),
    (dict(init="bogus"), "unknown init 'bogus'"),
    (dict(mode="diag", disc="euler"), "unknown disc 'euler'"),
    (dict(mode="dplr", disc="euler"), "unknown disc 'euler'"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_arguments_are_clear(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        S4(4, **kwargs)


def test_wrong_input_shape_is_clear():
    with pytest.raises(ValueError, match=r"expects input \(batch, length, 4\)"):
        S4(4, 8)(torch.randn(2, 3, 5))
