"""Scoring sample sets with the evaluation classifier: the columns of the SaShiMi paper's SC09 table.

A sample set is a folder of one-second mono 16 kHz WAVs (what ``sashimi generate`` writes, with its
``manifest.json``, or any folder of clips). Each clip goes through the classifier once, giving its class
probabilities (K) and pooled features (D); the scores compare them with a reference split of a dataset, whose
statistics (of its train split, and its Train and Test rows) are computed once per (classifier, dataset)
and cached.

Selection by likelihood (autoregressive models, the official protocol): the samples are ordered by their
exact log-likelihood (least likely first), split at random (seed 0) into two halves, and the second half is
scored on the band [40%, 95%) of its order: the least likely 40% and the most likely 5% are dropped. The
first half is the one the official protocol tuned these thresholds on. ``LOW:HIGH`` keeps the band
[LOW, HIGH) of all samples; ``none`` keeps everything.

Shapes: N = clips, L = 16,000 samples, K = classes, D = features.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sashimi.errors import AudioError, ConfigError
from sashimi.metrics.features import CLIP_LEN, SAMPLE_RATE, fix_length, log_mel
from sashimi.metrics.quality import (NDBBins, am_score, frechet_distance_stats, gaussian_stats, inception_score,
                                     modified_inception_score, ndb_against, ndb_bins)

OFFICIAL_BAND = (0.4, 0.95)
MANIFEST = "manifest.json"
WAV_SUFFIXES = (".wav", ".flac")
SHIPPED_CLASSIFIER = Path(__file__).resolve().parent / "weights" / "digits-small.safetensors"
SHIPPED_REFERENCE = SHIPPED_CLASSIFIER.with_suffix(".reference.npz")  # built-in digits, 12,000 clips, seed 0


@dataclass
class Classified:
    """The classifier's view of a set of clips."""

    names: list[str]
    probs: np.ndarray  # (N, K) float64
    features: np.ndarray  # (N, D) float64
    labels: np.ndarray | None = None  # (N,) true classes, for dataset splits

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray) -> "Classified":
        labels = None if self.labels is None else self.labels[index]
        return Classified([self.names[i] for i in index], self.probs[index], self.features[index], labels)

    @property
    def accuracy(self) -> float | None:
        return None if self.labels is None else float((self.probs.argmax(1) == self.labels).mean())


MODEL_BATCH = 32  # clips per classifier call: on a CPU, 32 runs ~3x faster per clip than 256 (cache-bound)


