"""Models: the SaShiMi backbone, the autoregressive LM, configs, presets, checkpoints, official import."""
from sashimi.models.backbone import BackboneState, SaShiMi
from sashimi.models.config import PRESETS, SaShiMiConfig, preset
from sashimi.models.lm import SaShiMiLM

__all__ = ["SaShiMi", "SaShiMiLM", "SaShiMiConfig", "BackboneState", "PRESETS", "preset"]
