"""Fresh processes for task classify (see test_fresh_matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from freshkit import TINY_IMAGES, TINY_TEXT, genlab

# task classify: the same chain for classifiers (train → resume → eval on test → predict), on
# the built-in labelled stdlib-topics set (text backbones) and digits (an image encoder).
TINY_CLASSIFY = ["task=classify", "data.dedup.near=false", "train.max_steps=6"]
CLASSIFY_ROWS = {
    "gpt-freeze": ["data.source=stdlib-topics", "finetune.method=freeze",
                   "finetune.freeze_blocks=1"],
    "hf-lora": ["data.source=stdlib-topics", "model.family=hf", "finetune.method=lora",
                "finetune.lora.rank=2", "classify.pooling=last"],
    "digits-vae": ["model.family=vae", "classify.head=mlp", "classify.head_hidden=16"],
}  # fmt: skip


@pytest.mark.parametrize("row", list(CLASSIFY_ROWS))
def test_classify_paths_work_in_a_fresh_process(row, workdir, request):
    text = row != "digits-vae"
    overrides = [*(TINY_TEXT if text else TINY_IMAGES), *TINY_CLASSIFY, *CLASSIFY_ROWS[row]]
    if row == "gpt-freeze":
        overrides.append(f"finetune.init_from={request.getfixturevalue('base_gpt')}")
    elif row == "hf-lora":
        overrides.append(f"finetune.init_from={request.getfixturevalue('hf_model')}")
    run = workdir / f"classify-{row}"

    genlab("train", "empty.yaml", *overrides, "--run-dir", run, cwd=workdir)
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["step"] == 6 and 0 <= trained["val/f1_macro"] <= trained["val/accuracy"] + 1

    genlab("resume", run, "train.max_steps=8", cwd=workdir)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8 and steps.count(6) == 1

    genlab("eval", run, "--split", "test", cwd=workdir)
    done = json.loads((run / "metrics.json").read_text())
    classes = json.loads((run / "classes.json").read_text())["classes"]
    assert done["evaluated_step"] == 8 and 0 <= done["eval/test/f1_macro"] <= 1
    assert done["eval/test/confusion_matrix"]["labels"] == classes
    assert f"eval/test/f1/{classes[0]}" in done and (run / "plots" / "confusion.png").is_file()

    if text:
        (workdir / "texts.txt").write_text("Return the square root of x.\nOpen a socket.\n")
        inputs = workdir / "texts.txt"
    else:
        from PIL import Image
        from sklearn.datasets import load_digits

        inputs = workdir / "digits-in"
        inputs.mkdir(exist_ok=True)
        for i, image in enumerate(load_digits().images[:2]):
            Image.fromarray((image * 255 / 16).astype("uint8")).save(inputs / f"{i}.png")
    genlab("predict", run, "--input", inputs, "--output", run / "out.jsonl", cwd=workdir)
    rows = [json.loads(line) for line in (run / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["label"] in classes for r in rows)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)
    if row == "gpt-freeze":  # a classifier does not generate text: one line, exit 2
        refused = genlab("generate", run, cwd=workdir, ok=False)
        assert refused.returncode == 2 and "genlab predict" in refused.stderr
        for command in (["export", run, "--format", "gguf"], ["compress", run]):
            refused = genlab(*command, cwd=workdir, ok=False)
            assert refused.returncode == 2 and "task 'classify'" in refused.stderr
            assert "--format onnx" in refused.stderr

    # The ONNX export, run as its model card says (ONNX Runtime, `tokenizers`, numpy; no
    # genlab), labels the inputs as `genlab predict` did.
    genlab("export", run, "--format", "onnx", "--out", run / "onnx", cwd=workdir)
    record = json.loads((run / "onnx" / "export.json").read_text())
    assert record["parity"]["ok"] and record["parity"]["examples"] > 0
    assert json.loads((run / "onnx" / "classes.json").read_text())["classes"] == classes
    logits = onnx_logits(run / "onnx", inputs, text)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for row_probs, predicted in zip(probs, rows, strict=True):
        assert classes[int(row_probs.argmax())] == predicted["label"]
        assert np.allclose(row_probs, [predicted["probs"][c] for c in classes], atol=1e-4)


def onnx_logits(export: Path, inputs: Path, text: bool) -> np.ndarray:
    """The model card's recipe: texts tokenized with tokenizer.json, right-padded, with their
    lengths; images read with PIL, scaled to [0, 1] (the graph holds the run's scaling)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    if not text:
        from PIL import Image

        files = sorted(inputs.glob("*.png"))
        pixels = np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in files])
        return session.run(None, {"pixels": pixels[:, None]})[0]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    texts = [t for t in inputs.read_text().splitlines() if t.strip()]
    encoded = [tokenizer.encode(t, add_special_tokens=False).ids or [0] for t in texts]
    ids = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.int64)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = row
    lengths = np.array([len(row) for row in encoded], dtype=np.int64)
    return session.run(None, {"input_ids": ids, "lengths": lengths})[0]
