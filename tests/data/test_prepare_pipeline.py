"""prepare_dataset: cache reuse/rebuild, no leakage across splits, provenance of removals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from prepkit import jsonl_overrides, make_docs, planted_corpus, write_jsonl
from rich.console import Console

from genlab import config
from genlab.data.corpus import split_corpus
from genlab.data.dedup import jaccard, shingles
from genlab.data.prepare import CACHE_ENV, prepare_dataset
from genlab.data.storage import TokenFile
from genlab.errors import ConfigError, DataError

QUIET = Console(quiet=True)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def _cfg(path, *more):
    return config.load(None, [*jsonl_overrides(path), *more])


def test_cache_is_reused_when_unchanged_and_rebuilt_when_a_file_changes(tmp_path):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src)
    first = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    assert not first.cached and first.directory.parent == tmp_path / "cache"
    assert first.directory.name == first.cache_key
    again = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    assert again.cached and again.directory == first.directory
    # A changed source file gives a new key and a fresh build.
    with src.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"key": "new", "body": make_docs(1, seed=9)[0]}) + "\n")
    changed = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    assert not changed.cached and changed.cache_key != first.cache_key
    assert (
        changed.manifest["splits"]["train"]["documents"]
        + changed.manifest["splits"]["val"]["documents"]
        == first.manifest["splits"]["train"]["documents"]
        + first.manifest["splits"]["val"]["documents"]
        + 1
    )
    # A changed setting too; block_size does not shape the dataset, so it does not count.
    assert not prepare_dataset(_cfg(src, "data.split.val=0.2").data, cfg.seed, None, QUIET).cached
    assert prepare_dataset(_cfg(src, "data.block_size=16").data, cfg.seed, None, QUIET).cached


def test_a_cached_dataset_with_a_truncated_split_is_built_again(tmp_path):
    """Its manifest is intact, so only the file size tells: the rebuild replaces it (it used
    to keep the damaged directory as a concurrent builder's and fail)."""
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src)
    first = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    tokens = np.array(TokenFile.open(first.directory, "train").tokens)
    with open(first.directory / "train.bin", "r+b") as f:
        f.truncate(10)
    again = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    assert not again.cached and again.directory == first.directory
    rebuilt = TokenFile.open(again.directory, "train").tokens
    assert np.array_equal(np.array(rebuilt), tokens)


def test_out_dir_is_rebuilt_in_place_and_a_foreign_dir_is_refused(tmp_path):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "ds"
    cfg = _cfg(src)
    built = prepare_dataset(cfg.data, cfg.seed, out, QUIET)
    assert built.directory == out and not built.cached
    assert prepare_dataset(cfg.data, cfg.seed, out, QUIET).cached
    os.utime(src, ns=(1, 1))  # touched: a new key, the old dataset at --out is replaced
    assert not prepare_dataset(cfg.data, cfg.seed, out, QUIET).cached
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepare_dataset(cfg.data, cfg.seed, foreign, QUIET)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs


