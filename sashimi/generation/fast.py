"""The fast recurrent step: the whole SaShiMi LM as real-valued tensors, run by one of three backends.

Backends (``FastLM(..., backend=...)``; ``backends.make_step`` is the one switch that also offers the reference
``SaShiMiLM.step``): "native" (the default on CPU; ``native.py``: one fused C++ call per step, JIT-built once
with the system compiler), "inductor" (one compiled graph per step depth, below) and "eager" (the same graphs
uncompiled: the reference the others are tested against). A backend that cannot be had falls back with a
``RuntimeWarning``: native -> inductor -> eager.

Dimension letters: B = batch, H = width of a tier, M = modes of a recurrence (N/2), C = classes, r = rank.

Why it is fast (``SaShiMiLM.step`` stays the reference; tests assert both give the same logits):
  * every S4 recurrence is set up once as real and imaginary parts, O(M) per channel and no complex ops in
    the hot loop: S4D layers their diagonal recurrence, DPLR layers the exact Woodbury form of their step
    (see ``FastS4Block`` for why not ``DenseSystem.diagonalize``);
  * pooling buffers are shift registers (push at the end, read at the front), so no step index is needed and
    the only thing that depends on t is *which* tiers run;
  * a step's graph depends only on its depth (how many tiers are due: tier i+1 runs when tier i's pool fills),
    so one graph per depth, sampling included, is compiled with inductor (3 graphs for two pooling levels),
    with dynamo's per-call guard checks skipped, and run on the torch threads it was compiled for; a compiler
    failure falls back to eager with a warning;
  * all state is preallocated and updated in place.
The conversion reads the model's current parameters; build a new ``FastLM`` after changing them.
"""
from __future__ import annotations

import contextlib
import math
import types
import warnings
import weakref

import torch
import torch.nn as nn

from sashimi.errors import ConfigError
from sashimi.generation import blocks as fast_blocks_module
from sashimi.generation import loop
from sashimi.generation.loop import torch_threads as _torch_threads
from sashimi.generation.blocks import FastFFBlock, FastS4Block  # noqa: F401 - re-exported
from sashimi.generation.sampling import SamplingSettings, sample
from sashimi.generation.state import StepState
from sashimi.models.backbone import BackboneState
from sashimi.models.lm import SaShiMiLM
from sashimi.nn.blocks import ResidualS4Block

BACKENDS = ("native", "inductor", "eager")
WEIGHTS = ("float32", "bf16")  # how the native step stores Linear weights (float32 accumulation either way)


