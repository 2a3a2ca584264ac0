"""`sashimi data prepare` and `sashimi data info`: put a dataset under a root folder and summarize it.

Sources are local archives (.tar, .tar.gz, .tgz, .zip) or folders; `download=True` first fetches the official
public source (the Speech Commands v0.02 archive for sc09; the Hugging Face dataset repos for youtubemix and
beethoven) with checksum verification and resumable transfers. Preparing validates every file once (through
the cached index) and reports bad ones.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sashimi.audio.io import AUDIO_EXTENSIONS
from sashimi.data.config import CLIP_DATASETS, SPLITS, DataConfig
from sashimi.data.datasets import DIGITS, SPLIT_LISTS, build_dataset, load_index
from sashimi.errors import ConfigError, SashimiError

PREPARABLE = ("sc09", "youtubemix", "beethoven")
# Speech Commands releases: (url, sha256). The official SC09 evaluation classifier was trained on v0.01.
SPEECH_COMMANDS = {
    "v0.02": ("https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
              "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
    "v0.01": ("https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
              "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d"),
}
SPEECH_COMMANDS_URL, SPEECH_COMMANDS_SHA256 = SPEECH_COMMANDS["v0.02"]
NOISE_FOLDER = "_background_noise_"  # Speech Commands' background recordings (classifier augmentation)
HF_REPOS = {"youtubemix": "krandiash/youtubemix", "beethoven": "krandiash/beethoven", "sc09": "krandiash/sc09"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass
class DatasetSummary:
    name: str
    root: str
    n_files: int
    n_bad: int
    hours: float
    sample_rates: dict[int, int]  # original rate -> file count
    split_files: dict[str, int]
    split_items: dict[str, int]
    bad_list: str | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rates = ", ".join(f"{sr} Hz x{n}" for sr, n in sorted(self.sample_rates.items()))
        out = [f"dataset {self.name} at {self.root}",
               f"  files: {self.n_files} usable, {self.n_bad} bad" + (f" (list: {self.bad_list})" if self.n_bad else ""),
               f"  duration: {self.hours:.3f} h",
               f"  original sample rates: {rates}"]
        out += [f"  {s}: {self.split_files[s]} files, {self.split_items[s]} items" for s in SPLITS]
        return out + [f"  note: {n}" for n in self.notes]


def summarize(cfg: DataConfig) -> DatasetSummary:
    """Build (or reuse) the index of `cfg.root` and describe it."""
    index = load_index(cfg)
    datasets = {s: build_dataset(cfg, s, index) for s in SPLITS}
    if cfg.is_clip_dataset:
        split_files = {s: len(d) for s, d in datasets.items()}
    else:
        split_files = {s: len({int(w[0]) for w in d.windows}) for s, d in datasets.items()}
    return DatasetSummary(
        name=cfg.name, root=cfg.root, n_files=len(index.files), n_bad=len(index.bad),
        hours=index.total_frames / cfg.sample_rate / 3600,
        sample_rates=dict(Counter(f.orig_sample_rate for f in index.files)),
        split_files=split_files, split_items={s: len(d) for s, d in datasets.items()},
        bad_list=index.bad_list_path if index.bad else None,
    )


def detect_name(root: str | Path) -> str:
    """"digits", "sc09" (Speech Commands layout) or "folder" (anything else with audio)."""
    root = Path(root)
    if (root / "digits.json").is_file():
        return "digits"
    if all((root / w).is_dir() for w in DIGITS) and (root / SPLIT_LISTS["valid"]).is_file():
        return "sc09"
    return "folder"


def dataset_info(root: str | Path, name: str | None = None, **cfg_fields) -> DatasetSummary:
    name = name or detect_name(root)
    return summarize(DataConfig(name=name, root=str(root), **cfg_fields))


# ---------------------------------------------------------------- prepare


def prepare_dataset(name: str, root: str | Path, source: str | Path | None = None, download: bool = False,
                    release: str = "v0.02", **cfg_fields) -> DatasetSummary:
    """Install dataset `name` under `root` from `source` (archive or folder) or by downloading, then summarize.

    ``release``: the Speech Commands release that ``download`` fetches for sc09 (v0.02, or v0.01, the one
    the official SC09 evaluation classifier was trained on)."""
    if name not in PREPARABLE:
        raise ConfigError(f"prepare supports {', '.join(PREPARABLE)}; got {name!r} (use synth-digits for digits)")
    if release not in SPEECH_COMMANDS:
        raise ConfigError(f"release must be one of {sorted(SPEECH_COMMANDS)}, got {release!r}")
    root = Path(root)
    if download:
        if source is not None:
            raise ConfigError("give either --source or --download, not both")
        source = _download(name, root / ".download", release)
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise ConfigError(f"--source {source} does not exist")
        _install(name, source, root)
    elif not root.is_dir():
        raise ConfigError(f"{root} does not exist; give --source ARCHIVE_OR_DIR or --download")
    return summarize(DataConfig(name=name, root=str(root), **cfg_fields))


def _install(name: str, source: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        staging = root / ".extract"
        extract_archive(source, staging)
        source = staging
    if name in CLIP_DATASETS:
        _install_speech_commands(source, root)
    else:
        _install_audio_files(source, root)
    shutil.rmtree(root / ".extract", ignore_errors=True)


def _install_speech_commands(source: Path, root: Path) -> None:
    """Copy the ten digit folders and the digit lines of the split lists from a Speech Commands tree."""
    candidates = [p.parent for p in source.rglob(SPLIT_LISTS["valid"]) if (p.parent / "zero").is_dir()]
    if not candidates:
        raise ConfigError(f"{source} holds no Speech Commands tree (a folder with zero/ .. nine/ and "
                          f"{SPLIT_LISTS['valid']}, {SPLIT_LISTS['test']})")
    tree = candidates[0]
    for word in DIGITS + ((NOISE_FOLDER,) if (tree / NOISE_FOLDER).is_dir() else ()):
        if (tree / word).resolve() != (root / word).resolve():
            shutil.copytree(tree / word, root / word, dirs_exist_ok=True)
    for list_name in SPLIT_LISTS.values():
        if not (tree / list_name).is_file():
            raise ConfigError(f"{tree / list_name} is missing; the Speech Commands split lists are required")
        lines = (tree / list_name).read_text().splitlines()
        (root / list_name).write_text("".join(f"{ln}\n" for ln in lines if ln.split("/")[0] in DIGITS))


def _install_audio_files(source: Path, root: Path) -> None:
    files = [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if not files:
        raise ConfigError(f"{source} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    for p in files:
        dst = root / p.relative_to(source)
        if dst.resolve() != p.resolve():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract .tar/.tar.gz/.tgz/.zip safely (no absolute paths, no `..`, no links outside `dest`)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ConfigError(f"{archive}: unsafe path {member!r} in archive")
                zf.extractall(dest)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        else:
            raise ConfigError(f"{archive}: unsupported archive type; expected {', '.join(ARCHIVE_SUFFIXES)}")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConfigError(f"{archive}: cannot extract archive ({err})") from None


# ---------------------------------------------------------------- download (online use only)


def _download(name: str, dest: Path, release: str = "v0.02") -> Path:
    if name == "sc09":
        url, sha256 = SPEECH_COMMANDS[release]
        return download_file(url, dest / url.rsplit("/", 1)[-1], sha256)
    try:
        from huggingface_hub import snapshot_download
        # verifies each file against the hub's sha256/etag and resumes interrupted transfers
        return Path(snapshot_download(repo_id=HF_REPOS[name], repo_type="dataset", local_dir=dest / name))
    except Exception as err:  # network, auth and hub errors all mean the same thing to the user
        raise SashimiError(f"cannot download {HF_REPOS[name]} from the Hugging Face hub ({err}); "
                           f"download it elsewhere and pass --source") from None


def download_file(url: str, dest: Path, sha256: str, chunk: int = 1 << 20) -> Path:
    """HTTP(S) download resuming from `dest.part` (Range request), verified against `sha256`."""
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = have and getattr(response, "status", 200) == 206
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, chunk)
    except OSError as err:
        raise SashimiError(f"cannot download {url} ({err}); partial data kept in {part}, run again to resume") from None
    if _sha256(part) != sha256:
        part.unlink()
        raise SashimiError(f"{url}: checksum mismatch (expected sha256 {sha256}); the partial file was removed")
    part.replace(dest)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
