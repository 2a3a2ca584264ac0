"""The built-in offline dataset: spoken digits "zero".."nine" synthesized with eSpeak NG.

The output has the Speech Commands layout, so it loads exactly like SC09 (`DataConfig(name="digits")`):

    root/<word>/<voice>-<accent>_nohash_<clip>.wav   1 s, 16 kHz, mono, 16-bit PCM
    root/validation_list.txt, root/testing_list.txt  split lists ("word/file.wav" per line)
    root/digits.json                                 generator settings, voices per split, per-clip parameters

The split is by voice variant: every variant (m1, f3, klatt, croak, ...) belongs to exactly one split, in
every accent, so validation and test measure generalization to unseen voices. Every clip's parameters come
from `numpy.random.default_rng([seed, clip])`, so the set is the same for any worker count.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter
from tqdm import tqdm

from sashimi.audio.io import resample, save_wav
from sashimi.data.datasets import DIGITS, SPLIT_LISTS
from sashimi.data.espeak import SynthesisError, open_synthesizer
from sashimi.data.index import CACHE_DIRNAME
from sashimi.errors import ConfigError

SAMPLE_RATE = 16000
CLIP_LEN = 16000
DEFAULT_N_CLIPS = 10000
# eSpeak language names of English accents; ones the installed eSpeak lacks are left out
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
RATE_WPM = (120, 240)  # speaking rate drawn per clip, words per minute (`synth_digits(rates=)` narrows it)
PITCH = (20, 80)  # eSpeak base pitch drawn per clip (`synth_digits(pitches=)` narrows it)
LIMITS = {"rates": (80, 450), "pitches": (0, 99),  # what eSpeak NG accepts
          "peaks": (1, 99),  # % of full scale
          "starts": (0, 900)}  # ms from a clip's start to its word's (`synth_digits(starts=)`)
AMPLITUDE = (30, 70)  # eSpeak amplitude (100 is its default); low so the int16 output never saturates
PEAK = (25, 85)  # final speech peak level drawn per clip, % of full scale (`synth_digits(peaks=)` narrows it)
SNR_DB = (25.0, 45.0)  # background noise below the speech RMS
VOICE_FRACTIONS = {"valid": 0.1, "test": 0.1}
METADATA = "digits.json"


@dataclass(frozen=True)
class ClipSpec:
    clip: int
    word: str
    variant: str
    accent: str
    rate: int
    pitch: int
    amplitude: int
    peak: float
    snr_db: float | None  # None: no background noise (`synth_digits(noise=False)`)
    noise_color: float  # one-pole low-pass coefficient of the noise, 0 = white
    offset: float  # where the word starts, as a fraction of the free space
    split: str
    start_ms: int | None = None  # where the word starts instead, in ms (moved earlier where the word would not fit)

    @property
    def path(self) -> str:
        return f"{self.word}/{voice_slug(self.variant)}-{self.accent}_nohash_{self.clip}.wav"


@dataclass(frozen=True)
class DigitsSummary:
    root: str
    n_clips: int
    clips_per_split: dict[str, int]
    voices_per_split: dict[str, list[str]]
    accents: list[str]
    backend: str
    seconds: float
    bytes_on_disk: int


def voice_slug(variant: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", variant.lower())


def split_voices(variants: list[str], seed: int) -> dict[str, list[str]]:
    """Disjoint voice sets per split: ~10% valid, ~10% test, the rest train (at least one each)."""
    if len(set(map(voice_slug, variants))) != len(variants) or len(variants) < 3:
        raise SynthesisError(f"need at least 3 distinct eSpeak voice variants, got {variants}")
    order = [variants[i] for i in np.random.default_rng([seed, 1]).permutation(len(variants))]
    n_valid = max(1, round(VOICE_FRACTIONS["valid"] * len(order)))
    n_test = max(1, round(VOICE_FRACTIONS["test"] * len(order)))
    return {
        "train": sorted(order[n_valid + n_test:]),
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid:n_valid + n_test]),
    }


def plan_clips(n_clips: int, seed: int, voices: dict[str, list[str]], accents: list[str], *,
               noise: bool = True, rates: tuple[int, int] = RATE_WPM,
               pitches: tuple[int, int] = PITCH, starts: tuple[int, int] | None = None,
               peaks: tuple[int, int] = PEAK) -> list[ClipSpec]:
    """Parameters of every clip; words cycle so each digit gets n_clips / 10 clips.

    `noise=False` plans the same clips (same words, voices, levels and offsets) without background noise;
    `rates` / `pitches` (low, high), inclusive: the ranges the speaking rate and pitch are drawn from (words, voices,
    accents, levels and offsets stay those of the default set); `peaks` (low, high) %: the range of each word's
    peak level (a clip's other draws stay the same). `starts` (low, high) ms, inclusive: each word
    begins at a time drawn from this range instead of anywhere it fits (the other draws stay the same).
    """
    variants = sorted(v for vs in voices.values() for v in vs)
    split_of = {v: s for s, vs in voices.items() for v in vs}
    specs = []
    for i in range(n_clips):
        rng = np.random.default_rng([seed, 2, i])
        variant = variants[rng.integers(len(variants))]
        specs.append(ClipSpec(
            clip=i, word=DIGITS[i % len(DIGITS)], variant=variant, accent=accents[rng.integers(len(accents))],
            rate=int(rng.integers(rates[0], rates[1] + 1)), pitch=int(rng.integers(pitches[0], pitches[1] + 1)),
            amplitude=int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1)),
            peak=float(rng.uniform(peaks[0] / 100, peaks[1] / 100)),
            snr_db=_drawn_snr(rng, noise), noise_color=float(rng.uniform(0.0, 0.95)),
            offset=float(rng.uniform()), split=split_of[variant],
            start_ms=None if starts is None else int(np.random.default_rng([seed, 4, i]).integers(starts[0],
                                                                                                  starts[1] + 1)),
        ))
    return specs


def _drawn_snr(rng: np.random.Generator, noise: bool) -> float | None:
    """The clip's SNR, drawn even without noise so the other draws (and clips) stay those of the noisy set."""
    snr = float(rng.uniform(*SNR_DB))
    return snr if noise else None


def trim_silence(wave: np.ndarray, frame: int = 160, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing 10 ms frames whose RMS is `floor_db` below the loudest frame."""
    n = len(wave) // frame
    if n == 0:
        return wave
    rms = np.sqrt(np.mean(wave[: n * frame].reshape(n, frame) ** 2, axis=1))  # (frames,)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    return wave[loud[0] * frame : (loud[-1] + 1) * frame] if len(loud) else wave[:0]


def _speak(synth, spec: ClipSpec) -> np.ndarray:
    """The trimmed word at 16 kHz, at most ~0.95 s: too-long words are re-spoken faster, clipped ones softer."""
    rate, amplitude = spec.rate, spec.amplitude
    for _ in range(6):
        raw = synth.synth(spec.word, spec.accent, spec.variant, rate, spec.pitch, amplitude, seed=spec.clip)  # int16
        if len(raw) and np.abs(raw.astype(np.int32)).max() >= 32000:
            amplitude //= 2  # saturated: say it again, softer
            continue
        word = trim_silence(resample(raw.astype(np.float32) / 32768.0, synth.sample_rate, SAMPLE_RATE))
        if len(word) <= 0.95 * CLIP_LEN:
            break
        rate = min(450, rate + 40)
    if not len(word) or np.abs(word).max() == 0:
        raise SynthesisError(f"eSpeak produced silence for {spec.word!r} with voice {spec.accent}+{spec.variant}")
    return word[:CLIP_LEN]


def render_clip(synth, spec: ClipSpec) -> np.ndarray:
    """One 1-second clip `(CLIP_LEN,)`: the word at a random offset and level, plus coloured background noise
    (none when `spec.snr_db` is None)."""
    word = _speak(synth, spec)
    word = word * (spec.peak / np.abs(word).max())
    clip = np.zeros(CLIP_LEN, dtype=np.float64)
    free = CLIP_LEN - len(word)
    start = int(spec.offset * free) if spec.start_ms is None else min(spec.start_ms * SAMPLE_RATE // 1000, free)
    clip[start : start + len(word)] = word
    if spec.snr_db is not None:
        rng = np.random.default_rng([spec.clip, 3])
        noise = lfilter([1.0 - spec.noise_color], [1.0, -spec.noise_color], rng.standard_normal(CLIP_LEN))
        speech_rms = np.sqrt(np.mean(word**2))
        clip += noise * (speech_rms * 10 ** (-spec.snr_db / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12))
    return np.clip(clip, -0.99, 0.99).astype(np.float32)


BLOCK = 64  # clips per task; every task runs in a fresh worker process


@functools.lru_cache(maxsize=1)
def _open(backend: str):
    """(synthesizer, available accents), once per process.

    eSpeak NG keeps internal state from one utterance to the next (even across re-initialisation), so a clip
    would depend on what was spoken before it. To make the set independent of the worker count, every block
    of clips is rendered in a fresh process that starts from this same state: forked from the parent right
    after this call (Linux), or re-created by the same calls (spawn).
    """
    synth = open_synthesizer(backend)
    return synth, [a for a in ACCENTS if synth.has_language(a)]


def _write_block(args: tuple[str, str, list[ClipSpec]]) -> int:
    root, backend, specs = args
    synth, _ = _open(backend)
    for spec in specs:
        save_wav(Path(root) / spec.path, render_clip(synth, spec), SAMPLE_RATE)
    return len(specs)


def _prepare_root(root: Path) -> None:
    """Refuse to write into a foreign non-empty folder; clear a previous digits set."""
    if root.exists() and any(root.iterdir()):
        if not (root / METADATA).is_file():
            raise ConfigError(f"{root} is not empty and holds no {METADATA}; choose an empty or new folder")
        for name in [*DIGITS, CACHE_DIRNAME]:
            shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def synth_digits(root: str | os.PathLike, n_clips: int = DEFAULT_N_CLIPS, seed: int = 0, *,
                 workers: int | None = None, backend: str = "auto", progress: bool = True,
                 noise: bool = True, voices: Sequence[str] | None = None,
                 accents: Sequence[str] | None = None, rates: Sequence[int] | None = None,
                 pitches: Sequence[int] | None = None, starts: Sequence[int] | None = None,
                 peaks: Sequence[int] | None = None) -> DigitsSummary:
    """Write the digits dataset to `root` (replacing an earlier one there) and summarize it.

    `noise=False` writes the same clips without their background noise (a set for models that should spend
    no capacity on the noise floor; the evaluation classifier's reference statistics are of the noisy set).
    `voices` / `accents` narrow the set to those eSpeak voice variants / accents (default: all installed);
    the chosen voices are split between train, valid and test as all of them would be. `rates` / `pitches`
    (low, high): narrower ranges for the speaking rate (words per minute) and pitch (default RATE_WPM, PITCH).
    `starts` (low, high) ms: when each word begins (default: anywhere in the clip it fits). `peaks` (low, high):
    each word's peak level in % of full scale (default PEAK, 25-85).
    """
    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 10:
        raise ConfigError(f"n_clips must be an integer >= 10 (one per digit), got {n_clips!r}")
    spans = {"rates": _span("rates", rates, RATE_WPM), "pitches": _span("pitches", pitches, PITCH),
             "starts": _span("starts", starts, None), "peaks": _span("peaks", peaks, PEAK)}  # before eSpeak runs
    started = time.perf_counter()
    _open.cache_clear()
    synth, installed = _open(backend)
    if not installed:
        raise SynthesisError(f"{synth.name} has none of the English accents {', '.join(ACCENTS)}")
    accents = _chosen("accents", accents, installed)
    variants = _chosen("voices", voices, synth.variants)
    if voices is not None and len(variants) < 3:
        raise ConfigError(f"voices: need at least 3 (one each for train, valid and test), got {', '.join(variants)}")
    split = split_voices(variants, seed)
    specs = plan_clips(n_clips, seed, split, accents, noise=noise, **spans)
    root = Path(root)
    _prepare_root(root)
    jobs = [(str(root), backend, specs[i : i + BLOCK]) for i in range(0, n_clips, BLOCK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    # fork (Linux) starts workers without re-importing torch and hands them the parent's eSpeak state
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(workers, maxtasksperchild=1) as pool, \
            tqdm(total=n_clips, desc="synth-digits", unit="clip", disable=not progress) as bar:
        for done in pool.imap_unordered(_write_block, jobs):
            bar.update(done)
    _write_lists_and_metadata(root, specs, split, accents, synth.name, seed, noise, spans)
    return DigitsSummary(
        root=str(root), n_clips=n_clips,
        clips_per_split={s: sum(c.split == s for c in specs) for s in split},
        voices_per_split=split, accents=accents, backend=synth.name,
        seconds=time.perf_counter() - started,
        bytes_on_disk=sum(f.stat().st_size for f in root.rglob("*") if f.is_file()),
    )


def _chosen(field: str, wanted: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """`wanted` in the order of `available` (all of them when None); an unknown name is a one-line error."""
    if wanted is None:
        return list(available)
    unknown = [w for w in wanted if w not in available]
    if unknown or not wanted:
        what = f"{', '.join(unknown)} not available" if unknown else "none given"
        raise ConfigError(f"{field}: {what}; choose from {', '.join(available)}")
    return [a for a in available if a in set(wanted)]


def _span(field: str, value: Sequence[int] | None, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """(low, high) integers within LIMITS[field], low <= high; None: the default; else a one-line error."""
    if value is None:
        return default
    low, high = LIMITS[field]
    pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    ok = (pair and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
          and low <= value[0] <= value[1] <= high)
    if not ok:
        shown = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise ConfigError(f"{field}: expected (low, high) integers with {low} <= low <= high <= {high}, "
                          f"got {shown!r}")
    return int(value[0]), int(value[1])


def _write_lists_and_metadata(root, specs, voices, accents, backend, seed, noise, spans) -> None:
    for split, name in SPLIT_LISTS.items():
        (root / name).write_text("".join(f"{c.path}\n" for c in specs if c.split == split))
    meta = {
        "generator": "sashimi data synth-digits", "backend": backend, "seed": seed, "n_clips": len(specs),
        "background_noise": noise, "sample_rate": SAMPLE_RATE, "clip_len": CLIP_LEN, "accents": accents,
        "voices": voices, **spans,
        "clips": [{**asdict(c), "path": c.path} for c in specs],
    }
    (root / METADATA).write_text(json.dumps(meta, indent=1))
