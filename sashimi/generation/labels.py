"""The label of each generated sequence of a conditional model (``model.labels``)."""
from __future__ import annotations

from sashimi.errors import ConfigError


def parse_labels(text: str | None, names: tuple[str, ...], option: str = "--label") -> list[str] | None:
    """A comma-separated list of label names (``"seven"``, ``"zero,one"``) checked against a model's ``names``;
    None when not given. An unconditional model (no names) takes none."""
    if text is None:
        return None
    if not names:
        raise ConfigError(f"{option}: this model is unconditional (it has no labels); leave {option} out")
    given = [t.strip() for t in text.split(",")]
    unknown = [g for g in given if g not in names]
    if unknown or not given:
        raise ConfigError(f"{option}: unknown label(s) {unknown or [text]}; this model's labels are "
                          f"{', '.join(names)}")
    return given


def label_of(seed: int, first_seed: int, names: tuple[str, ...], requested: list[str] | None) -> str:
    """The label sample ``seed`` is generated with: the requested ones in turn, else every label in turn (by the
    sample's position, so it depends on the seed, not on the batch it runs in)."""
    cycle = requested or list(names)
    return cycle[(seed - first_seed) % len(cycle)]