def test_no_document_or_near_duplicate_crosses_splits(tmp_path):
    src, copies = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src, "data.split.val=0.2", "data.split.test=0.2")
    prepared = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    ids = json.loads((prepared.directory / "split_ids.json").read_text())
    sets = {name: set(ids[name]) for name in ("train", "val", "test")}
    assert all(sets.values())
    assert not (
        sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"]
    )
    kept = set().union(*sets.values())
    assert not kept & set(copies)  # every planted copy was removed before the split ...
    assert {copies[c] for c in copies} <= kept  # ... and its original kept
    # And no pair of documents in different splits is a near-duplicate (exact Jaccard).
    corpus = split_corpus(cfg.data, cfg.seed)
    sh = {n: [shingles(d.text) for d in corpus[n]] for n in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        worst = max(jaccard(x, y) for x in sh[a] for y in sh[b])
        assert worst < cfg.data.dedup.threshold
    # The token files hold exactly those documents.
    for name in ("train", "val", "test"):
        offsets = TokenFile.open(prepared.directory, name).document_offsets()
        assert len(offsets) - 1 == len(ids[name])


def test_removed_jsonl_lists_every_removed_document_with_its_reason(tmp_path):
    src, copies = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src)
    prepared = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    removed = [json.loads(line) for line in (prepared.directory / "removed.jsonl").open()]
    reasons = {r["id"]: r["reason"] for r in removed}
    assert reasons["tiny"] == "min_words"
    for copy_id, original in copies.items():
        assert reasons[copy_id] == ("near_dup" if copy_id.endswith("near") else "exact_dup")
        assert next(r for r in removed if r["id"] == copy_id)["kept_id"] == original
    ids = json.loads((prepared.directory / "split_ids.json").read_text())
    all_ids = {json.loads(line)["key"] for line in src.open()}
    kept = set(ids["train"]) | set(ids["val"])
    assert kept | set(reasons) == all_ids and not kept & set(reasons)
    report = json.loads((prepared.directory / "report.json").read_text())
    assert report["removed"] == {"exact_dup": 6, "min_words": 1, "near_dup": 8}
    assert (prepared.directory / "lengths.png").is_file()


def test_the_report_says_where_the_build_time_went(tmp_path):
    import time

    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src)
    started = time.perf_counter()
    prepared = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    wall = time.perf_counter() - started
    seconds = json.loads((prepared.directory / "report.json").read_text())["seconds"]
    assert list(seconds) == ["scan", "split", "tokenizer", "tokenize", "report"]
    assert all(v >= 0 for v in seconds.values()) and 0 < sum(seconds.values()) <= wall


def test_empty_after_filtering_lists_per_filter_counts(tmp_path):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = _cfg(src, "data.clean.min_words=1000")
    with pytest.raises(DataError) as exc:
        prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    msg = str(exc.value)
    assert "\n" not in msg and "min_words=" in msg and "data.clean" in msg
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_folds_are_recorded_and_a_fold_becomes_the_val_split(tmp_path):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    whole = _cfg(src, "data.cv_folds=3")
    ids = json.loads(
        (prepare_dataset(whole.data, 1, console=QUIET).directory / "split_ids.json").read_text()
    )
    assert sorted(set(ids["folds"].values())) == [0, 1, 2]
    assert set(ids["folds"]) == set(ids["train"])
    fold1 = prepare_dataset(_cfg(src, "data.cv_folds=3", "data.cv_fold=1").data, 1, None, QUIET)
    f_ids = json.loads((fold1.directory / "split_ids.json").read_text())
    assert set(f_ids["val"]) == {k for k, f in ids["folds"].items() if f == 1}
    assert set(f_ids["train"]) == {k for k, f in ids["folds"].items() if f != 1}


def test_split_fractions_and_legacy_keys(tmp_path):
    cfg = config.load(None, ["data.split.val=0.2", "data.split.test=0.1"])
    assert (cfg.data.split.train, cfg.data.val_fraction, cfg.data.test_fraction) == (0.7, 0.2, 0.1)
    legacy = config.load(None, ["data.val_fraction=0.3"])  # configs written before data.split
    assert (legacy.data.split.train, legacy.data.split.val) == (0.7, 0.3)
    assert "val_fraction" not in legacy.to_yaml()
    with pytest.raises(ConfigError, match="sum to 1"):
        config.load(None, ["data.split.train=0.5"])
    with pytest.raises(ConfigError, match="tokenizer_path"):
        config.load(None, ["data.tokenizer=hf"])


def test_memmap_tokens_round_trip_the_documents(tmp_path):
    docs = make_docs(12)
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in docs])
    cfg = config.load(None, [f"data.source={src}", "data.tokenizer=byte"])
    prepared = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    train = prepared.tokens("train")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    text = bytes(np.asarray(train, dtype=np.uint8)).decode("utf-8")
    assert [d.text for d in split_corpus(cfg.data, cfg.seed).train] == text.split("\n\n")[:-1]
