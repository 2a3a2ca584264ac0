"""Exact test likelihood of a trained model: NLL summed over every sample of full-length examples.

The model runs in convolution mode over whole examples, batched (padded at the end, which a causal model
cannot see; padding is masked out). The result is the paper's number: bits per sample.

A diffusion model (``model.kind: diffwave``) has no exact likelihood: it is scored by its denoising loss, per
band of diffusion steps (``sashimi.train.diffusion.evaluate_denoising``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from sashimi.errors import CheckpointError, ConfigError
from sashimi.metrics import LikelihoodTotals
from sashimi.models.config import model_config
from sashimi.models.io import WEIGHTS_NAME, load_state
from sashimi.models.lm import SaShiMiLM
from sashimi.train.callbacks import BEST, LAST, read_checkpoint
from sashimi.train.config import TrainConfig, apply_overrides, read_config_dict
from sashimi.train.data import LabeledDataset, build_split, eval_loader


@torch.no_grad()
def evaluate(model: SaShiMiLM, dataset, *, batch_size: int = 8, device: str = "cpu",
             progress: bool = True) -> LikelihoodTotals:
    """Sum NLL, sample count and correct predictions over every item of ``dataset`` (with each item's label for
    a conditional model: the dataset must have labels)."""
    model = model.to(device).eval()
    if model.n_labels and not isinstance(dataset, LabeledDataset):
        dataset = LabeledDataset(dataset, model.config.labels)
    totals = LikelihoodTotals()
    for tokens, lengths, *labels in tqdm(eval_loader(dataset, batch_size=batch_size), desc="evaluate",
                                         unit="batch", disable=not progress):
        tokens, lengths = tokens.to(device), lengths.to(device)  # (B L), (B,)
        labels = labels[0].to(device) if labels else None  # (B,) for a conditional model
        if tokens.shape[0] * tokens.shape[1] <= CONV_SAMPLES:
            totals.add(model(tokens, labels), tokens, lengths)
            continue
        for b, (row, n) in enumerate(zip(tokens, lengths.tolist())):  # long items one by one, in bounded memory
            add_long_item(model, row[:n], totals, None if labels is None else labels[b:b + 1])
    return totals


# Convolution mode keeps activations for every sample (~1 KB per sample for the 110k-parameter demo model,
# more for wider ones): a batch is evaluated that way up to this many samples; a longer item is evaluated in
# convolution mode over its first CONV_SAMPLES samples and through the recurrent step after that.
CONV_SAMPLES = 1 << 19
STEP_CHUNK = 4096


def add_long_item(model: SaShiMiLM, tokens: torch.Tensor, totals: LikelihoodTotals,
                  label: torch.Tensor | None = None) -> None:
    """Add the exact NLL of one long item (L,) (label (1,) for a conditional model) to ``totals`` in
    O(CONV_SAMPLES + state) memory."""
    from sashimi.generation import FastLM

    head = tokens[None, :CONV_SAMPLES]  # (1 T)
    logits, state = _prefill_all(model, head, label)  # (1 T+1 C): [:, t] predicts token t
    totals.add(logits[:, :-1], head)
    rest = tokens[CONV_SAMPLES:]
    if not len(rest):
        return
    step = FastLM(model, 1, labels=label)
    step.load_state(state)
    last = logits[:, -1]  # (1 C): predicts rest[0]
    for start in range(0, len(rest), STEP_CHUNK):
        chunk = rest[start:start + STEP_CHUNK]  # (n,)
        after = step.forced(chunk[:, None])  # (n 1 C): step s predicts the token after chunk[s]
        totals.add(torch.cat([last[None], after[:-1]]).transpose(0, 1), chunk[None])
        last = after[-1]


def _prefill_all(model: SaShiMiLM, tokens: torch.Tensor, labels: torch.Tensor | None = None):
    """Like ``SaShiMiLM.prefill``, keeping the logits of every position: (B T+1 C) and the state."""
    bos = torch.full((tokens.shape[0], 1), model.bos, dtype=torch.long, device=tokens.device)
    y, state = model.backbone.prefill(model.embed(torch.cat([bos, tokens.long()], dim=1), labels))
    return model.head(y), state


def load_for_evaluation(checkpoint: str | Path, config: str | Path | None = None,
                        overrides: list[str] = ()) -> tuple[torch.nn.Module, TrainConfig]:
    """The model and training config behind ``checkpoint``.

    ``checkpoint``: a run directory (uses checkpoints/best.ckpt, else last.ckpt), a ``.ckpt`` file (config
    inside), or an exported model (``model.safetensors`` or its directory; needs ``config`` for the data).
    ``overrides`` (``data.root=...``) adjust the config, e.g. to point at the data on this machine.
    """
    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoints").is_dir():
        best, last = path / "checkpoints" / BEST, path / "checkpoints" / LAST
        path = best if best.is_file() else last
    if path.suffix == ".ckpt":
        return _load_training_checkpoint(path, config, overrides)
    return _load_exported(path, config, overrides)


def _load_training_checkpoint(path: Path, config, overrides) -> tuple[torch.nn.Module, TrainConfig]:
    ckpt = read_checkpoint(path)
    saved, state = _parts(ckpt, path)
    raw = saved if config is None else {**read_config_dict(config), "model": saved["model"]}  # weights decide model
    train_config = TrainConfig.from_dict(apply_overrides(raw, list(overrides)))
    model = _build(model_config(saved["model"], where=f"{path}: model config"))
    load_state(model, {k.removeprefix("model."): v for k, v in state.items()}, path)
    return model, train_config


def _build(config) -> torch.nn.Module:
    """The model of a config of either kind."""
    from sashimi.models.diffwave import DiffWave

    return DiffWave(config) if config.kind == "diffwave" else SaShiMiLM(config)


def _parts(ckpt, path: Path) -> tuple[dict, dict]:
    """The training config (with its model section) and the state dict of a training checkpoint."""
    hyper = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    saved = hyper.get("config") if isinstance(hyper, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict) and isinstance(state, dict) and state):
        raise CheckpointError(f"{path}: not a sashimi training checkpoint (expected hyper_parameters.config with "
                              "its model section, and a state_dict, as `sashimi train` writes them)")
    return saved, state


def _load_exported(path: Path, config, overrides) -> tuple[torch.nn.Module, TrainConfig]:
    from sashimi.models.io import load_model

    if not (path / WEIGHTS_NAME).is_file() and path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: not a run directory, a .ckpt file or an exported model")
    if config is None:
        raise ConfigError(f"{path} is an exported model without data settings: pass --config CONFIG "
                          "(e.g. the run's config.yaml)")
    model = load_model(path)
    raw = apply_overrides(read_config_dict(config), list(overrides))
    raw["model"] = model.config.to_dict()  # the weights decide the model
    return model, TrainConfig.from_dict(raw)


def evaluate_checkpoint(checkpoint, *, split: str = "test", config=None, overrides: list[str] = (),
                        batch_size: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    """Evaluate a checkpoint on a split; returns a plain dict: bits_per_sample, loss, accuracy, samples, ... for
    an autoregressive model; kind "diffwave", loss (denoising, mean over bands), loss_t000_050, ..., samples
    for a diffusion model."""
    model, train_config = load_for_evaluation(checkpoint, config, overrides)
    dataset = build_split(train_config.data, split)
    batch_size = batch_size or train_config.trainer.val_batch_size or train_config.trainer.batch_size
    head = {"checkpoint": str(checkpoint), "split": split, "examples": len(dataset)}
    if model.config.kind == "diffwave":
        from sashimi.train.diffusion import evaluate_denoising

        bands = evaluate_denoising(model, dataset, batch_size=batch_size, device=device, progress=progress)
        return {**head, "kind": "diffwave", **bands.losses(), "samples": bands.samples}
    totals = evaluate(model, dataset, batch_size=batch_size, device=device, progress=progress)
    return {**head, **totals.to_dict()}
