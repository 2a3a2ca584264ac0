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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _header(model: nn.Module) -> dict:
    from sashimi.models.backbone import SaShiMi
    from sashimi.models.lm import SaShiMiLM

    if isinstance(model, SaShiMiLM):
        return {"kind": "lm", "config": model.config.to_dict()}
    if isinstance(model, SaShiMi) and hasattr(model, "init_kwargs"):
        return {"kind": "backbone", "config": model.init_kwargs}
    if hasattr(model, "checkpoint_header"):  # other models of the package (DiffWave, the evaluation classifier)
        return model.checkpoint_header()
    raise CheckpointError(f"cannot save a {type(model).__name__}: expected SaShiMiLM, DiffWave or a SaShiMi backbone")


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


KINDS = ("lm", "backbone", "classifier", "diffwave")  # what a sashimi checkpoint holds (its metadata's "kind")


def read_header(weights: Path) -> dict:
    """The sashimi metadata of a weights file: format_version, kind (one of ``KINDS``) and config (a mapping)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        if _is_torch_file(weights):
            raise CheckpointError(_torch_file_message(weights)) from None
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    if "sashimi" not in meta:
        raise CheckpointError(f"{weights}: safetensors file without sashimi metadata (not saved by sashimi)")
    try:
        header = json.loads(meta["sashimi"])
    except ValueError:
        raise CheckpointError(f"{weights}: its sashimi metadata is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights}: its sashimi metadata is not a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{weights}: checkpoint format version {version}, this sashimi reads version "
                              f"{FORMAT_VERSION}")
    if header.get("kind") not in KINDS:
        raise CheckpointError(f"{weights}: unknown model kind {header.get('kind')!r} in its sashimi metadata; "
                              f"expected one of {', '.join(map(repr, KINDS))}")
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{weights}: its sashimi metadata has no config mapping")
    return header


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a torch.save file: a zip archive, or a pickle (the legacy format)."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError:
        return False
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


def _torch_file_message(path: Path) -> str:
    """What to use instead of a torch.save file: the exported model of its run, where it is one's checkpoint."""
    run_model = path.parent.parent / "model"
    if path.parent.name == "checkpoints" and (run_model / WEIGHTS_NAME).is_file():
        use = f"use the run's exported model {run_model}"
    else:
        use = "use a run's exported model (RUN/model, written when training ends)"
    return (f"{path}: this is a PyTorch checkpoint (torch.save, like a training .ckpt), not an exported model; "
            f"{use}, or export this one in Python: from sashimi.train.evaluate import load_for_evaluation; "
            "sashimi.save_model(load_for_evaluation(CKPT)[0], DIR)")


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint alone (file or directory), or by name: a model shipped in the package
    or a Hugging Face hub id (``pretrained.resolve``); returns it in eval mode. A directory's ``config.json``,
    where there is one, must agree with the weights' metadata."""
    from sashimi.models.backbone import SaShiMi
    from sashimi.models.lm import SaShiMiLM
    from sashimi.models.pretrained import resolve

    path = resolve(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not weights.exists():
        raise CheckpointError(f"{weights}: no such file")
    header = read_header(weights)
    if path.is_dir():
        check_config_json(path / CONFIG_NAME, header, weights)
    if header["kind"] == "classifier":
        raise CheckpointError(f"{weights}: this is an evaluation classifier, not an audio model; "
                              "use it with `sashimi score --classifier` (sashimi.metrics.load_classifier)")
    if header["kind"] == "lm":  # the autoregressive model (its config's kind is "ar", or absent in old files)
        model = SaShiMiLM(SaShiMiConfig.from_dict(header["config"], where=f"{weights}: config"))
    elif header["kind"] == "diffwave":
        from sashimi.models.diffwave import DiffWave
        from sashimi.models.diffwave_config import DiffWaveConfig

        model = DiffWave(DiffWaveConfig.from_dict(header["config"], where=f"{weights}: config"))
    else:
        try:
            model = SaShiMi(**header["config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{weights}: its backbone config does not fit SaShiMi ({err})") from None
    return load_weights(model, weights, map_location)


def load_weights(model: nn.Module, weights: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the safetensors ``weights`` into ``model`` (names and shapes checked); returns it in eval mode."""
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: corrupted weights ({err})") from None
    load_state(model, state, weights)
    return model.eval()


def check_config_json(path: Path, header: dict, weights: Path) -> None:
    """An exported model's config.json (a copy of the weights' metadata, for people to read) must say the same."""
    if not path.is_file():
        return  # the weights alone rebuild the model
    try:
        written = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err}); remove it or re-export the model") from None
    said, meant = _flat(written), _flat(header)
    differ = sorted(k for k in said.keys() | meant.keys() if said.get(k, _ABSENT) != meant.get(k, _ABSENT))
    if differ:
        k = differ[0]
        raise CheckpointError(f"{path}: contradicts the metadata of {weights} ({len(differ)} value(s) differ, "
                              f"e.g. {k or 'the whole file'}: {said.get(k, _ABSENT)!r} here, "
                              f"{meant.get(k, _ABSENT)!r} in the weights); re-export the model, or remove the "
                              "edited config.json")


_ABSENT = "(absent)"


def _flat(d, prefix: str = "") -> dict:
    """Nested mappings as one mapping of dotted keys (a non-mapping is the single key "")."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    return {k: v for key, value in d.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


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
