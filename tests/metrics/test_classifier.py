"""The evaluation classifier: official architecture sizes, checkpoints, and a clear refusal where an audio
model is expected."""
import pytest
import torch

import sashimi
from sashimi.errors import CheckpointError, ConfigError
from sashimi.metrics.classifier import ClassifierConfig, DigitClassifier, load_classifier
from sashimi.metrics.score import SHIPPED_CLASSIFIER

TINY = ClassifierConfig(cardinality=2, depth=11, base_width=4, widen_factor=2, stem_width=8)


def test_full_size_is_the_official_resnext29_8x64d():
    config = ClassifierConfig()
    model = DigitClassifier(config)
    # 34,425,546 parameters, as the official CifarResNeXt(nlabels=10, in_channels=1) counts them
    assert sum(p.numel() for p in model.parameters()) == 34_425_546
    assert config.n_features == 1024 and config.widths == (64, 256, 512, 1024)
    assert config.inner_width(256) == 512  # 8 groups of 64 channels in the first stage


def test_shapes_features_and_logits():
    model = DigitClassifier(TINY).eval()
    images = torch.randn(3, 32, 32) * 20 - 40
    feats = model.features(images)
    assert feats.shape == (3, TINY.n_features)
    torch.testing.assert_close(model(images), model.head(feats))
    torch.testing.assert_close(model(images), model(images[:, None]))  # (B, 1, 32, 32) works too


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="classifier.depth"):
        ClassifierConfig(depth=28)
    with pytest.raises(ConfigError, match="cardinality"):
        ClassifierConfig(cardinality=0)
    with pytest.raises(ConfigError, match="unknown key"):
        ClassifierConfig.from_dict({"widht": 3})


def test_save_and_load_round_trip(tmp_path):
    model = DigitClassifier(TINY).eval()
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    images = torch.randn(2, 32, 32)
    for target in (tmp_path / "dir", tmp_path / "clf.safetensors"):
        sashimi.save_model(model, target)
        loaded = load_classifier(target)
        assert loaded.config == TINY and not loaded.training
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_an_audio_model_and_a_classifier_are_not_confused(tmp_path):
    sashimi.save_model(DigitClassifier(TINY), tmp_path / "clf")
    with pytest.raises(CheckpointError, match="evaluation classifier"):
        sashimi.load_model(tmp_path / "clf")
    sashimi.save_model(sashimi.SaShiMiLM(sashimi.preset("tiny", n_layers=1, d_model=8, d_state=8)), tmp_path / "lm")
    with pytest.raises(CheckpointError, match="not an evaluation classifier"):
        load_classifier(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="no such"):
        load_classifier(tmp_path / "missing.safetensors")


def test_the_shipped_classifier_loads():
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.fail(f"{SHIPPED_CLASSIFIER} is missing from the package")
    model = load_classifier(SHIPPED_CLASSIFIER)
    assert model.config == ClassifierConfig.small()
    assert SHIPPED_CLASSIFIER.stat().st_size < 8 * 2**20
