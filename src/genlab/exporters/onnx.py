"""`--format onnx`: `model.onnx` for ONNX Runtime, with dynamic batch and sequence axes.

Language models (GPT, HF family; LoRA merged): input `input_ids` (batch, sequence) int64 →
output `logits` (batch, sequence, vocab) float32, any sequence length up to the context; the
tokenizer goes along as `tokenizer.json` (Hugging Face `tokenizers` format). VAE / GAN runs
export their decoder / generator instead (images.py).

The graph comes from `torch.onnx.export(..., dynamo=True)` with `torch.export.Dim` axes. A
known pitfall is a dynamic axis that silently becomes fixed at the example's size
(pytorch#152018), so the export is checked twice: the graph's input and output axes must be
symbolic, and ONNX Runtime must match PyTorch at two different sequence lengths (and two batch
sizes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from genlab.config import IMAGE_FAMILIES
from genlab.errors import require
from genlab.exporters.card import write_model_card
from genlab.exporters.job import Exporter, ExportJob
from genlab.exporters.parity import (
    all_met,
    context_length,
    goal,
    greedy,
    greedy_report,
    held_out,
    max_abs_logit_diff,
    tokenizer_report,
)
from genlab.exporters.tokenizer import backend_tokenizer

MAX_ABS_LOGIT_DIFF = 1e-4
EXTERNAL_DATA_BYTES = 1 << 30  # above this the weights go to model.onnx.data (2 GB protobuf cap)


def _check(job: ExportJob) -> None:
    for module in ("onnx", "onnxruntime", "onnxscript"):
        require(module, "export")
    if job.family == "hf":
        require("transformers", "export")
    if job.family in IMAGE_FAMILIES:
        from genlab.exporters import images

        images.check(job)


def write_graph(
    module: torch.nn.Module,
    examples: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[tuple[str, ...], str],
    dims: tuple[dict[int, Any], ...],
) -> None:
    """Export `module(*examples)` to `path`: input names `names[0]` (one per example), output
    name `names[1]`, and per input the axes that are dynamic (`dims`: axis →
    torch.export.Dim; the output's follow from the graph)."""
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    # The exporter logs a warning per torchvision operator it skips when torchvision is not
    # installed (genlab's graphs use none): not the user's to read.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # nor is its deprecation chatter
            torch.onnx.export(
                module,
                examples,
                str(path),
                input_names=list(names[0]),
                output_names=[names[1]],
                dynamic_shapes=dims,
                dynamo=True,
                external_data=size > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)


def symbolic_axes(path: Path) -> dict[str, list[str | int]]:
    """Each graph input's and output's axes: a name where dynamic, a number where fixed."""
    onnx = require("onnx", "export")
    graph = onnx.load(str(path), load_external_data=False).graph
    axes = {}
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        axes[value.name] = [d.dim_param or d.dim_value for d in dims]
    return axes


def session(path: Path) -> Any:
    """An ONNX Runtime CPU session for `path`."""
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_fn(sess: Any) -> Any:
    """The session as a function of torch tensors (one input, first output)."""
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])

    return run


def tokenizer_file_report(genlab_tokenizer: Any, path: Path, text: str) -> dict[str, Any]:
    """`tokenizer_report` of the written tokenizer.json, read back with `tokenizers` (as a
    user of the export would), against genlab's tokenizer on `text`."""
    tokenizers = require("tokenizers", "export")
    reread = tokenizers.Tokenizer.from_file(str(path))
    return tokenizer_report(
        genlab_tokenizer,
        lambda t: reread.encode(t, add_special_tokens=False).ids,
        lambda ids: reread.decode(ids, skip_special_tokens=False),
        text,
    )


