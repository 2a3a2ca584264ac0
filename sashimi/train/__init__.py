"""Training on PyTorch Lightning: configs with overrides, the LightningModule, checkpoints, exact resume."""
from sashimi.train.config import TrainConfig, load_config
from sashimi.train.module import SaShiMiTask
from sashimi.train.run import resume, train

__all__ = ["SaShiMiTask", "TrainConfig", "load_config", "resume", "train"]
