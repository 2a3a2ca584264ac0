"""A trained run as a model to ship or share: its weights, a fixed card set of held-out clips, and a model card.

    FOLDER/model.safetensors      the weights, config in the metadata (``save_model``)
    FOLDER/config.json            the same config, readable
    FOLDER/card-set.safetensors   ``tokens`` (N, L) uint8: the first N clips of the test split (unseen voices)
    FOLDER/README.md              the model card; its first line is the summary ``sashimi models`` shows

The card records the bits per sample on the card set, so anyone can check that the shipped config and weights
agree (``card_set_bits``) without the dataset; and on the whole test split, the number to compare models by.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sashimi.errors import CheckpointError, ConfigError
from sashimi.models.io import CONFIG_NAME, WEIGHTS_NAME, atomic_write, load_model
from sashimi.models.pretrained import CARD_NAME
from sashimi.runtime import cpu_name

CARD_SET_NAME = "card-set.safetensors"


@dataclass
class CardFacts:
    """What the card says beyond what the folder holds; free text where only the packager knows it."""

    name: str
    summary: str
    trained: str = ""  # steps, batch, wall time, machine: how the run went
    sampling: str = ""  # the generation settings the scores were measured with
    test_bits: float | None = None  # bits per sample over the whole test split
    card_bits: float | None = None  # bits per sample over the card set
    card_clips: int = 0
    scores: dict = field(default_factory=dict)  # `sashimi score --json` of the model's samples
    recipe: str = ""  # the training config, YAML
    machine: str = ""


def card_set(dataset, n: int) -> torch.Tensor:
    """(n, L) uint8 tokens: the first ``n`` items of ``dataset`` (all of one length, 8-bit)."""
    if n < 1 or n > len(dataset):
        raise ConfigError(f"--card-clips: expected 1..{len(dataset)} clips of the test split, got {n}")
    rows = [dataset[i] for i in range(n)]  # (L,) tokens each
    if len({r.shape for r in rows}) != 1 or int(max(r.max() for r in rows)) > 255:
        raise ConfigError("the card set needs equal-length 8-bit clips")
    return torch.stack(rows).to(torch.uint8)  # (N, L)


def load_card_set(folder: str | os.PathLike) -> torch.Tensor:
    """The card set of a packaged model folder: (N, L) int64 tokens."""
    path = Path(folder) / CARD_SET_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no card set (a folder written by `sashimi package`)")
    return load_file(str(path))["tokens"].long()


def card_set_bits(model, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """Exact bits per sample of ``model`` over the card set's tokens (N, L)."""
    from sashimi.train.evaluate import evaluate

    return evaluate(model, list(tokens), batch_size=batch_size, progress=False).bits_per_sample


def package(model_dir: Path, out: Path, tokens: torch.Tensor, facts: CardFacts, *,
            overwrite: bool = False) -> Path:
    """Write ``out`` (see the module docstring) from an exported model folder and the facts; returns ``out``."""
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (model_dir / name).is_file():
            raise CheckpointError(f"{model_dir / name}: missing (expected an exported model folder)")
    if (out / WEIGHTS_NAME).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a model ({WEIGHTS_NAME}); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        atomic_write(out / name, lambda tmp, src=model_dir / name: shutil.copyfile(src, tmp))
    atomic_write(out / CARD_SET_NAME, lambda tmp: save_file({"tokens": tokens.contiguous()}, tmp))
    model = load_model(out)
    facts.card_clips = int(tokens.shape[0])
    facts.card_bits = card_set_bits(model, tokens.long())
    facts.machine = facts.machine or machine()
    card = render_card(facts, model)
    atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))
    return out


def machine() -> str:
    """CPU model, cores and torch version of this machine, for the card."""
    return f"{os.cpu_count()} CPU cores ({cpu_name()}), torch {torch.__version__}"


def render_card(facts: CardFacts, model) -> str:
    """The model card, Markdown."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"# {facts.name}: {facts.summary}", "",
             f"{n_params / 1e6:.2f}M parameters; {cfg.sample_rate} Hz, {cfg.bits}-bit {cfg.quantization}.", "",
             "## Use", "", "```bash", f"sashimi generate {facts.name} --n 8 --report", "```", "",
             "```python", "import sashimi", f'model = sashimi.load_model("{facts.name}")', "```", "",
             "## Held-out likelihood", ""]
    if facts.test_bits is not None:
        lines.append(f"- test split (voices never heard in training): **{facts.test_bits:.4f} bits per sample**")
    lines += [f"- card set ({CARD_SET_NAME}, the first {facts.card_clips} test clips): "
              f"**{facts.card_bits:.4f} bits per sample** (checked by the tests)", ""]
    if facts.scores:
        lines += ["## Sample quality", "", _scores_table(facts.scores), ""]
        if facts.sampling:
            lines += [f"Samples: {facts.sampling}", ""]
    lines += ["## Training", "", facts.trained or "(not recorded)", "", f"Card written on: {facts.machine}", ""]
    if facts.recipe:
        lines += ["Recipe (`sashimi train` config):", "", "```yaml", facts.recipe.strip(), "```", ""]
    return "\n".join(lines)


def _scores_table(scores: dict) -> str:
    """`sashimi score --json` (samples beside the reference's Train and Test rows) as a Markdown table."""
    ref = scores.get("reference", {})
    rows = [(label, ref[key]) for label, key in (("real clips, train split", "train"), ("real clips, test split", "test"))
            if key in ref] + [(f"model samples ({scores.get('n_samples', '?')})", scores)]
    keys = [("fid", "FID"), ("is", "IS"), ("mis", "mIS"), ("am", "AM"), ("ndb", "NDB"), ("mean_confidence", "mean conf.")]
    out = ["| set | " + " | ".join(name for _, name in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for label, r in rows:
        out.append(f"| {label} | " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "-"
                                             for k, _ in keys) + " |")
    if "class_counts" in scores:
        out += ["", "Heard as: " + ", ".join(f"{c} {n}" for c, n in scores["class_counts"].items())]
    return "\n".join(out)
