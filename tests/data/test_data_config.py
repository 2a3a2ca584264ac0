import pytest

from sashimi.data import DataConfig
from sashimi.errors import ConfigError


def test_defaults_and_round_trip():
    cfg = DataConfig(name="sc09", root="/data/sc09")
    assert (cfg.sample_rate, cfg.sample_len, cfg.quantization, cfg.bits, cfg.overlap, cfg.strict) == (
        16000, 16000, "mu-law", 8, 0, False)
    assert cfg.is_clip_dataset and not cfg.replace(name="youtubemix").is_clip_dataset
    assert DataConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("d, message", [
    ({"name": "sc09", "root": "r", "sampel_len": 3}, "unknown data config key\\(s\\): sampel_len"),
    ({"root": "r"}, "missing required key\\(s\\): name"),
    ({"name": "sc09", "root": "r", "sample_len": "16000"}, "data.sample_len must be int, got '16000'"),
    ({"name": "sc09", "root": "r", "bits": 8.0}, "data.bits must be int, got 8.0"),
    ({"name": "sc09", "root": "r", "sample_rate": True}, "data.sample_rate must be int, got True"),
    ({"name": "sc09", "root": "r", "strict": 1}, "data.strict must be bool, got 1"),
    ({"name": "sc09", "root": "r", "eval_len": "x"}, "data.eval_len must be int or None"),
    ({"name": "mnist", "root": "r"}, "data.name must be one of sc09, youtubemix, beethoven, folder, digits"),
    ({"name": "sc09", "root": "r", "quantization": "ulaw"}, "data.quantization must be one of mu-law, linear"),
    ({"name": "sc09", "root": "r", "bits": 1}, "data.bits must be in 2..16"),
    ({"name": "sc09", "root": "r", "overlap": 16000}, "data.overlap must be in \\[0, sample_len=16000\\)"),
    ({"name": "sc09", "root": "r", "sample_rate": 0}, "data.sample_rate must be positive"),
    ({"name": "sc09", "root": ""}, "data.root must name the dataset folder"),
])
def test_from_dict_rejects_bad_configs(d, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig.from_dict(d)
