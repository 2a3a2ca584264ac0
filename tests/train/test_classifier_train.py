"""Training the evaluation classifier: the loss falls, the run directory and resume work as for
`sashimi train`, the balanced stream and the augmentation are reproducible."""
import numpy as np
import pytest

from sashimi.cli.main import main
from sashimi.errors import ConfigError
from sashimi.metrics.augment import AugmentConfig, augment
from sashimi.metrics.classifier import load_classifier
from sashimi.train.classifier import load_classifier_config
from sashimi.train.clips import BalancedStream, balanced_epoch
from sashimi.train.logs import read_metrics

TINY = ["classifier.cardinality=2", "classifier.depth=11", "classifier.base_width=4", "classifier.widen_factor=2",
        "classifier.stem_width=8"]


def _overrides(root, **extra):
    values = {"data.name": "sc09", "data.root": str(root), "trainer.batch_size": 8, "trainer.max_steps": 12,
              "trainer.val_every": 6, "trainer.checkpoint_every": 3, "trainer.log_every": 1,
              "trainer.progress_bar": "false", "trainer.val_batch_size": 16, "optim.lr": 0.05,
              "schedule.name": "constant", **extra}
    return TINY + [f"{k}={v}" for k, v in values.items()]


def test_training_lowers_the_loss_and_exports_a_classifier(digit_tones, tmp_path):
    run = tmp_path / "run"
    overrides = _overrides(digit_tones, **{"augment.p": 0.0, "optim.lr": 0.02, "trainer.max_steps": 24,
                                         "trainer.val_every": 12})
    assert main(["classifier", "train", "classifier-digits", *overrides, "--run-dir", str(run)]) == 0
    metrics = read_metrics(run)
    losses = [v for _, v in metrics["train/loss"]]
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
    assert len(metrics["val/accuracy"]) == 2
    assert load_classifier(run / "model").config.stem_width == 8
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()


def test_resume_continues_to_the_same_weights(digit_tones, tmp_path):
    import torch

    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["classifier", "train", "classifier-digits", *_overrides(digit_tones, **{"trainer.max_steps": 6}),
                 "--run-dir", str(full)]) == 0
    assert main(["classifier", "train", "classifier-digits", *_overrides(digit_tones, **{"trainer.max_steps": 3}),
                 "--run-dir", str(part)]) == 0
    assert main(["classifier", "train", "--resume", str(part), "trainer.max_steps=6"]) == 0
    a, b = load_classifier(full / "model"), load_classifier(part / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_config_errors_are_clear(digit_tones):
    with pytest.raises(ConfigError, match="classifier.size"):
        load_classifier_config("classifier-digits", ["classifier.size=huge"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_classifier_config("classifier-digits", ["model.d_model=3"])
    with pytest.raises(ConfigError, match="not a classifier config"):
        load_classifier_config("demo")
    assert main(["train", "classifier-digits"]) == 2  # the audio trainer points to `sashimi classifier train`


def test_balanced_stream_is_balanced_and_position_addressable():
    labels = np.array([0] * 90 + [1] * 10)
    drawn = balanced_epoch(labels, seed=0, epoch=0)
    assert 0.35 < (labels[drawn] == 1).mean() < 0.65  # rare class drawn as often as the common one
    stream = iter(BalancedStream(labels, batch_size=4, seed=1))
    first = [next(stream) for _ in range(40)]
    resumed = iter(BalancedStream(labels, batch_size=4, seed=1, start_batch=6))
    assert [next(resumed) for _ in range(16)] == first[24:40]
    assert [p for _, p in first] == list(range(40))


def test_augmentation_is_fixed_by_its_generator_and_keeps_the_length():
    wave = np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.5
    a = augment(wave, np.random.default_rng([3, 7]), AugmentConfig(p=1.0), length=16000, sample_rate=16000)
    b = augment(wave, np.random.default_rng([3, 7]), AugmentConfig(p=1.0), length=16000, sample_rate=16000)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16000,) and a.dtype == np.float32 and not np.array_equal(a, wave)
    same = augment(wave, np.random.default_rng(0), AugmentConfig(p=0.0), length=16000, sample_rate=16000)
    np.testing.assert_array_equal(same, wave)
