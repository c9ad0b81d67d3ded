"""Explicit registries: a table of names → "module:attribute" loaders, imported on lookup.

Every concept with several implementations (tokenizer kinds, model families, evaluators,
samplers, ...) lists its entries in one `Registry`, written out in full where the concept
lives. Looking a name up imports the module that implements it, so a fresh process finds every
entry whatever it imported before: nothing registers itself as a side effect of an import.

    TOKENIZERS = Registry("tokenizer kind", {"byte": "genlab.data.tokenizers:load_byte", ...})
    loader = TOKENIZERS.get("byte")   # imports genlab.data.tokenizers, returns load_byte
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from genlab.errors import ConfigError, GenlabError


class Registry(Mapping[str, Any]):
    """Names → lazily imported objects. `what` names the concept in error messages
    ("tokenizer kind"); an unknown name raises `error` (a GenlabError subclass) that lists the
    known names."""

    def __init__(
        self,
        what: str,
        entries: Mapping[str, str],
        error: type[GenlabError] = ConfigError,
    ):
        for name, target in entries.items():
            module, sep, attr = target.partition(":")
            if not (module and sep and attr):
                raise ValueError(f"registry entry {name!r} must be 'module:attr', not {target!r}")
        self.what = what
        self._entries = dict(entries)
        self._error = error

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The object registered as `name`, imported now; `default` when it is not a name."""
        if name not in self._entries:
            return default
        return self[name]

    def lookup(self, name: object, where: str = "") -> Any:
        """The object registered as `name`, or a one-line error naming the known names.
        `where` says where the name came from (a file or config key) for the message."""
        if not isinstance(name, str) or name not in self._entries:
            origin = f" in {where}" if where else ""
            raise self._error(
                f"unknown {self.what} {str(name)[:60]!r}{origin}; known: {', '.join(self)}"
            )
        return self[name]

    def __getitem__(self, name: str) -> Any:
        module, _, attr = self._entries[name].partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def targets(self) -> dict[str, str]:
        """name → "module:attribute", without importing anything (docs and tests)."""
        return dict(self._entries)


__all__ = ["Registry"]
