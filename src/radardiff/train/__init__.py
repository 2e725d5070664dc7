"""The training loop (accelerate), EMA, checkpoints, resume, logging, validation."""

from radardiff.models.run import load_model
from radardiff.train.checkpoint import CheckpointState, read_state
from radardiff.train.ema import EMA
from radardiff.train.loop import Trainer, TrainingDiverged, TrainResult, train
from radardiff.train.step import train_step

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
