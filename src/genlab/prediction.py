"""`genlab predict`: label new inputs with a `task: classify` run, with class probabilities.

Inputs are prepared exactly as training prepared its examples: texts get the run's cleaning
transforms (Unicode form, whitespace, control characters; not its filters: every input gets a
label) and its tokenizer, cut to data.block_size tokens; images are read as an image folder
is (resized to the run's size and channels, pixels in [0, 1]) and scaled with the run's
scaler. One row per input, in input order: {"id", "label", "probs": {class: probability}}.

    text   .jsonl / .ndjson / .csv / .tsv  records with the run's data.text_field (id: the
                                           record's data.id_field, else file and line/row)
           .txt                            one text per non-empty line (id: "line N")
    images a .png / .jpg / .jpeg file, or a folder of them (sub-folders too; id: the path)

Output (`--output`): .jsonl (one row per line) or .csv (id, label, one p_<class> column per
class); without it the rows go to stdout as JSON lines.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError, DataError

TEXT_RECORDS = (".jsonl", ".ndjson", ".csv", ".tsv")
OUTPUT_SUFFIXES = (".jsonl", ".csv")


def predict(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Predict every input's class (see the module doc); writes `output` when given."""
    from genlab.track.rundir import load_run_config, open_existing

    run = open_existing(Path(run_dir))  # the cheap checks first: torch is not imported yet
    cfg = load_run_config(run)
    if cfg.task != "classify":
        raise ConfigError(
            f"genlab predict labels inputs with a classify run, but {str(run.root)!r} is a "
            f"task {cfg.task!r} run; use `genlab generate` for it, or a run trained with "
            "task: classify"
        )
    out_path = _check_output(output, Path(input))
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}; use e.g. 64")
    from genlab.evaluation.run import pick_checkpoint
    from genlab.training import checkpoint as ckpt
    from genlab.training.classify_task import classifier_logits, read_classes
    from genlab.training.runtime import pick_device

    record = read_classes(run.root)
    classes: list[str] = record["classes"]
    info = pick_checkpoint(run, checkpoint)
    device = pick_device(cfg.train.device)
    bs = batch_size or cfg.train.batch_size
    if record.get("kind") == "image":
        ids, batches, model = _image_inputs(cfg, run.root, Path(input), len(classes), bs, device)
    else:
        ids, batches, model = _text_inputs(cfg, run.root, Path(input), len(classes), bs, device)
    ckpt.load_checkpoint(info.path, model)
    probs = classifier_logits(model.to(device), batches).softmax(dim=1)  # (N, K)
    rows = [
        {
            "id": ident,
            "label": classes[int(p.argmax())],
            "probs": {c: round(float(v), 6) for c, v in zip(classes, p.tolist())},
        }
        for ident, p in zip(ids, probs)
    ]
    if out_path is not None:
        from genlab.fileio import atomic_write_text

        atomic_write_text(out_path, format_rows(rows, classes, out_path.suffix.lower()))
    return rows


def format_rows(rows: list[dict[str, Any]], classes: list[str], suffix: str = ".jsonl") -> str:
    """The rows as JSON lines, or as CSV (id, label, p_<class> ...)."""
    if suffix != ".csv":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", *(f"p_{c}" for c in classes)])
    for r in rows:
        writer.writerow([r["id"], r["label"], *(r["probs"][c] for c in classes)])
    return buffer.getvalue()


def _check_output(output: str | Path | None, input: Path) -> Path | None:
    if output is None:
        return None
    out = Path(output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--output {str(output)[:80]!r} must end in .jsonl or .csv (the format written); "
            "e.g. --output predictions.jsonl"
        )
    if out.is_dir() or (input.exists() and out.resolve() == input.resolve()):
        raise ConfigError(
            f"--output {str(output)[:80]!r} is a directory or the input itself; name a new file"
        )
    return out


def _text_inputs(cfg, run_root: Path, path: Path, n_classes: int, bs: int, device):
    """(ids, input batches, model) for a text classify run."""
    from genlab.data.clean import transform
    from genlab.data.tokenizers import load_tokenizer
    from genlab.training.classifier_model import build_text_classifier_model
    from genlab.training.classify_task import text_batches

    ids, texts = read_texts(path, cfg.data)
    texts = [transform(t, cfg.data.clean) for t in texts]
    tokenizer = load_tokenizer(run_root)
    batches = text_batches(tokenizer, texts, cfg.data.block_size, bs, device)
    built = build_text_classifier_model(cfg, n_classes, tokenizer.vocab_size)
    return ids, batches, built.model


def read_texts(path: Path, data: Any) -> tuple[list[str], list[str]]:
    """(ids, texts) of a text input file (see the module doc)."""
    from genlab.data.tabular import read_path

    if not path.is_file():
        raise DataError(
            f"--input {str(path)[:80]!r} is not a file; pass a .jsonl, .csv or .txt of texts"
        )
    suffix = path.suffix.lower()
    if suffix in TEXT_RECORDS:
        # Labels are not needed (nor usually present) in what is to be labelled.
        docs = read_path(path, data.model_copy(update={"label_field": None})).documents
        ids, texts = [d.id for d in docs], [d.text for d in docs]
    elif suffix == ".txt":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        pairs = [(f"line {i}", line) for i, line in enumerate(lines, 1) if line.strip()]
        ids, texts = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        raise DataError(
            f"--input {str(path)[:80]!r} is not a text file genlab reads; use .jsonl, .csv, "
            ".tsv (field data.text_field) or .txt (one text per line)"
        )
    if not texts:
        raise DataError(f"--input {str(path)[:80]!r} holds no text to label; add some")
    return ids, texts


def _image_inputs(cfg, run_root: Path, path: Path, n_classes: int, bs: int, device):
    """(ids, input batches, model) for an image classify run."""
    from genlab.data.images import IMAGE_SUFFIXES, read_image_files
    from genlab.data.scale import scaler_from_state_dict
    from genlab.training.classifier_model import build_image_classifier_model, image_shape_of
    from genlab.training.classify_task import image_batches
    from genlab.training.image_tasks import SCALER_FILE

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files = [path]
    else:
        raise DataError(
            f"--input {str(path)[:80]!r} is neither a PNG/JPEG file nor a folder of them; pass "
            "the images to label"
        )
    shape = image_shape_of(cfg.data)  # (C, H, W) the run trained on
    pixels = read_image_files(files, (shape[1], shape[2]), shape[0])
    try:
        state = json.loads((run_root / SCALER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{str(run_root / SCALER_FILE)!r} is missing or damaged ({type(exc).__name__}); "
            "restore it or train the run again"
        ) from None
    batches = image_batches(scaler_from_state_dict(state), pixels, bs, device)
    model = build_image_classifier_model(cfg, n_classes, shape).model
    ids = [str(f) for f in files]
    return ids, batches, model
