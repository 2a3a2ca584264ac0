"""Models: the SaShiMi backbone, the autoregressive LM, the DiffWave diffusion model, configs, presets, checkpoints,
official import."""
from sashimi.models.backbone import BackboneState, SaShiMi
from sashimi.models.config import PRESETS, SaShiMiConfig, model_config, preset
from sashimi.models.diffwave import DiffWave
from sashimi.models.diffwave_config import DIFFWAVE_PRESETS, DiffWaveConfig
from sashimi.models.lm import SaShiMiLM

__all__ = ["SaShiMi", "SaShiMiLM", "SaShiMiConfig", "BackboneState", "PRESETS", "preset", "DiffWave",
           "DiffWaveConfig", "DIFFWAVE_PRESETS", "model_config"]
