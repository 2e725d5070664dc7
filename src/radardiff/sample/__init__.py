"""Load a run, generate per-seed samples with guidance, inverse-normalise, write."""

from radardiff.models.run import LoadedRun, load_run
from radardiff.sample.generate import (
    SampleOptions,
    SampleResult,
    denoise_batch,
    generate,
    generate_batch,
)
from radardiff.sample.writers import FORMATS, grid_image, output_format

__all__ = [
    "FORMATS",
    "LoadedRun",
    "SampleOptions",
    "SampleResult",
    "denoise_batch",
    "generate",
    "generate_batch",
    "grid_image",
    "load_run",
    "output_format",
]
