"""SaShiMiConfig: the one config of the autoregressive audio model (``model.kind: ar``), validated and stored in
every checkpoint. ``model_config`` reads the model section of either kind (the diffusion model's config is
``sashimi.models.diffwave_config.DiffWaveConfig``)."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field

from sashimi.errors import ConfigError

FORMAT_VERSION = 1
MODEL_KINDS = ("ar", "diffwave")  # model.kind: the autoregressive 8-bit model, or the diffusion model
AR_ONLY_FIELDS = ("bits", "quantization")  # token options, which a diffusion model does not have


@dataclass
class SaShiMiConfig:
    kind: str = "ar"  # checkpoints written before model kinds existed have none: they are "ar"
    # backbone
    d_model: int = 64
    n_layers: int = 8
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2
    ff: int = 2
    layer: str = "s4"  # "s4" (DPLR) | "s4d" (diagonal)
    d_state: int = 64
    unet: bool = False
    dropout: float = 0.0
    init: str | None = None  # None: "legs" (S4 / S4D-LegS)
    disc: str | None = None  # None: "bilinear" for s4 (Cauchy kernel), "zoh" for s4d; both accept either
    dt_min: float = 0.001
    dt_max: float = 0.1
    ssm_lr: float | None = 0.001
    l_max: int | None = 16000  # training length the S4 kernels are attuned to (longer inputs still work)
    # audio / tokens
    bits: int = 8
    quantization: str = "mu-law"  # "mu-law" | "linear"
    sample_rate: int = 16000
    # conditioning: the names of the classes a model is conditioned on (e.g. the ten digits), in index order;
    # empty: unconditional. A conditional model adds a learned vector per class to every input embedding.
    labels: tuple[str, ...] = ()
    label_dropout: float = 0.0  # training only: share of sequences trained without their label (drop_labels)

    def __post_init__(self):
        self.pool = tuple(self.pool)
        self.labels = tuple(self.labels)
        if not 0 <= self.label_dropout < 1:
            raise ConfigError(f"model.label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.label_dropout and not self.labels:
            raise ConfigError("model.label_dropout applies to a conditional model: set model.labels too")
        if self.labels and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)
                            or not all(isinstance(n, str) and n for n in self.labels)):
            raise ConfigError(f"model.labels must be two or more distinct non-empty names (or empty for an "
                              f"unconditional model), got {list(self.labels)}")
        if self.kind != "ar":
            raise ConfigError(f"model.kind of a SaShiMiConfig must be 'ar', got {self.kind!r} (read model sections "
                              "with sashimi.models.config.model_config)")
        if self.quantization not in ("mu-law", "linear"):
            raise ConfigError(f"model.quantization must be 'mu-law' or 'linear', got {self.quantization!r}")
        if not 2 <= self.bits <= 16:
            raise ConfigError(f"model.bits must be in 2..16, got {self.bits}")
        if self.layer not in ("s4", "s4d"):
            raise ConfigError(f"model.layer must be 's4' or 's4d', got {self.layer!r}")
        if self.d_model <= 0 or self.n_layers < 0 or self.sample_rate <= 0:
            raise ConfigError("model.d_model and model.sample_rate must be positive, model.n_layers >= 0")
        if not 0 <= self.dropout < 1:  # NaN fails it too
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.dt_min <= self.dt_max < math.inf:
            raise ConfigError(f"model.dt_min and model.dt_max must be finite with 0 < dt_min <= dt_max, "
                              f"got {self.dt_min} and {self.dt_max}")
        if self.ssm_lr is not None and not 0 <= self.ssm_lr < math.inf:
            raise ConfigError(f"model.ssm_lr must be a finite number >= 0 (or null for optim.lr), got {self.ssm_lr}")

    def estimate_parameters(self) -> int:
        """The parameter count of the SaShiMiLM this config builds, from the sizes alone (nothing allocated).

        Exact for the rank-1 inits (legs, the default); inits of higher rank add 2 H N/2 per extra rank and layer.
        """
        n2 = self.d_state // 2

        def tier(h: int) -> int:  # n_layers (S4 block [+ FF block]) at width h
            # norm, log_dt, (A_real, A_imag, B, C[, P]: complex, stored as pairs), D, output_linear
            s4 = 2 * h + h + 2 * h * n2 * (4 if self.layer == "s4" else 3) + h + 2 * h * h + 2 * h
            ff = 2 * h + 2 * self.ff * h * h + self.ff * h + h if self.ff > 0 else 0
            return self.n_layers * (s4 + ff)

        total, h = 0, self.d_model
        for p in self.pool:
            total += tier(h) * (2 if self.unet else 1)
            total += (h * p * h * self.expand + h * self.expand) + (h * self.expand * h * p + h * p)  # down, up pool
            h *= self.expand
        total += tier(h) + 2 * self.d_model  # centre tier, final norm
        total += len(self.labels) * self.d_model  # the label embedding of a conditional model
        return total + (self.n_classes + 1) * self.d_model + self.d_model * self.n_classes + self.n_classes

    @property
    def n_classes(self) -> int:
        return 2**self.bits

    @property
    def size_fields(self) -> tuple[str, ...]:
        """The fields that set the model's size, largest effect first (named when a model is too large)."""
        return ("d_model", "n_layers", "expand", "ff")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pool"] = list(self.pool)
        if self.labels:  # only a conditional model's config names labels (unconditional files stay as they were)
            d["labels"] = list(self.labels)
        else:
            del d["labels"]
        if not self.label_dropout:
            del d["label_dropout"]
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "model") -> "SaShiMiConfig":
        """Build from a plain dict; unknown keys, keys of diffusion models and wrong types are errors that name
        the field."""
        if isinstance(d, dict):
            from sashimi.models.diffwave_config import DiffWaveConfig

            diffusion_only = [k for k in DiffWaveConfig.__dataclass_fields__ if k not in cls.__dataclass_fields__]
            given = [k for k in diffusion_only if k in d]
            if given:
                raise ConfigError(f"{where}.{given[0]} is an option of diffusion models (model.kind: diffwave), and "
                                  f"{where}.kind is {d.get('kind', 'ar')}: remove it or set model.kind: diffwave")
        return cls(**check_fields(cls, d, where))


