"""radardiff: train, sample and evaluate diffusion models on radar satellite imagery."""

from radardiff._version import __version__

__all__ = ["__version__"]
