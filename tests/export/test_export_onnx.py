"""`--format onnx`: ONNX Runtime and `tokenizers`, in a process that never imports genlab (nor
torch), reproduce genlab's logits at two sequence lengths and two batch sizes and its greedy
text; VAE decoders and GAN generators reproduce the images genlab's own sampling path makes."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from exportkit import fresh_python, lm_reference

import genlab

ORT_LM = r"""
import json, sys
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

spec = json.loads(sys.argv[1])
session = ort.InferenceSession(spec["dir"] + "/model.onnx", providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(spec["dir"] + "/tokenizer.json")
out = {"diffs": {}}
for ref in spec["references"]:
    windows = np.array(ref["windows"], dtype=np.int64)
    logits = session.run(None, {"input_ids": windows})[0]
    out["diffs"][str(windows.shape)] = float(np.abs(logits - np.load(ref["logits_file"])).max())
ref = spec["references"][0]
ids = [tok.encode(p).ids for p in ref["prompts"]]
n = ref["block_size"]
texts = []
for prompt in ids:
    seq = list(prompt)
    for _ in range(64):
        logits = session.run(None, {"input_ids": np.array([seq[-n:]], dtype=np.int64)})[0]
        seq.append(int(logits[0, -1].argmax()))
    texts.append(tok.decode(seq[len(prompt):]))
out.update(prompt_ids=ids, texts=texts, torch_loaded="torch" in sys.modules)
out["inputs"] = [[i.name, i.shape] for i in session.get_inputs()]
print(json.dumps(out))
"""

ORT_IMAGES = r"""
import json, sys
import numpy as np
import onnxruntime as ort

spec = json.loads(sys.argv[1])
out = {}
for name, item in spec.items():
    session = ort.InferenceSession(item["dir"] + "/model.onnx", providers=["CPUExecutionProvider"])
    latents = np.load(item["latents"])
    images = np.concatenate([session.run(None, {"latent": latents[:7]})[0],
                             session.run(None, {"latent": latents[7:]})[0]])
    diff = float(np.abs(images - np.load(item["images"])).max())
    out[name] = {"diff": diff, "shape": list(images.shape),
                 "min": float(images.min()), "max": float(images.max())}
print(json.dumps(out))
"""


def test_onnx_export_matches_genlab_at_two_lengths_without_genlab(lm_runs, tmp_path):
    run = lm_runs["char"]
    result = genlab.export(run, "onnx", tmp_path / "onnx")
    full = lm_reference(run, tmp_path / "ref")
    short = lm_reference(run, tmp_path / "ref", length=11, n_windows=2)
    got = fresh_python(
        ORT_LM, {"dir": str(result.path), "references": [full.payload(), short.payload()]}
    )
    assert set(got["diffs"]) == {"(3, 32)", "(2, 11)"}
    assert all(d <= 1e-4 for d in got["diffs"].values()), got["diffs"]
    assert got["prompt_ids"] == full.prompt_ids
    assert got["texts"] == full.greedy_texts
    assert not got["torch_loaded"]  # ONNX Runtime alone
    assert got["inputs"] == [["input_ids", ["batch", "sequence"]]]
    parity = result.record["parity"]
    assert parity["ok"] and len(parity["max_abs_logit_diff"]) == 2
    assert parity["goals"]["dynamic_axes"]["met"]


@torch.no_grad()
def _genlab_images(run, latents: torch.Tensor) -> torch.Tensor:
    """The images genlab's own sampling path makes from `latents` (run_images' route: the
    model's decoder / the EMA generator, then the batches' to_pixels)."""
    from genlab import config
    from genlab.training import checkpoint as ckpt
    from genlab.training.build import build_family

    cfg = config.load(run / "config.yaml")
    family = build_family(cfg, torch.device("cpu"), contextlib.nullcontext(), run)
    ckpt.load_checkpoint(ckpt.latest(run / "checkpoints").path, family.modules)
    if cfg.model.family == "vae":
        model = family.model.eval()
        x = model.output_mean(model.decode(latents))
    else:
        generator = (family.ema.module if family.ema is not None else family.gan.generator).eval()
        x = generator(latents)
    return family.batches.to_pixels(x)


def test_vae_and_gan_decoders_match_genlab_in_onnx_runtime(image_runs, tmp_path):
    from genlab.exporters.images import load_pixel_decoder

    spec = {}
    for name, run in image_runs.items():
        result = genlab.export(run, "onnx", tmp_path / name)
        assert result.record["parity"]["ok"]
        assert result.record["parity"]["latents"] == 64
        dim = 4 if name == "vae" else 8
        latents = torch.randn(64, dim, generator=torch.Generator().manual_seed(3))
        images = _genlab_images(run, latents)
        np.save(tmp_path / f"{name}-z.npy", latents.numpy())
        np.save(tmp_path / f"{name}-x.npy", images.numpy())
        spec[name] = {
            "dir": str(result.path),
            "latents": str(tmp_path / f"{name}-z.npy"),
            "images": str(tmp_path / f"{name}-x.npy"),
        }
        # The documented PyTorch route (with genlab) gives the same images.
        decoder = load_pixel_decoder(result.path)
        with torch.no_grad():
            assert torch.allclose(decoder(latents), images, atol=1e-6)
    got = fresh_python(ORT_IMAGES, spec)
    for name in image_runs:
        assert got[name]["diff"] <= 1e-5, name
        assert got[name]["shape"] == [64, 1, 8, 8]
        assert got[name]["min"] >= 0.0 and got[name]["max"] <= 1.0
