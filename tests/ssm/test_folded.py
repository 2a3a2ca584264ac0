"""The folded form of the O(M) recurrences (sashimi/ssm/folded.py) against the systems it folds, and its chunk
tables against explicit stepping."""
import pytest
import torch

from sashimi.ssm.kernel import DiagKernel, DPLRKernel


def _systems():
    torch.manual_seed(0)
    out = []
    for init in ("legs", "legt"):  # rank 1 and rank 2
        k = DPLRKernel(3, 8, init=init, dt_min=0.05, dt_max=0.5).double()
        out.append((f"dplr-{init}", k.discretize("linear")))
    for disc in ("zoh", "bilinear"):
        k = DiagKernel(3, 8, disc=disc, dt_min=0.05, dt_max=0.5).double()
        out.append((f"diag-{disc}", k.discretize("diagonal")))
    return out


@pytest.mark.parametrize("name,system", _systems(), ids=[n for n, _ in _systems()])
def test_folded_step_equals_the_system_step(name, system):
    folded = system.folded()
    torch.manual_seed(1)
    x = torch.randn(2, *folded.DE.shape, dtype=torch.complex128)
    for _ in range(20):
        u = torch.randn(2, folded.DE.shape[0], dtype=torch.float64)
        y_ref, x_ref = system.step(u, x.to(system.c.dtype))
        y, x = folded.step(u, x)
        torch.testing.assert_close(y, y_ref.double(), atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(x, x_ref.to(x.dtype), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name,system", _systems(), ids=[n for n, _ in _systems()])
def test_chunk_tables_equal_explicit_steps(name, system):
    folded = system.folded()
    T = 16
    F, h = folded.chunk_tables(T)
    torch.manual_seed(2)
    x0 = torch.randn(1, *folded.DE.shape, dtype=torch.complex128)
    u = torch.randn(T, 1, folded.DE.shape[0], dtype=torch.float64)
    x = x0
    for i in range(T):
        y, x = folded.step(u[i], x)
        free = (F[..., i] * x0[0]).sum(-1).real
        forced = sum(h[:, i - j] * u[j, 0] for j in range(i + 1))
        torch.testing.assert_close(y[0], free + forced, atol=1e-10, rtol=1e-9)
