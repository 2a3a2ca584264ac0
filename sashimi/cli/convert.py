"""`sashimi convert-official SRC.pt DST`: import an official SaShiMi backbone checkpoint."""
from __future__ import annotations

import argparse

import torch

from sashimi.models.convert import load_official_backbone
from sashimi.models.io import save_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-official", help="convert an official state-spaces/s4 SaShiMi backbone checkpoint",
                       description="Map the state dict of the official standalone SaShiMi backbone "
                                   "(state-spaces/s4 models/sashimi/sashimi.py, default DPLR S4 layers) into a "
                                   "sashimi backbone checkpoint (safetensors + config).")
    p.add_argument("src", help="official checkpoint (.pt/.ckpt; a state dict, or a dict with 'state_dict')")
    p.add_argument("dst", help="output: a directory, or a file ending in .safetensors")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg, model = load_official_backbone(args.src, dtype=getattr(torch, args.dtype))
    path = save_model(model, args.dst)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.src} -> {path}: {n:,} parameters, "
          + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    return 0
