"""Files genlab writes get the user's umask, like any file the user creates: atomic writes
(temp file + rename), safetensors (which writes 0600) and PNG grids included."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

GENLAB = str(Path(sys.executable).with_name("genlab"))
UMASK = 0o027  # so 0600 (private temp files) and 0644 (a umask of 022) both show up as wrong


def _genlab(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(cwd / "cache")}
    proc = subprocess.run(
        [GENLAB, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(UMASK),  # the user's shell umask, inherited
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_run_and_dataset_files_get_the_users_umask(tmp_path):
    from pydoc_data.topics import topics

    text = "\n\n".join(list(topics.values())[:30])
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    tiny_vae = [
        "model.family=vae", "data.source=digits", "model.vae.hidden=16", "model.vae.arch=mlp",
        "train.max_steps=4", "train.eval_every=2", "train.checkpoint_every=2",
        "train.sample_every=2", "train.eval_batches=1", "train.progress=false",
    ]  # fmt: skip
    (tmp_path / "vae.yaml").write_text("name: vae\n")
    _genlab("train", "vae.yaml", *tiny_vae, "--run-dir", "runs/vae", cwd=tmp_path)
    _genlab("eval", "runs/vae", "--metrics", "recon_mse", cwd=tmp_path)
    _genlab("data", "prepare", "vae.yaml", "data.source=corpus.txt", "model.family=gpt",
            "--out", "dataset", cwd=tmp_path)  # fmt: skip

    file_mode, dir_mode = 0o666 & ~UMASK, 0o777 & ~UMASK
    paths = [p for root in ("runs/vae", "dataset", "cache") for p in (tmp_path / root).rglob("*")]
    names = {p.name for p in paths}
    expected = {"model.safetensors", "step-4.png", "recon-step-4.png", "metrics.json",
                "loss.png", "manifest.json", "report.json", "removed.jsonl",
                "images.safetensors"}  # fmt: skip
    assert expected <= names, sorted(names)
    wrong = {
        str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) != (dir_mode if p.is_dir() else file_mode)
    }
    assert not wrong, f"expected files {oct(file_mode)}, dirs {oct(dir_mode)}; got {wrong}"
