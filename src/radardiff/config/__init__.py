"""Typed configs (one section per stage), TOML load/save, ``--set`` overrides, run-dir paths."""

from radardiff.config.io import (
    apply_overrides,
    atomic_write_text,
    dumps_config,
    load_config,
    save_config,
    valid_keys,
    validate_config,
)
from radardiff.config.rundir import RunDir
from radardiff.config.schema import (
    DataConfig,
    DataKind,
    DiffusionConfig,
    DistillConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "DataKind",
    "DiffusionConfig",
    "DistillConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "RunDir",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "atomic_write_text",
    "dumps_config",
    "load_config",
    "save_config",
    "valid_keys",
    "validate_config",
]
