"""Training and evaluation."""

from clipseg_lab.engine.config import ConfigError, TrainConfig
from clipseg_lab.engine.trainer import Trainer, TrainResult, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "Trainer", "train"]
