"""removed.jsonl, the data report, and the empty-dataset error."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from genlab.config import CleanSection, DedupSection
from genlab.data.clean import clean
from genlab.data.dedup import deduplicate
from genlab.data.documents import Document
from genlab.data.provenance import (
    build_report,
    ensure_not_empty,
    print_report,
    write_removed,
    write_report,
)
from genlab.errors import DataError


def _docs():
    texts = [
        "short",
        "a proper document about parsing python source code",
        "a proper document about parsing python source code",
        "x" * 10,
    ]
    return [
        Document(id=f"d{i}", text=t, source="f.jsonl", position=f"f.jsonl:line {i + 1}")
        for i, t in enumerate(texts)
    ]


def test_removed_jsonl_lists_every_removed_doc_with_reason(tmp_path):
    docs = _docs()
    cleaned = clean(docs, CleanSection(min_words=2))
    deduped = deduplicate(cleaned.kept, DedupSection(near=False), seed=0)
    removals = cleaned.removed + deduped.removed
    path = write_removed(tmp_path, removals)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert {r["id"]: r["reason"] for r in rows} == {
        "d0": "min_words",
        "d3": "min_words",
        "d2": "exact_dup",
    }
    dup = next(r for r in rows if r["reason"] == "exact_dup")
    assert dup["kept_id"] == "d1"
    assert dup["kept_position"] == "f.jsonl:line 2"
    assert dup["position"] == "f.jsonl:line 3"
    assert "kept_id" not in next(r for r in rows if r["id"] == "d0")


def test_empty_dataset_error_lists_filters():
    docs = _docs()
    result = clean(docs, CleanSection(min_chars=1000))
    with pytest.raises(DataError, match=r"0 of 4 kept.*min_chars=4"):
        ensure_not_empty(result.kept, result.removed, total_before=4)
    ensure_not_empty(docs, [], total_before=4)  # not empty: no error


def test_report_json_png_and_console(tmp_path):
    docs = _docs()
    deduped = deduplicate(docs, DedupSection(near=False), seed=0)
    report = build_report(
        steps=[("read", 4, 4), ("dedup", 4, 3)],
        removals=deduped.removed,
        splits={"train": deduped.kept[:2], "val": deduped.kept[2:]},
        all_docs=docs,
    )
    paths = write_report(tmp_path, report)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["removed"] == {"exact_dup": 1}
    assert data["steps"][1] == {"step": "dedup", "before": 4, "after": 3}
    assert data["duplicates"][0]["kept"]["id"] == "d1"
    assert data["duplicates"][0]["removed"][0]["text"].startswith("a proper document")
    assert data["lengths"]["train"]["documents"] == 2
    assert (tmp_path / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert len(paths) == 2
    out = io.StringIO()
    print_report(report, Console(file=out, width=120))
    assert "exact_dup" in out.getvalue() and "dedup" in out.getvalue()
