"""genlab.tuning: hyperparameter search (grid, random, QMC, TPE, GP, CMA-ES) over any config key,
with pruning, cross-validation, several seeds per trial and a final re-run on fresh seeds.

    from genlab.tuning import run_study, print_summary
    result = run_study(Path("examples/lm.yaml"), ["tune.n_trials=20"], None, workers=1)
    print_summary(result)

Optuna is imported lazily (inside functions), so `import genlab.tuning` stays light.
"""

from __future__ import annotations

from typing import Any

from genlab.tuning.schema import CVConfig, FinalConfig, ParamSpec, PruningConfig, TuneConfig

# genlab.config imports genlab.tuning.schema, which runs this file first; the runner imports
# genlab.config, so it is loaded on first use rather than here (no import cycle).
_LAZY = {"run_study": "runner", "StudyResult": "runner", "print_summary": "report"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"genlab.tuning.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'genlab.tuning' has no attribute {name!r}")


__all__ = [
    "CVConfig",
    "FinalConfig",
    "ParamSpec",
    "PruningConfig",
    "StudyResult",
    "TuneConfig",
    "print_summary",
    "run_study",
]
