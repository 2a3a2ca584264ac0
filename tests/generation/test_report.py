"""The listening report: static checks, and a real headless Chromium loading it (skipped without chromium)."""
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
import torch

import sashimi
from sashimi.cli.main import main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, sample_rate=8000)
    sashimi.save_model(sashimi.SaShiMiLM(cfg).eval(), tmp / "m.safetensors")
    import numpy as np
    import soundfile as sf
    sf.write(str(tmp / "p.wav"), 0.3 * np.sin(np.linspace(0, 90, 400)), 8000, subtype="PCM_16")
    threads = torch.get_num_threads()
    assert main(["generate", str(tmp / "m.safetensors"), "--n", "3", "--seconds", "0.05", "--backend", "eager",
                 "--prime", str(tmp / "p.wav"), "--out", str(tmp / "out"), "--report"]) == 0
    torch.set_num_threads(threads)
    return tmp / "out"


def test_report_lists_every_sample_with_its_plots(report):
    page = (report / "index.html").read_text()
    rows = json.loads((report / "manifest.json").read_text())["samples"]
    positions = [page.index(f"data-file='{r['file']}'") for r in rows]
    assert positions == sorted(positions)  # in likelihood order, as in the manifest
    assert "data-file='prime.wav'" in page
    for name in [r["file"] for r in rows] + ["prime.wav"]:
        stem = name[:-4]
        assert (report / f"{stem}_wave.png").stat().st_size > 1000
        assert (report / f"{stem}_spec.png").stat().st_size > 1000
        assert f"src='{name}'" in page
    assert "http://" not in page and "https://" not in page  # readable offline


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class _WebDriver:
    """Just enough W3C WebDriver (over chromedriver's HTTP API, stdlib only) to load a page and run JS."""

    def __init__(self, driver: str, browser: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={self.profile}"]
        for _ in range(100):
            try:
                caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args}}
                self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("chromedriver did not start")

    def _call(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def get(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
def test_report_plays_in_headless_chromium(report):
    browser = _WebDriver(shutil.which("chromedriver"), _chromium())
    try:
        browser.get((report / "index.html").as_uri())
        rows = json.loads((report / "manifest.json").read_text())["samples"]
        listed = browser.js("return [...document.querySelectorAll('.item')].map(e => e.dataset.file)")
        assert listed == ["prime.wav"] + [r["file"] for r in rows]
        for _ in range(100):  # media elements load asynchronously
            states = browser.js("return [...document.querySelectorAll('audio')].map(a => a.readyState)")
            if all(s > 0 for s in states):
                break
            time.sleep(0.1)
        assert len(states) == len(rows) + 1 and all(s > 0 for s in states), states
        errors = browser.js("return [...document.querySelectorAll('audio')].map(a => a.error && a.error.code)")
        assert not any(errors), errors
        durations = browser.js("return [...document.querySelectorAll('audio')].map(a => a.duration)")
        assert durations[0] == pytest.approx(0.05, abs=0.01) and durations[1] == pytest.approx(0.1, abs=0.01)
        images = browser.js("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert len(images) == 2 * (len(rows) + 1) and all(images)
    finally:
        browser.close()


def test_a_16khz_report_says_what_the_classifier_hears(tmp_path):
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64)  # 16 kHz: the classifier's rate
    sashimi.save_model(sashimi.SaShiMiLM(cfg).eval(), tmp_path / "m.safetensors")
    assert main(["generate", str(tmp_path / "m.safetensors"), "--n", "2", "--seconds", "0.02", "--backend", "eager",
                 "--out", str(tmp_path / "out"), "--report"]) == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("classifier hears") == 2


def test_an_8khz_model_gets_the_classifier_line_and_lower_rates_none(report):
    """8 kHz samples are resampled for the classifier; below 8 kHz there is too little speech band to judge."""
    from sashimi.generation.report import classifier_heard

    assert "classifier hears" in (report / "index.html").read_text()
    assert classifier_heard(report, [{"file": "x.wav"}], 4000) is None


def test_a_silent_sample_plots_at_the_floor_without_a_warning(tmp_path):
    """Digital silence (a noiseless model's pause) has zero power: drawn at -120 dB, never log10(0)."""
    import warnings

    import numpy as np

    from sashimi.generation.report import plot_audio, spectrogram_db

    wave = np.zeros(8000, dtype=np.float32)
    wave[4000:4400] = 0.5 * np.sin(np.arange(400) * 0.3)  # a tone in the middle
    _, freqs, db = spectrogram_db(wave, 8000, 256)
    assert np.isfinite(db).all() and db.min() == pytest.approx(-120) and db.max() > -40
    assert freqs[-1] == 4000  # up to the Nyquist frequency
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = plot_audio(np.zeros(8000, dtype=np.float32), 8000, tmp_path / "silent")
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
