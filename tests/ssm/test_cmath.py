import torch

from sashimi.ssm.cmath import cexpm1, clog


def _samples():
    g = torch.Generator().manual_seed(0)
    big = torch.complex(torch.randn(500, generator=g, dtype=torch.float64) * 3,
                        torch.randn(500, generator=g, dtype=torch.float64) * 20)
    tiny = big * 1e-9  # where exp(w) - 1 would cancel
    return torch.cat([big, tiny, torch.tensor([-1 + 0j, 1j, -1j, 2 + 0j], dtype=torch.complex128)])


def test_clog_matches_builtin():
    z = _samples()
    z = z[z.abs() > 0]
    torch.testing.assert_close(clog(z), torch.log(z), rtol=1e-14, atol=1e-14)


def test_cexpm1_matches_builtin_including_near_zero():
    w = _samples()
    torch.testing.assert_close(cexpm1(w), torch.expm1(w), rtol=1e-13, atol=0)


def test_gradients_match_builtin():
    w = _samples()[:50].clone().requires_grad_(True)
    for ours, ref in [(clog, torch.log), (cexpm1, torch.expm1)]:
        g = torch.randn(50, dtype=torch.complex128)
        (a,) = torch.autograd.grad((ours(w) * g).real.sum(), w)
        (b,) = torch.autograd.grad((ref(w) * g).real.sum(), w)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
