"""Provenance: what every data step removed and why, and the data report.

`Removal` is the record every filter and deduplicator produces for a document it dropped.
`write_removed` turns them into `removed.jsonl`; `build_report` / `write_report` /
`print_report` summarise a prepared dataset (counts per step, length histogram, top tokens,
duplicate clusters) as `report.json` + PNGs and a rich table. matplotlib and rich are imported
inside the functions that draw, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genlab.data.documents import Document
from genlab.errors import DataError
from genlab.fileio import atomic_write_text

REMOVED_FILE = "removed.jsonl"
REPORT_FILE = "report.json"
LENGTHS_PLOT = "lengths.png"


@dataclass(frozen=True)
class Removal:
    """One dropped document: which one (id, source, position) and why (the filter name).

    For duplicates, kept_* name the document that was kept in its place and `similarity` the
    estimated Jaccard similarity (1.0 for exact duplicates).
    """

    id: str
    source: str
    position: str
    reason: str
    kept_id: str | None = None
    kept_source: str | None = None
    kept_position: str | None = None
    similarity: float | None = None

    @classmethod
    def of(
        cls,
        doc: Document,
        reason: str,
        kept: Document | None = None,
        similarity: float | None = None,
    ) -> Removal:
        """Build the record for `doc`, removed for `reason` (in favour of `kept`, if any)."""
        return cls(
            id=doc.id,
            source=doc.source,
            position=doc.position,
            reason=reason,
            kept_id=None if kept is None else kept.id,
            kept_source=None if kept is None else kept.source,
            kept_position=None if kept is None else kept.position,
            similarity=similarity,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; duplicate-only keys are left out for filter removals. (Every
        field is a str, a float or None: no `asdict` deep copy, which cost ~10x this.)"""
        return {k: v for k, v in vars(self).items() if v is not None}


def reason_counts(removals: Iterable[Removal]) -> dict[str, int]:
    """How many documents each filter (reason) removed, sorted by reason name."""
    counts = Counter(r.reason for r in removals)
    return dict(sorted(counts.items()))


def write_removed(directory: Path, removals: Iterable[Removal]) -> Path:
    """Write `removed.jsonl` (one JSON object per removed document) atomically; return its path."""
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in removals]
    path = Path(directory) / REMOVED_FILE
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def ensure_not_empty(
    docs: Sequence[Document], removals: Iterable[Removal], total_before: int
) -> None:
    """Raise DataError when filtering left nothing, listing what each filter removed."""
    if not docs:
        ensure_kept(0, reason_counts(removals), total_before)


def ensure_kept(kept: int, removed_by_reason: Mapping[str, int], total_before: int) -> None:
    """`ensure_not_empty` from counts (what a streaming build keeps instead of lists)."""
    if kept:
        return
    counts = dict(sorted(removed_by_reason.items()))
    listed = ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"
    raise DataError(
        f"no documents left after cleaning and deduplication (0 of {total_before} kept); "
        f"removed per filter: {listed}; loosen those filters in data.clean / data.dedup "
        "or add more data"
    )