def _own_code(fn):
    """``fn`` with a code object of its own. Dynamo keeps its compiled graphs (at most ``recompile_limit``, 8)
    on the code object, and every FastLM's step closures share one: without a copy, the third FastLM of a
    process could not compile, and the graphs of deleted FastLMs would stay alive."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class FastLM(nn.Module):
    """A SaShiMiLM's recurrent generation for a fixed batch size: ``step`` samples one token per sequence.

    State: ``self.t`` (outer steps consumed), per-block SSM states, and per-tier pooling shift registers
    ``down[i]`` (B H_i p_i) holding the last inputs and ``up[i]`` (B H_i p_i) holding the outputs still due.
    Every backend updates these same tensors in place (the native one stores the SSM states (B H M) with
    strides of a (B M H) tensor, its channels-in-SIMD-lanes layout). The native step's chunked recurrence
    keeps an SSM state at the start of its 16-step chunk between reads of ``states``: take the tensors from
    ``states`` after the last step to read or write them, not from a reference held across steps.

    ``backend``: "native", "inductor" or "eager"; default "native" on CPU ("inductor" for a model on a GPU),
    ``self.backend`` says which one runs after any fallback. The native step is float32 on CPU only; ``march``
    picks its build (``native.load``), ``chunked`` its chunked recurrence, ``weights="bf16"`` stores its Linear
    weights as bfloat16 (float32 accumulation; half the bytes streamed per step; float32 is the reference). A
    fallback from the native step runs float32 weights (with the fallback's warning).

    ``labels`` (B,): the label of each sequence, for a conditional model (``model.labels``); its label vectors
    (``SaShiMiLM.label_vectors``, the one owner of that formula) are added to every embedded token.

    ``like``: another FastLM of the same (unchanged) model, e.g. for another batch size: its converted blocks
    are reused, which skips most of the set-up (the S4 layers' float64 discretization).

    ``threads``: the native step's threads (default ``native.default_threads()``: 2 where the process may use 2
    CPUs; settable later, ``self.threads``), or torch's intra-op threads for the torch backends' steps (default:
    torch's count when the FastLM is built). Every ``step``/``steps`` call runs under this count (set around the call where torch's
    differs), and inductor compiles for it: dynamo guards on the thread count and inductor writes it into
    its CPU kernels, so a compiled step is valid for the count it was compiled under only. Build the FastLM
    with the count its loop will use (set-up and prefill may run under another).

    ``cuda_graphs``: replay the torch backends' steps as CUDA graphs (``graphs.py``: one graph per step
    depth, and one per pooling period for ``steps``). Default: on for a model on a CUDA device. A capture
    that fails, or whose replay differs from the uncaptured step, falls back to it with a RuntimeWarning;
    ``self.cuda_graphs`` says whether graphs run.
    """

    def __init__(self, model: SaShiMiLM, batch_size: int, settings: SamplingSettings = SamplingSettings(),
                 backend: str | None = None, *, threads: int | None = None, cuda_graphs: bool | None = None,
                 like: FastLM | None = None, march: str = "native", chunked: bool = True,
                 weights: str = "float32", labels: torch.Tensor | None = None):
        super().__init__()
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self._torch_threads = threads or torch.get_num_threads()
        bb = model.backbone
        if any(getattr(m.layer, "bidirectional", False) for m in bb.modules() if isinstance(m, ResidualS4Block)):
            raise ConfigError("a bidirectional model cannot generate autoregressively")
        on_cpu = model.head.weight.device.type == "cpu"
        backend = backend or ("native" if on_cpu else "inductor")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown fast-step backend {backend!r}; expected one of {BACKENDS}")
        if weights not in WEIGHTS:
            raise ConfigError(f"unknown weights {weights!r}; expected one of {WEIGHTS}")
        if weights != "float32" and backend != "native":
            raise ConfigError(f"weights={weights!r} is a native-step option (bfloat16 Linear weights, float32 "
                              f"accumulation); the {backend} step runs the model's own weights")
        if cuda_graphs and backend == "native":
            raise ConfigError("cuda_graphs replays the torch backends ('inductor' or 'eager') on a GPU; the native "
                              "step runs on CPU")
        self.settings, self.batch_size, self.unet, self.pool = settings, batch_size, bb.unet, bb.pool
        self.period = math.prod(self.pool)
        blocks = [b for group in (*bb.down_blocks, *bb.up_blocks, bb.center) for b in group]
        if like is not None and like._model() is not model:
            raise ConfigError("like= must be a FastLM of the same model")
        fast = like._converted if like is not None else fast_blocks_module.fast_blocks(blocks)
        self._model, self._converted = weakref.ref(model), fast  # for like= (a weak reference: not a submodule)
        with torch.no_grad():
            self.embedding, self.head, self.norm = model.embedding, model.head, bb.norm
            cond = model.label_vectors(labels, batch_size)  # (B H) of a conditional model, else None
            self.cond = None if cond is None else cond.detach().clone()
            self.down_blocks = nn.ModuleList(nn.ModuleList(fast[id(b)] for b in s) for s in bb.down_blocks)
            self.up_blocks = nn.ModuleList(nn.ModuleList(fast[id(b)] for b in s) for s in bb.up_blocks)
            self.center = nn.ModuleList(fast[id(b)] for b in bb.center)
            self.down_linear = nn.ModuleList(d.linear for d in bb.down)
            self.up_linear = nn.ModuleList(u.linear for u in bb.up)
        self.requires_grad_(False)
        self._native = None
        self.t = 0
        registers = ([(d.d_input, d.pool) for d in bb.down], [(u.d_output, u.pool) for u in bb.up])
        self.compiled = False
        self._eager_steps = [self._step_at_depth(d) for d in range(len(self.pool) + 1)]
        if backend == "native":  # the native step allocates the state in its layout
            self._native = self._build_native(march, registers, threads, chunked, weights)
            if self._native is None:
                backend = "inductor"
        if self._native is None:
            self._use_state(StepState(list(self._blocks()), *registers, batch_size, like=model.head.weight))
        self._steps = self._build_steps(backend == "inductor")
        self.compiled = self._steps[0] is not self._eager_steps[0]  # False after a fallback
        #: the backend in use: "native", "inductor" or "eager" (after any fallback)
        self.backend = "native" if self._native is not None else ("inductor" if self.compiled else "eager")
        self._graphs = None
        if cuda_graphs or (cuda_graphs is None and not on_cpu and self._native is None):
            self._graphs = self._build_graphs()

    def _use_state(self, state: StepState) -> None:
        self.state = state
        self._states, self.down, self.up = state.ssm, state.down, state.up

    def _build_native(self, march: str, registers, threads: int | None, chunked: bool, weights: str):
        """The native step (its state adopted), or None after a RuntimeWarning if it cannot be built or does not
        fit this model."""
        from sashimi.generation import native

        try:
            step = native.NativeStep(self, registers, march, threads=threads, chunked=chunked,
                                      weights=weights)
            self._use_state(step.state)
            return step
        except Exception as err:  # noqa: BLE001 - any failure means: use the torch step
            warnings.warn(f"native fast step unavailable ({type(err).__name__}: {err}); falling back to the "
                          "torch fast step", RuntimeWarning, stacklevel=3)
            return None

    def _build_graphs(self):
        """CUDA graphs of the steps (``graphs.py``), checked against the uncaptured steps; None after a
        RuntimeWarning if they cannot be had. Raises ConfigError when the model is not on a CUDA device."""
        from sashimi.generation import graphs

        api = graphs.api_for(self.head.weight.device)
        token = torch.zeros(self.batch_size, dtype=torch.long, device=self.head.weight.device)
        depths = [self.depth(j) for j in range(self.period)]
        try:
            with torch.no_grad(), self._stance():
                steps = graphs.StepGraphs(self._steps, depths, token, self.head.weight.new_zeros(self.batch_size),
                                          self, api)
                steps.verify()
            return steps
        except Exception as err:  # noqa: BLE001 - any capture failure means: replay nothing, run the steps
            warnings.warn(f"CUDA graphs of the fast step unavailable ({type(err).__name__}: {err}); running the "
                          f"{self.backend} step without them", RuntimeWarning, stacklevel=3)
            return None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the steps run as CUDA graph replays."""
        return self._graphs is not None

    @property
    def threads(self) -> int:
        """Threads of the native step (``native.py``), or the torch threads the torch backends' steps run on
        (fixed when the FastLM is built)."""
        return self._native.threads if self._native is not None else self._torch_threads

    @threads.setter
    def threads(self, n: int) -> None:
        if self._native is None:
            raise ConfigError(f"threads is set per step for the native backend only; the {self.backend} step "
                              "runs on the threads it was built with (FastLM(..., threads=N)), "
                              "whatever torch.set_num_threads says later")
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}")
        self._native.threads = n

    @property
    def states(self) -> dict[int, list[torch.Tensor]]:
        """Per-block SSM states by ``id(block)``: [Re, Im] (B H M). Reading them brings the native step's
        chunked recurrence up to date first (``native.py``), so they may be read and written in place."""
        if self._native is not None:
            self._native.sync()
        return self._states

    @states.setter
    def states(self, value: dict[int, list[torch.Tensor]]) -> None:
        if getattr(self, "_native", None) is not None or getattr(self, "_graphs", None) is not None:
            # the native step and the CUDA graphs hold the tensors they were built with
            holder = "the native step updates" if self._native is not None else "the CUDA graphs update"
            raise ConfigError(f"{holder} the state tensors in place: write into fast.states[...] "
                              "(or use load_state) instead of replacing the dict")
        self._states = value

    @property
    def t(self) -> int:
        """Outer steps consumed."""
        return self._native.t if self._native is not None else self._t

    @t.setter
    def t(self, value: int) -> None:
        if self._native is not None:
            self._native.t = value
        else:
            self._t = value

    def _blocks(self):
        for group in list(self.down_blocks) + list(self.up_blocks) + [self.center]:
            yield from group

    # ----- state exchange with the eager model -----
    def load_state(self, state: BackboneState) -> None:
        """Take over an eager ``BackboneState`` (e.g. from ``SaShiMiLM.prefill``)."""
        bb_layers = iter(state.layers)
        n = state.t
        for i, p in enumerate(self.pool):
            for blk in self.down_blocks[i]:
                self._load_block(blk, next(bb_layers))
            down, up = next(bb_layers), next(bb_layers)  # (B H p), indexed by step mod p
            r = n % p
            self.down[i].zero_()
            self.down[i][..., p - r:] = down[..., :r]  # the last r inputs, oldest first
            self.up[i].zero_()
            self.up[i][..., : p - r] = up[..., r:]  # outputs due at steps r .. p-1 of this pool window
            for blk in self.up_blocks[i]:
                self._load_block(blk, next(bb_layers))
            n //= p
        for blk in self.center:
            self._load_block(blk, next(bb_layers))
        self.t = state.t

    def _load_block(self, blk: nn.Module, model_state) -> None:
        if isinstance(blk, FastS4Block):
            blk.load_state(self.states[id(blk)], model_state)

    # ----- the step -----
    def depth(self, t: int) -> int:
        """How many tiers below the outer one run at outer step t (their pools fill at this step)."""
        d, span = 0, 1
        for p in self.pool:
            span *= p
            if (t + 1) % span:
                break
            d += 1
        return d

    def step(self, token: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """token (B) the previous sample (``bos`` first), u (B) uniforms -> sampled token (B), its log-prob (B),
        logits (B C). Native: one C++ call; else the compiled (or eager) graph for this step's depth."""
        if self._native is not None:
            return self._native.step(token, u)
        with torch.no_grad(), self._stance():
            if self._graphs is not None:
                out = self._graphs.step(self.depth(self.t), token, u)
            else:
                out = self._steps[self.depth(self.t)](token.long().contiguous(), u.float().contiguous())
        self.t += 1
        return out

    def steps(self, token: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``len(u)`` steps, each sample fed back as the next token: token (B), u (n B) -> tokens (n B),
        log-probs (n B), logits (B C) of the last step. Native: the loop runs in C++."""
        if self._native is not None:
            return self._native.steps(token, u)
        if self._graphs is not None and u.shape[0]:
            with torch.no_grad():
                out = self._graphs.steps(self.t, token, u)
            self.t += u.shape[0]
            return out
        with _torch_threads(self._torch_threads):  # set once for the loop, not per step
            return loop.steps(self.step, token, u, self.head.out_features)

    def forced(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: consume tokens (n B) one step each -> the logits of every step (n B C), step s
        predicting the token after tokens[s]. Native: the loop runs in C++."""
        if self._native is not None:
            return self._native.forced(tokens)
        with _torch_threads(self._torch_threads):
            return loop.forced(self.step, tokens, self.head.out_features)

    def _stance(self):
        """Run the torch steps on ``torch_threads`` threads, and skip dynamo's guard checks on the compiled ones:
        each depth has a single graph whose inputs (this module's tensors, fixed shapes) never change, and
        checking hundreds of guards per step costs more than the step itself. The thread count is pinned
        because the graphs were compiled for it; under another, dynamo would have to recompile, which the
        skipped guards forbid (RuntimeError: "Recompilation triggered with skip_guard_eval_unsafe stance")."""
        stance = torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if self.compiled \
            else contextlib.nullcontext()
        if torch.get_num_threads() == self._torch_threads:  # the usual case: nothing more per step
            return stance
        stack = contextlib.ExitStack()
        stack.enter_context(_torch_threads(self._torch_threads))
        stack.enter_context(stance)
        return stack

    def _step_at_depth(self, depth: int):
        tau = math.prod(self.pool[:depth]) - 1  # a tier-0 step index at which exactly `depth` pools fill

        def step(token: torch.Tensor, u: torch.Tensor):
            x = self.embedding(token) if self.cond is None else self.embedding(token) + self.cond  # (B H)
            logits = self.head(self.norm(self._tier(0, x, tau)))
            return *sample(logits, u, self.settings), logits

        return step

    def _tier(self, i: int, x: torch.Tensor, tau: int) -> torch.Tensor:
        """Tier i at its own step tau: x (B H_i) -> (B H_i). Runs tier i+1 when tier i's pool fills."""
        if i == len(self.pool):
            return self._run(self.center, x) + x
        skips = [x]
        for blk in self.down_blocks[i]:
            x = blk(x, self.states[id(blk)])
            skips.append(x)
        p, down, up = self.pool[i], self.down[i], self.up[i]
        down.copy_(torch.cat([down[..., 1:], x[..., None]], dim=-1))  # push x
        y = up[..., 0] + skips.pop()
        if tau % p == p - 1:  # pool full: run the deeper tier, refill the outputs of the next p steps
            deeper = self._tier(i + 1, self.down_linear[i](down.flatten(1)), tau // p)
            up.copy_(self.up_linear[i](deeper).view_as(up))
        else:
            up.copy_(torch.cat([up[..., 1:], torch.zeros_like(up[..., :1])], dim=-1))
        if self.unet:
            for blk in self.up_blocks[i]:
                y = blk(y, self.states[id(blk)]) + skips.pop()
            return y
        return self._run(self.up_blocks[i], y) + y

    def _run(self, blocks, x):
        for blk in blocks:
            x = blk(x, self.states[id(blk)])
        return x

    def _build_steps(self, compile: bool) -> list:
        steps = self._eager_steps
        if not compile:
            return steps
        saved = self.snapshot()
        try:
            compiled = [torch.compile(_own_code(fn), fullgraph=True, dynamic=False) for fn in steps]
            token = torch.zeros(self.batch_size, dtype=torch.long, device=self.head.weight.device)
            # compile now, for the threads the steps will run on (see _stance), so that a failure falls back
            # here and not mid-generation
            with torch.no_grad(), _torch_threads(self._torch_threads):
                for fn in compiled:
                    fn(token, torch.zeros(self.batch_size, device=token.device))  # u: float32, as step passes it
            self.restore(saved)
            return compiled
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            warnings.warn(f"torch.compile of the fast step failed ({type(err).__name__}: {err}); "
                          "falling back to the eager fast step", RuntimeWarning, stacklevel=3)
            self.restore(saved)
            return steps

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of every state tensor (SSM states and pooling registers), for ``restore``."""
        return [t.clone() for t in self._state_tensors()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        """Copy a ``snapshot`` back into the state tensors, in place."""
        for t, s in zip(self._state_tensors(), saved):
            t.copy_(s)

    def _state_tensors(self) -> list[torch.Tensor]:
        if self._native is not None:
            self._native.sync()
        return self.state.tensors()
