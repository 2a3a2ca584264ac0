"""A trained run as a model to ship or share: its weights, a fixed card set of held-out clips, and a model card.

    FOLDER/model.safetensors      the weights, config in the metadata (``save_model``)
    FOLDER/config.json            the same config, readable
    FOLDER/card-set.safetensors   the first N clips of the test split (unseen voices): ``tokens`` (N, L) uint8 for
                                  an autoregressive model, ``audio`` (N, L) float32 for a diffusion model; with
                                  ``labels`` (N,) and their names in the metadata where the data has labels
    FOLDER/README.md              the model card; its first line is the summary ``sashimi models`` shows

The card records the model's held-out score on the card set, so anyone can check that the shipped config and
weights agree (``card_set_score``) without the dataset; and on the whole test split, the number to compare
models by. The score is the exact bits per sample of an autoregressive model, and the denoising loss (mean over
bands of diffusion steps, noise seeded per clip) of a diffusion model, which has no exact likelihood.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

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
    test_score: float | None = None  # ``card_metric`` over the whole test split
    card_score: float | None = None  # ``card_metric`` over the card set
    card_clips: int = 0
    scores: dict = field(default_factory=dict)  # `sashimi score --json` of the model's samples
    recipe: str = ""  # the training config, YAML
    machine: str = ""


def card_metric(model) -> str:
    """What the card's held-out numbers are for this kind of model."""
    return "denoising loss" if model.config.kind == "diffwave" else "bits per sample"


class CardSet(Dataset):
    """The card set's clips: ``rows`` (N, L) tokens or waveforms, and where the data has labels (a conditional
    model needs them), ``labels[i]`` indexing ``label_names`` (the interface of ``LabeledDataset``)."""

    def __init__(self, rows: torch.Tensor, labels: list[int] | None = None,
                 label_names: tuple[str, ...] | None = None):
        self.rows, self.labels = rows, labels
        self.label_names = tuple(label_names) if labels is not None and label_names else None

    @property
    def shape(self) -> torch.Size:
        return self.rows.shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[i]


def card_set(dataset, n: int) -> CardSet:
    """The first ``n`` items of ``dataset`` (all of one length): (n, L) uint8 tokens (8-bit at most) or
    float32 waveforms, with their labels where the dataset has them."""
    if n < 1 or n > len(dataset):
        raise ConfigError(f"--card-clips: expected 1..{len(dataset)} clips of the test split, got {n}")
    rows = [dataset[i] for i in range(n)]  # (L,) each
    if len({r.shape for r in rows}) != 1:
        raise ConfigError("the card set needs equal-length clips")
    names = getattr(dataset, "label_names", None)
    labels = [int(dataset.labels[i]) for i in range(n)] if names is not None else None
    if rows[0].is_floating_point():
        return CardSet(torch.stack(rows).float(), labels, names)  # (N, L)
    if int(max(r.max() for r in rows)) > 255:
        raise ConfigError("the card set needs 8-bit tokens")
    return CardSet(torch.stack(rows).to(torch.uint8), labels, names)  # (N, L)


def _save_card_set(cards: CardSet, path: str) -> None:
    rows = cards.rows
    tensors = {"audio" if rows.is_floating_point() else "tokens": rows.contiguous()}
    metadata = None
    if cards.label_names is not None:
        tensors["labels"] = torch.tensor(cards.labels, dtype=torch.int64)
        metadata = {"label_names": json.dumps(list(cards.label_names))}
    save_file(tensors, path, metadata=metadata)


def load_card_set(folder: str | os.PathLike) -> CardSet:
    """The card set of a packaged model folder: (N, L) int64 tokens or float32 waveforms, with labels if it
    has them."""
    path = Path(folder) / CARD_SET_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no card set (a folder written by `sashimi package`)")
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        names = json.loads((f.metadata() or {}).get("label_names", "null"))
    labels = tensors["labels"].tolist() if "labels" in tensors and names else None
    if "tokens" in tensors:
        return CardSet(tensors["tokens"].long(), labels, names)
    if "audio" in tensors:
        return CardSet(tensors["audio"].float(), labels, names)
    raise CheckpointError(f"{path}: expected a 'tokens' or 'audio' tensor, found {sorted(tensors)}")


def card_set_score(model, rows, batch_size: int = 8, progress: bool = False) -> float:
    """``card_metric`` of ``model`` over a card set (or rows (N, L)) or a dataset split: exact bits per sample
    (tokens), or the denoising loss with the evaluation's seeded noise (waveforms)."""
    items = list(rows) if torch.is_tensor(rows) else rows
    if model.config.kind == "diffwave":
        from sashimi.train.diffusion import evaluate_denoising

        return evaluate_denoising(model, items, batch_size=batch_size, progress=progress).losses()["loss"]
    from sashimi.train.evaluate import evaluate

    return evaluate(model, items, batch_size=batch_size, progress=progress).bits_per_sample


def package(model_dir: Path, out: Path, rows: CardSet, facts: CardFacts, *,
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
    atomic_write(out / CARD_SET_NAME, lambda tmp: _save_card_set(rows, tmp))
    model = load_model(out)
    facts.card_clips = int(rows.shape[0])
    facts.card_score = card_set_score(model, load_card_set(out))
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
    metric = card_metric(model)
    fast = " --steps 50" if cfg.kind == "diffwave" else ""  # DDIM: a quarter of the evaluations of full DDPM
    if cfg.kind == "diffwave":
        what = (f"{cfg.sample_rate} Hz float waveforms, {cfg.backbone} backbone, {cfg.diffusion_steps} diffusion "
                "steps")
        heading = "Held-out denoising loss (no exact likelihood: mean MSE over bands of diffusion steps)"
    else:
        what, heading = f"{cfg.sample_rate} Hz, {cfg.bits}-bit {cfg.quantization}", "Held-out likelihood"
    labels = getattr(cfg, "labels", ())
    if labels:
        what += f"; conditioned on a label: {', '.join(labels)}"
    use = [f"sashimi generate {facts.name} --n {len(labels) or 8}{fast} --report"]
    if labels:
        use += [f"sashimi generate {facts.name} --n 4 --label {labels[-1]} --report   # one label only"]
    lines = [f"# {facts.name}: {facts.summary}", "", f"{n_params / 1e6:.2f}M parameters; {what}.", "",
             "## Use", "", "```bash", *use, "```", "",
             "```python", "import sashimi", f'model = sashimi.load_model("{facts.name}")', "```", "",
             f"## {heading}", ""]
    if facts.test_score is not None:
        lines.append(f"- test split (voices never heard in training): **{facts.test_score:.4f} {metric}**")
    lines += [f"- card set ({CARD_SET_NAME}, the first {facts.card_clips} test clips): "
              f"**{facts.card_score:.4f} {metric}** (checked by the tests)", ""]
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
    if scores.get("accuracy") is not None:  # a conditional model's samples: heard as the label asked for
        keys.append(("accuracy", "heard as asked"))
    out = ["| set | " + " | ".join(name for _, name in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for label, r in rows:
        out.append(f"| {label} | " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "-"
                                             for k, _ in keys) + " |")
    if "class_counts" in scores:
        out += ["", "Heard as: " + ", ".join(f"{c} {n}" for c, n in scores["class_counts"].items())]
    return "\n".join(out)