def _write(job: ExportJob, out: Path) -> dict[str, Any]:
    if job.cfg.task == "classify":
        from genlab.exporters import classifier

        return classifier.write_onnx(job, out)
    if job.family in IMAGE_FAMILIES:
        from genlab.exporters import images

        return images.write_onnx(job, out)
    loaded = job.lm()
    model = job.exportable(loaded.model)
    model.eval()
    context = context_length(model)
    held = held_out(loaded)
    batch = torch.export.Dim("batch", min=1)
    # Up to the position table. (The example has 2 rows of 8: an axis of size 1 in the
    # example would be specialised to 1 by torch.export.)
    sequence = torch.export.Dim("sequence", min=1, max=context)
    example = held.windows(min(context, 8), 2)[:, :-1]
    graph = out / "model.onnx"
    write_graph(model, (example,), graph, (("input_ids",), "logits"), ({0: batch, 1: sequence},))
    backend_tokenizer(loaded.tokenizer).save(str(out / "tokenizer.json"))

    sess = session(graph)
    onnx_logits = runtime_fn(sess)
    lengths = sorted({context, max(1, context // 2 - 1)}, reverse=True)
    diffs = {}
    for n_rows, length in zip((4, 3), lengths):  # two batch sizes as well
        diffs[str(length)] = max_abs_logit_diff(
            model, onnx_logits, held.windows(length, n_rows)[:, :-1]
        )
    prompts = held.prompts()
    reference = greedy(loaded.model, prompts, context)
    report = greedy_report(
        reference, greedy(onnx_logits, prompts, context), loaded.tokenizer.decode
    )
    tok = tokenizer_file_report(loaded.tokenizer, out / "tokenizer.json", held.text)
    axes = symbolic_axes(graph)
    dynamic = all(isinstance(a, str) for a in axes["input_ids"] + axes["logits"][:2])
    goals = {
        **{f"max_abs_logit_diff@{n}": goal(d, MAX_ABS_LOGIT_DIFF) for n, d in diffs.items()},
        "greedy_identical": goal(report["identical"], True, "=="),
        "tokenizer_identical": goal(tok["identical_ids"] and tok["identical_decode"], True, "=="),
        "dynamic_axes": goal(dynamic, True, "=="),
    }
    ort = require("onnxruntime", "export")
    parity = {
        "measured_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider), fp32",
        "axes": axes,
        "max_abs_logit_diff": diffs,
        "greedy": report,
        "tokenizer": tok,
        "goals": goals,
        "ok": all_met(goals),
    }
    job.notes.append(
        f"Sequences up to {context} tokens (the context); batch any size. The graph returns "
        "logits for every position (no KV cache): decode by feeding the growing sequence."
    )
    rows = {
        "graph": "model.onnx (dynamo exporter)",
        "input": "input_ids int64 (batch, sequence)",
        "output": f"logits float32 (batch, sequence, {_vocab(model)})",
        "context": context,
    }
    usage = _usage(job.target, held.prompts(1)[0], loaded.tokenizer.decode, context)
    write_model_card(job, out, title="ONNX", usage=usage, parity=parity, architecture=rows)
    return {"parity": parity, "model": rows}


def _vocab(model: torch.nn.Module) -> int:
    return int(model.vocab_size)  # GPT and HFCausalLM both expose it


def _usage(target: Path, prompt_ids: list[int], decode: Any, context: int) -> str:
    prompt = decode(prompt_ids)
    return f"""ONNX Runtime and the `tokenizers` library, no PyTorch or genlab needed:

```python
import onnxruntime as ort
from tokenizers import Tokenizer

session = ort.InferenceSession("{target}/model.onnx")
tokenizer = Tokenizer.from_file("{target}/tokenizer.json")
ids = tokenizer.encode({prompt!r}).ids
for _ in range(20):  # greedy decoding, the context cut to its last {context} tokens
    logits = session.run(None, {{"input_ids": np.array([ids[-{context}:]])}})[0]
    ids.append(int(logits[0, -1].argmax()))
print(tokenizer.decode(ids))
```"""


EXPORTER = Exporter(
    families=("gpt", "hf", "vae", "gan"), check=_check, write=_write, tasks=("generate", "classify")
)

__all__ = [
    "EXPORTER",
    "MAX_ABS_LOGIT_DIFF",
    "runtime_fn",
    "session",
    "symbolic_axes",
    "tokenizer_file_report",
    "write_graph",
]
