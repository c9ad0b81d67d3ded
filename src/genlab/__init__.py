"""genlab: from raw data to a tuned, stable, evaluated generative model."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
