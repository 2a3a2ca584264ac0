"""The one switch of the recurrent step: which backend runs it, on how many threads.

    make_step(model, batch, settings, backend=None, threads=None, march="native", like=None) -> step

Backends, fastest first:
  "native"     the fused C++ step (``native.py``), CPU float32; the default on CPU
  "inductor"   the torch fast step compiled with inductor (``fast.py``); the default on a GPU (with CUDA graphs)
  "eager"      the same torch fast step, uncompiled (what the others are tested against)
  "reference"  ``SaShiMiLM.step`` itself: the model's own recurrent mode, slow
A fast backend that cannot be had falls back with a ``RuntimeWarning`` (native -> inductor -> eager);
``step.backend`` says which one runs. Every step object offers ``step``, ``steps``, ``forced``, ``load_state``,
``backend`` and ``threads``. ``threads``: the native step's threads, or torch's intra-op threads for the torch
backends (see ``FastLM``); ``weights="bf16"``: the native step's bfloat16 Linear weights. Environment variables are read by the CLI, never here.
"""
from __future__ import annotations

import torch

from sashimi.errors import ConfigError
from sashimi.generation import loop
from sashimi.generation.fast import BACKENDS as FAST_BACKENDS
from sashimi.generation.fast import FastLM
from sashimi.generation.loop import torch_threads
from sashimi.generation.sampling import SamplingSettings, sample
from sashimi.models.lm import SaShiMiLM

BACKENDS = (*FAST_BACKENDS, "reference")


class ReferenceStep:
    """The reference backend: ``SaShiMiLM.step`` plus the same ``sample`` as the fast steps."""

    backend = "reference"

    def __init__(self, model: SaShiMiLM, batch_size: int, settings: SamplingSettings, threads: int | None = None,
                 labels: torch.Tensor | None = None):
        model.label_vectors(labels, batch_size)  # checked here, once
        self.model, self.settings, self.labels = model, settings, labels
        self.threads = threads or torch.get_num_threads()
        self.state = model.default_state(batch_size)

    def load_state(self, state) -> None:
        self.state = state

    def step(self, token: torch.Tensor, u: torch.Tensor):
        logits, self.state = self.model.step(token, self.state, self.labels)
        return *sample(logits, u, self.settings), logits

    def steps(self, token: torch.Tensor, u: torch.Tensor):
        """u (n B): n steps, each sample fed back -> tokens (n B), log-probs (n B), last logits (B C)."""
        with torch_threads(self.threads):
            return loop.steps(self.step, token, u, self.model.n_classes)

    def forced(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (n B) consumed in turn -> the logits of every step (n B C)."""
        with torch_threads(self.threads):
            return loop.forced(self.step, tokens, self.model.n_classes)


def make_step(model: SaShiMiLM, batch_size: int, settings: SamplingSettings = SamplingSettings(),
              backend: str | None = None, *, threads: int | None = None, march: str = "native",
              chunked: bool = True, cuda_graphs: bool | None = None, like: FastLM | None = None,
              weights: str = "float32", labels: torch.Tensor | None = None):
    """The step object of ``backend`` (default: native on CPU, inductor on a GPU) for ``batch_size`` sequences;
    ``labels`` (B,): each sequence's label, for a conditional model."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown step backend {backend!r}; expected one of {BACKENDS}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if backend == "reference":
        if weights != "float32":
            raise ConfigError(f"weights={weights!r} is a native-step option; the reference step runs the model")
        return ReferenceStep(model, batch_size, settings, threads, labels)
    if like is not None and not isinstance(like, FastLM):
        like = None  # a reference step has no converted blocks to share
    return FastLM(model, batch_size, settings, backend, threads=threads, cuda_graphs=cuda_graphs, like=like,
                  march=march, chunked=chunked, weights=weights, labels=labels)