@dataclass
class DataReport:
    """Summary of a prepared dataset, JSON-serialisable via `to_dict`.

    steps:       (step name, documents before, documents after) in pipeline order
    removed:     documents removed per reason
    lengths:     split name -> document lengths in characters (for the histogram)
    top_tokens:  most frequent tokens (or words) with counts
    duplicates:  example clusters: {"kept": {...}, "removed": [{...}, ...]}
    """

    steps: list[tuple[str, int, int]] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    top_tokens: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as written to report.json (length lists summarised, not dumped)."""
        return {
            "steps": [{"step": s, "before": b, "after": a} for s, b, a in self.steps],
            "removed": self.removed,
            "lengths": {name: _length_stats(v) for name, v in self.lengths.items()},
            "top_tokens": [{"token": t, "count": c} for t, c in self.top_tokens],
            "duplicates": self.duplicates,
        }


def build_report(
    steps: Sequence[tuple[str, int, int]],
    removals: Sequence[Removal],
    splits: Mapping[str, Sequence[Document]],
    all_docs: Sequence[Document] = (),
    token_lists: Iterable[Sequence[int]] | None = None,
    tokenizer: Any = None,
    top_k: int = 20,
    max_clusters: int = 5,
) -> DataReport:
    """Assemble a DataReport.

    `all_docs` are the documents before deduplication (used to show the text of duplicate
    clusters). Top tokens are counted from `token_lists` decoded with `tokenizer` when both
    are given, otherwise from whitespace words of the splits' texts.
    """
    lengths = {name: [len(d.text) for d in docs] for name, docs in splits.items()}
    if token_lists is not None and tokenizer is not None:
        counts: Counter[int] = Counter()
        for ids in token_lists:
            counts.update(int(i) for i in ids)
        top = [(tokenizer.decode([i]), c) for i, c in counts.most_common(top_k)]
    else:
        words: Counter[str] = Counter()
        for docs in splits.values():
            for d in docs:
                words.update(d.text.split())
        top = words.most_common(top_k)
    return DataReport(
        steps=list(steps),
        removed=reason_counts(removals),
        lengths=lengths,
        top_tokens=top,
        duplicates=duplicate_examples(removals, all_docs, max_clusters=max_clusters),
    )


def duplicate_examples(
    removals: Iterable[Removal],
    all_docs: Sequence[Document] = (),
    max_clusters: int = 5,
    snippet: int = 160,
) -> list[dict[str, Any]]:
    """The largest duplicate clusters (kept doc + removed docs), with text snippets if known."""
    by_id = {d.id: d for d in all_docs}
    clusters: dict[str, list[Removal]] = {}
    for r in removals:
        if r.kept_id is not None:
            clusters.setdefault(r.kept_id, []).append(r)
    largest = sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:max_clusters]

    def describe(doc_id: str, source: str | None, position: str | None) -> dict[str, Any]:
        known = by_id.get(doc_id)
        return describe_document(doc_id, source, position, known and known.text, snippet)

    examples = []
    for kept_id, members in largest:
        first = members[0]
        examples.append(
            {
                "kept": describe(kept_id, first.kept_source, first.kept_position),
                "removed": [
                    {
                        **describe(r.id, r.source, r.position),
                        "reason": r.reason,
                        "similarity": r.similarity,
                    }
                    for r in members
                ],
            }
        )
    return examples


def describe_document(
    doc_id: str, source: str | None, position: str | None, text: str | None, snippet: int = 160
) -> dict[str, Any]:
    """A document as a duplicate cluster in the report shows it (text cut to `snippet`)."""
    entry: dict[str, Any] = {"id": doc_id, "source": source, "position": position}
    if text is not None:
        entry["text"] = text[:snippet]
    return entry


def write_report(directory: Path, report: DataReport) -> list[Path]:
    """Write report.json and the length histogram PNG into `directory`; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / REPORT_FILE]
    atomic_write_text(written[0], json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if any(len(v) for v in report.lengths.values()):
        written.append(_plot_lengths(directory / LENGTHS_PLOT, report.lengths))
    return written


def print_report(report: DataReport, console: Any = None) -> None:
    """Show the report as rich tables (step counts, removals, top tokens) on the console."""
    from rich.table import Table

    from genlab.track.console import make_console

    console = console or make_console()
    steps = Table(title="data preparation")
    for col in ("step", "before", "after", "removed"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    for name, before, after in report.steps:
        steps.add_row(name, str(before), str(after), str(before - after))
    console.print(steps)
    if report.removed:
        why = Table(title="removed documents by reason")
        why.add_column("reason")
        why.add_column("documents", justify="right")
        for reason, n in report.removed.items():
            why.add_row(reason, str(n))
        console.print(why)
    if report.lengths:
        sizes = Table(title="splits (characters per document)")
        for col in ("split", "documents", "min", "median", "max"):
            sizes.add_column(col, justify="left" if col == "split" else "right")
        for name, values in report.lengths.items():
            s = _length_stats(values)
            sizes.add_row(name, str(s["documents"]), str(s["min"]), str(s["median"]), str(s["max"]))
        console.print(sizes)
    if report.top_tokens:
        shown = ", ".join(f"{t!r}:{c}" for t, c in report.top_tokens[:10])
        console.print(f"top tokens: {shown}")


def _length_stats(values: Sequence[int]) -> dict[str, int]:
    if not len(values):
        return {"documents": 0, "min": 0, "median": 0, "max": 0, "total": 0}
    ordered = np.sort(np.asarray(values, dtype=np.int64))
    return {
        "documents": int(ordered.size),
        "min": int(ordered[0]),
        "median": int(ordered[ordered.size // 2]),
        "max": int(ordered[-1]),
        "total": int(ordered.sum()),
    }


def _plot_lengths(path: Path, lengths: Mapping[str, Sequence[int]]) -> Path:
    import numpy as np

    from genlab.track.figures import new_figure, plain_log_ticks, save_figure

    fig, (ax,) = new_figure(6, 4)
    # Document lengths are heavy-tailed (a few long documents, many short ones): on a linear
    # axis the short ones crowd into the first bin. Log-spaced bins on a log axis show both.
    every = [v for values in lengths.values() for v in values if v > 0]
    log = bool(every) and max(every) > 10 * min(every)
    bins = np.geomspace(min(every), max(every), 40) if log else 40
    for name, values in lengths.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({len(values)})")
    if log:
        plain_log_ticks(ax, "x")
    ax.set_xlabel("document length (characters" + (", log scale)" if log else ")"))
    ax.set_ylabel("documents")
    ax.set_title("document lengths per split")
    ax.legend()
    return save_figure(fig, path, dpi=100)
