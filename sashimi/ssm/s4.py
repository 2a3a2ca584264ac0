"""The S4 layer: SSM convolution + skip D, GELU, dropout, and a GLU output projection.

Dimension letters: B = batch, L = length, H = d_model, N = d_state.

Two equivalent ways to run it:
  forward(x (B L H)) -> (B L H)            convolution mode (training, scoring, prefill)
  step(x_t (B H), state) -> (y_t, state)   recurrent mode (generation), with state from default_state()
The recurrence is derived from the current parameters and re-derived automatically whenever any of them
changes (optimizer step, load_state_dict, .to()), so step mode can never go stale.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.errors import ConfigError
from sashimi.ssm.fft import fft_conv
from sashimi.ssm.kernel import DiagKernel, DPLRKernel
from sashimi.ssm.recurrence import forward_state

MODES = ("dplr", "diag")


class S4(nn.Module):
    """S4 / S4D layer with input and output (B, L, H)."""

    def __init__(self, d_model: int, d_state: int = 64, *, mode: str = "dplr", init: str = "legs",
                 disc: str | None = None, l_max: int | None = None, bidirectional: bool = False,
                 dropout: float = 0.0, dt_min: float = 0.001, dt_max: float = 0.1,
                 ssm_lr: float | None = 0.001):
        super().__init__()
        _validate(d_model, d_state, mode, disc, dropout)
        self.d_model, self.d_state, self.mode, self.bidirectional = d_model, d_state, mode, bidirectional
        channels = 2 if bidirectional else 1
        common = dict(channels=channels, init=init, dt_min=dt_min, dt_max=dt_max, lr=ssm_lr)
        if mode == "dplr":
            self.kernel = DPLRKernel(d_model, d_state, l_max=l_max, disc=disc or "bilinear", **common)
        else:
            self.kernel = DiagKernel(d_model, d_state, disc=disc or "zoh", **common)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Linear(d_model, 2 * d_model)
        self.step_mode = "diagonal" if mode == "diag" else ("dense" if disc == "zoh" else "linear")
        self._system_cache: tuple | None = None
        self._kernel_cache: dict | None = None  # {L: (parameter versions, kernel, its spectra)} in cached_kernels

    def __getstate__(self) -> dict:
        """Copies and pickles of the layer carry no kernel cache (one made inside ``cached_kernels`` would
        otherwise keep caching after the block ends)."""
        return {**super().__getstate__(), "_kernel_cache": None}

    # ----- convolution mode -----
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L H) -> (B L H)."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"S4 expects input (batch, length, {self.d_model}), got {tuple(x.shape)}")
        u = x.transpose(1, 2)  # (B H L)
        y = self._ssm(u)
        return self._output(y.transpose(1, 2))

    def _ssm(self, u: torch.Tensor) -> torch.Tensor:
        """SSM convolution plus skip: u (B H L) -> (B H L)."""
        L = u.shape[-1]
        k, spectra = self._conv_kernel(L)
        return fft_conv(u, k, self.D, n=2 * L if self.bidirectional else None, spectra=spectra)

    def _conv_kernel(self, L: int) -> tuple[torch.Tensor, dict | None]:
        """The kernel the FFT convolution applies: (H L), or for a bidirectional layer the two-sided (H 2L), circular
        over 2L: the forward kernel on the past, the backward kernel on the strict future. Inside
        ``cached_kernels`` it is computed once per length and parameter version, and returned with the dict in
        which ``fft_conv`` keeps its spectrum (None outside)."""
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in self.kernel.parameters())
        if self._kernel_cache is not None and self._kernel_cache.get(L, (None,))[0] == key:
            return self._kernel_cache[L][1:]
        k = self.kernel(L)  # (S H L)
        k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0)) if self.bidirectional else k[0]
        if self._kernel_cache is None:
            return k, None
        self._kernel_cache[L] = (key, k, {})
        return self._kernel_cache[L][1:]

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Pointwise tail shared by both modes: GELU, dropout, Linear(H, 2H) + GLU. y: (..., H)."""
        return F.glu(self.output_linear(self.dropout(F.gelu(y))), dim=-1)

    # ----- recurrent mode -----
    def setup_step(self, mode: str) -> None:
        """Choose the recurrence. DPLR: 'linear' (default, O(N), exact), 'dense' (O(N^2) reference) or
        'diagonal' (O(N), only where the eigenbasis is well conditioned). Diagonal S4D: 'diagonal'."""
        allowed = ("diagonal",) if self.mode == "diag" else ("linear", "dense", "diagonal")
        if self.mode == "dplr" and self.kernel.disc == "zoh":
            allowed = ("dense", "diagonal")
        if mode not in allowed:
            raise ConfigError(f"step mode {mode!r} is not available for mode={self.mode!r}; expected one of {allowed}")
        self.step_mode = mode
        self._system_cache = None
        self.system()  # fail now, not at the first step, if the mode cannot be set up

    def system(self):
        """The discrete recurrence for the current parameters (cached until any parameter changes)."""
        key = (self.step_mode,) + tuple((p._version, p.data_ptr(), p.dtype) for p in self.kernel.parameters())
        if self._system_cache is None or self._system_cache[0] != key:
            self._system_cache = (key, self.kernel.discretize(self.step_mode))
        return self._system_cache[1]

    def default_state(self, batch_size: int) -> torch.Tensor:
        """Zero state (B H M), complex, on the parameters' device."""
        return self.system().default_state(batch_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B H) -> y (B H), next state."""
        z, state = self.system().step(x, state)
        return self._output(z + x * self.D), state

    @torch.no_grad()
    def forward_state(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """State after consuming x (B L H) from ``state`` (zero if None), computed in chunks, not steps."""
        if self.step_mode != "linear":
            return forward_state(self.system(), x.transpose(1, 2), state)
        # the linear step keeps one mode per conjugate pair of the dense (full) state
        N2 = self.d_state // 2
        full = None if state is None else torch.cat([state, state.conj()], dim=-1)
        dense = self.kernel.discretize("dense")
        return forward_state(dense, x.transpose(1, 2), full)[..., :N2]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, mode={self.mode!r}, bidirectional={self.bidirectional}"


@contextlib.contextmanager
def cached_kernels(module: nn.Module):
    """Inside the block, every S4 layer of ``module`` computes its convolution kernel once per input length and
    reuses it while its parameters are unchanged: for inference that runs a model many times on inputs of one
    length (diffusion sampling: T network evaluations). Meant for no-grad use; the kernels are dropped at exit."""
    layers = [m for m in module.modules() if isinstance(m, S4)]
    for m in layers:
        m._kernel_cache = {}
    try:
        yield module
    finally:
        for m in layers:
            m._kernel_cache = None


def _validate(d_model, d_state, mode, disc, dropout) -> None:
    if not isinstance(d_model, int) or d_model <= 0:
        raise ConfigError(f"d_model must be a positive integer, got {d_model!r}")
    if not isinstance(d_state, int) or d_state <= 0 or d_state % 2:
        raise ConfigError(f"d_state must be a positive even integer (modes come in conjugate pairs), got {d_state!r}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {MODES}")
    if disc not in (None, "zoh", "bilinear"):
        raise ConfigError(f"unknown disc {disc!r} for mode={mode!r}; expected 'zoh' or 'bilinear'")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
