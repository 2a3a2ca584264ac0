"""Models by name: the ones shipped inside the package, a local folder or file, or a Hugging Face hub repo.

    resolve("digits")             -> the shipped model's folder (sashimi/models/pretrained/digits)
    resolve("runs/demo/model")    -> that folder or file, as it is
    resolve("user/repo")          -> a snapshot of the hub repo (huggingface_hub, cached; offline: the cache only)

A shipped model is a folder under ``SHIPPED_ROOT`` holding ``model.safetensors`` (its config in the metadata, as
``save_model`` writes it), ``config.json`` and ``README.md`` (its model card, whose first line is its summary).
``shipped()`` lists them. Nothing here downloads unless a hub id is asked for; with ``offline=True`` (or
``HF_HUB_OFFLINE=1``, which huggingface_hub reads) a hub id is served from the local cache or refused with one
clear line, never a hang.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sashimi.errors import CheckpointError

SHIPPED_ROOT = Path(__file__).resolve().parent / "pretrained"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Shipped:
    name: str
    folder: Path
    summary: str  # the model card's first line


def shipped(root: Path | None = None) -> dict[str, Shipped]:
    """The models shipped in the package, by name."""
    root = SHIPPED_ROOT if root is None else root
    out = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / WEIGHTS_NAME).is_file():
            card = folder / CARD_NAME
            lines = card.read_text(encoding="utf-8").splitlines() if card.is_file() else []
            summary = next((ln.lstrip("# ").strip() for ln in lines if ln.strip()), "")
            out[folder.name] = Shipped(folder.name, folder, summary)
    return out


def resolve(name: str | os.PathLike, *, offline: bool | None = None, cache_dir: str | os.PathLike | None = None,
            root: Path | None = None) -> Path:
    """The local path of a model given by path, shipped name or hub id (see the module docstring)."""
    path = Path(name)
    if path.exists():
        return path
    text = str(name)
    models = shipped(root)
    if text in models:
        return models[text].folder
    if _HUB_ID.fullmatch(text) and not text.startswith((".", "/")):
        return _from_hub(text, offline, cache_dir)
    names = ", ".join(sorted(models)) or "none"
    raise CheckpointError(f"{text}: no such file or folder, and not a shipped model (shipped: {names}) or a "
                          "Hugging Face hub id (owner/name)")


def _from_hub(repo_id: str, offline: bool | None, cache_dir) -> Path:
    """A snapshot of the hub repo's model files: from the local cache when offline, else downloaded (cached)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise CheckpointError(f"{repo_id}: loading from the Hugging Face hub needs huggingface_hub ({err})") from None
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    patterns = [WEIGHTS_NAME, "config.json", CARD_NAME]
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir, local_files_only=offline,
                                   etag_timeout=10)
    except LocalEntryNotFoundError:
        why = "offline and not in the local cache" if offline else "not reachable (no network?) and not cached"
        raise CheckpointError(f"{repo_id}: Hugging Face hub model {why}; download it once online, or pass a "
                              "local folder") from None
    except Exception as err:  # noqa: BLE001 - network, auth and not-found errors come in many types
        raise CheckpointError(f"{repo_id}: could not get it from the Hugging Face hub "
                              f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
                              ) from None
    if not (Path(folder) / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{repo_id}: the hub repo has no {WEIGHTS_NAME} (a model written by sashimi.save_model)")
    return Path(folder)
