"""eSpeak NG speech synthesis, for the built-in digits dataset.

Two backends with one interface (`sample_rate`, `variants`, `has_language`, `synth`):
- `LibEspeak`: libespeak-ng and its voice data from the `espeakng-loader` wheel, driven through ctypes
  (needs only `pip install espeakng-loader`);
- `EspeakCommand`: the `espeak-ng` program (e.g. `apt-get install espeak-ng`), used when the wheel is missing.
`open_synthesizer()` picks the first that works and otherwise says what to install.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from sashimi.errors import SashimiError

INSTALL_HINT = ("install the eSpeak NG wheel with `pip install espeakng-loader` "
                "(or the program with `apt-get install espeak-ng`)")

# espeak.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH = 1, 2, 3
_EE_OK = 0


class SynthesisError(SashimiError):
    """eSpeak NG is missing or failed."""


def _variants_in(data_path: str | os.PathLike) -> list[str]:
    """Voice variant names ("m3", "f2", "klatt", ...): the files of `espeak-ng-data/voices/!v`."""
    folder = Path(data_path) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _check_params(rate: int, pitch: int, amplitude: int) -> None:
    if not (80 <= rate <= 450 and 0 <= pitch <= 99 and 0 <= amplitude <= 200):
        raise SynthesisError(f"eSpeak parameters out of range: rate={rate} (80..450), pitch={pitch} (0..99), "
                             f"amplitude={amplitude} (0..200)")


class LibEspeak:
    """libespeak-ng through ctypes. The library keeps global state, so use one instance per process."""

    name = "espeakng-loader"
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as err:
            raise SynthesisError(f"the espeakng-loader package is not installed; {INSTALL_HINT}") from err
        self.data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as err:
            raise SynthesisError(f"cannot load libespeak-ng from espeakng-loader ({err}); {INSTALL_HINT}") from err
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if self.sample_rate <= 0:
            raise SynthesisError(f"libespeak-ng failed to initialise with data at {self.data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)
        self._libc = ctypes.CDLL(None)  # espeak-ng also draws from libc rand() (e.g. in klatt voices)
        self._lib = lib
        self.variants = _variants_in(self.data_path)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0  # continue synthesis

    def has_language(self, language: str) -> bool:
        return self._lib.espeak_SetVoiceByName(language.encode()) == _EE_OK

    def synth(self, text: str, language: str, variant: str, rate: int, pitch: int, amplitude: int,
              seed: int = 0) -> np.ndarray:
        """int16 samples `(L,)` at `self.sample_rate`.

        The random generators are re-seeded from `seed` first, so the output does not depend on what this
        process synthesized before (and the digits set is the same for any number of workers).
        """
        _check_params(rate, pitch, amplitude)
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        if self._lib.espeak_SetVoiceByName(f"{language}+{variant}".encode()) != _EE_OK:
            raise SynthesisError(f"eSpeak NG has no voice {language}+{variant}")
        for param, value in ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch), (_ESPEAK_VOLUME, amplitude)):
            self._lib.espeak_SetParameter(param, value, 0)
        self._chunks.clear()
        data = text.encode()
        if self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None) != _EE_OK:
            raise SynthesisError(f"eSpeak NG failed to synthesize {text!r}")
        self._lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


class EspeakCommand:
    """The `espeak-ng` program: one process per utterance, output through a temporary WAV file."""

    name = "espeak-ng program"

    def __init__(self, program: str = "espeak-ng"):
        exe = shutil.which(program)
        if exe is None:
            raise SynthesisError(f"the {program} program is not on PATH; {INSTALL_HINT}")
        self.exe = exe
        version = self._run("--version").stdout
        match = re.search(r"Data at:\s*(.+)", version)
        self.variants = _variants_in(match.group(1).strip()) if match else []
        _, self.sample_rate = self._synth_file("-v", "en", "zero")

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.exe, *args], capture_output=True, text=True, check=True, timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            raise SynthesisError(f"{self.exe} {' '.join(args)} failed: {err}") from None

    def has_language(self, language: str) -> bool:
        try:
            self._run("-v", language, "-q", "zero")
        except SynthesisError:
            return False
        return True

    def synth(self, text: str, language: str, variant: str, rate: int, pitch: int, amplitude: int,
              seed: int = 0) -> np.ndarray:
        """int16 samples `(L,)` at `self.sample_rate`; each call is a fresh process, so `seed` is not needed."""
        _check_params(rate, pitch, amplitude)
        wave, _ = self._synth_file("-v", f"{language}+{variant}", "-s", str(rate), "-p", str(pitch),
                                   "-a", str(amplitude), text)
        return wave

    def _synth_file(self, *args: str) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "say.wav")
            self._run(*args[:-1], "-w", out, args[-1])
            wave, sr = sf.read(out, dtype="int16", always_2d=True)
        return wave[:, 0], int(sr)


def open_synthesizer(backend: str = "auto") -> LibEspeak | EspeakCommand:
    """"auto" tries the espeakng-loader wheel, then the espeak-ng program; "lib" / "command" force one."""
    if backend not in ("auto", "lib", "command"):
        raise SynthesisError(f"espeak backend must be auto, lib or command; got {backend!r}")
    errors = []
    for kind, cls in (("lib", LibEspeak), ("command", EspeakCommand)):
        if backend in ("auto", kind):
            try:
                synth = cls()
            except SynthesisError as err:
                errors.append(str(err))
                continue
            if not synth.variants:
                errors.append(f"{synth.name} found no voice variants (voices/!v)")
                continue
            return synth
    raise SynthesisError("eSpeak NG is not available: " + "; ".join(errors))
