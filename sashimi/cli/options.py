"""argparse types shared by the sub-commands: bad values fail at parse time with a message naming the option."""
from __future__ import annotations

import argparse

import torch


def device(text: str) -> str:
    """``--device``: cpu, cuda or cuda:N, where this machine has it."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: torch sees no CUDA GPU on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text}: expected a cpu or cuda device")
    return text
