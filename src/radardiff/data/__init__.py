"""Readers, the dataset file, normalisation, no-data masks, synthetic generators, torch Dataset."""

from radardiff.data.dataset_file import (
    KINDS,
    DatasetFile,
    DatasetInfo,
    DatasetWriter,
    write_dataset,
)
from radardiff.data.inspect import InspectResult, inspect
from radardiff.data.normalize import METHODS, Normalized, Normalizer
from radardiff.data.prepare import PrepareResult, prepare
from radardiff.data.readers import open_reader
from radardiff.data.synth import GENERATORS, synthesize

__all__ = [
    "GENERATORS",
    "KINDS",
    "METHODS",
    "DatasetFile",
    "DatasetInfo",
    "DatasetWriter",
    "InspectResult",
    "Normalized",
    "Normalizer",
    "PrepareResult",
    "inspect",
    "open_reader",
    "prepare",
    "synthesize",
    "write_dataset",
]
