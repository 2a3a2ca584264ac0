"""`DataConfig`: everything that decides which token sequences a dataset yields. Validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sashimi.audio.quantize import FLOAT_WAVE, MAX_BITS, MIN_BITS, QUANTIZATION_KINDS
from sashimi.errors import ConfigError

DATASET_NAMES = ("sc09", "youtubemix", "beethoven", "folder", "digits")
CLIP_DATASETS = ("sc09", "digits")  # Speech Commands layout, one 1-second clip per item
SPLITS = ("train", "valid", "test")

# field name -> accepted python types (None allowed where listed)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "root": (str,),
    "sample_rate": (int,),
    "sample_len": (int,),
    "quantization": (str,),
    "bits": (int,),
    "overlap": (int,),
    "strict": (bool,),
    "eval_len": (int, type(None)),
    "cache_dir": (str, type(None)),
}


@dataclass(frozen=True)
class DataConfig:
    """Dataset options.

    name: "sc09" | "digits" (1-second clips, Speech Commands layout) or "youtubemix" | "beethoven" | "folder"
        (long recordings cut into windows).
    root: folder holding the dataset.
    sample_rate: rate the audio is resampled to.
    sample_len: samples per training example (clips are zero-padded or cut to this length).
    quantization, bits: token quantizer ("mu-law" | "linear", 2..16 bits), or "none": items are float32
        waveforms in [-1, 1] (diffusion models; bits is then unused).
    overlap: samples shared by consecutive training windows of long files (0 <= overlap < sample_len).
    strict: a bad audio file is an error instead of being skipped and listed.
    eval_len: long-file datasets only: valid/test items are whole files when None, else contiguous
        non-overlapping windows of eval_len samples (the last window of a file may be shorter).
    cache_dir: where the index and resampled copies go; default `<root>/.sashimi_cache`.
    """

    name: str
    root: str
    sample_rate: int = 16000
    sample_len: int = 16000
    quantization: str = "mu-law"
    bits: int = 8
    overlap: int = 0
    strict: bool = False
    eval_len: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, types = getattr(self, f.name), _FIELD_TYPES[f.name]
            # bool is an int subclass: only accept it where bool is the declared type
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                expected = " or ".join("None" if t is type(None) else t.__name__ for t in types)
                raise ConfigError(f"data.{f.name} must be {expected}, got {value!r}")
        self._check_values()

    def _check_values(self) -> None:
        if self.name not in DATASET_NAMES:
            raise ConfigError(f"data.name must be one of {', '.join(DATASET_NAMES)}; got {self.name!r}")
        if not self.root:
            raise ConfigError("data.root must name the dataset folder, got an empty string")
        for field in ("sample_rate", "sample_len"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"data.{field} must be positive, got {getattr(self, field)}")
        kinds = QUANTIZATION_KINDS + (FLOAT_WAVE,)
        if self.quantization not in kinds:
            raise ConfigError(f"data.quantization must be one of {', '.join(kinds)}; got {self.quantization!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ConfigError(f"data.bits must be in {MIN_BITS}..{MAX_BITS}, got {self.bits}")
        if not 0 <= self.overlap < self.sample_len:
            raise ConfigError(f"data.overlap must be in [0, sample_len={self.sample_len}), got {self.overlap}")
        if self.eval_len is not None and self.eval_len <= 0:
            raise ConfigError(f"data.eval_len must be positive or None, got {self.eval_len}")

    @property
    def is_clip_dataset(self) -> bool:
        return self.name in CLIP_DATASETS

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        """Build from a plain dict (e.g. the `data:` section of a YAML config); unknown keys are an error."""
        if not isinstance(d, dict):
            raise ConfigError(f"data config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown data config key(s): {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("name", "root") if k not in d]
        if missing:
            raise ConfigError(f"data config is missing required key(s): {', '.join(missing)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "DataConfig":
        return dataclasses.replace(self, **changes)