@torch.no_grad()
def classify_waves(model, waves: np.ndarray, batch_size: int = MODEL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) float waves at 16 kHz -> probabilities (N, K) and features (N, D), float64."""
    model.eval()
    probs, feats = [], []
    for start in range(0, len(waves), batch_size):
        images = torch.from_numpy(log_mel(waves[start:start + batch_size]))
        f = model.features(images)
        probs.append(torch.softmax(model.head(f).double(), dim=1).numpy())
        feats.append(f.double().numpy())
    return np.concatenate(probs), np.concatenate(feats)


def hear(folder: Path, files: list[str], classifier: Path = SHIPPED_CLASSIFIER) -> dict[str, tuple[str, float]]:
    """What the evaluation classifier hears in each mono WAV of ``folder``: file -> (class, probability).
    Clips are resampled to 16 kHz; shorter than 1 s they are zero-padded, longer ones cut to their first second
    (the classifier's input)."""
    import soundfile as sf

    from sashimi.metrics.classifier import load_classifier

    model = load_classifier(classifier)
    waves = np.stack([fix_length(_at_classifier_rate(*sf.read(str(Path(folder) / f), dtype="float32",
                                                               always_2d=False))[:CLIP_LEN])
                      for f in files]) if files else np.zeros((0, CLIP_LEN), np.float32)
    with torch.no_grad():
        probs, _ = classify_waves(model, waves)
    classes = model.config.classes
    return {f: (classes[int(p.argmax())], float(p.max())) for f, p in zip(files, probs)}


def _at_classifier_rate(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A mono clip at the classifier's 16 kHz (soxr, band-limited): 8 kHz models are scored on what they make."""
    from sashimi.audio.io import resample

    return resample(wave, int(sample_rate), SAMPLE_RATE)


def read_clip(path: Path) -> np.ndarray:
    """A mono clip of at least one second, at any sample rate -> its first second at 16 kHz (L,) float32; else
    AudioError."""
    import soundfile as sf

    from sashimi.audio.io import audio_info

    info = audio_info(path)
    if info.channels != 1:
        raise AudioError(f"{path}: {info.channels} channels; the classifier scores mono clips")
    if info.frames < info.sample_rate:
        raise AudioError(f"{path}: {info.frames} samples ({info.frames / info.sample_rate:.3f} s); the classifier "
                         f"needs clips of at least 1 s ({info.sample_rate} samples at {info.sample_rate} Hz)")
    wave, _ = sf.read(str(path), frames=info.sample_rate, dtype="float32", always_2d=False)
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: holds NaN or infinite samples")
    return fix_length(_at_classifier_rate(wave, info.sample_rate))


@dataclass
class SampleSet:
    folder: Path
    files: list[str]  # relative names, in manifest order (or sorted)
    log_likelihood: np.ndarray | None  # (N,) from the manifest; None without one, or without likelihoods
    labels: list[str] | None = None  # what a conditional model was asked to say, from the manifest


def read_sample_set(folder: str | os.PathLike) -> SampleSet:
    """The clips of ``folder``; with a manifest.json, exactly the files it lists (with their likelihoods)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of samples")
    on_disk = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in WAV_SUFFIXES and p.is_file()
                     and not p.name.startswith("."))
    manifest = folder / MANIFEST
    if not manifest.is_file():
        if not on_disk:
            raise ConfigError(f"{folder}: no .wav or .flac files to score")
        return SampleSet(folder, on_disk, None)
    rows = _manifest_rows(manifest)
    listed = [r["file"] for r in rows]
    missing = [f for f in listed if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{manifest}: lists {len(missing)} file(s) that are not in the folder (first: {missing[0]})")
    extra = sorted(set(on_disk) - set(listed) - {"prime.wav"})
    if extra:
        raise ConfigError(f"{manifest}: does not list {len(extra)} audio file(s) of the folder (first: {extra[0]}); "
                          "it belongs to another run, or files were added by hand")
    labels = [str(r["label"]) for r in rows] if all("label" in r for r in rows) else None
    if not all("log_likelihood" in r for r in rows):  # samples of a diffusion model: no likelihoods
        return SampleSet(folder, listed, None, labels)
    return SampleSet(folder, listed, np.array([float(r["log_likelihood"]) for r in rows]), labels)


def _manifest_rows(manifest: Path) -> list[dict]:
    try:
        rows = json.loads(manifest.read_text()).get("samples")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ConfigError(f"{manifest}: not a sashimi generate manifest ({err})") from None
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{manifest}: has no 'samples' list")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "file" not in r:
            raise ConfigError(f"{manifest}: samples[{i}] lacks 'file'")
    return rows


def select(sample_set: SampleSet, how: str) -> np.ndarray:
    """Indices of the samples to score: ``official``, ``none`` or ``LOW:HIGH`` (fractions)."""
    n = len(sample_set.files)
    if how == "none":
        return np.arange(n)
    if sample_set.log_likelihood is None:
        raise ConfigError(f"--select {how}: needs the log-likelihoods of {sample_set.folder / MANIFEST} "
                          "(samples of an autoregressive model from sashimi generate; a diffusion model's have "
                          "none); use --select none for other folders")
    order = np.argsort(sample_set.log_likelihood, kind="stable")  # least likely first
    if how == "official":
        scored_half = np.sort(np.random.RandomState(0).permutation(n)[n // 2:])  # positions in `order`
        return _band(order[scored_half], *OFFICIAL_BAND)
    return _band(order, *parse_band(how))


def parse_band(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        band = float(low), float(high)
    except ValueError:
        band = None
    if not sep or band is None or not 0 <= band[0] < band[1] <= 1:
        raise ConfigError(f"--select {text!r}: expected official, none or LOW:HIGH fractions with "
                          "0 <= LOW < HIGH <= 1 (e.g. 0.4:0.95)")
    return band


def _band(ordered: np.ndarray, low: float, high: float) -> np.ndarray:
    n = len(ordered)
    kept = ordered[int(low * n):int(high * n)]
    if len(kept) < 2:
        raise ConfigError(f"the selection keeps {len(kept)} of {n} samples; the scores need at least 2")
    return kept


def classify_set(model, sample_set: SampleSet, index: np.ndarray | None = None, batch_size: int = 256,
                 progress=None) -> Classified:
    """Read and classify the chosen clips of a sample set (in batches, bounded memory)."""
    index = np.arange(len(sample_set.files)) if index is None else index
    names = [sample_set.files[i] for i in index]
    probs, feats = [], []
    for start in range(0, len(names), batch_size):
        waves = np.stack([read_clip(sample_set.folder / f) for f in names[start:start + batch_size]])
        p, f = classify_waves(model, waves)
        probs.append(p)
        feats.append(f)
        if progress is not None:
            progress(len(waves))
    return Classified(names, np.concatenate(probs), np.concatenate(feats), _asked(sample_set, index, model))


def _asked(sample_set: SampleSet, index: np.ndarray, model) -> np.ndarray | None:
    """(N,) the classes a conditional model was asked for (its labels, where all are the classifier's classes),
    so that ``Classified.accuracy`` says how often the classifier hears what was asked for; else None."""
    classes = tuple(model.config.classes)
    if sample_set.labels is None or not all(label in classes for label in sample_set.labels):
        return None
    return np.array([classes.index(sample_set.labels[i]) for i in index])


def classifier_key(path: Path) -> str:
    """A short content hash of a classifier file: reference statistics are per classifier."""
    from sashimi.models.io import WEIGHTS_NAME

    path = Path(path)
    h = hashlib.sha256()
    with open(path / WEIGHTS_NAME if path.is_dir() else path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def dataset_key(root: str | os.PathLike) -> str:
    """A short hash of a clip dataset's file list, sizes, times and split lists: a changed set is recomputed."""
    from sashimi.data.datasets import DIGITS, SPLIT_LISTS
    from sashimi.data.index import scan_audio_files

    root = Path(root)
    h = hashlib.sha256()
    for rel in scan_audio_files(root, list(DIGITS)) + sorted(SPLIT_LISTS.values()):
        try:
            st = os.stat(root / rel)
        except OSError:
            continue
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:12]


@dataclass
class Reference:
    """What the scores need of a dataset: its train split's statistics, and its Train and Test rows."""

    mean: np.ndarray  # (D,) train features
    cov: np.ndarray  # (D, D)
    mean_probs: np.ndarray  # (K,) train class probabilities
    bins: NDBBins  # NDB cells fitted on the train features
    rows: dict  # {"train": scores, "test": scores}, each with "accuracy"
    source: str  # the dataset root it was computed from

    def save(self, path: Path) -> None:
        from sashimi.models.io import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean, cov=self.cov, mean_probs=self.mean_probs, centres=self.bins.centres,
                         counts=self.bins.counts, meta=np.array(json.dumps({"rows": self.rows, "source": self.source})))

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: Path) -> "Reference":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(z["mean"], z["cov"], z["mean_probs"], NDBBins(z["centres"], z["counts"]), meta["rows"],
                           meta["source"])
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{path}: not a readable reference statistics file ({err})") from None


