"""Optimizer parameter groups from the SSM kernels' per-parameter hints (own lr, no weight decay)."""
from __future__ import annotations

import torch.nn as nn


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Split parameters into the default group and one group per distinct SSM hint.

    Biases and normalization weights (1-D tensors outside SSM kernels) get no weight decay.
    """
    hinted: dict[int, dict] = {}
    for module in model.modules():
        hints = getattr(module, "optim_hints", None)
        if callable(hints):
            for name, hint in hints().items():
                hinted[id(getattr(module, name))] = hint
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hint = hinted.get(id(p))
        if hint is None:
            hint = {"lr": lr, "weight_decay": 0.0 if p.dim() < 2 else weight_decay}
        key = (hint["lr"], hint["weight_decay"])
        groups.setdefault(key, {"params": [], "names": [], **hint})
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())
