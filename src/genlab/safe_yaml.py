"""YAML for configs, with bounds: a config never executes code (PyYAML's safe loader) and never
exhausts the machine either.

Three bounds, each a one-line ConfigError instead of a crash or a hang:
- size: a config file or override value over MAX_CHARS characters is refused unread;
- nesting: more than MAX_DEPTH levels of lists/mappings are refused while composing (PyYAML
  recurses per level, so [[[[...]]]] 500 deep would end in a RecursionError);
- expansion: aliases let a small document stand for a huge one ("billion laughs": 9 lists of
  9 references, nine times over, are 9^9 values) or for itself (`a: &x [*x]`). The document
  is walked as if every alias were expanded, and refused past MAX_VALUES values or at the
  first value that contains itself.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import yaml

from genlab.errors import ConfigError

MAX_CHARS = 1_000_000  # a config is a few KB; this leaves room for long inline lists
MAX_DEPTH = 50
MAX_VALUES = 100_000
PARSED_KEPT = 16  # documents whose parse is kept (a run's config.yaml is read ~6 times)

# text -> its parsed value, most recently used last: one command reads a run's config.yaml
# from several places (the API, the evaluator, the report, the run list), and PyYAML's pure
# Python parser takes ~40-80 ms for a full config. Keyed by the text itself, so a changed
# file is parsed again; callers get their own copy.
_parsed: OrderedDict[str, Any] = OrderedDict()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_DEPTH while composing."""

    def __init__(self, stream: str, origin: str):
        super().__init__(stream)
        self._depth = 0
        self._origin = origin

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{self._origin} nests lists/mappings more than {MAX_DEPTH} levels deep "
                    f"(line {mark.line + 1}); a config needs a few levels, flatten it"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(text: str, origin: str) -> Any:
    """Parse one YAML document from `text` (safe types only) within the bounds above.
    `origin` names where it came from ("config file 'x.yaml'", "override 'a=b'") in errors;
    a YAML syntax error is raised as yaml.YAMLError for the caller to place."""
    if len(text) > MAX_CHARS:
        raise ConfigError(
            f"{origin} is {len(text):,} characters, over the {MAX_CHARS:,} a config may have; "
            "keep data out of the config (point data.source at a file)"
        )
    if text in _parsed:
        _parsed.move_to_end(text)
        return copy.deepcopy(_parsed[text])
    data = _parse(text, origin)
    _parsed[text] = data
    if len(_parsed) > PARSED_KEPT:
        _parsed.popitem(last=False)
    return copy.deepcopy(data)


def _parse(text: str, origin: str) -> Any:
    loader = _BoundedLoader(text, origin)
    try:
        data = loader.get_single_data()
    except RecursionError:  # a structure PyYAML recurses on below the composer's bound
        raise ConfigError(
            f"{origin} is nested too deeply to read; a config needs a few levels, flatten it"
        ) from None
    finally:
        loader.dispose()
    check_expansion(data, origin)
    return data


def check_expansion(data: Any, origin: str) -> None:
    """Walk `data` as if every shared (aliased) value were written out; refuse a value that
    contains itself, and a document that would expand past MAX_VALUES values."""
    count = 0
    path: set[int] = set()  # ids of the containers on the way down to the current value
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        value, leaving = stack.pop()
        if leaving:
            path.discard(id(value))
            continue
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{origin} expands to more than {MAX_VALUES:,} values (YAML aliases repeating "
                "lists?); write the values out, a config needs far fewer"
            )
        if isinstance(value, (dict, list)):
            if id(value) in path:
                raise ConfigError(
                    f"{origin} has a value that contains itself (a YAML alias such as "
                    "`&a [*a]`); remove the self-reference"
                )
            path.add(id(value))
            stack.append((value, True))
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, False) for child in children)
            if isinstance(value, dict):
                stack.extend((key, False) for key in value)


def short(value: Any, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for error messages that quote a bad value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
