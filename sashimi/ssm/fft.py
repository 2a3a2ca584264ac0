"""FFT helpers with hand-written backward passes.

PyTorch differentiates ``rfft`` through a full complex FFT (c2c) of the padded gradient; the adjoint of a
one-sided real FFT is a scaled ``irfft`` with the interior bins halved, which costs half as much. The FFT
convolution likewise needs only three real FFTs backwards when its spectra are kept from the forward pass.
Both are checked against autograd through the plain ops in tests/ssm/test_fft.py.
"""
from __future__ import annotations

import functools

import torch

from sashimi.ssm import native


def fast_size(n: int) -> int:
    """Smallest 2^a * 3^b >= n: FFT lengths the FFT library handles fastest."""
    best = 1 << (n - 1).bit_length()
    p3 = 1
    while p3 < best:
        p2 = p3
        while p2 < n:
            p2 *= 2
        best = min(best, p2)
        p3 *= 3
    return best


@functools.lru_cache(maxsize=32)
def _interior_weights(n: int, device, dtype) -> torch.Tensor:
    """1 for the DC (and Nyquist, n even) bins of a one-sided spectrum, 1/2 for the bins that stand for a
    conjugate pair (a constant; memoized)."""
    w = torch.full((n // 2 + 1,), 0.5, device=device, dtype=dtype)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


class _RFFT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n, ctx.length = n, x.shape[-1]
        return torch.fft.rfft(x, n=n)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        n = ctx.n
        w = _interior_weights(n, g.device, g.real.dtype)  # 1 / (1 or 2)
        gx = torch.fft.irfft(g * w, n=n) * n  # adjoint: sum_k g_k e^{+2 pi i k t / n}, real part
        return gx[..., : ctx.length], None


def rfft(x: torch.Tensor, n: int) -> torch.Tensor:
    """torch.fft.rfft(x, n) along the last axis, with a real-FFT backward."""
    return _RFFT.apply(x, n)


class _FFTConv(torch.autograd.Function):
    """y = (k + D delta) * u: the kernel plus a lag-0 tap D (the S4 skip term), added to its spectrum. The
    spectral products run fused in the native kernel ops where they apply (``native.ops``)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None, n: int,
                spectra: dict | None) -> torch.Tensor:
        L, Lk = u.shape[-1], k.shape[-1]
        fits = u.dim() == 3 and k.dim() == 2 and k.shape[0] == u.shape[1] and n >= max(L, Lk)
        ext = native.ops(u, k, *([] if D is None else [D])) if fits else None
        ctx.sizes, ctx.ext = (n, L, Lk), ext
        if ext is None:
            U, K = torch.fft.rfft(u, n=n), _kernel_spectrum(k, n, None, spectra)
            if D is not None:
                K = K + D[:, None]  # a lag-0 tap has a flat spectrum
            ctx.save_for_backward(U, K, None)
            return torch.fft.irfft(U * K, n=n)[..., :L]
        # native: (B H L) rows in and out in one tiled pass each (the output's memory is (B L H), the layout
        # of the layers around it); K stays without D, the product adds it on the fly
        U, K = torch.fft.rfft(ext.pad_rows(u, n)), _kernel_spectrum(k, n, ext, spectra)
        D = None if D is None else D.detach().contiguous()
        ctx.save_for_backward(U, K, D)
        return ext.crop_rows(torch.fft.irfft(ext.conv_forward(U, K, D), n=n), L).transpose(1, 2)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        U, K, D = ctx.saved_tensors
        n, L, Lk = ctx.sizes
        need_u, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        if ctx.ext is not None:
            native.refuse_double_backward()
            G = torch.fft.rfft(ctx.ext.pad_rows(g, n))
            GK, GU = ctx.ext.conv_backward(G, K, D, U, need_u, need_k)
        else:
            G = torch.fft.rfft(g, n=n)
            GK = G * K.conj() if need_u else None  # correlation with the kernel
            GU = G * U.conj() if need_k else None  # (... H F), summed over the leading (batch) axes below
            if need_k and GU.dim() > K.dim():
                GU = GU.reshape(-1, *K.shape)
                GU = GU[0] if GU.shape[0] == 1 else GU.sum(0)
        gu = gk = gD = None
        if need_u:
            gu = torch.fft.irfft(GK, n=n)
            gu = gu[..., :L] if ctx.ext is None else ctx.ext.crop_rows(gu, L).transpose(1, 2)
            # causal: inputs after the last nonzero gradient get exactly zero, not roundoff (the full scan is
            # skipped in the common case of a nonzero gradient at the last position)
            if n >= L + Lk - 1 and not bool(g[..., -1].any()):
                gu[..., _last_nonzero(g) + 1 :] = 0
        if need_k:
            gk_full = torch.fft.irfft(GU, n=n)
            gk = gk_full[..., :Lk] if ctx.needs_input_grad[1] else None
            gD = gk_full[..., 0] if ctx.needs_input_grad[2] else None
        return gu, gk, gD, None, None


def _kernel_spectrum(k: torch.Tensor, n: int, ext, spectra: dict | None) -> torch.Tensor:
    """rfft of the kernel k (H L') at length n, in the layout of the path that uses it (``ext``: the native
    ops' padded rows), memoized in ``spectra`` when the caller holds the kernel fixed (``fft_conv``)."""
    version = None if k.is_inference() else k._version  # inference tensors keep no version counter
    key = (n, ext is not None, k.data_ptr(), version, tuple(k.shape), k.dtype, k.device)
    if spectra is not None and key in spectra:
        return spectra[key]
    K = torch.fft.rfft(k, n=n) if ext is None else torch.fft.rfft(ext.pad_rows(k[None], n)[0])
    if spectra is not None:
        spectra[key] = K
    return K


def _last_nonzero(g: torch.Tensor) -> int:
    """Last index along the last axis where any entry of g is nonzero (-1 if none). Scans back from the end in
    doubling windows, so a short zero tail (the usual case) costs little."""
    end, width = g.shape[-1], 16
    while end > 0:
        start = max(0, end - width)
        hits = (g[..., start:end] != 0).flatten(0, -2).any(dim=0).nonzero()
        if len(hits):
            return start + int(hits.max())
        end, width = start, 2 * width
    return -1


def fft_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None, n: int | None = None,
             spectra: dict | None = None) -> torch.Tensor:
    """Convolution of u (B H L) with k (H L') by FFT of length n, truncated to L, plus D (H) * u if given.

    With the default n (a fast size >= L + L' - 1) nothing wraps around: y[t] = sum_s k[s] u[t-s] + D u[t].
    An explicit n gives the circular convolution of the zero-padded signals (used for two-sided kernels).
    ``spectra``: a dict the caller keeps with a kernel it will apply again (``S4`` inside ``cached_kernels``);
    the kernel's spectrum is computed once into it, keyed by the kernel tensor (and its version, where it has
    one: not for an inference tensor, which must then be applied unchanged). It is used only
    when autograd records nothing (inference): a recorded call computes the spectrum afresh. u of a lower
    precision than the kernel (bfloat16 or float16 activations) is convolved, and returned, in the kernel's dtype.
    """
    if u.dtype != k.dtype and u.dtype in (torch.bfloat16, torch.float16):
        u = u.to(k.dtype)
    if torch.is_grad_enabled() and (u.requires_grad or k.requires_grad or (D is not None and D.requires_grad)):
        spectra = None
    return _FFTConv.apply(u, k, D, n or fast_size(u.shape[-1] + k.shape[-1] - 1), spectra)
