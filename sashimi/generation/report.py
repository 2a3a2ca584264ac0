"""The listening report: ``index.html`` with a player, waveform and spectrogram for every generated file.

Everything is local (relative links to the WAVs and PNGs next to it, inline CSS, no scripts), so the folder can
be copied anywhere and opened offline.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import soundfile as sf

from sashimi.models.io import atomic_write

POWER_FLOOR = 1e-12  # -120 dB: digital silence (a noiseless clip) draws at the floor instead of log10(0) = -inf
MIN_HEARD_RATE = 8000  # telephone band: the lowest rate at which the digits classifier is meaningful

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px} .item{border-top:1px solid #ccc;padding:1em 0}"
         " .plots img{width:520px;margin-right:8px} h2{font-size:1.05em;margin:.2em 0} .meta{color:#555}")


def spectrogram_db(wave: np.ndarray, sample_rate: int, nfft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L,) -> times (T,), frequencies (F,) and power in dB (F, T): Hann windows of ``nfft``, overlapping by 3/4."""
    from matplotlib import mlab

    power, freqs, times = mlab.specgram(wave, NFFT=nfft, Fs=sample_rate, noverlap=3 * nfft // 4)  # (F, T)
    return times, freqs, 10 * np.log10(power + POWER_FLOOR)


def draw_spectrogram(ax, wave: np.ndarray, sample_rate: int, nfft: int) -> None:
    """The spectrogram of ``wave`` on ``ax``, colours from the floor (-120 dB) to the loudest bin (at least -60 dB)."""
    times, freqs, db = spectrogram_db(wave, sample_rate, nfft)
    floor = 10 * np.log10(POWER_FLOOR)
    ax.pcolormesh(times, freqs, db, cmap="magma", vmin=floor, vmax=max(-60.0, float(db.max())), shading="auto")


def plot_audio(wave: np.ndarray, sample_rate: int, out_stem: Path) -> tuple[str, str]:
    """Write ``<stem>_wave.png`` and ``<stem>_spec.png``; return their file names."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state, renders to PNG

    names = (f"{out_stem.name}_wave.png", f"{out_stem.name}_spec.png")
    t = np.arange(len(wave)) / sample_rate
    fig = Figure(figsize=(6.5, 1.8), dpi=80)
    ax = fig.subplots()
    ax.plot(t, wave, linewidth=0.4)
    ax.set(xlim=(0, max(t[-1], 1 / sample_rate)), ylim=(-1.05, 1.05), xlabel="s")
    fig.tight_layout()
    fig.savefig(out_stem.parent / names[0])
    fig = Figure(figsize=(6.5, 1.8), dpi=80)
    ax = fig.subplots()
    nfft = max(16, min(512, 2 ** int(np.log2(max(len(wave) // 4, 16)))))
    draw_spectrogram(ax, wave, sample_rate, nfft)
    ax.set(xlabel="s", ylabel="Hz")
    fig.tight_layout()
    fig.savefig(out_stem.parent / names[1])
    return names


def write_report(out_dir: Path, entries: list[dict], title: str, prime: dict | None = None, *,
                 heard: dict[str, tuple[str, float]] | None = None, summary: str = "",
                 max_items: int | None = None) -> Path:
    """entries: manifest rows (``file``, and from ``sashimi generate`` also ``log_likelihood``,
    ``bits_per_sample``, ``seed``), best first.

    prime: ``{"file": ..., "source": ...}`` for a prime WAV inside ``out_dir`` (shown first).
    heard: file -> (class the evaluation classifier predicts, its probability), shown beside each sample.
    summary: an HTML block (scores, histogram) placed above the samples.
    max_items: show players and plots for the first ``max_items`` entries only (large sets).
    """
    out_dir = Path(out_dir)
    items = []
    if prime is not None:
        items.append(_item(out_dir, prime["file"], "prime", f"from {prime['source']}"))
    shown = entries if max_items is None else entries[:max_items]
    for rank, e in enumerate(shown, 1):
        items.append(_item(out_dir, e["file"], f"#{rank}: {e['file']}", _meta(e, (heard or {}).get(e["file"]))))
    ordered = "in order"
    if entries and "log_likelihood" in entries[0]:
        ordered = "sorted by log-likelihood (most likely first)"
    elif entries and "seed" in entries[0]:
        ordered = "sorted by seed"
    more = f" The first {len(shown)} are shown." if len(shown) < len(entries) else ""
    asked = [e for e in entries if "label" in e and e["file"] in (heard or {})]
    if asked:  # a conditional model's samples: how often the classifier hears what was asked for
        agree = sum(heard[e["file"]][0] == e["label"] for e in asked)
        more += f" The classifier hears the label asked for in {agree} of {len(asked)}."
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{summary}"
            f"<p class='meta'>{len(entries)} samples, {ordered}.{more}</p>\n"
            + "\n".join(items) + "\n</body></html>\n")
    path = out_dir / "index.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path


def classifier_heard(out_dir: Path, entries: list[dict], sample_rate: int) -> dict[str, tuple[str, float]] | None:
    """What the shipped evaluation classifier (spoken digits, first second, resampled to 16 kHz) hears in each
    sample, for ``write_report(heard=...)``; None below 8 kHz (too little of the speech band to hear anything)."""
    from sashimi.metrics.score import hear

    if sample_rate < MIN_HEARD_RATE or not entries:
        return None
    return hear(Path(out_dir), [e["file"] for e in entries])


def _plots_current(audio: Path, plots: list[Path]) -> bool:
    """The plots exist and are newer than the audio (e.g. a report rewritten by ``sashimi score --report``)."""
    mtime = audio.stat().st_mtime_ns
    return all(p.is_file() and p.stat().st_mtime_ns >= mtime for p in plots)


def _meta(e: dict, heard: tuple[str, float] | None) -> str:
    parts = []
    if "log_likelihood" in e:
        parts += [f"log-likelihood {e['log_likelihood']:.1f} nats", f"{e['bits_per_sample']:.3f} bits/sample",
                  f"seed {e['seed']}"]
    elif "seed" in e:  # a diffusion model's sample: no likelihood
        parts.append(f"seed {e['seed']}")
    if "label" in e:  # a conditional model's sample: what it was asked to say
        parts.append(f"asked for <b>{html.escape(e['label'])}</b>")
    if heard is not None:
        parts.append(f"classifier hears <b>{html.escape(heard[0])}</b> ({heard[1]:.0%})")
    return " &middot; ".join(parts)


def _item(out_dir: Path, file: str, heading: str, meta: str) -> str:
    stem = out_dir / Path(file).stem
    wave_png, spec_png = f"{stem.name}_wave.png", f"{stem.name}_spec.png"
    if not _plots_current(out_dir / file, [out_dir / wave_png, out_dir / spec_png]):
        wave, sr = sf.read(str(out_dir / file), dtype="float32", always_2d=True)
        wave_png, spec_png = plot_audio(wave.mean(axis=1), sr, stem)
    f = html.escape(file, quote=True)
    return (f"<div class='item' data-file='{f}'><h2>{html.escape(heading)}</h2><p class='meta'>{meta}</p>"
            f"<audio controls preload='auto' src='{f}'></audio><div class='plots'>"
            f"<img alt='waveform of {f}' src='{html.escape(wave_png, quote=True)}'>"
            f"<img alt='spectrogram of {f}' src='{html.escape(spec_png, quote=True)}'></div></div>")
