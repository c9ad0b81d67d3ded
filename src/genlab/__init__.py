"""genlab: from raw data to a tuned, stable, evaluated generative model.

The Python API (the same functions the `genlab` command calls; see genlab.api):
`load_config`, `train`, `resume`, `evaluate`, `generate`, `predict`, `tune`, `compress`,
`export`, `report`, `compare`, `runs`. They are imported on first use, so `import genlab` stays
light (no torch until a function needs it).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = (
    "load_config",
    "train",
    "resume",
    "evaluate",
    "generate",
    "predict",
    "tune",
    "compress",
    "export",
    "report",
    "compare",
    "runs",
)


def __getattr__(name: str) -> Any:
    if name in _API:
        from genlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
