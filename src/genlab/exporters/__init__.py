"""genlab.exporters: a trained run leaves genlab in the formats the ecosystem runs.

    genlab export RUN_DIR --format hf|onnx|gguf [--out DIR] [--checkpoint DIR]

- `hf` (hf.py): a directory `transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads
  without genlab: genlab's GPT as GPT-2 (gpt2.py holds the tensor mapping), the tokenizer as a
  `PreTrainedTokenizerFast` (tokenizer.py), generation_config.json and a model card (card.py).
  HF-family runs: their own architecture, `save_pretrained`. LoRA runs: merged weights, or
  with `--adapter` the adapter alone in PEFT's format.
- `onnx` (onnx.py): `model.onnx` with dynamic batch and sequence axes, checked with ONNX
  Runtime at two lengths; VAE/GAN runs (images.py): the decoder / generator, latent → image;
  `task: classify` runs (classifier.py): the classifier, inputs → class logits, with
  classes.json (and tokenizer.json for texts). hf and gguf take `task: generate` runs only.
- `gguf` (gguf.py): one GGUF file (F32, F16 or Q8_0) in llama.cpp's GPT-2 layout with the
  tokenizer embedded, read back with gguf's reader.

Every export measures its parity with the genlab model (parity.py) and writes `export.json`
(format, files with sizes and sha256, parity numbers); job.py makes the whole export atomic.
`EXPORTERS` lists the formats, imported on lookup.
"""

from __future__ import annotations

from genlab.registry import Registry

# --format name -> its Exporter (families it holds, check, write), imported on lookup.
EXPORTERS = Registry(
    "export format",
    {
        "hf": "genlab.exporters.hf:EXPORTER",
        "onnx": "genlab.exporters.onnx:EXPORTER",
        "gguf": "genlab.exporters.gguf:EXPORTER",
    },
)

__all__ = ["EXPORTERS"]
