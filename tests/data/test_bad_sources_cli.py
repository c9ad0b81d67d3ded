"""Hostile or careless data sources through the real `genlab` command: a lone surrogate in
JSONL, short CSV rows, huge CSV cells, a glob over a symlink loop, a full disk in the
dataset cache. Each is handled or one line with exit 2; none is a traceback or a hang."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from prepkit import make_docs

GENLAB = str(Path(sys.executable).with_name("genlab"))


def _genlab(tmp_path, *args, preexec=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [GENLAB, *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
    )  # fmt: skip


def _config(tmp_path, source, extra=""):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"data:\n  source: '{source}'\n  clean: {{min_words: 3}}\n{extra}")
    return path


def _one_line(proc) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert err.startswith("genlab: error:") and "\n" not in err and "Traceback" not in err
    assert len(err) <= 320
    return err


def _jsonl_with(tmp_path, extra_line: str) -> Path:
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": t}) for t in make_docs(30)]
    path.write_text("\n".join([*lines[:10], extra_line, *lines[10:]]) + "\n", encoding="utf-8")
    return path


def test_jsonl_lone_surrogate_is_replaced_or_skipped_by_policy(tmp_path):
    src = _jsonl_with(tmp_path, '{"text": "broken \\ud800 text with enough words"}')
    out = tmp_path / "ds"
    proc = _genlab(tmp_path, "data", "prepare", _config(tmp_path, src), "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["read"]["invalid_utf8_replaced"] == 1
    proc = _genlab(tmp_path, "data", "prepare", _config(tmp_path, src),
                   "data.on_invalid_utf8=skip", "--out", tmp_path / "ds2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        json.loads((tmp_path / "ds2" / "report.json").read_text())["read"]["invalid_utf8_skipped"]
        == 1
    )


def test_csv_short_row_is_one_line_and_a_huge_cell_is_read(tmp_path):
    rows = ["id,text,label"] + [f"{i},{t},x" for i, t in enumerate(make_docs(20))]
    short = tmp_path / "short.csv"
    short.write_text("\n".join([*rows, "99"]) + "\n", encoding="utf-8")
    err = _one_line(_genlab(tmp_path, "data", "prepare", _config(tmp_path, short)))
    assert "row 21" in err and "'text' is missing" in err and "header has 3" in err
    huge = tmp_path / "huge.csv"
    big = " ".join(["word"] * 40_000)  # 200,000 characters: over csv's default cell limit
    huge.write_text("\n".join([*rows, f'99,"{big}",x']) + "\n", encoding="utf-8")
    out = tmp_path / "ds"
    proc = _genlab(tmp_path, "data", "prepare", _config(tmp_path, huge), "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lengths = json.loads((out / "report.json").read_text())["lengths"]
    assert max(stats["max"] for stats in lengths.values()) >= 199_999


def test_glob_over_a_symlink_loop_returns(tmp_path):
    data = tmp_path / "dir" / "sub"
    data.mkdir(parents=True)
    for i, chunk in enumerate((make_docs(10), make_docs(10, seed=1))):
        (data / f"p{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
    for link in ("s1", "s2"):  # dir/s1, dir/s2 -> dir: 2^depth paths for glob.glob
        os.symlink(".", tmp_path / "dir" / link)
    out = tmp_path / "ds"
    pattern = f"{tmp_path}/dir/**/*.jsonl"
    proc = _genlab(
        tmp_path, "data", "prepare", _config(tmp_path, pattern), "--out", out, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_file_count"] == 2


def _file_size_limit(limit: int):
    def apply() -> None:
        # A real EFBIG: writes past the limit fail instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_in_the_dataset_cache_is_one_line_and_leaves_nothing(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_docs(400)))
    cfg = _config(tmp_path, src, "  tokenizer: byte\n")
    proc = _genlab(tmp_path, "data", "prepare", cfg, preexec=_file_size_limit(20_000))
    err = _one_line(proc)
    assert "disk full" in err and "GENLAB_CACHE_DIR" in err
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # no half-written dataset
    # With space, the same command builds it.
    assert _genlab(tmp_path, "data", "prepare", cfg).returncode == 0


def test_vae_on_a_folder_of_rgb_pngs_trains(tmp_path):
    """Held-out images brighter or darker than any train image used to leave [0, 1] after
    minmax scaling, and BCE refused them (issue 21, item 13)."""
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(24):
        level = 10 * i + 5  # each image its own brightness: val/test leave the train range
        Image.new("RGB", (8, 8), (level, 255 - level, (3 * level) % 256)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    proc = _genlab(
        tmp_path, "train", "examples/digits-vae.yaml", f"data.source={folder}",
        "data.image_size=8", "train.max_steps=2", "train.batch_size=4", "train.eval_every=2",
        "train.checkpoint_every=2", "train.sample_every=2", "train.progress=false",
        "model.vae.recon=bce", "data.scale=minmax", "--run-dir", run,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "metrics.json").is_file()
