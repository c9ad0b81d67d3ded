"""`--format onnx` for `task: classify` runs: the classifier as one graph, with its class names
and what prepares its inputs, checked with ONNX Runtime on the run's validation split.

    text   input_ids int64 (batch, sequence) right-padded, lengths int64 (batch,) real tokens
           per row (>= 1) → logits float32 (batch, classes); tokenizer.json goes along
    images pixels float32 (batch, C, H, W) in [0, 1] → logits float32 (batch, classes); the
           run's scaler (fitted on its train split) is inside the graph as x * scale + shift

`classes.json` (the name a classify run keeps them under) holds the class names in logit
order. The weights are the ones `genlab predict` and `genlab eval` use (the checkpoint's; a
LoRA run's adapter merged in). Parity: the logits
of every validation example from ONNX Runtime against PyTorch, the predicted classes, the
tokenizer's ids on the validation texts, and dynamic batch (and sequence) axes.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.data.labelled import CLASSES_FILE
from genlab.errors import require
from genlab.exporters.card import write_model_card
from genlab.exporters.job import ExportJob
from genlab.exporters.parity import all_met, goal

MAX_ABS_LOGIT_DIFF = 1e-4
MAX_SCALING_DIFF = 1e-5
MAX_EXAMPLES = 512  # validation examples compared (the first ones, in order)


class ScaledImageClassifier(nn.Module):
    """pixels (B, C, H, W) in [0, 1] → the run's scaling (an affine map per channel or pixel,
    as its MinMax / Standard scaler computes it) → the classifier's logits (B, K)."""

    def __init__(self, classifier: nn.Module, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("scale", scale)  # (1, C, 1, 1) or (1, C, H, W)
        self.register_buffer("shift", shift)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(pixels * self.scale + self.shift)


def _load(job: ExportJob) -> Any:
    """The run's classifier family (data included: its validation split is the parity set)
    with the checkpoint's weights, on the CPU, in eval mode."""
    from genlab.training import checkpoint as ckpt
    from genlab.training.build import build_family

    family = build_family(job.cfg, torch.device("cpu"), contextlib.nullcontext(), job.run.root)
    ckpt.load_checkpoint(job.checkpoint.path, family.modules)
    family.model.eval()
    return family


def write_onnx(job: ExportJob, out: Path) -> dict[str, Any]:
    family = _load(job)
    classes = list(family.classes)
    model = job.exportable(family.model).eval()
    (out / CLASSES_FILE).write_text(
        json.dumps({"classes": classes}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if family.data.kind == "text":
        part = _write_text(job, out, family, model)
    else:
        part = _write_images(job, out, family, model)
    part["model"]["classes"] = len(classes)
    write_model_card(
        job,
        out,
        title="ONNX classifier",
        usage=part.pop("usage"),
        parity=part["parity"],
        architecture=part["model"],
    )
    return part


def _write_text(job: ExportJob, out: Path, family: Any, model: nn.Module) -> dict[str, Any]:
    from genlab.exporters.onnx import session, symbolic_axes, tokenizer_file_report, write_graph
    from genlab.exporters.tokenizer import backend_tokenizer

    tokenizer = family.data.data.tokenizer
    block = job.cfg.data.block_size
    batches, _ = family.data.held_out("val")
    # An example of 2 rows and >= 2 positions: an axis of size 1 would be fixed by export.
    width = min(block, 8)
    g = torch.Generator().manual_seed(job.cfg.seed)
    ids = torch.randint(0, tokenizer.vocab_size, (2, width), generator=g)
    lengths = torch.tensor([width, max(1, width // 2)])
    batch = torch.export.Dim("batch", min=1)
    dims: tuple[dict[int, Any], ...] = ({0: batch}, {0: batch})
    if width > 1:
        dims = ({0: batch, 1: torch.export.Dim("sequence", min=1, max=block)}, {0: batch})
    graph = out / "model.onnx"
    write_graph(model, (ids, lengths), graph, (("input_ids", "lengths"), "logits"), dims)
    backend_tokenizer(tokenizer).save(str(out / "tokenizer.json"))

    sess = session(graph)
    compared = _compare(
        model, batches, lambda x, n: sess.run(None, {"input_ids": x.numpy(), "lengths": n.numpy()})
    )
    texts = family.data.raw("val")[:MAX_EXAMPLES]
    tok = tokenizer_file_report(tokenizer, out / "tokenizer.json", "\n".join(texts))
    axes = symbolic_axes(graph)
    dynamic = all(isinstance(a, str) for a in axes["input_ids"] + axes["lengths"])
    goals = {
        **_logit_goals(compared),
        "tokenizer_identical": goal(tok["identical_ids"] and tok["identical_decode"], True, "=="),
        "dynamic_axes": goal(dynamic, True, "=="),
    }
    parity = _parity(compared, goals, axes, tokenizer=tok)
    clean = job.cfg.data.clean
    job.notes.append(
        f"Texts up to {block} tokens (the run's data.block_size; longer ones are cut to their "
        f"first {block}), right-padded with any id; `lengths` gives each row's real tokens. "
        f"genlab predict first normalises each text as the run's data.clean says "
        f"(unicode {clean.unicode_form}, whitespace and control characters): do the same for "
        "identical results."
    )
    rows = {
        "graph": "model.onnx (dynamo exporter)",
        "inputs": "input_ids int64 (batch, sequence), lengths int64 (batch,)",
        "output": f"logits float32 (batch, {len(family.classes)})",
        "context": block,
        "pooling": job.cfg.classify.pooling,
    }
    usage = _text_usage(job.target, block)
    return {"parity": parity, "model": rows, "usage": usage}


def _write_images(job: ExportJob, out: Path, family: Any, model: nn.Module) -> dict[str, Any]:
    from genlab.exporters.onnx import session, symbolic_axes, write_graph

    scaler = family.data.batches.scaler
    pixels = family.data.raw("val")[:MAX_EXAMPLES].float()  # (N, C, H, W) in [0, 1]
    c, h, w = pixels.shape[1:]
    zeros = torch.zeros(1, c, h, w, dtype=torch.float64)
    shift = scaler.transform(zeros)
    scale = scaler.transform(torch.ones_like(zeros)) - shift
    # Both scalers are affine; this checks it on the real images rather than assuming it.
    scaling_diff = float(
        (pixels.double() * scale + shift - scaler.transform(pixels.double())).abs().max()
    )
    wrapped = ScaledImageClassifier(model, scale.float(), shift.float()).eval()
    example = pixels[:2] if len(pixels) >= 2 else torch.rand(2, c, h, w)
    graph = out / "model.onnx"
    dims = ({0: torch.export.Dim("batch", min=1)},)
    write_graph(wrapped, (example,), graph, (("pixels",), "logits"), dims)

    sess = session(graph)
    bs = job.cfg.train.batch_size
    batches = [(pixels[i : i + bs],) for i in range(0, len(pixels), bs)]
    compared = _compare(wrapped, batches, lambda x: sess.run(None, {"pixels": x.numpy()}))
    axes = symbolic_axes(graph)
    goals = {
        **_logit_goals(compared),
        "scaling_in_graph": goal(scaling_diff, MAX_SCALING_DIFF),
        "dynamic_batch": goal(isinstance(axes["pixels"][0], str), True, "=="),
    }
    parity = _parity(compared, goals, axes, scaling_diff=scaling_diff)
    job.notes.append(
        f"Images of {c} channel(s), {h}x{w} pixels, values in [0, 1] (genlab predict resizes "
        "and converts files to that); the run's scaling is inside the graph."
    )
    rows = {
        "graph": "model.onnx (dynamo exporter)",
        "input": f"pixels float32 (batch, {c}, {h}, {w}) in [0, 1]",
        "output": f"logits float32 (batch, {len(family.classes)})",
        "backbone": job.family,
    }
    return {"parity": parity, "model": rows, "usage": _image_usage(job.target, (c, h, w))}


@torch.no_grad()
def _compare(model: nn.Module, batches: list[tuple], onnx_run: Any) -> dict[str, Any]:
    """PyTorch against ONNX Runtime on up to MAX_EXAMPLES examples, batch by batch (each
    batch its own size and, for texts, its own padded width)."""
    diff, same, n = 0.0, 0, 0
    for inputs in batches:
        if n >= MAX_EXAMPLES:
            break
        expected = model(*inputs).float()
        got = torch.from_numpy(onnx_run(*inputs)[0])
        diff = max(diff, float((expected - got).abs().max()))
        same += int((expected.argmax(dim=1) == got.argmax(dim=1)).sum())
        n += len(expected)
    return {"examples": n, "max_abs_logit_diff": diff, "same_class": same}


def _logit_goals(compared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "max_abs_logit_diff": goal(compared["max_abs_logit_diff"], MAX_ABS_LOGIT_DIFF),
        "same_predicted_class": goal(compared["same_class"], compared["examples"], "=="),
    }


def _parity(compared: dict, goals: dict, axes: dict, **extra: Any) -> dict[str, Any]:
    ort = require("onnxruntime", "export")
    return {
        "measured_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider), fp32",
        **compared,
        "compared_on": f"the first {compared['examples']} examples of the validation split",
        **extra,
        "axes": axes,
        "goals": goals,
        "ok": all_met(goals),
    }


def _text_usage(target: Path, block: int) -> str:
    return f"""ONNX Runtime and the `tokenizers` library, no PyTorch or genlab needed:

```python
import json
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

session = ort.InferenceSession("{target}/model.onnx")
tokenizer = Tokenizer.from_file("{target}/tokenizer.json")
classes = json.load(open("{target}/{CLASSES_FILE}"))["classes"]
texts = ["first text to label", "second one"]
rows = [tokenizer.encode(t, add_special_tokens=False).ids[:{block}] or [0] for t in texts]
ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)  # right-padded
for i, row in enumerate(rows):
    ids[i, : len(row)] = row
lengths = np.array([len(row) for row in rows], dtype=np.int64)
logits = session.run(None, {{"input_ids": ids, "lengths": lengths}})[0]
print([classes[k] for k in logits.argmax(axis=1)])
```"""


def _image_usage(target: Path, shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    return f"""ONNX Runtime, no PyTorch or genlab needed:

```python
import json
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{target}/model.onnx")
classes = json.load(open("{target}/{CLASSES_FILE}"))["classes"]
pixels = np.random.rand(4, {c}, {h}, {w}).astype(np.float32)  # your images, values in [0, 1]
logits = session.run(None, {{"pixels": pixels}})[0]
print([classes[k] for k in logits.argmax(axis=1)])
```"""


__all__ = ["ScaledImageClassifier", "write_onnx"]
