"""The report of one run: summary card, curves with the guard's events marked on them, the
stability timeline, throughput and memory, samples over time, evaluations, fine-tuning, the
data report, compression, and the full config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genlab.track.fmt import number, seconds
from genlab.track.report import figures, sections
from genlab.track.report.page import Page
from genlab.track.rundir import RunDir
from genlab.track.runs import RunSummary, read_json, summarize

# Keys no chart is drawn for: counters shown elsewhere, sizes of what was evaluated.
NOT_DRAWN = ("step", "time", "val/tokens", "val/bytes")
NOT_DRAWN_PREFIXES = ("guard/", "params/")


def numeric_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                keys.setdefault(k)
    return [k for k in keys if k not in NOT_DRAWN and not k.startswith(NOT_DRAWN_PREFIXES)]


def curve_groups(keys: list[str]) -> list[dict[str, Any]]:
    """Which keys share a chart: losses (train and val), learning rates, grad norms,
    throughput, memory; every other key gets a small chart of its own."""
    groups = [
        ("loss", "loss", [k for k in keys if k.startswith("train/") and k.endswith("loss")]
         + [k for k in keys if k == "val/loss"], False, True),
        ("learning rate", "lr", [k for k in keys if k.startswith("train/") and k.endswith("lr")],
         False, False),
        ("gradient norm (before clipping)", "norm",
         [k for k in keys if k.startswith("train/") and k.endswith("grad_norm")], True, True),
        ("throughput", "per second",
         [k for k in keys if k.startswith("throughput/") and k.endswith("_per_s")], False, False),
        # A fraction of the machine's measured matmul peak: its own axis, not a rate's.
        ("model FLOPs utilization", "fraction of peak",
         [k for k in keys if k == "throughput/mfu"], False, False),
    ]  # fmt: skip
    # Peak memory (hundreds of MB) and the model's state (maybe under one) each get a chart.
    groups += [(k, "MB", [k], False, False) for k in keys if k.startswith("memory/")]
    out, used = [], set()
    for title, unit, members, log_y, with_events in groups:
        if members:
            out.append({"title": title, "unit": unit, "keys": members, "log_y": log_y,
                        "events": with_events, "main": True})  # fmt: skip
            used.update(members)
    for key in keys:
        if key not in used:
            out.append({"title": key, "unit": "", "keys": [key], "log_y": False,
                        "events": False, "main": False})  # fmt: skip
    return out


def event_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        detail = dict(e.get("detail") or {})
        updater = detail.pop("updater", "")
        shown = []
        for k, v in detail.items():
            if isinstance(v, list):
                v = f"{len(v)} ids" if len(v) > 6 else v
            shown.append(f"{k}={number(v) if isinstance(v, float) else v}")
        rows.append(
            {
                "step": e.get("step"),
                "kind": e.get("kind", ""),
                "action": e.get("action", ""),
                "updater": updater,
                "detail": ", ".join(map(str, shown)),
            }
        )
    return rows


def summary_cards(s: RunSummary, params: dict[str, int], data: dict[str, Any]) -> list:
    steps = f"{s.step:,} of {s.max_steps:,}" if s.max_steps else f"{s.step:,}"
    cards = [
        ("family", s.family),
        ("status", s.status),
        ("steps", steps),
        ("wall time", seconds(s.wall_s) if s.wall_s is not None else "n/a"),
    ]
    if params:
        total = sum(params.values())
        parts = " + ".join(f"{k} {v / 1e6:.3g}M" for k, v in params.items())
        cards.append(("parameters", parts if len(params) > 1 else f"{total / 1e6:.3g}M"))
    trainable = next((r for r in s.records if "params/trainable" in r), None)
    if trainable:
        cards.append(("trainable", f"{trainable['params/trainable'] / 1e6:.3g}M"))
    source = s.config.get("data", {}).get("source", "")
    tokenizer = s.config.get("data", {}).get("tokenizer", "")
    if s.family in ("vae", "gan"):
        cards.append(("data", str(source)))
    else:
        vocab = data.get("vocab_size", "?")
        cards.append(("data", f"{source} · {tokenizer} tokens (vocab {vocab})"))
    if s.metric is not None:
        cards.append((s.metric, number(s.value)))
    cards.append(("guard events", s.guard_events))
    return cards


def build_context(path: Path, page: Page) -> dict[str, Any]:
    s = summarize(path)
    run = RunDir(Path(path))
    params = sections.parameters(run)
    data = sections.data_report(run)
    charts = []
    for group in curve_groups(numeric_keys(s.records)):
        lines = {k: figures.series(s.records, k) for k in group["keys"]}
        sparse = [k for k, (steps, _) in lines.items() if len(steps) < len(s.records) / 2]
        fig = figures.curves(
            group["title"],
            lines,
            group["unit"],
            group["log_y"],
            s.events if group["events"] else (),
            markers=sparse,
        )
        charts.append({"main": group["main"], "figure": fig, "title": group["title"]})
    evaluation = sections.evaluations(s.final)
    robustness_figures = [
        figures.grouped(
            f"robustness ({title}): change from the clean value",
            sorted({x for c in curves.values() for x in c}),
            {p: [c.get(x) for x in sorted({x for c in curves.values() for x in c})]
             for p, c in curves.items()},
            "strength",
            "change",
        )
        for title, curves in evaluation["robustness"].items()
    ]  # fmt: skip
    diagnosis = run.diagnosis.read_text(encoding="utf-8") if run.diagnosis.is_file() else ""
    return {
        "summary": s,
        "run_path": str(Path(path).resolve()),
        "summary_cards": summary_cards(s, params, data),
        "params": params,
        "charts": charts,
        "events": event_rows(s.events),
        "diagnosis": diagnosis,
        "samples": sections.samples(run),
        "evaluation": evaluation,
        "robustness_figures": robustness_figures,
        "finetune": sections.finetune(s.final),
        "data": data,
        "compression": sections.compression(run),
        "other_plots": sections.other_plots(run),
        "config_text": run.config.read_text(encoding="utf-8", errors="replace"),
        "has_tensorboard": run.tensorboard.is_dir(),
        "mlflow": read_json(run.mlflow_run),
    }


def write_run_report(path: Path, out: Path) -> Path:
    page = Page("run report", Path(path).resolve().name)
    context = build_context(path, page)
    return page.write(out, "run.html.j2", **context)
