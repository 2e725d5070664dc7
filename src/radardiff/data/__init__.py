"""Readers, the dataset file, normalisation, no-data masks, synthetic generators, torch Dataset."""

from radardiff.data.dataset_file import KINDS, DatasetFile, DatasetInfo, DatasetWriter, write_dataset
from radardiff.data.normalize import METHODS, Normalized, Normalizer
from radardiff.data.synth import GENERATORS, synthesize

__all__ = [
    "GENERATORS",
    "KINDS",
    "METHODS",
    "DatasetFile",
    "DatasetInfo",
    "DatasetWriter",
    "Normalized",
    "Normalizer",
    "synthesize",
    "write_dataset",
]
