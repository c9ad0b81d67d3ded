"""The config reference, generated from the schema: every key with its meaning, default and
allowed values. `genlab config --show [SECTION]` prints it; docs/CONFIG.md is the same text as
Markdown (`genlab config --show --markdown`; a test keeps the file current). The schema in
genlab/config.py is the one source: a key's meaning is its Field description, a section's
its class docstring, ranges come from the Field constraints and choices from the types.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from genlab.errors import ConfigError

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="))


@dataclass(frozen=True)
class KeyDoc:
    """One row of the reference: a key (or a section, `is_section`) and what it means."""

    key: str
    kind: str  # "int", "float", "one of a|b", "list of ...", "section", ...
    default: str
    allowed: str  # ranges, e.g. "> 0, <= 1"; "" when any value of the kind goes
    meaning: str
    is_section: bool = False


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation holds directly (X, or X | None), not in a list."""
    if typing.get_origin(annotation) is list:
        return []
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _kind(annotation: Any) -> str:
    """A short human name for a type: `int`, `one of a|b`, `list of str`, `float or null`."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(annotation))
    if _is_union(annotation):
        parts = [_kind(a) for a in typing.get_args(annotation) if a is not type(None)]
        nullable = type(None) in typing.get_args(annotation)
        return " or ".join(parts) + (" or null" if nullable else "")
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list of {_kind(item)}"
    if origin is tuple:
        return "[" + ", ".join(_kind(a) for a in typing.get_args(annotation)) + "]"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _allowed(field: FieldInfo) -> str:
    found = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    return json.dumps(value if not isinstance(value, tuple) else list(value))


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def iter_keys(model: type[BaseModel], prefix: str = "") -> Iterator[KeyDoc]:
    """Every key of `model` in schema order, a section's own row before its keys."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sections = _sections(field.annotation)
        if sections:
            section = sections[0]
            meaning = field.description or _first_paragraph(section.__doc__)
            default = "null" if field.get_default(call_default_factory=True) is None else ""
            yield KeyDoc(key, "section", default, "", meaning, is_section=True)
            yield from iter_keys(section, key + ".")
            continue
        meaning = field.description or ""
        yield KeyDoc(key, _kind(field.annotation), _default(field), _allowed(field), meaning)
        item = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is list and item and _sections(item[0]):
            yield from iter_keys(item[0], key + "[].")


def reference(section: str | None = None) -> list[KeyDoc]:
    """The rows for the whole config, or for one section (`train`, `model.vae`)."""
    from genlab.config import ExperimentConfig

    rows = list(iter_keys(ExperimentConfig))
    if section is None:
        return rows
    section = section.strip(".")
    picked = [r for r in rows if r.key == section or r.key.startswith(section + ".")]
    if not picked:
        names = [r.key for r in rows if r.is_section]
        close = difflib.get_close_matches(section, [r.key for r in rows], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"no config section or key {section[:60]!r}; {hint}sections: {', '.join(names)}"[:300]
        )
    return picked


def format_text(rows: list[KeyDoc]) -> str:
    """Plain text: one line per key (`key = default  kind, range  meaning`), sections as
    headings. Lines are not wrapped, so grep finds a key with its meaning."""
    out = []
    width = max((len(r.key) + len(r.default) for r in rows if not r.is_section), default=0) + 3
    for r in rows:
        if r.is_section:
            out += ["", f"[{r.key}]  {r.meaning}".rstrip()]
            continue
        head = f"{r.key} = {r.default}".ljust(width)
        kind = f"{r.kind}{', ' + r.allowed if r.allowed else ''}"
        out.append(f"{head} {kind}" + (f"  — {r.meaning}" if r.meaning else ""))
    return "\n".join(out).strip("\n") + "\n"


def format_markdown(rows: list[KeyDoc]) -> str:
    """docs/CONFIG.md: the top-level keys, then one table per top-level section."""
    out = [
        "# Config reference",
        "",
        "Every key of a genlab config, with its default, its allowed values and what it does.",
        "Generated from the schema (`src/genlab/config.py`) by `genlab config --show --markdown`;",
        "`genlab config --show SECTION` prints the same on the console. Override any key on the",
        "command line as `key=value` (values are YAML), e.g. `train.max_steps=2000`.",
    ]
    header = ["| key | default | type and range | meaning |", "| --- | --- | --- | --- |"]
    top = [r for r in rows if "." not in r.key and not r.is_section]
    if top:
        out += ["", "## Top level", "", *header, *(_markdown_row(r) for r in top)]
    for r in rows:
        if r.is_section and "." not in r.key:
            out += ["", f"## `{r.key}`", "", r.meaning, "", *header]
        elif "." in r.key:
            out.append(_markdown_row(r))
    return "\n".join(out) + "\n"


def _markdown_row(r: KeyDoc) -> str:
    kind = "section" if r.is_section else f"{r.kind}{', ' + r.allowed if r.allowed else ''}"
    cells = [f"`{r.key}`", f"`{r.default}`" if r.default else "", kind, r.meaning]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
