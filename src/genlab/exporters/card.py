"""The model card (`README.md`) every export carries: what the model is, the data and training
it came from (the run's config.yaml and data.json), its evaluation numbers (metrics.json), the
parity measured at export, how to use the files, and the caveats. Numbers are read from the
run, never typed in; a missing or damaged file leaves its section saying so."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from genlab.exporters.job import ExportJob


def write_model_card(
    job: ExportJob,
    out: Path,
    *,
    title: str,
    usage: str,
    parity: dict[str, Any],
    architecture: dict[str, Any],
    front_matter: dict[str, Any] | None = None,
) -> Path:
    """Write `out/README.md`. `usage`: a markdown section body (code included);
    `architecture`: rows for the model table (name → value)."""
    cfg = job.cfg
    info = job.describe_checkpoint()
    ema = " (EMA of the weights)" if info["ema_weights"] else ""
    parts = []
    if front_matter:
        parts.append("---\n" + "".join(f"{k}: {_yaml(v)}\n" for k, v in front_matter.items()))
        parts[-1] += "---\n"
    parts.append(
        f"# {cfg.name} — {title}\n\n"
        f"Exported by genlab from the run `{job.run.root.name}` at step {info['step']}{ema}, "
        f"checkpoint `{info['path']}`. `export.json` lists every file with its sha256.\n"
    )
    parts.append("## Model\n\n" + _table(architecture))
    parts.append("## Data\n\n" + _data_section(job))
    parts.append("## Training\n\n" + _table(_training_rows(job)))
    parts.append("## Evaluation\n\n" + _metrics_section(job.run.root / "metrics.json"))
    parts.append("## Parity with the genlab model\n\n" + _parity_section(parity))
    parts.append("## Use\n\n" + usage.strip() + "\n")
    if job.notes:
        parts.append("## Limitations\n\n" + "".join(f"- {n}\n" for n in job.notes))
    path = out / "README.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _yaml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items() if v is not None]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) and value != 0 else str(value)
    return str(value).replace("|", "\\|")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _data_section(job: ExportJob) -> str:
    d = job.cfg.data
    rows: dict[str, Any] = {"source": d.source}
    if job.family in ("gpt", "hf"):
        rows["tokenizer"] = d.tokenizer
        rows["context (data.block_size)"] = d.block_size
    split = d.split
    rows["split (train / val / test)"] = f"{split.train:g} / {split.val:g} / {split.test:g}"
    manifest = _read_json(job.run.root / "data.json")
    for name, part in ((manifest or {}).get("splits") or {}).items():
        if isinstance(part, dict):
            docs, size = part.get("documents"), part.get("bytes")
            rows[f"{name} split"] = f"{docs} documents, {size:,} bytes" if size else docs
    return _table(rows)


def _training_rows(job: ExportJob) -> dict[str, Any]:
    cfg = job.cfg
    rows: dict[str, Any] = {
        "steps (this checkpoint)": job.checkpoint.step,
        "optimizer": f"{cfg.optim.name}, lr {cfg.optim.lr:g}",
        "weight decay": cfg.optim.weight_decay,
        "batch size": cfg.train.batch_size,
        "precision": cfg.train.precision,
        "seed": cfg.seed,
    }
    if cfg.finetune.init_from is not None:
        rows["fine-tuned from"] = f"`{cfg.finetune.init_from}` ({cfg.finetune.method})"
    return rows


def _metrics_section(path: Path) -> str:
    metrics = _read_json(path)
    if metrics is None:
        return "No `metrics.json` in the run (run `genlab eval RUN_DIR` to add it).\n"
    numbers = {
        k: v
        for k, v in metrics.items()
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if not numbers:
        return "The run's `metrics.json` holds no metrics yet.\n"
    step = metrics.get("evaluated_step", metrics.get("step"))
    head = f"From the run's `metrics.json` (step {step}).\n\n" if step is not None else ""
    return head + _table(numbers)


def _parity_section(parity: dict[str, Any]) -> str:
    rows = {}
    for name, g in (parity.get("goals") or {}).items():
        verdict = "met" if g["met"] else "NOT met"
        rows[name] = f"{_fmt(g['value'])} ({g['rule']} {_fmt(g['limit'])}: {verdict})"
    ppl = parity.get("perplexity")
    if isinstance(ppl, dict):
        rows["perplexity (genlab → export)"] = (
            f"{_fmt(ppl['reference'])} → {_fmt(ppl['export'])} ({ppl['relative_change']:+.3%})"
        )
    other = parity.get("transformers")
    if isinstance(other, dict) and "max_abs_logit_diff" in other:
        rows["max_abs_logit_diff through transformers' GGUF loader (tanh GELU)"] = other[
            "max_abs_logit_diff"
        ]
    what = parity.get("measured_with", "")
    return (f"Measured with {what}.\n\n" if what else "") + _table(rows)


__all__ = ["write_model_card"]
