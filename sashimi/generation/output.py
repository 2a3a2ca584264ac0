"""The output folder of `sashimi generate`: resumable, never mixed with another run, bounded open files.

While a run is in progress the folder holds a journal (``.sashimi-generate.json``: the run's settings and the
manifest rows of every finished sample) and one hidden WAV per finished sample (``.seed<S>.wav``). A batch
is generated into one scratch file (``.batch.raw``, int16 (B, T) memory-mapped), so one file is open
whatever the batch size; its WAVs are written when the batch ends, and only then does the journal list
them. At the end the samples are ranked by log-likelihood (samples without one, from a diffusion model, by
seed), renamed ``<rank>_seed<S>.wav`` and listed in ``manifest.json``, and the journal goes away.

A killed run is continued with ``resume=True``: finished samples are kept, the rest are generated (a seed
gives the same audio whatever the batch). A folder that already holds a manifest or a journal is refused
unless the caller resumes it or overwrites it (which removes exactly the files the earlier run listed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sashimi.errors import ConfigError
from sashimi.models.io import atomic_write

JOURNAL = ".sashimi-generate.json"
MANIFEST = "manifest.json"
SCRATCH = ".batch.raw"
REPORT_FILES = ("index.html", "prime.wav", "classes.png")


def done_name(seed: int) -> str:
    return f".seed{seed}.wav"


class OutputFolder:
    """One run's output folder. ``identity``: the settings that decide the audio (a resume must match them)."""

    def __init__(self, folder: str | os.PathLike, identity: dict, *, resume: bool = False, overwrite: bool = False):
        self.folder, self.identity = Path(folder), identity
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"--out {self.folder}: is a file, not a folder")
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        self.rows: list[dict] = []
        if self._has_run():
            if overwrite:
                self._remove_earlier_run()
            elif resume:
                self.rows = self._read_journal()
            else:
                raise ConfigError(f"--out {self.folder}: already holds a sample set ({self._what()}); "
                                  "pass --resume to continue it or --overwrite to replace it, or choose another --out")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {self.folder}: cannot create the folder ({err.strerror})") from None
        # the journal is written when the first batch is done: a run that fails before leaves nothing behind

    # ----- state
    def _has_run(self) -> bool:
        return (self.folder / MANIFEST).is_file() or (self.folder / JOURNAL).is_file()

    def _what(self) -> str:
        return MANIFEST if (self.folder / MANIFEST).is_file() else f"an unfinished run, {JOURNAL}"

    @property
    def finished_seeds(self) -> set[int]:
        return {r["seed"] for r in self.rows}

    def _read_journal(self) -> list[dict]:
        if not (self.folder / JOURNAL).is_file():
            raise ConfigError(f"--out {self.folder}: the run there is complete ({MANIFEST}); nothing to resume "
                              "(--overwrite replaces it)")
        journal = json.loads((self.folder / JOURNAL).read_text())
        differ = sorted(k for k in set(journal["identity"]) | set(self.identity)
                        if journal["identity"].get(k) != self.identity.get(k))
        if differ:
            earlier = ", ".join(f"{k}: {journal['identity'].get(k)!r}" for k in differ)
            raise ConfigError(f"--resume {self.folder}: the run there was started with other settings ({earlier}); "
                              "repeat them, or use --overwrite")
        return [r for r in journal["rows"] if (self.folder / r["file"]).is_file()]

    def _write_journal(self) -> None:
        state = {"identity": self.identity, "rows": self.rows}
        atomic_write(self.folder / JOURNAL, lambda tmp: Path(tmp).write_text(json.dumps(state)))

    def _remove_earlier_run(self) -> None:
        names = set(REPORT_FILES) | {MANIFEST, JOURNAL, SCRATCH}
        for source in (MANIFEST, JOURNAL):
            path = self.folder / source
            if path.is_file():
                rows = json.loads(path.read_text()).get("samples" if source == MANIFEST else "rows", [])
                for r in rows:
                    stem = Path(r["file"]).stem
                    names |= {r["file"], f"{stem}_wave.png", f"{stem}_spec.png"}
        names |= {p.name for p in self.folder.glob(".seed*.wav")}
        for name in names:
            (self.folder / name).unlink(missing_ok=True)

    # ----- a batch
    def scratch(self, batch: int, length: int) -> np.memmap:
        """int16 (B, T) scratch of one batch, on disk."""
        return np.lib.format.open_memmap(self.folder / SCRATCH, mode="w+", dtype=np.int16, shape=(batch, length))

    def finish_batch(self, audio: np.ndarray, rows: list[dict], sample_rate: int) -> None:
        """Write each row's WAV from the (B, T) int16 scratch, then record the rows in the journal."""
        import soundfile as sf

        for i, row in enumerate(rows):
            row["file"] = done_name(row["seed"])
            sf.write(str(self.folder / row["file"]), np.asarray(audio[i]), sample_rate, subtype="PCM_16", format="WAV")
        self.rows += rows
        self._write_journal()
        self.drop_scratch()

    def drop_scratch(self) -> None:
        (self.folder / SCRATCH).unlink(missing_ok=True)

    # ----- the end
    def finalize(self, manifest: dict) -> list[dict]:
        """Rank by log-likelihood (by seed where the rows have none: diffusion samples), rename, write the
        manifest, drop the journal; returns the ranked rows."""
        ranked = all("log_likelihood" in r for r in self.rows)
        rows = sorted(self.rows, key=lambda r: -r["log_likelihood"] if ranked else r["seed"])
        width = len(str(len(rows)))
        for rank, row in enumerate(rows, 1):
            name = f"{rank:0{width}d}_seed{row['seed']}.wav"
            os.replace(self.folder / row["file"], self.folder / name)
            row["file"] = name
        manifest = {**manifest, "samples": rows}
        atomic_write(self.folder / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
        (self.folder / JOURNAL).unlink(missing_ok=True)
        return rows