def model_config(d: dict, where: str = "model"):
    """The config of either model kind from a model section (``kind: ar``, the default, or ``kind: diffwave``):
    a SaShiMiConfig or a DiffWaveConfig."""
    from sashimi.models.diffwave_config import DiffWaveConfig

    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    kind = d.get("kind", "ar")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}")
    return (DiffWaveConfig if kind == "diffwave" else SaShiMiConfig).from_dict(d, where)


def check_fields(cls, d: dict, where: str) -> dict:
    """Validate the keys and value types of ``d`` against dataclass ``cls``; return a converted copy."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()}


def _coerce(value, hint, name: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], name) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


PRESETS: dict[str, dict] = {
    # SC09 (paper Table 3 / 4): 2 tiers of pooling by 4, 8 layers per tier, width 64.
    "sc09": dict(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, l_max=16000, sample_rate=16000),
    # Same backbone on long music at 16 kHz, trained on 8 s windows.
    "youtubemix": dict(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, l_max=131072, sample_rate=16000),
    "beethoven": dict(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, l_max=128000, sample_rate=16000,
                      quantization="linear"),
    # Small enough for tests and CPU demos.
    "tiny": dict(d_model=16, n_layers=2, pool=(4, 4), expand=2, ff=2, d_state=16, l_max=16000),
}


def preset(name: str, **overrides):
    """A model preset with overrides: a SaShiMiConfig (``PRESETS``) or a DiffWaveConfig (``DIFFWAVE_PRESETS``)."""
    from sashimi.models.diffwave_config import DIFFWAVE_PRESETS, DiffWaveConfig

    if name in DIFFWAVE_PRESETS:
        return DiffWaveConfig.from_dict({**DIFFWAVE_PRESETS[name], **overrides}, where=f"preset {name}")
    if name not in PRESETS:
        known = sorted(PRESETS) + sorted(DIFFWAVE_PRESETS)
        raise ConfigError(f"unknown model preset {name!r}; expected one of {known}")
    return SaShiMiConfig.from_dict({**PRESETS[name], **overrides}, where=f"preset {name}")
