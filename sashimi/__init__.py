"""sashimi: raw audio generation with state-space models (S4, S4D, SaShiMi; autoregressive and DiffWave)."""
from sashimi.models import PRESETS, DiffWave, DiffWaveConfig, SaShiMi, SaShiMiConfig, SaShiMiLM, preset
from sashimi.models.io import load_model, save_model
from sashimi.ssm import S4, param_groups

__version__ = "0.1.0"
__all__ = ["S4", "SaShiMi", "SaShiMiLM", "SaShiMiConfig", "DiffWave", "DiffWaveConfig", "PRESETS", "preset",
           "load_model", "save_model", "param_groups"]
