"""The unit every data step works on: one document with where it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    id:       stable identifier (the user's `data.id_field` when set, else derived from source)
    text:     the document's text
    source:   where it came from (file path or built-in corpus name)
    position: where inside the source (line/row number, topic name), for provenance
    label:    optional class label (for stratified splits and class-conditional evaluation)
    """

    id: str
    text: str
    source: str
    position: str = ""
    label: str | None = None
