"""Fast structured products (blocked Vandermonde, fused rank-1 Woodbury) against plain autograd references."""
import pytest
import torch

from sashimi.ssm import S4
from sashimi.ssm.structured import _block_size, paired_matrix_power, vandermonde, vandermonde_naive
from sashimi.ssm.woodbury import _Rank1Woodbury, woodbury_kernel_autograd
from tests.conftest import rel_err


def _nodes(H, N):
    return torch.complex(-torch.rand(H, N, dtype=torch.float64) * 0.1, torch.randn(H, N, dtype=torch.float64))


@pytest.mark.parametrize("S,H,N,L", [(1, 3, 4, 50), (4, 2, 8, 37), (2, 3, 6, 1000), (3, 2, 4, 97)])
def test_vandermonde_values_and_gradients_match_reference(S, H, N, L):
    coef = torch.randn(S, H, N, dtype=torch.complex128, requires_grad=True)
    log_z = _nodes(H, N).requires_grad_()
    g = torch.randn(H, S, L, dtype=torch.float64)
    fast, ref = vandermonde(coef, log_z, L), vandermonde_naive(coef, log_z, L)
    assert rel_err(fast, ref) < 1e-12
    grads = torch.autograd.grad((fast * g).sum(), (coef, log_z))
    ref_grads = torch.autograd.grad((ref * g).sum(), (coef, log_z))
    for a, b in zip(grads, ref_grads):
        assert rel_err(a, b) < 1e-11


def test_vandermonde_gradcheck():
    coef = torch.randn(2, 2, 3, dtype=torch.complex128, requires_grad=True)
    log_z = _nodes(2, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, z: vandermonde(c, z, 45), (coef, log_z))


def test_block_size_prefers_divisors():
    assert 16000 % _block_size(16000, 4) == 0
    assert _block_size(97, 1) >= 16  # a prime length falls back to a padded power of two


@pytest.mark.parametrize("S,L", [(1, 50), (2, 37), (1, 16)])
def test_rank1_woodbury_matches_autograd_reference(S, L):
    q = torch.randn(3, 2 * (S + 1), L, dtype=torch.float64, requires_grad=True)
    split = lambda q: (q[:, :S], q[:, S:])
    g = torch.randn(S, 3, L, dtype=torch.float64)
    fast = _Rank1Woodbury.apply(*split(q), L)
    ref = woodbury_kernel_autograd(q, L, 1, S)
    assert rel_err(fast, ref) < 1e-12
    assert rel_err(torch.autograd.grad((fast * g).sum(), q)[0], torch.autograd.grad((ref * g).sum(), q)[0]) < 1e-11
    assert torch.autograd.gradcheck(lambda q: _Rank1Woodbury.apply(*split(q), L), (q,))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 1000])
def test_paired_matrix_power_equals_matrix_power(n):
    # S4's dense dA (conjugate-extended basis) has the paired form [[X, Y], [conj Y, conj X]]
    layer = S4(3, 16, init="legt", l_max=64).double()  # rank 2: both blocks dense
    dA = layer.kernel.discretize("dense").A
    assert rel_err(paired_matrix_power(dA, n), torch.linalg.matrix_power(dA, n)) < 1e-10  # rounding, ~n eps
    with pytest.raises(ValueError, match="even size"):
        paired_matrix_power(torch.zeros(3, 3, dtype=torch.complex128), 2)


@pytest.mark.parametrize("mode", ["dplr", "diag"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_keeps_the_kernel_in_float32(mode, dtype):
    """Under autocast the kernel products stay float32 (they sum thousands of powers), values equal the float32
    run and the backward works: bf16-mixed / 16-mixed training of any S4 layer."""
    torch.manual_seed(0)
    s4 = S4(4, 8, mode=mode, l_max=300)
    x = torch.randn(2, 300, 4)
    ref = s4.kernel(300)
    with torch.autocast("cpu", dtype=dtype):
        k = s4.kernel(300)
        y = s4(x)  # (B L H)
    assert k.dtype == torch.float32 and rel_err(k, ref) < 1e-6
    y.float().square().mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in s4.parameters())
    assert any(p.grad is not None for p in s4.kernel.parameters())
