"""`genlab data prepare` / `genlab data report`, and the data errors a user sees (exit 2)."""

from __future__ import annotations

import json

import pytest
from prepkit import planted_corpus, write_jsonl

from genlab.data.prepare import CACHE_ENV
from testkit import needs_sys, run_cli


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def _config(tmp_path, source, extra: str = "") -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f"data:\n  source: {source}\n  text_field: body\n  id_field: key\n"
        f"  clean: {{min_words: 5}}\n{extra}"
    )
    return str(path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_data_prepare_and_report(tmp_path, capsys):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "ds"
    cfg = _config(tmp_path, src)
    assert run_cli("data", "prepare", cfg, "data.split.test=0.1", "--out", out) == 0
    printed = capsys.readouterr().out
    assert f"dataset built: {out}" in printed and "near dedup" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert manifest["config"]["split"]["test"] == 0.1
    assert run_cli("data", "prepare", cfg, "--out", out, "data.split.test=0.1") == 0
    assert "dataset reused" in capsys.readouterr().out
    assert run_cli("data", "report", out) == 0
    report = capsys.readouterr().out
    assert "exact_dup" in report and "min_words" in report and "train" in report
    assert run_cli("data", "report", tmp_path) == 2
    assert "not a prepared dataset" in _one_line_error(capsys)


def test_empty_after_filtering_is_one_line_with_per_filter_counts(tmp_path, capsys):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _config(tmp_path, src)
    assert run_cli("data", "prepare", cfg, "data.clean.min_words=1000") == 2
    err = _one_line_error(capsys)
    assert "no documents left" in err and "min_words=" in err
    run_dir = tmp_path / "run"
    assert run_cli("train", cfg, "data.clean.min_words=1000", "--run-dir", run_dir) == 2
    assert "min_words=" in _one_line_error(capsys) and not run_dir.exists()


def test_missing_field_names_the_fields_that_exist(tmp_path, capsys):
    src = write_jsonl(tmp_path / "c.jsonl", [{"title": "a", "content": "words " * 10}] * 3)
    assert run_cli("data", "prepare", _config(tmp_path, src)) == 2
    err = _one_line_error(capsys)
    assert "'body'" in err and "data.text_field" in err and "['title', 'content']" in err


def test_bad_split_fractions_and_unknown_action_are_user_errors(tmp_path, capsys):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _config(tmp_path, src)
    assert run_cli("data", "prepare", cfg, "data.split.train=0.5") == 2
    assert "sum to 1" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        run_cli("data", "shuffle", cfg)
    assert exc.value.code == 2


@needs_sys
def test_a_dataset_folder_that_refuses_writes_is_one_line_before_the_corpus_is_read(
    tmp_path, capsys, monkeypatch
):
    """/sys takes no new folders, not even from root (whose permission bits allow them): the
    write is tried before the corpus is read, and --out or $GENLAB_CACHE_DIR is named."""
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _config(tmp_path, src)
    assert run_cli("data", "prepare", cfg, "--out", "/sys/genlab-dataset") == 2
    err = _one_line_error(capsys)
    assert "'/sys'" in err and "pass --out with a writable directory" in err
    monkeypatch.setenv(CACHE_ENV, "/sys/genlab-cache")
    assert run_cli("data", "prepare", cfg) == 2
    err = _one_line_error(capsys)
    assert "'/sys/genlab-cache/" in err and f"point ${CACHE_ENV} at a writable directory" in err
