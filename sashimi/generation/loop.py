"""The one Python loop that steps many samples, for every backend whose step is a Python call (the reference
``SaShiMiLM.step`` and the torch fast steps). The native step runs the same loop in C++ (``Net::steps``) and
the CUDA graphs replay it one pooling period at a time (``graphs.py``); each returns what ``steps`` returns here.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block (where they differ), restored after it."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def steps(step: Step, token: torch.Tensor, u: torch.Tensor, classes: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``len(u)`` calls of step(token, u[k]) -> (token, log p, logits), each sample fed back as the next token:
    token (B), u (n B) -> tokens (n B), log-probs (n B), logits (B C) of the last step (NaN when n is 0)."""
    B = token.shape[0]
    tokens, logps, logits = [], [], None
    for k in range(u.shape[0]):
        token, logp, logits = step(token, u[k])
        tokens.append(token)
        logps.append(logp)
    if logits is None:
        return (torch.empty(0, B, dtype=torch.long, device=u.device), torch.empty(0, B, device=u.device),
                torch.full((B, classes), float("nan"), device=u.device))
    return torch.stack(tokens), torch.stack(logps), logits


def forced(step: Step, tokens: torch.Tensor, classes: int) -> torch.Tensor:
    """Teacher forcing: consume tokens (n B) one step each -> the logits of every step (n B C), step s
    predicting the token after tokens[s] (the sampled tokens are dropped)."""
    n, B = tokens.shape
    u = torch.full((B,), 0.5, device=tokens.device)
    out = [step(token, u)[2] for token in tokens]
    return torch.stack(out) if out else torch.empty(0, B, classes, device=tokens.device)
