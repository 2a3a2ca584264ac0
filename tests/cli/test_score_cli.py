"""`sashimi score` end to end on tiny data: the table, the JSON, the selection, the report, bad input."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.metrics.classifier import ClassifierConfig, DigitClassifier

TINY = ClassifierConfig(cardinality=2, depth=11, base_width=4, widen_factor=2, stem_width=8)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    sashimi.save_model(DigitClassifier(TINY).eval(), path)
    return path


@pytest.fixture
def samples(digit_tones, tmp_path):
    """12 one-second clips with a manifest, as `sashimi generate` writes them."""
    out = tmp_path / "samples"
    out.mkdir()
    clips = sorted(digit_tones.glob("*/spk0002_nohash_0.wav")) + sorted(digit_tones.glob("[ot]*/spk0003_nohash_0.wav"))
    rows = []
    for i, clip in enumerate(clips[:12]):
        name = f"{i + 1:02d}_seed{i}.wav"
        shutil.copy(clip, out / name)
        rows.append({"file": name, "seed": i, "log_likelihood": -1000.0 - i, "bits_per_sample": 1.0})
    (out / "manifest.json").write_text(json.dumps({"samples": rows}))
    return out


def _score(capsys, *args):
    rc = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_table_and_json(classifier, digit_tones, samples, capsys):
    rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones)
    assert rc == 0
    for word in ("FID (down)", "IS (up)", "mIS (up)", "AM (down)", "NDB (down)", "Train", "Test", "Samples"):
        assert word in out
    rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--json")
    result = json.loads(out)
    for key in ("fid", "is", "mis", "am", "ndb", "n_samples", "mean_confidence", "class_counts", "reference"):
        assert key in result
    assert result["n_samples"] == 12 and sum(result["class_counts"].values()) == 12
    assert set(result["class_counts"]) == set(TINY.classes)
    for row in ("train", "test"):
        assert {"fid", "is", "mis", "am", "ndb", "accuracy"} <= set(result["reference"][row])
    assert result["reference"]["train"]["fid"] == pytest.approx(0, abs=1e-6)  # train against itself
    assert (digit_tones / ".sashimi_cache" / "score").is_dir()  # reference cached per classifier


def test_selection_by_likelihood(classifier, digit_tones, samples, capsys):
    counts = {}
    for how in ("none", "official", "0.25:0.75"):
        rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--json",
                            "--select", how)
        assert rc == 0
        counts[how] = json.loads(out)["n_samples"]
    # official: half of the 12 (6), band [40%, 95%) of that half's likelihood order -> 6*0.4=2 .. int(5.7)=5
    assert counts == {"none": 12, "official": 3, "0.25:0.75": 6}


def test_selection_keeps_the_middle_of_the_likelihood_order():
    from sashimi.metrics.score import SampleSet, select

    ll = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    kept = select(SampleSet(None, [str(i) for i in range(10)], ll), "0.4:0.9")
    assert sorted(ll[kept]) == [4.0, 5.0, 6.0, 7.0, 8.0]  # least likely 40% and most likely 10% dropped


def test_report_shows_what_the_classifier_hears(classifier, digit_tones, samples, capsys):
    rc, _, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--report")
    assert rc == 0
    page = (samples / "index.html").read_text()
    assert "classifier hears" in page and "FID" in page and (samples / "classes.png").is_file()


def test_labels_in_the_manifest_give_how_often_the_label_asked_for_is_heard(classifier, digit_tones, samples,
                                                                           capsys):
    manifest = samples / "manifest.json"
    rows = json.loads(manifest.read_text())["samples"]
    rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--json")
    assert json.loads(out)["accuracy"] is None  # no labels: nothing was asked for
    heard = json.loads(out)["class_counts"]
    predicted = max(heard, key=heard.get)
    for r in rows:  # ask every sample for the class heard most often: the accuracy is its share
        r["label"] = predicted
    manifest.write_text(json.dumps({"samples": rows}))
    rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--json")
    assert json.loads(out)["accuracy"] == pytest.approx(heard[predicted] / 12)
    rc, out, _ = _score(capsys, samples, "--classifier", classifier, "--reference", digit_tones, "--report")
    page = (samples / "index.html").read_text()
    assert f"asked for <b>{predicted}</b>" in page and "The classifier hears the label asked for in" in page


def _write(path, wave, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype="PCM_16")


@pytest.mark.parametrize("case, message", [
    ("short-8k", "at least 1 s (8000 samples at 8000 Hz)"),
    ("stereo", "2 channels"),
    ("short", "at least 1 s"),
    ("empty", "no .wav or .flac files"),
    ("missing", "not in the folder"),
    ("extra", "does not list"),
    ("select", "expected official, none or LOW:HIGH"),
    ("no-manifest", "needs the log-likelihoods"),
    ("no-reference", "--reference DATA_ROOT is needed"),
])
def test_bad_input_is_one_clear_line(classifier, digit_tones, samples, tmp_path, capsys, case, message):
    folder, extra = tmp_path / "bad", ["--reference", digit_tones]
    folder.mkdir()
    tone = np.sin(np.linspace(0, 3000, 16000)).astype(np.float32) * 0.3
    if case == "short-8k":
        _write(folder / "a.wav", tone[:6000], 8000)
    elif case == "stereo":
        _write(folder / "a.wav", np.stack([tone, tone], 1), 16000)
    elif case == "short":
        _write(folder / "a.wav", tone[:12000], 16000)
    elif case == "missing":
        folder = samples
        next(folder.glob("01_*.wav")).unlink()
    elif case == "extra":
        folder = samples
        _write(folder / "stray.wav", tone, 16000)
    elif case == "select":
        folder, extra = samples, extra + ["--select", "0.9:0.1"]
    elif case == "no-manifest":
        _write(folder / "a.wav", tone, 16000)
        extra += ["--select", "official"]
    elif case == "no-reference":
        folder, extra = samples, []
    rc, out, err = _score(capsys, folder, "--classifier", classifier, *extra)
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_out_of_the_box_with_the_shipped_classifier_and_reference(digit_tones, samples, capsys):
    """No --classifier, no --reference: the classifier and the digits statistics shipped in the package."""
    rc, out, _ = _score(capsys, samples, "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["n_samples"] == 12 and result["reference"]["test"]["accuracy"] >= 0.98
    assert result["reference"]["train"]["n_samples"] > 9000  # statistics of the 12,000-clip digits set
    assert result["is_textbook"] <= 10 + 1e-9  # the textbook IS is bounded by the number of classes


def test_clips_at_other_rates_are_resampled_for_the_classifier(classifier, tmp_path):
    """An 8 kHz model's samples are scored as they are: soxr to 16 kHz, then the first second."""
    from sashimi.audio.io import resample
    from sashimi.metrics.score import hear, read_clip

    t = np.arange(8000) / 8000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    _write(tmp_path / "a.wav", tone, 8000)
    clip = read_clip(tmp_path / "a.wav")
    assert clip.shape == (16000,)
    np.testing.assert_allclose(clip, resample(tone, 8000, 16000)[:16000], atol=1e-3)  # PCM_16 rounding
    assert set(hear(tmp_path, ["a.wav"], classifier)) == {"a.wav"}
