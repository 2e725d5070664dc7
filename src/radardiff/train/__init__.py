"""The training loop (accelerate), EMA, checkpoints, resume, logging, validation."""

from radardiff.train.checkpoint import CheckpointState, load_model, read_state
from radardiff.train.ema import EMA
from radardiff.train.loop import Trainer, TrainingDiverged, TrainResult, train, train_step

__all__ = [
    "EMA",
    "CheckpointState",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "load_model",
    "read_state",
    "train",
    "train_step",
]
