"""Training configuration: one YAML file (sections model, data, optim, schedule, trainer) plus overrides.

A config file may name a ``base:`` config (a file next to it or a shipped preset) whose values it updates,
so ``sc09-unet.yaml`` only states how it differs from ``sc09.yaml``. Overrides are ``section.key=value``
strings whose value is parsed as YAML (``model.pool=[4,4]``, ``trainer.devices=2``, ``data.root=/x``).
Every section is validated against its dataclass: unknown keys and wrong types are ``ConfigError``s that
name the field.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sashimi.errors import ConfigError
from sashimi.models.config import SaShiMiConfig, check_fields, model_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # shipped presets (package data)
SECTIONS = ("model", "data", "optim", "schedule", "trainer")
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class OptimConfig:
    """AdamW. The SSM parameters (A, B/P, dt) keep their own lr (model.ssm_lr) and no weight decay."""

    lr: float = 0.001
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    label_lr: float | None = None  # lr of a conditional model's label embedding; None: optim.lr
    # the training loss counts each sample near a word's onset (sashimi.audio.onsets) this many times: from
    # onset_window[0] s before the clip's first sample above LOUD to onset_window[1] s after it (1: plain NLL)
    onset_weight: float = 1.0
    onset_window: tuple[float, ...] = (0.1, 0.05)
    # each input token of a training step moves by a uniform integer in [-input_jitter, input_jitter] (clamped
    # to the codebook) while the targets stay clean: contexts as imperfect as the model's own samples (0: off)
    input_jitter: int = 0
    # this share of the input tokens of a training step is replaced by the model's own draw given the true past
    # (one extra forward pass without gradient; parallel scheduled sampling), the targets staying clean:
    # contexts that hold the model's own sampling noise where it is unsure and stay exact where it is sure (0: off)
    self_feed: float = 0.0
    # self-fed passes: pass k draws each token given pass k-1's inputs, so the last pass's context holds k steps
    # of the model's own drift, as free sampling's does (each pass one more forward without gradient; 1: the
    # draws are made given the true past)
    self_feed_passes: int = 1
    # a conditional model also scores each clip under its rival label (the other label whose vector is nearest,
    # SaShiMiLM.rival_labels) and pays label_margin_weight * max(0, label_margin - gap) with gap the bits the clip
    # costs under the rival beyond its own label: two words the likelihood barely tells apart (four/five) are
    # pushed apart by at least label_margin bits per clip (one more forward pass with gradient; 0: off)
    label_margin: float = 0.0
    label_margin_weight: float = 1.0
    # the gap is counted over the samples from label_margin_window[0] s before each clip's onset to [1] s after it
    # (where a word's first sounds are chosen; clips with no loud sample then pay nothing); null: the whole clip
    label_margin_window: tuple[float, ...] | None = None

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.onset_window = tuple(self.onset_window)
        # written as "not (ok)" so that NaN, which fails every comparison, is refused too
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f"optim.grad_clip must be a finite number > 0 (or null for no clipping), "
                              f"got {self.grad_clip}")
        if self.label_lr is not None and not (isinstance(self.label_lr, (int, float)) and math.isfinite(self.label_lr)
                                              and self.label_lr > 0):
            raise ConfigError(f"optim.label_lr must be a finite number > 0 (or null: optim.lr), got {self.label_lr}")
        if not (math.isfinite(self.onset_weight) and self.onset_weight > 0):
            raise ConfigError(f"optim.onset_weight must be a finite number > 0 (1: plain NLL), got {self.onset_weight}")
        if len(self.onset_window) != 2 or not all(math.isfinite(s) and s >= 0 for s in self.onset_window):
            raise ConfigError(f"optim.onset_window must be two numbers of seconds >= 0 (before, after the onset), got "
                              f"{list(self.onset_window)}")
        if isinstance(self.input_jitter, bool) or not isinstance(self.input_jitter, int) or self.input_jitter < 0:
            raise ConfigError(f"optim.input_jitter must be a whole number of quantization steps >= 0 (0: off), got "
                              f"{self.input_jitter!r}")
        if isinstance(self.self_feed, bool) or not (isinstance(self.self_feed, (int, float))
                                                     and 0 <= self.self_feed <= 1):
            raise ConfigError(f"optim.self_feed must be a share in [0, 1] of the input tokens (0: off), got "
                              f"{self.self_feed!r}")
        if isinstance(self.self_feed_passes, bool) or not isinstance(self.self_feed_passes, int) \
                or self.self_feed_passes < 1:
            raise ConfigError(f"optim.self_feed_passes must be a whole number of passes >= 1, got "
                              f"{self.self_feed_passes!r}")
        if self.self_feed_passes > 1 and not self.self_feed:
            raise ConfigError(f"optim.self_feed_passes is {self.self_feed_passes} but optim.self_feed is 0: set the "
                              f"share of self-fed tokens too")
        if isinstance(self.label_margin, bool) or not (isinstance(self.label_margin, (int, float))
                                                        and math.isfinite(self.label_margin) and self.label_margin >= 0):
            raise ConfigError(f"optim.label_margin must be a finite number of bits per clip >= 0 (0: off), got "
                              f"{self.label_margin!r}")
        if isinstance(self.label_margin_weight, bool) or not (isinstance(self.label_margin_weight, (int, float))
                                                               and math.isfinite(self.label_margin_weight)
                                                               and self.label_margin_weight > 0):
            raise ConfigError(f"optim.label_margin_weight must be a finite number > 0, got "
                              f"{self.label_margin_weight!r}")
        if self.label_margin_window is not None:
            self.label_margin_window = tuple(self.label_margin_window)
            if len(self.label_margin_window) != 2 or not all(math.isfinite(s) and s >= 0
                                                             for s in self.label_margin_window) \
                    or sum(self.label_margin_window) <= 0:
                raise ConfigError(f"optim.label_margin_window must be two numbers of seconds >= 0, not both 0 (before, "
                                  f"after the onset), or null for the whole clip; got {list(self.label_margin_window)}")
            if not self.label_margin:
                raise ConfigError("optim.label_margin_window is set but optim.label_margin is 0: set the margin too")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule.

    constant: lr throughout. plateau: multiply every group's lr by ``factor`` when val/loss has not improved
    for ``patience`` validation rounds. cosine: linear warm-up over ``warmup_steps`` optimizer steps, then a
    cosine decay to ``min_lr_ratio`` * lr at ``total_steps`` (default: trainer.max_steps).
    """

    name: str = "constant"
    factor: float = 0.2
    patience: int = 20
    warmup_steps: int = 0
    total_steps: int | None = None
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.name not in ("constant", "plateau", "cosine"):
            raise ConfigError(f"schedule.name must be 'constant', 'plateau' or 'cosine', got {self.name!r}")
        if not 0 < self.factor < 1 or self.patience < 0 or self.warmup_steps < 0:
            raise ConfigError("schedule: factor must be in (0, 1), patience and warmup_steps >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TrainerConfig:
    """How to run: batch sizes, lengths, devices, precision, checkpoints. Steps are optimizer steps.

    batch_size is per device; the global batch is batch_size * accumulate * devices * num_nodes.
    """

    batch_size: int = 32
    accumulate: int = 1
    max_steps: int = 100_000
    val_every: int = 1000  # validate every this many optimizer steps (and at the end)
    val_batches: int | None = None  # None: the whole validation split
    val_batch_size: int | None = None  # None: batch_size
    checkpoint_every: int = 1000  # write last.ckpt every this many optimizer steps
    log_every: int = 50
    precision: str = "32-true"  # 32-true | 64-true | bf16-mixed | 16-mixed (mixed: GPU)
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto: DDP when devices * num_nodes > 1 (gloo on CPU, nccl on GPU)
    num_workers: int = 0
    seed: int = 0
    max_nonfinite: int = 20  # stop after this many consecutive non-finite losses
    progress_bar: bool = True
    init_from: str | None = None  # a trained model (shipped name, folder or hub id) whose weights a new run starts from

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "accumulate", "max_steps", "val_every", "checkpoint_every", "log_every",
                     "devices", "num_nodes", "max_nonfinite"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer.{name} must be positive, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    model: "SaShiMiConfig | DiffWaveConfig"  # noqa: F821  (model.kind: ar | diffwave)
    data: "DataConfig"  # noqa: F821  (sashimi.data.DataConfig, imported lazily)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self):
        from sashimi.audio.quantize import FLOAT_WAVE

        float_data = self.data.quantization == FLOAT_WAVE
        if self.model.kind == "diffwave" and not float_data:
            raise ConfigError(f"model.kind diffwave learns float waveforms: set data.quantization: {FLOAT_WAVE} "
                              f"(got {self.data.quantization!r})")
        if self.model.kind == "ar" and float_data:
            raise ConfigError(f"data.quantization: {FLOAT_WAVE} gives float waveforms, which only a diffusion model "
                              "(model.kind: diffwave) learns; an autoregressive model needs mu-law or linear")
        if self.optim.onset_weight != 1 and self.model.kind != "ar":
            raise ConfigError("optim.onset_weight weights an autoregressive model's per-sample loss; a diffusion model "
                              "has none (leave it at 1)")
        if self.optim.input_jitter and self.model.kind != "ar":
            raise ConfigError("optim.input_jitter moves an autoregressive model's input tokens; a diffusion model has "
                              "none (leave it at 0)")
        if self.optim.self_feed and self.model.kind != "ar":
            raise ConfigError("optim.self_feed feeds an autoregressive model its own draws; a diffusion model has "
                              "no input tokens (leave it at 0)")
        if self.optim.input_jitter and self.optim.input_jitter >= self.model.n_classes:
            raise ConfigError(f"optim.input_jitter must be below the {self.model.n_classes} quantization levels of "
                              f"model.bits={self.model.bits}, got {self.optim.input_jitter}")
        if self.optim.label_margin and len(getattr(self.model, "labels", ())) < 2:
            raise ConfigError("optim.label_margin parts a conditional model's labels: set model.labels to two or more "
                              "names (and model.kind: ar), or leave optim.label_margin at 0")
        if self.optim.label_lr is not None and not getattr(self.model, "labels", ()):
            raise ConfigError("optim.label_lr is the lr of a conditional model's label embedding: set model.labels "
                              "too (or leave optim.label_lr null)")
        keys = ("sample_rate",) if self.model.kind == "diffwave" else ("bits", "quantization", "sample_rate")
        for key in keys:
            if getattr(self.model, key) != getattr(self.data, key):
                raise ConfigError(f"model.{key}={getattr(self.model, key)!r} disagrees with "
                                  f"data.{key}={getattr(self.data, key)!r}; set both to the same value")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        from sashimi.data import DataConfig

        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {type(d).__name__}")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"config: unknown section(s) {unknown}; valid sections are {list(SECTIONS)}")
        for required in ("model", "data"):
            if required not in d:
                raise ConfigError(f"config: missing section {required!r}")
        return cls(
            model=model_config(d["model"], where="model"),
            data=DataConfig.from_dict(d["data"]),
            optim=OptimConfig(**check_fields(OptimConfig, d.get("optim", {}), "optim")),
            schedule=ScheduleConfig(**check_fields(ScheduleConfig, d.get("schedule", {}), "schedule")),
            trainer=TrainerConfig(**check_fields(TrainerConfig, d.get("trainer", {}), "trainer")),
        )

    def to_dict(self) -> dict:
        """Plain dict of builtins (lists, not tuples): safe in YAML and in weights_only checkpoints."""
        return {
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "optim": {**dataclasses.asdict(self.optim), "betas": list(self.optim.betas),
                      "onset_window": list(self.optim.onset_window),
                      "label_margin_window": None if self.optim.label_margin_window is None
                      else list(self.optim.label_margin_window)},
            "schedule": dataclasses.asdict(self.schedule),
            "trainer": dataclasses.asdict(self.trainer),
        }

    @property
    def world_size(self) -> int:
        return self.trainer.devices * self.trainer.num_nodes


def find_config(name: str | Path) -> Path:
    """A path, or the name of a shipped preset (``sc09``, ``sc09.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name)!r}: no such file, and not a shipped config (one of {presets})")


def read_config_dict(name: str | Path, _seen: tuple = ()) -> dict:
    """The raw dict of a config file with its ``base:`` chain merged in (later files win)."""
    path = find_config(name).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular base: chain")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    local = path.parent / base
    return merge(read_config_dict(local if local.is_file() else base, _seen + (path,)), raw)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict update: sections merge key by key, other values are replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(d: dict, overrides: list[str], sections: tuple[str, ...] = SECTIONS) -> dict:
    """Apply ``section.key=value`` strings; the value is parsed as YAML (so 1e-3, true, [4, 4] work)."""
    out = copy.deepcopy(d)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. optim.lr=0.001")
        section, name = parts
        if section not in sections:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; valid sections are {list(sections)}")
        out.setdefault(section, {})[name] = parse_value(text, item)
    return out


def parse_value(text: str, item: str):
    """YAML scalar/list parsing, plus numbers YAML 1.1 leaves as strings (1e-3, 5e4)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
    if isinstance(value, str):
        try:
            return float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return value
    return value


def load_config(name: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a config file (or shipped preset), apply overrides, validate everything."""
    raw = read_config_dict(name)
    if "classifier" in raw and "model" not in raw:
        raise ConfigError(f"config {str(name)!r} trains the evaluation classifier: run "
                          f"`sashimi classifier train {name}` instead")
    return TrainConfig.from_dict(apply_overrides(raw, list(overrides)))


def save_config(config: TrainConfig, path: Path) -> None:
    from sashimi.train.callbacks import write_run_file

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    write_run_file(Path(path), lambda tmp: Path(tmp).write_text(text))
