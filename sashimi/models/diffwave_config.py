"""DiffWaveConfig: the one config of the diffusion audio model (``model.kind: diffwave``), validated and stored in
every checkpoint.

Two denoising backbones share the diffusion settings and the step embedding:
  sashimi  the bidirectional SaShiMi U-Net of the SaShiMi paper's diffusion experiments (fields ``SASHIMI_FIELDS``)
  wavenet  DiffWave's own network of dilated convolutions (fields ``WAVENET_FIELDS``)
A field of the other backbone is an error, and ``to_dict`` writes only the fields of the chosen one.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sashimi.errors import ConfigError
from sashimi.models.config import check_fields

BACKBONES = ("sashimi", "wavenet")
SASHIMI_FIELDS = ("d_model", "n_layers", "pool", "expand", "ff", "unet", "layer", "d_state", "dropout", "init",
                  "disc", "dt_min", "dt_max", "ssm_lr", "l_max")
WAVENET_FIELDS = ("res_channels", "skip_channels", "res_layers", "dilation_cycle")


@dataclass
class DiffWaveConfig:
    kind: str = "diffwave"
    backbone: str = "sashimi"  # "sashimi" | "wavenet"
    # diffusion (DiffWave: T = 200, linear betas 1e-4 .. 0.02)
    diffusion_steps: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # diffusion-step embedding: sinusoidal of width embed_in, then Linear + swish to embed_mid and to embed_out
    embed_in: int = 128
    embed_mid: int = 512
    embed_out: int = 512
    sample_rate: int = 16000
    # backbone "sashimi": n_layers (S4 + FF) blocks per U-Net stage, each stage pooled by pool[i]
    d_model: int = 64
    n_layers: int = 6
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2
    ff: int = 2
    unet: bool = True
    layer: str = "s4"  # "s4" (DPLR) | "s4d" (diagonal)
    d_state: int = 64
    dropout: float = 0.0
    init: str | None = None
    disc: str | None = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    ssm_lr: float | None = 0.001
    l_max: int | None = 16000  # training length the S4 kernels are attuned to
    # backbone "wavenet": res_layers residual layers with dilations 2^(i % dilation_cycle)
    res_channels: int = 256
    skip_channels: int = 256
    res_layers: int = 36
    dilation_cycle: int = 12

    def __post_init__(self):
        self.pool = tuple(self.pool)
        if self.kind != "diffwave":
            raise ConfigError(f"model.kind of a DiffWaveConfig must be 'diffwave', got {self.kind!r}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be one of {', '.join(BACKBONES)}; got {self.backbone!r}")
        defaults = DiffWaveConfig.__dataclass_fields__
        for name in self.unused_fields:
            if getattr(self, name) != defaults[name].default:
                raise _other_backbone(name, self.backbone)
        self._check_diffusion()
        self._check_sashimi() if self.backbone == "sashimi" else self._check_wavenet()

    def _check_diffusion(self) -> None:
        if self.diffusion_steps < 1:
            raise ConfigError(f"model.diffusion_steps must be >= 1, got {self.diffusion_steps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ConfigError(f"model.beta_start and model.beta_end must satisfy 0 < beta_start <= beta_end < 1, "
                              f"got {self.beta_start} and {self.beta_end}")
        if self.embed_in < 4 or self.embed_in % 2:
            raise ConfigError(f"model.embed_in must be an even number >= 4 (sines and cosines), got {self.embed_in}")
        for name in ("embed_mid", "embed_out", "sample_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")

    def _check_sashimi(self) -> None:
        if self.layer not in ("s4", "s4d"):
            raise ConfigError(f"model.layer must be 's4' or 's4d', got {self.layer!r}")
        if self.d_model <= 0 or self.n_layers < 0 or self.expand < 1 or self.ff < 0:
            raise ConfigError(f"model.d_model must be positive, model.n_layers and model.ff >= 0, model.expand >= 1; "
                              f"got {self.d_model}, {self.n_layers}, {self.ff}, {self.expand}")
        if any(p < 1 for p in self.pool):
            raise ConfigError(f"model.pool entries must be >= 1, got {list(self.pool)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.dt_min <= self.dt_max < math.inf:
            raise ConfigError(f"model.dt_min and model.dt_max must be finite with 0 < dt_min <= dt_max, "
                              f"got {self.dt_min} and {self.dt_max}")

    def _check_wavenet(self) -> None:
        for name in WAVENET_FIELDS:
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def unused_fields(self) -> tuple[str, ...]:
        """The fields of the backbone this config does not use."""
        return WAVENET_FIELDS if self.backbone == "sashimi" else SASHIMI_FIELDS

    @property
    def size_fields(self) -> tuple[str, ...]:
        """The fields that set the model's size, largest effect first (named when a model is too large)."""
        if self.backbone == "sashimi":
            return ("d_model", "n_layers", "expand", "ff")
        return ("res_channels", "res_layers", "skip_channels")

    @property
    def length_multiple(self) -> int:
        """Lengths the backbone runs without padding: the product of the pools (1 for wavenet)."""
        return math.prod(self.pool) if self.backbone == "sashimi" else 1

    def estimate_parameters(self) -> int:
        """The parameter count of the DiffWave this config builds, from the sizes alone (nothing allocated).

        Exact for the rank-1 S4 inits (legs, the default); inits of higher rank add 2 H N/2 per extra rank and layer.
        """
        embed = self.embed_in * self.embed_mid + self.embed_mid + self.embed_mid * self.embed_out + self.embed_out
        return embed + (self._sashimi_parameters() if self.backbone == "sashimi" else self._wavenet_parameters())

    def _sashimi_parameters(self) -> int:
        n2, E = self.d_state // 2, self.embed_out

        def block(h: int) -> int:  # norm, step projection, bidirectional S4 (C for both directions), FF block
            ssm = h + 2 * h * n2 * (5 if self.layer == "s4" else 4)  # log_dt; A_real, A_imag, B, 2 C[, P]
            s4 = 2 * h + (E * h + h) + ssm + h + (2 * h * h + 2 * h)  # ... D, output linear
            ff = 2 * h + 2 * self.ff * h * h + self.ff * h + h if self.ff > 0 else 0
            return s4 + ff

        h, total = self.d_model, 0
        for p in self.pool:
            total += self.n_layers * block(h) * (2 if self.unet else 1)
            e = h * self.expand
            total += (h * p * e + e) + (e * h * p + h * p)  # down pool, up pool
            h = e
        total += self.n_layers * block(h)
        H = self.d_model
        return total + 2 * H + (2 * H + H * H + H + H + 1)  # input Linear(1, H); norm, Linear(H, H), Linear(H, 1)

    def _wavenet_parameters(self) -> int:
        C, S, E = self.res_channels, self.skip_channels, self.embed_out
        layer = (E * C + C) + (3 * C * 2 * C + 2 * C) + (C * C + C) + (C * S + S)  # step fc, dilated, res, skip
        return 2 * C + self.res_layers * layer + (S * S + S) + (S + 1)  # input conv; final conv, zero conv

    def to_dict(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.unused_fields}
        if "pool" in d:
            d["pool"] = list(self.pool)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "model") -> "DiffWaveConfig":
        """Build from a plain dict; unknown keys, keys of autoregressive models or of the other backbone, and
        wrong types are errors that name the field."""
        if isinstance(d, dict):
            from sashimi.models.config import AR_ONLY_FIELDS

            given_ar = [k for k in AR_ONLY_FIELDS if k in d]
            if given_ar:
                raise ConfigError(f"{where}.{given_ar[0]} is an option of autoregressive models (model.kind: ar); "
                                  f"a diffwave model generates float waveforms: remove it")
            backbone = d.get("backbone", cls.backbone)
            other = WAVENET_FIELDS if backbone == "sashimi" else SASHIMI_FIELDS if backbone == "wavenet" else ()
            given_other = [k for k in other if k in d]
            if given_other:
                raise _other_backbone(given_other[0], backbone, where)
        return cls(**check_fields(cls, d, where))


