"""Optimizer parameter groups from the SSM kernels' per-parameter hints (own lr, no weight decay), and AdamW."""
from __future__ import annotations

import torch
import torch.nn as nn


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 own_lr: dict[nn.Parameter, float] | None = None) -> list[dict]:
    """Split parameters into the default group and one group per distinct SSM hint.

    Biases and normalization weights (1-D tensors outside SSM kernels) get no weight decay. ``own_lr`` gives
    chosen parameters an lr of their own (with the default weight decay rule), e.g. a label embedding.
    """
    hinted: dict[int, dict] = {}
    for module in model.modules():
        hints = getattr(module, "optim_hints", None)
        if callable(hints):
            for name, hint in hints().items():
                hinted[id(getattr(module, name))] = hint
    own = {id(p): p_lr for p, p_lr in (own_lr or {}).items()}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hint = hinted.get(id(p))
        if hint is None:
            hint = {"lr": own.get(id(p), lr), "weight_decay": 0.0 if p.dim() < 2 else weight_decay}
        key = (hint["lr"], hint["weight_decay"])
        groups.setdefault(key, {"params": [], "names": [], **hint})
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
          fused: bool = True, own_lr: dict[nn.Parameter, float] | None = None):
    """AdamW over ``param_groups``. With ``fused``, the single-kernel implementation where PyTorch has one for
    every parameter's device and dtype (CPU and CUDA floating point): several times faster per step than the
    per-tensor loop on CPU. (A fused optimizer unscales mixed-precision gradients itself, so Lightning cannot
    clip them first: pass fused=False to clip under mixed precision.)"""
    groups = param_groups(model, lr, weight_decay, own_lr)
    params = [p for g in groups for p in g["params"]]
    fused = fused and bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
