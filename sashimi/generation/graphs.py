"""CUDA graphs of the fast step: a step, or a whole pooling period of steps, as one graph replay.

On a GPU the torch fast step (``FastLM`` with the "inductor" or "eager" backend) is bound by kernel launches:
a SaShiMi step is hundreds of small kernels. ``StepGraphs`` captures

  * one graph per step depth (``FastLM.depth``: which tiers run), for ``FastLM.step``, and
  * one graph of a whole period of P = prod(pool) steps, each sample fed back as the next token, for
    ``FastLM.steps`` (so sampling in chunks costs one replay per P samples; unaligned heads and tails of a
    call run step by step),

all reading static input buffers and updating FastLM's state tensors in place (they keep their addresses).
Capturing runs each function a few times (the warm-up CUDA needs), so the state is snapshotted first and
restored afterwards. Before the graphs are used, ``verify`` replays each one from a random token and
compares it with the uncaptured function from the same state; a difference raises ``GraphError`` and
``FastLM`` falls back to the uncaptured step with a warning.

Shapes: B = batch, P = period (steps), C = classes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from sashimi.errors import ConfigError, SashimiError

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Outputs = tuple[torch.Tensor, ...]


class GraphError(SashimiError):
    """A captured graph does not reproduce the step it was captured from."""


class GraphAPI(Protocol):
    def check(self, device: torch.device) -> None:
        """Raise ``ConfigError`` if graphs cannot run on ``device``."""

    def capture(self, fn: Callable[[], Outputs]) -> tuple[Callable[[], None], Outputs]:
        """Capture ``fn`` -> (replay, its static outputs, overwritten by every replay)."""


class CudaGraphs:
    """``torch.cuda.CUDAGraph`` capture: warm-up on a side stream, then one capture into a private pool."""

    warmup = 2

    def check(self, device: torch.device) -> None:
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ConfigError(f"CUDA graphs need a model on a CUDA device (the model is on {device})")

    def capture(self, fn: Callable[[], Outputs]) -> tuple[Callable[[], None], Outputs]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph.replay, out


def api_for(device: torch.device) -> GraphAPI:
    """The graph implementation for ``device`` (tests replace this with a CPU stand-in)."""
    api = CudaGraphs()
    api.check(device)
    return api


class StateAccess(Protocol):
    def snapshot(self) -> list[torch.Tensor]: ...

    def restore(self, saved: list[torch.Tensor]) -> None: ...


class StepGraphs:
    """Captured steps of a FastLM. ``fns[d]`` is the step at depth d; ``depths[j]`` the depth of the j-th step
    of a period (a period starts at a step t with t % P == 0). ``token`` (B) long and ``u`` (B) float give the
    batch, dtypes and device of the static inputs."""

    def __init__(self, fns: Sequence[StepFn], depths: Sequence[int], token: torch.Tensor, u: torch.Tensor,
                 state: StateAccess, api: GraphAPI):
        self.fns, self.depths, self.period, self.state = list(fns), list(depths), len(depths), state
        self._token = torch.zeros_like(token)  # (B) the previous sample, input of every graph
        self._u = torch.zeros_like(u)  # (B) uniforms of a single step
        self._uu = u.new_zeros(self.period, *u.shape)  # (P B) uniforms of a period
        saved = state.snapshot()
        try:
            self._step = [api.capture(lambda fn=fn: fn(self._token, self._u)) for fn in self.fns]
            self._whole = api.capture(lambda: self._run_period(self.fns))
        finally:
            state.restore(saved)

    def _run_period(self, fns: Sequence[StepFn]) -> Outputs:
        """P steps from ``_token`` with uniforms ``_uu``, each sample fed back -> tokens (P B), log-probs (P B),
        logits (B C) of the last step."""
        token, tokens, logps, logits = self._token, [], [], None
        for j, d in enumerate(self.depths):
            token, logp, logits = fns[d](token, self._uu[j])
            tokens.append(token)
            logps.append(logp)
        return torch.stack(tokens), torch.stack(logps), logits

    # ----- running -----
    def step(self, depth: int, token: torch.Tensor, u: torch.Tensor) -> Outputs:
        """One step at ``depth`` -> token (B), log-prob (B), logits (B C) (fresh tensors)."""
        self._token.copy_(token)
        self._u.copy_(u)
        replay, out = self._step[depth]
        replay()
        return tuple(o.clone() for o in out)

    def steps(self, t: int, token: torch.Tensor, u: torch.Tensor) -> Outputs:
        """``len(u)`` steps from outer step t, each sample fed back: u (n B) -> tokens (n B), log-probs (n B),
        logits (B C) of the last step."""
        n, P = u.shape[0], self.period
        tokens = torch.empty(u.shape, dtype=self._token.dtype, device=self._token.device)  # (n B)
        logps = torch.empty(u.shape, dtype=self._uu.dtype, device=self._uu.device)  # (n B)
        logits, k = None, 0
        self._token.copy_(token)
        while k < n:
            if (t + k) % P == 0 and n - k >= P:  # a whole period: one replay
                self._uu.copy_(u[k : k + P])
                replay, out = self._whole
                span = P
            else:
                self._u.copy_(u[k])
                replay, out = self._step[self.depths[(t + k) % P]]
                span = 1
            replay()
            tokens[k : k + span] = out[0].view(span, -1)
            logps[k : k + span] = out[1].view(span, -1)
            self._token.copy_(tokens[k + span - 1])
            logits, k = out[2], k + span
        if logits is None:
            raise ConfigError("steps needs at least one uniform (u of shape (n B), n >= 1)")
        return tokens, logps, logits.clone()

    # ----- checking -----
    def verify(self, atol: float = 1e-5, rtol: float = 1e-5) -> None:
        """Replay every graph from a random token and the current state and compare it with the uncaptured
        functions (outputs and resulting state); raise GraphError on a difference. The state is left as it
        was."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        classes = self._whole[1][2].shape[-1]  # C of the logits: tokens 0 .. C-1 are valid inputs
        token = torch.randint(0, classes, self._token.shape, generator=gen).to(self._token)
        u = torch.rand(self._uu.shape, generator=gen).to(self._uu)
        for d, fn in enumerate(self.fns):
            self._compare(f"step graph of depth {d}", lambda fn=fn: fn(token, u[0]),
                          lambda d=d: self.step(d, token, u[0]), atol, rtol)

        def uncaptured() -> Outputs:
            self._token.copy_(token)
            self._uu.copy_(u)
            return self._run_period(self.fns)

        self._compare("period graph", uncaptured, lambda: self.steps(0, token, u), atol, rtol)

    def _compare(self, what: str, reference: Callable[[], Outputs], graphed: Callable[[], Outputs], atol: float,
                 rtol: float) -> None:
        saved = self.state.snapshot()
        try:
            want = [o.clone() for o in reference()] + [s.clone() for s in self.state.snapshot()]
            self.state.restore(saved)
            got = list(graphed()) + self.state.snapshot()
        finally:
            self.state.restore(saved)
        names = ["tokens", "log-probs", "logits"] + [f"state tensor {i}" for i in range(len(want) - 3)]
        for name, w, g in zip(names, want, got):
            if not torch.allclose(g.float(), w.float(), atol=atol, rtol=rtol):
                err = (g.float() - w.float()).abs().max().item()
                raise GraphError(f"the {what} differs from the uncaptured step in its {name} (max abs diff {err:.3g})")