def classify_split(model, data_root: str | os.PathLike, split: str, batch_size: int = 256) -> Classified:
    """A split of an sc09 or digits root as the classifier sees it."""
    from sashimi.data import DataConfig
    from sashimi.data.prepare import detect_name
    from sashimi.train.clips import LabelledClips

    name = detect_name(data_root)
    if name not in ("sc09", "digits"):
        raise ConfigError(f"--reference {data_root}: not an sc09 or digits dataset root (zero/ .. nine/ with "
                          "validation_list.txt and testing_list.txt)")
    clips = LabelledClips(DataConfig(name=name, root=str(data_root)), split)
    probs, feats = [], []
    for start in range(0, len(clips), batch_size):
        waves = np.stack([clips.wave(i) for i in range(start, min(start + batch_size, len(clips)))])
        p, f = classify_waves(model, waves)
        probs.append(p)
        feats.append(f)
    return Classified([str(p) for p in clips.paths], np.concatenate(probs), np.concatenate(feats), clips.labels)


def build_reference(model, data_root: str | os.PathLike, batch_size: int = 256, k: int = 50) -> Reference:
    """Classify the train and test splits of ``data_root`` and keep what the scores need."""
    train = classify_split(model, data_root, "train", batch_size)
    test = classify_split(model, data_root, "test", batch_size)
    mean, cov = gaussian_stats(train.features)
    ref = Reference(mean, cov, train.probs.mean(0), ndb_bins(train.features, min(k, len(train))), {}, str(data_root))
    classes = model.config.classes
    ref.rows = {name: {**scores(c, ref, classes), "accuracy": c.accuracy} for name, c in (("train", train), ("test", test))}
    return ref


def load_reference(model, classifier_path: Path, data_root: str | os.PathLike | None,
                   batch_size: int = 256) -> Reference:
    """The reference of ``data_root``, computed once per classifier and cached under the dataset's cache
    folder; without a root, the statistics shipped beside the shipped classifier (built-in digits)."""
    if data_root is None:
        if Path(classifier_path).resolve() != SHIPPED_CLASSIFIER.resolve():
            raise ConfigError("--reference DATA_ROOT is needed with --classifier (reference statistics are per "
                              "classifier; only the shipped classifier comes with its own)")
        return Reference.load(SHIPPED_REFERENCE)
    cache = Path(data_root) / ".sashimi_cache" / "score" / \
        f"{classifier_key(classifier_path)}-{dataset_key(data_root)}.npz"
    if cache.is_file():
        return Reference.load(cache)
    ref = build_reference(model, data_root, batch_size)
    ref.save(cache)
    return ref


def scores(generated: Classified, ref: Reference, classes: tuple[str, ...]) -> dict:
    """The paper's columns for ``generated`` against a reference, plus what the classifier heard."""
    predicted = generated.probs.argmax(1)
    return {
        "fid": frechet_distance_stats(ref.mean, ref.cov, *gaussian_stats(generated.features)),
        "is": inception_score(generated.probs),
        "is_textbook": inception_score(generated.probs, official=False),  # exp E KL(p(y|x) || p(y)), <= classes
        "mis": modified_inception_score(generated.probs),
        "am": am_score(np.stack([ref.mean_probs, ref.mean_probs]), generated.probs),  # AM uses the mean row only
        "ndb": ndb_against(ref.bins, generated.features),
        "n_samples": len(generated),
        "mean_confidence": float(generated.probs.max(1).mean()),
        "accuracy": generated.accuracy,  # a conditional model's samples: heard as the label asked for
        "class_counts": {c: int((predicted == i).sum()) for i, c in enumerate(classes)},
    }
