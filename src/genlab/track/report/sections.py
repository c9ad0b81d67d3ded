"""What a run report shows beyond its curves, read from the run directory's files: samples,
evaluations (training-time estimates apart from full evaluations), fine-tuning's gain and
forgetting, the data report, compression tables, parameter counts and leftover plots.
Each reader returns plain data for the template, or an empty value when the run has none."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genlab.track.report.page import data_uri
from genlab.track.rundir import RunDir, sample_step
from genlab.track.runs import read_json

MAX_SAMPLES = 12  # per kind: evenly spaced, the first and the last always in
SAMPLE_CHARS = 3000
DRAWN_PLOTS = {"loss.png", "lr.png", "grad_norm.png"}  # the report draws these itself
ROBUSTNESS = re.compile(r"^eval/(?P<split>[^/]+)/robustness/(?:(?P<what>[^/@]+)/)?"
                        r"(?P<perturbation>[^/@]+)@(?P<strength>[0-9.e+-]+)$")  # fmt: skip


def evenly(items: list[Any], n: int) -> list[Any]:
    """Up to `n` items spread over the list, first and last included."""
    if len(items) <= n:
        return items
    picks = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in picks]


def samples(run: RunDir) -> dict[str, Any]:
    """{"kinds": {kind: {"shown": [{"step", "text"|"image"}], "total": n}}, "total": n}
    from samples/ (text files, or PNG grids: `recon` for recon-step-N.png)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if run.samples.is_dir():
        for path in run.samples.iterdir():
            step = sample_step(path)
            if step is None or path.suffix not in (".txt", ".png"):
                continue
            kind = path.stem.rpartition("step-")[0].rstrip("-") or (
                "text" if path.suffix == ".txt" else "samples"
            )
            found.setdefault(kind, []).append((step, path))
    kinds: dict[str, dict[str, Any]] = {}
    total = 0
    for kind, entries in sorted(found.items()):
        entries.sort()
        total += len(entries)
        shown: list[dict[str, Any]] = []
        for step, path in evenly(entries, MAX_SAMPLES):
            if path.suffix == ".png":
                shown.append({"step": step, "image": data_uri(path)})
            else:
                text = path.read_text(encoding="utf-8", errors="replace")
                cut = len(text) > SAMPLE_CHARS
                shown.append({"step": step, "text": text[:SAMPLE_CHARS] + ("…" if cut else "")})
        kinds[kind] = {"shown": shown, "total": len(entries)}
    return {"kinds": kinds, "total": total}


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evaluations(final: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json split in three: the training loop's estimates (`val/...` on
    train.eval_batches windows), full evaluations (`eval/<split>/<metric>` with details), and
    robustness curves (strength → change per perturbation)."""
    estimates = [
        (k, v)
        for k, v in final.items()
        if _numeric(v)
        and not k.startswith(("eval/", "finetune/"))
        and k not in ("step", "evaluated_step")
    ]
    details = final.get("details") if isinstance(final.get("details"), dict) else {}
    full: dict[str, list[dict[str, Any]]] = {}
    robustness: dict[str, dict[str, dict[float, float]]] = {}
    for key, value in final.items():
        if not key.startswith("eval/"):
            continue
        match = ROBUSTNESS.match(key)
        if match and _numeric(value):
            title = f"{match['split']}" + (f" · {match['what']}" if match["what"] else "")
            curve = robustness.setdefault(title, {}).setdefault(match["perturbation"], {0.0: 0.0})
            curve[float(match["strength"])] = float(value)
            continue
        split, _, metric = key.removeprefix("eval/").partition("/")
        entry = details.get(key, {}) if isinstance(details, dict) else {}
        settings = entry.get("details", {}) if isinstance(entry, dict) else {}
        n = entry.get("n", "") if isinstance(entry, dict) else ""
        shown = float(value) if _numeric(value) else value
        full.setdefault(split, []).append([metric, shown, n, _settings_text(settings)])
    return {
        "estimates": estimates,
        "estimated_step": final.get("step"),
        "full": full,
        "evaluated_step": final.get("evaluated_step"),
        "evaluated_checkpoint": final.get("evaluated_checkpoint"),
        "robustness": robustness,
    }


def _settings_text(settings: Any) -> str:
    """A details dict as one short line (lists and long values cut)."""
    if not isinstance(settings, dict):
        return str(settings)[:200]
    parts = []
    for k, v in settings.items():
        if isinstance(v, list | dict):
            continue
        text = f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
        parts.append(f"{k}: {text[:80]}")
    return " · ".join(parts)


def finetune(final: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in final.items() if k.startswith("finetune/")]


def data_report(run: RunDir) -> dict[str, Any]:
    """The prepared dataset the run trained on: data.json names it; its report.json and
    removed.jsonl say what cleaning and dedup removed (with examples)."""
    record = read_json(run.root / "data.json")
    if not record:
        scaler = read_json(run.root / "scaler.json")
        return {"scaler": scaler} if scaler else {}
    directory = Path(str(record.get("dataset_dir", "")))
    report = read_json(directory / "report.json") if record.get("dataset_dir") else {}
    removed = []
    removed_file = directory / "removed.jsonl"
    if record.get("dataset_dir") and removed_file.is_file():
        with removed_file.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if len(removed) >= 20:
                    break
                try:
                    removed.append(json.loads(line))
                except ValueError:
                    continue
    lengths = report.get("lengths", {})
    tokens = report.get("tokens", {})
    steps = report.get("steps") or record.get("steps", [])
    return {
        "source": ", ".join(map(str, record.get("source_files", [])[:3]))
        or record.get("config", {}).get("source", ""),
        "tokenizer": record.get("tokenizer"),
        "vocab_size": record.get("vocab_size"),
        "directory": str(directory) if record.get("dataset_dir") else "",
        "found": bool(report),
        "steps": [
            [s.get("step"), s.get("before"), s.get("after"), s.get("before", 0) - s.get("after", 0)]
            for s in steps
        ],
        "removed": report.get("removed", {}),
        "splits": [
            [name, stats.get("documents", ""), tokens.get(name, "")]
            + [stats.get(k, "") for k in ("min", "median", "max")]
            for name, stats in lengths.items()
        ],
        "top_tokens": report.get("top_tokens", [])[:20],
        "duplicates": report.get("duplicates", [])[:5],
        "removed_examples": [
            [r.get("id"), r.get("reason"), r.get("kept_id") or "", r.get("similarity", "")]
            for r in removed
        ],
    }


def compression(run: RunDir) -> list[dict[str, Any]]:
    """compression.json, whatever its shape: each list of objects becomes a table, the other
    values one key/value table."""
    data = read_json(run.root / "compression.json")
    if not data:
        return []
    tables, scalars = [], []

    def visit(value: Any, name: str) -> None:
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value for k in row))
            rows = [[_cell(row.get(c, "")) for c in columns] for row in value]
            tables.append({"title": name or "compression", "columns": columns, "rows": rows})
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(v, f"{name}.{k}" if name else str(k))
        else:
            scalars.append([name, _cell(value)])

    visit(data, "")
    if scalars:
        tables.insert(0, {"title": "summary", "columns": ["key", "value"], "rows": scalars})
    return tables


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)[:200]
    return value


def parameters(run: RunDir) -> dict[str, int]:
    """Parameters per module of the newest consolidated checkpoint, read from the
    safetensors headers (no weights loaded). EMA copies are left out."""
    steps = []
    if run.checkpoints.is_dir():
        for d in run.checkpoints.glob("step-*"):
            tail = d.name.removeprefix("step-")
            if tail.isdigit() and (d / "manifest.json").is_file():
                steps.append((int(tail), d))
    if not steps:
        return {}
    newest = max(steps)[1]
    counts = {}
    for path in sorted(newest.glob("*.safetensors")):
        if "ema" in path.stem:
            continue
        try:
            with path.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
        except (OSError, ValueError):
            continue
        counts[path.stem] = sum(
            math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__"
        )
    return counts


def other_plots(run: RunDir) -> list[dict[str, str]]:
    """PNGs under plots/ the page does not draw itself (robustness, compression, ...)."""
    if not run.plots.is_dir():
        return []
    return [
        {"name": p.name, "image": data_uri(p)}
        for p in sorted(run.plots.glob("*.png"))
        if p.name not in DRAWN_PLOTS
    ]
