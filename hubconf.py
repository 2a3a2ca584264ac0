"""torch.hub entry points: ``torch.hub.load(<clone of this repo>, "sashimi_digits", source="local")`` loads a model
shipped in the package, offline. Each entry is a shipped model by name (``sashimi models`` lists them)."""
dependencies = ["torch", "safetensors"]


def _shipped(name: str):
    from sashimi.models.io import load_model

    return load_model(name)


def sashimi_digits():
    """The autoregressive SaShiMi trained on the built-in spoken digits (8 kHz, 8-bit mu-law; its card:
    sashimi/models/pretrained/digits/README.md)."""
    return _shipped("digits")


def sashimi_digits_m1():
    """SaShiMi conditioned on the digit, in one voice (eSpeak m1): pass labels (indices into ``model.config.labels``)
    to generate; the shipped model heard saying the digit asked for most often (8 kHz, 8-bit mu-law; its card:
    sashimi/models/pretrained/digits-m1/README.md)."""
    return _shipped("digits-m1")


def sashimi_digits_diffwave():
    """The DiffWave with a SaShiMi backbone trained on the built-in spoken digits without background noise (8 kHz
    float waveforms; its card: sashimi/models/pretrained/digits-diffwave/README.md)."""
    return _shipped("digits-diffwave")
