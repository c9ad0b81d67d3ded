"""The fresh-process matrix's image rows (see test_fresh_matrix.py), and image generation."""

from __future__ import annotations

import re

import pytest

from freshkit import TINY_IMAGES, cli_chain, genlab
from testkit import SYS_TAKES_NO_WRITES, immutable


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_every_cli_path_works_in_a_fresh_process_images(family, workdir, request):
    cli_chain(family, workdir, request)


def _image_run(workdir, family: str):
    """The matrix row's run (trained to step 10 by the chain above, in this module's
    workdir), or, when this test runs alone, the same run trained here."""
    run = workdir / family
    if not (run / "metrics.json").is_file():
        genlab("train", "empty.yaml", *TINY_IMAGES, f"model.family={family}",
               "train.max_steps=10", "--run-dir", run, cwd=workdir)  # fmt: skip
    return run


def test_image_generate_and_config_show_in_a_fresh_process(workdir):
    """`genlab generate` on image runs writes PNG grids (a VAE also its labelled
    reconstructions), reproducibly by --seed; text options are refused on them; `genlab
    config --show` prints the schema's keys with their meaning."""
    from PIL import Image

    gan, vae = _image_run(workdir, "gan"), _image_run(workdir, "vae")
    first = genlab("generate", gan, "--num-samples", "10", "--seed", "3", "--out", "a.png",
                   cwd=workdir)  # fmt: skip
    genlab("generate", gan, "--num-samples", "10", "--seed", "3", "--out", "b.png", cwd=workdir)
    assert "a.png" in first.stdout
    grid = Image.open(workdir / "a.png")
    assert grid.size == ((4 * 9 + 1) * 8, (3 * 9 + 1) * 8)  # 10 digits: 4 x 3 cells of 8x8, x8
    assert (workdir / "a.png").read_bytes() == (workdir / "b.png").read_bytes()
    refused = genlab("generate", gan, "--prompt", "The ", cwd=workdir, ok=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--prompt does not apply to a gan run" in refused.stderr
    if SYS_TAKES_NO_WRITES:
        nowhere = genlab("generate", gan, "--out", "/sys/digits.png", cwd=workdir, ok=False)
        assert nowhere.returncode == 2 and "'/sys' takes no writes" in nowhere.stderr

    genlab("generate", vae, "--num-samples", "4", cwd=workdir)
    samples = vae / "samples" / "generated-step-10-seed-0.png"
    recon = vae / "samples" / "generated-step-10-seed-0-recon.png"
    assert Image.open(samples).size == ((2 * 9 + 1) * 8, (2 * 9 + 1) * 8)
    assert Image.open(recon).height == 4 * (9 * 8) + 8  # 16 held-out images: 2 pairs of rows

    shown = genlab("config", "--show", "train", cwd=workdir)
    assert re.search(r"^train\.max_steps = 1000 +int, > 0  — iterations to train", shown.stdout,
                     re.MULTILINE)  # fmt: skip
    assert "optim.lr" not in shown.stdout
    unknown = genlab("config", "--show", "trian", cwd=workdir, ok=False)
    assert unknown.returncode == 2 and "did you mean 'train'" in unknown.stderr


def test_image_generate_in_a_run_that_takes_no_writes_is_one_line(workdir):
    """Without --out the grid goes into RUN_DIR/samples: where that takes no writes (a
    read-only run) the command says so before loading the model, and how to go on."""
    samples = _image_run(workdir, "gan") / "samples"
    with immutable(samples):
        nowhere = genlab("generate", samples.parent, cwd=workdir, ok=False)
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    assert "takes no writes" in nowhere.stderr and "pass --out with a .png path" in nowhere.stderr
