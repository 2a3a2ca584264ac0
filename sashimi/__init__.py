"""sashimi: raw audio generation with state-space models (S4, S4D, SaShiMi)."""
from sashimi.models import PRESETS, SaShiMi, SaShiMiConfig, SaShiMiLM, preset
from sashimi.models.io import load_model, save_model
from sashimi.ssm import S4, param_groups

__version__ = "0.1.0"
__all__ = ["S4", "SaShiMi", "SaShiMiLM", "SaShiMiConfig", "PRESETS", "preset", "load_model", "save_model",
           "param_groups"]
