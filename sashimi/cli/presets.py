"""`sashimi presets`: the model presets with their sizes."""
from __future__ import annotations

import argparse

from sashimi.models.config import PRESETS, preset
from sashimi.models.diffwave_config import DIFFWAVE_PRESETS
from sashimi.models.lm import SaShiMiLM

PUBLISHED = {"sc09": "4.1M-6.8M (SaShiMi on SC09 in the papers)",
             "sc09-diffwave": "23.0M (DiffWave + SaShiMi in the SaShiMi paper)",
             "sc09-diffwave-small": "about 7.5M (the small DiffWave + SaShiMi)",
             "sc09-wavenet-diffwave": "24.1M (DiffWave's unconditional SC09 model)"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the model presets and their parameter counts")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"{'preset':<12} {'parameters':>12}  {'layer':<5} {'d_model':>7} {'n_layers':>8} {'pool':<8} "
          f"{'l_max':>7}  published")
    for name in PRESETS:
        cfg = preset(name)
        n = sum(p.numel() for p in SaShiMiLM(cfg).parameters())
        print(f"{name:<12} {n:>12,}  {cfg.layer:<5} {cfg.d_model:>7} {cfg.n_layers:>8} "
              f"{'x'.join(map(str, cfg.pool)):<8} {cfg.l_max:>7}  {PUBLISHED.get(name, '')}")
    print(f"\n{'diffusion preset':<28} {'parameters':>12}  {'backbone':<8}  sizes  published")
    for name in DIFFWAVE_PRESETS:
        cfg = preset(name)
        sizes = ", ".join(f"{k} {getattr(cfg, k)}" for k in cfg.size_fields)
        print(f"{name:<28} {cfg.estimate_parameters():>12,}  {cfg.backbone:<8}  {sizes}  {PUBLISHED.get(name, '')}")
    return 0
