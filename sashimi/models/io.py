"""Checkpoints of models: safetensors weights with the config inside, written atomically.

A model is saved either as one ``.safetensors`` file (config in its metadata) or as a directory holding
``model.safetensors`` and ``config.json``. Loading never unpickles anything.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sashimi.errors import CheckpointError
from sashimi.models.config import FORMAT_VERSION, SaShiMiConfig

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename over ``path``: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _header(model: nn.Module) -> dict:
    from sashimi.models.backbone import SaShiMi
    from sashimi.models.lm import SaShiMiLM

    if isinstance(model, SaShiMiLM):
        return {"kind": "lm", "config": model.config.to_dict()}
    if isinstance(model, SaShiMi) and hasattr(model, "init_kwargs"):
        return {"kind": "backbone", "config": model.init_kwargs}
    if hasattr(model, "checkpoint_header"):  # other models of the package (the evaluation classifier)
        return model.checkpoint_header()
    raise CheckpointError(f"cannot save a {type(model).__name__}: expected SaShiMiLM or a SaShiMi backbone")


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save to ``path``: a file if it ends in .safetensors, else a directory (weights + config.json)."""
    path = Path(path)
    header = {"format_version": FORMAT_VERSION, **_header(model)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"sashimi": json.dumps(header)}
    weights = path if path.suffix == ".safetensors" else path / WEIGHTS_NAME
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata=meta))
    if path.suffix != ".safetensors":
        atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(header, indent=2) + "\n"))
    return weights


def read_header(weights: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    if "sashimi" not in meta:
        raise CheckpointError(f"{weights}: safetensors file without sashimi metadata (not saved by sashimi)")
    header = json.loads(meta["sashimi"])
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{weights}: checkpoint format version {version}, this sashimi reads version "
                              f"{FORMAT_VERSION}")
    return header


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint alone (file or directory); returns it in eval mode."""
    from sashimi.models.backbone import SaShiMi
    from sashimi.models.lm import SaShiMiLM

    path = Path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not weights.exists():
        raise CheckpointError(f"{weights}: no such file")
    header = read_header(weights)
    if header["kind"] == "classifier":
        raise CheckpointError(f"{weights}: this is an evaluation classifier, not an audio model; "
                              "use it with `sashimi score --classifier` (sashimi.metrics.load_classifier)")
    if header["kind"] == "lm":
        model = SaShiMiLM(SaShiMiConfig.from_dict(header["config"], where=f"{weights}: config"))
    else:
        model = SaShiMi(**header["config"])
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: corrupted weights ({err})") from None
    load_state(model, state, weights)
    return model.eval()


def load_state(model: nn.Module, state: dict, where: Path) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{where}: {k} has shape {tuple(v.shape)}, config implies {tuple(expected[k].shape)}")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:  # keep the precision the model was saved in
        model.to(dtypes.pop())
    model.load_state_dict(state, strict=True)
