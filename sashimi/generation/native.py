"""The native generation step: ``csrc/fast_step.cpp`` JIT-built once with the system C++ compiler, and its setup
from a ``FastLM``.

``load()`` builds the extension on first use (``sashimi.jit``: ``-O3 -march=native``, cached per machine; later
processes load the cached build in well under a second). Loading is lazy (nothing is built unless the native
backend is asked for); a failure is remembered, so a process tries to build only once.
``FastLM`` catches ``NativeUnavailable`` and falls back to the inductor or eager step with a warning.

``NativeStep(fast, registers)`` copies the fast model's weights into the extension (linear weights packed in
panels, the folded S4 recurrences that ``sashimi.ssm`` hands out) and allocates the step state (``StepState``,
native layout), which the FastLM adopts and the native step updates in place: ``FastLM.load_state`` and the eager fast step see the same state (a multi-threaded ``steps``
call of 256 steps or more works on a private copy of the SSM states and writes it back before it returns).

Chunked recurrence (the default; ``chunked=False`` (``make_step``, ``FastLM``; ``SASHIMI_NATIVE_CHUNK=0`` on the CLI), or
``NativeStep.chunked = False`` turns it off): the S4 layers keep their state at the start of a 16-step chunk
and compute outputs from a free response plus a short convolution (``fast_step.cpp``, chunk_run), with tables
from ``_chunk_tables``. ``FastLM.states`` calls ``NativeStep.sync()`` before handing the states out, which
advances them to the current step, so Python always sees (and may overwrite) the current state; a tensor
kept from an earlier read of ``states`` holds the start of the chunk once the step has gone on.

Threads: a step runs on ``threads`` threads: the caller and ``threads - 1`` persistent workers of the step (its
own threads, not torch's pool, so ``torch.set_num_threads`` does not limit them). Below ``rows_from`` (batch 8
by default) they split every layer by output columns and every S4 recurrence by channels; from there on the
outermost ``row_levels`` levels (2: tiers 0 and 1 of the sc09 preset) are split by batch rows, each thread
running them alone for its rows with no barrier, and only the deeper levels by columns (``fast_step.cpp``).
The row shares start even; every 256 steps the step gives more rows to a thread that got through its rows
faster (``balance``; on a CPU shared with other work, or vCPUs of unequal speed).
Results are bit-identical for any number of threads and either split. The default is 2 threads where the
process may run on at least 2 CPUs, else 1: ``threads=n`` (``make_step``, ``FastLM``; ``--threads`` or ``SASHIMI_NATIVE_THREADS=n`` on the CLI) or
``NativeStep.threads = n`` sets it. On the 2-core machine of ``benchmarks/RESULTS.md`` two threads gave 1.8x (a
call per step) to 2.1x (``steps``) the samples/s of one at batch 1 and 1.75-1.8x at batch 16, and won at every
batch size from 1 to 64; more than 2 was not measured. The row split gave +16% at batch 16 and +8% at batch 8.
The workers spin for up to 0.5 ms after a step, then sleep. Use 1 thread when the other core is busy with other
work: in the column split the threads meet at 35-50 barriers per step, and a descheduled worker stalls the step
(with a busy loop on the other core, two threads gave ~40% fewer samples/s than one).
"""
from __future__ import annotations

from pathlib import Path

import torch

from sashimi.generation.blocks import FastFFBlock, FastS4Block
from sashimi.generation.state import StepState
from sashimi.jit import Extension, NativeUnavailable
from sashimi.runtime import usable_cpus

_SOURCE = Path(__file__).resolve().parent / "csrc" / "fast_step.cpp"
_EXTENSION = Extension("sashimi_fast_step", _SOURCE, "the native generation step")
_VARIANTS: dict[str, Extension] = {}  # other -march builds, by march
__all__ = ["NativeStep", "NativeUnavailable", "available", "load"]


def load(march: str = "native"):
    """The extension module built with ``-march=<march>`` ("native": for this CPU; "x86-64-v3": the AVX2 / FMA
    kernels on any recent x86-64 CPU; "x86-64": the SSE2 ones), built on first call; raises
    ``NativeUnavailable`` if it cannot be had. ``load(march).isa()`` names the kernels it was built with."""
    if march == "native":
        return _EXTENSION.load()
    if march not in _VARIANTS:
        name = "sashimi_fast_step_" + "".join(c if c.isalnum() else "_" for c in march)
        _VARIANTS[march] = Extension(name, _SOURCE, f"the native generation step (-march={march})", march=march)
    return _VARIANTS[march].load()


def available() -> bool:
    """Whether the native step can be used (builds it if needed)."""
    return _EXTENSION.available()


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float().contiguous()


def _ssm_arrays(blk) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A FastS4Block's folded recurrence (``sashimi/ssm/folded.py``, as the block holds it in float32) in the
    layout of fast_step.cpp: per channel h the run [G_0 .. G_{r-1}, DE, Q_0 .. Q_{r-1}, Db, c], each as M real
    then M imaginary parts -> (H, (4r+6) M); beta (H, r); r."""
    r = blk.rank
    parts = [(blk.G_re[j], blk.G_im[j]) for j in range(r)] + [(blk.DE_re, blk.DE_im)]
    parts += [(blk.Q_re[j], blk.Q_im[j]) for j in range(r)] + [(blk.Db_re, blk.Db_im), (blk.c_re, blk.c_im)]
    w = torch.cat([torch.cat([re, im], dim=-1) for re, im in parts], dim=-1)  # (H (4r+6) M)
    return w.float().contiguous(), blk.beta.T.float().contiguous(), r


def _chunk_tables(blk, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked recurrence's tables (``fast_step.cpp``, chunk_run) from the block's ``FoldedStep`` (float64,
    ``FoldedStep.chunk_tables``): F (H, M, T, 2) as [re, im], h (H, T) with the skip D added to h_0."""
    F, h = blk.folded.chunk_tables(T)  # (H M T) complex, (H T)
    h = h.clone()
    h[:, 0] += blk.D.double()
    return torch.stack([F.real, F.imag], dim=-1).float().contiguous(), h.float().contiguous()


