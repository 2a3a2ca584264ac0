import pytest
import torch

from sashimi.ssm.fft import fast_size, fft_conv, rfft


@pytest.mark.parametrize("n", [10, 11, 16, 17])
def test_rfft_backward_matches_autograd(n):
    x = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: torch.view_as_real(rfft(v, n)), (x,))
    assert torch.allclose(rfft(x, n), torch.fft.rfft(x, n=n))


@pytest.mark.parametrize("Lk", [12, 7, 24])
def test_fft_conv_is_linear_convolution_with_exact_gradients(Lk):
    u = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, Lk, dtype=torch.float64, requires_grad=True)
    direct = torch.stack([sum(k[:, s, None] * torch.nn.functional.pad(u, (s, 0))[..., :12] for s in range(min(Lk, 12)))])
    assert torch.allclose(fft_conv(u, k), direct[0], atol=1e-12)
    assert torch.autograd.gradcheck(fft_conv, (u, k))
    D = torch.randn(3, dtype=torch.float64, requires_grad=True)  # lag-0 skip tap
    assert torch.allclose(fft_conv(u, k, D), direct[0] + D[:, None] * u, atol=1e-12)
    assert torch.autograd.gradcheck(fft_conv, (u, k, D))
    assert torch.autograd.gradcheck(lambda u, k, D: fft_conv(u, k, D, n=24), (u[:1], k, D))


def test_fast_size():
    for n in [1, 2, 5, 100, 1999, 31999]:
        m = fast_size(n)
        assert m >= n
        while m % 2 == 0:
            m //= 2
        while m % 3 == 0:
            m //= 3
        assert m == 1


@pytest.mark.parametrize("last", [-1, 0, 5, 99, 180, 199])
def test_fft_conv_input_gradient_is_exactly_zero_after_the_last_nonzero_output_gradient(last):
    """Causality holds exactly, not to roundoff: inputs after the last output with a gradient get 0."""
    u = torch.randn(2, 3, 200, requires_grad=True)
    k = torch.randn(3, 200)
    g = torch.zeros(2, 3, 200)
    if last >= 0:
        g[1, 2, last] = 1.0
        g[0, :, : last // 2] = torch.randn(3, last // 2)
    (gu,) = torch.autograd.grad(fft_conv(u, k), u, g)
    assert torch.count_nonzero(gu[..., last + 1 :]) == 0
    if last >= 0:
        assert torch.count_nonzero(gu[..., : last + 1]) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32 takes the native path where built
def test_a_kept_kernel_spectrum_gives_the_same_convolution(dtype):
    u, k, D = torch.randn(2, 3, 40, dtype=dtype), torch.randn(3, 80, dtype=dtype), torch.randn(3, dtype=dtype)
    spectra = {}
    first = fft_conv(u, k, D, n=80, spectra=spectra)
    assert len(spectra) == 1 and torch.equal(first, fft_conv(u, k, D, n=80))
    kept = next(iter(spectra.values()))
    again = fft_conv(2 * u, k, D, n=80, spectra=spectra)  # a new input, the same kernel: its spectrum is reused
    assert next(iter(spectra.values())) is kept and torch.allclose(again, 2 * first, atol=1e-5)
    assert torch.equal(fft_conv(u, k, D, n=80, spectra={}), first)


def test_bf16_input_is_convolved_in_the_kernels_precision():
    u, k = torch.randn(2, 3, 32).bfloat16(), torch.randn(3, 32)
    y = fft_conv(u, k)
    assert y.dtype == torch.float32 and torch.equal(y, fft_conv(u.float(), k))


def test_a_call_autograd_records_neither_reads_nor_fills_the_kept_spectrum():
    u = torch.randn(1, 2, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
    spectra = {}
    assert torch.autograd.gradcheck(lambda u, k: fft_conv(u, k, spectra=spectra), (u, k))
    assert spectra == {}
    with torch.no_grad():
        fft_conv(u, k, spectra=spectra)
    assert len(spectra) == 1
    k2 = k.detach() + 1  # another kernel in the same dict gets its own spectrum, never the first one's
    assert torch.equal(fft_conv(u.detach(), k2, spectra=spectra), fft_conv(u.detach(), k2))