def _other_backbone(name: str, backbone: str, where: str = "model") -> ConfigError:
    owner = "wavenet" if name in WAVENET_FIELDS else "sashimi"
    return ConfigError(f"{where}.{name} is an option of the {owner} backbone, and model.backbone is {backbone}: "
                       f"remove it or set model.backbone: {owner}")


# Diffusion presets (SaShiMi paper, Table 4; configs of albertfgu/diffwave-sashimi). Parameter counts: see
# tests/models/test_diffwave.py::test_parameter_counts_of_presets (``sashimi presets`` prints them).
DIFFWAVE_PRESETS: dict[str, dict] = {
    # DiffWave with the SaShiMi U-Net: 6 (S4 + FF) blocks per stage, pools (4, 4): 23.5M parameters (paper: 23.0M);
    # small (d_model 64): 7.7M (about 7.5M)
    # (the SSM parameters train at the global learning rate, ssm_lr null, as the official S4 layers did there)
    "sc09-diffwave": dict(backbone="sashimi", d_model=128, n_layers=6, pool=(4, 4), expand=2, ff=2, unet=True,
                          ssm_lr=None),
    "sc09-diffwave-small": dict(backbone="sashimi", d_model=64, n_layers=6, pool=(4, 4), expand=2, ff=2, unet=True,
                                ssm_lr=None),
    # DiffWave's WaveNet: residual channels 256, 36 layers, dilation cycle 12: 24.0M (paper: 24.1M, with weight
    # normalisation); small: 128, 30, 10: 6.8M
    "sc09-wavenet-diffwave": dict(backbone="wavenet", res_channels=256, skip_channels=256, res_layers=36,
                                  dilation_cycle=12),
    "sc09-wavenet-diffwave-small": dict(backbone="wavenet", res_channels=128, skip_channels=256, res_layers=30,
                                        dilation_cycle=10),
    # Small enough to learn the built-in digits on a 2-core CPU in about 20 minutes (configs/demo-diffwave.yaml).
    "demo-diffwave": dict(backbone="sashimi", d_model=32, n_layers=2, pool=(4, 4), expand=2, ff=2, unet=True,
                          d_state=32, embed_in=64, embed_mid=128, embed_out=128),
}