def _net_setting(name: str, cast, doc: str) -> property:
    """A NativeStep property read from and written to its extension Net (values cast on the way in)."""
    return property(lambda self: getattr(self.net, name), lambda self, v: setattr(self.net, name, cast(v)), doc=doc)


class NativeStep:
    """The native step of one ``FastLM``'s converted blocks (its batch size and sampling settings). It allocates
    the step state (``StepState``, native layout), which the FastLM adopts: every backend reads the same tensors.
    """

    def __init__(self, fast, registers: tuple[list, list], march: str = "native", threads: int | None = None,
                 chunked: bool = True, weights: str = "float32"):
        mod = load(march)
        self.isa = mod.isa()
        head = fast.head
        if head.weight.dtype != torch.float32 or head.weight.device.type != "cpu":
            raise NativeUnavailable(f"the native step runs float32 on CPU only (model is {head.weight.dtype} on "
                                    f"{head.weight.device})")
        blocks = [b for group in (*fast.down_blocks, *fast.up_blocks, fast.center) for b in group]
        for blk in blocks:
            if isinstance(blk, FastS4Block) and blk.dense:
                raise NativeUnavailable("the native step has no dense (ZOH DPLR) recurrence")
            if not isinstance(blk, (FastS4Block, FastFFBlock)):
                raise NativeUnavailable(f"the native step has no {type(blk).__name__}")
        self.state = StepState(blocks, *registers, fast.batch_size, like=head.weight, layout="native", zeros=mod.zeros)
        s = fast.settings
        net = mod.Net(fast.batch_size, head.out_features, list(fast.pool), bool(fast.unet), float(s.temperature),
                      float(s.top_p), int(s.top_k), bf16=weights == "bf16")
        self.weights = weights
        net.set_io(_f32(fast.embedding.weight), *_norm(fast.norm), _f32(head.weight), _f32(head.bias))
        if fast.cond is not None:  # a conditional model: each sequence's label vector (B H)
            net.set_cond(_f32(fast.cond))
        n = len(fast.pool)

        def add(group: int, blk) -> None:
            if isinstance(blk, FastS4Block):
                w, beta, r = _ssm_arrays(blk)
                re, im = self.state.ssm[id(blk)]
                lin = blk.output_linear
                net.add_s4(group, *_norm(blk.norm), w, beta, _f32(blk.D), r, re, im, _f32(lin.weight), _f32(lin.bias),
                           *_chunk_tables(blk, mod.chunk))
            else:
                net.add_ff(group, *_norm(blk.norm), _f32(blk.linear_in.weight), _f32(blk.linear_in.bias),
                           _f32(blk.linear_out.weight), _f32(blk.linear_out.bias))

        for i in range(n):
            dl, ul = fast.down_linear[i], fast.up_linear[i]
            net.set_tier(i, self.state.down[i].shape[1], _f32(dl.weight), _f32(dl.bias), _f32(ul.weight),
                         _f32(ul.bias), self.state.down[i], self.state.up[i])
            for blk in fast.down_blocks[i]:
                add(2 * i, blk)
            for blk in fast.up_blocks[i]:
                add(2 * i + 1, blk)
        for blk in fast.center:
            add(2 * n, blk)
        net.finalize()
        net.threads = min(threads, MAX_THREADS) if threads else default_threads()
        net.chunked = chunked
        self.net = net
        self.step = net.step  # token (B), u (B) -> token (B), log p (B), logits (B C)
        self.steps = net.steps  # token (B), u (n B) -> tokens (n B), log p (n B), last logits (B C)
        self.forced = net.forced  # tokens (n B) consumed in turn -> logits of every step (n B C)

    threads = _net_setting("threads", int, "threads of the step (see the module docstring)")
    chunked = _net_setting("chunked", bool, "whether the S4 layers use the chunked recurrence")
    rows_from = _net_setting("rows_from", int, "the smallest batch whose outer levels are split by rows")
    row_levels = _net_setting("row_levels", int, "how many outer levels the row split covers (tier 0 is 1)")
    balance = _net_setting("balance", bool, "whether the row split moves rows to the faster thread (every 256 "
                           "steps, from each thread's time on its rows); setting it restores even shares")
    row_split = _net_setting("row_split", list, "the row split's shares: thread t runs rows [s[t], s[t+1])")
    t = _net_setting("t", int, "outer steps consumed")

    def sync(self) -> None:
        """Bring the shared SSM state tensors up to the current step (the chunked recurrence keeps them at the
        start of its chunk; ``FastLM.states`` calls this)."""
        self.net.sync()


DEFAULT_THREADS = 2  # the fastest measured on 2 cores, at every batch size (see the module docstring)
MAX_THREADS = 64


def default_threads() -> int:
    """The default thread count: 2 where the process may run on 2 CPUs or more, else 1."""
    return max(1, min(DEFAULT_THREADS, usable_cpus()))


def _norm(ln: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor, float]:
    H = ln.normalized_shape[-1]
    w = ln.weight if ln.weight is not None else torch.ones(H)
    b = ln.bias if ln.bias is not None else torch.zeros(H)
    return _f32(w), _f32(b), float(ln.eps)
