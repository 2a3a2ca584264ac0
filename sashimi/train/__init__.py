"""Training on PyTorch Lightning: configs with overrides, the LightningModules (autoregressive and diffusion
models), checkpoints, exact resume."""
from sashimi.train.config import TrainConfig, load_config
from sashimi.train.diffusion import DiffusionTask
from sashimi.train.module import SaShiMiTask
from sashimi.train.run import resume, train

__all__ = ["SaShiMiTask", "DiffusionTask", "TrainConfig", "load_config", "resume", "train"]
