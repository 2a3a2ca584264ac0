"""The discretizations and kernels of `sashimi.ssm`, checked against independent computations in numpy/scipy.

Nothing here calls the kernels' own `_discrete()` / `_dense()`: the continuous system (A, B) is rebuilt from
the raw parameters, ZOH is the matrix exponential of Van Loan's augmented matrix
    expm([[dt A, dt B], [0, 0]]) = [[dA, dB], [0, 1]],   dB = integral_0^dt exp(A s) ds B,
(so it is checked without the A^-1 (dA - I) B formula the package uses), bilinear is its closed form
    dA = (I - dt/2 A)^-1 (I + dt/2 A),   dB = (I - dt/2 A)^-1 dt B,
and the kernels are K[k] = Re(C dA^k dB) summed over the conjugate-extended state.
"""
import numpy as np
import pytest
import scipy.linalg
import torch

from sashimi.ssm.kernel import DiagKernel, DPLRKernel

H, N, L = 3, 8, 48


def _c(p: torch.Tensor) -> np.ndarray:
    """A view_as_real parameter (..., 2) -> complex numpy."""
    p = p.detach().double().numpy()
    return p[..., 0] + 1j * p[..., 1]


def _continuous(kernel):
    """dt (H), Lambda (H N2), B (H N2) from the raw parameters."""
    dt = np.exp(kernel.log_dt.detach().double().numpy())
    lam = -np.exp(kernel.A_real.detach().double().numpy()) - 1j * kernel.A_imag.detach().double().numpy()
    return dt, lam, _c(kernel.B)


def _zoh(A: np.ndarray, B: np.ndarray, dt: float):
    """Van Loan: (dA, dB) of x' = A x + B u held constant over dt."""
    n = A.shape[0]
    M = np.zeros((n + 1, n + 1), dtype=complex)
    M[:n, :n], M[:n, n] = dt * A, dt * B
    E = scipy.linalg.expm(M)
    return E[:n, :n], E[:n, n]


def _bilinear(A: np.ndarray, B: np.ndarray, dt: float):
    I = np.eye(A.shape[0])
    return np.linalg.solve(I - dt / 2 * A, I + dt / 2 * A), np.linalg.solve(I - dt / 2 * A, dt * B)


DISCRETIZE = {"zoh": _zoh, "bilinear": _bilinear}


def _perturb(kernel):
    """Move the parameters off their structured init (and make dt large) so that mistakes show."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (kernel.B, kernel.C, kernel.A_imag, kernel.A_real):
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        kernel.log_dt.copy_(torch.log(torch.tensor([0.05, 0.3, 0.9])))
        if hasattr(kernel, "P"):
            kernel.P.add_(0.1 * torch.randn(kernel.P.shape, generator=g))
    return kernel.double()


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_discretization_and_kernel(disc):
    kernel = _perturb(DiagKernel(H, N, disc=disc))
    dt, lam, B = _continuous(kernel)
    C = _c(kernel.C)[0]  # (H N2)
    system = kernel.discretize()
    K = kernel(L)[0].detach().numpy()  # (H L)
    for h in range(H):
        dA, dB = DISCRETIZE[disc](np.diag(lam[h]), B[h], dt[h])
        np.testing.assert_allclose(system.mu[h].numpy(), np.diag(dA), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(system.b[h].numpy(), dB, rtol=1e-10, atol=1e-12)
        powers = np.diag(dA)[None, :] ** np.arange(L)[:, None]  # (L N2)
        expected = 2 * (powers * (C[h] * dB)[None]).sum(-1).real  # the conjugate pair doubles the real part
        np.testing.assert_allclose(K[h], expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def _dplr_full(kernel, h: int):
    """A (N N) = diag(Lambda, conj Lambda) - P P^* and B (N) in the conjugate-extended basis, channel h."""
    dt, lam, B = _continuous(kernel)
    P = _c(kernel.P)[:, h]  # (r N2)
    full = lambda x: np.concatenate([x, x.conj()], axis=-1)
    A = np.diag(full(lam[h])) - full(P).T @ full(P).conj()
    return A, full(B[h]), dt[h]


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["legs", "legt"])
def test_dplr_discretization_and_kernel(disc, init):
    kernel = _perturb(DPLRKernel(H, N, init=init, disc=disc, l_max=L if disc == "bilinear" else None))
    system = kernel.discretize("dense")
    K = kernel(L)[0].detach().numpy()  # (H L)
    Ct = _c(kernel.C)[0]  # (H N2): C~ for length L (bilinear) or plain C (zoh)
    for h in range(H):
        A, B, dt = _dplr_full(kernel, h)
        dA, dB = DISCRETIZE[disc](A, B, dt)
        np.testing.assert_allclose(system.A[h].numpy(), dA, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(system.b[h].numpy(), dB, rtol=1e-9, atol=1e-11)
        c_stored = np.concatenate([Ct[h], Ct[h].conj()])
        # bilinear learns C~ = C (I - dA^L) for the kernel length: recover the plain C independently
        C = c_stored if disc == "zoh" else np.linalg.solve((np.eye(N) - np.linalg.matrix_power(dA, L)).T, c_stored)
        np.testing.assert_allclose(system.c[h].numpy(), C, rtol=1e-8, atol=1e-10)
        x, expected = dB, np.empty(L)
        for k in range(L):
            expected[k] = (C @ x).real
            x = dA @ x
        np.testing.assert_allclose(K[h], expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())
