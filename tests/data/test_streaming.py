"""The streaming build equals the in-memory chain, document for document and token for token;
`genlab eval`'s held-out documents come from the prepared dataset."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prepkit import make_docs, near_copy, planted_corpus, write_jsonl
from rich.console import Console

from genlab import config
from genlab.data.bpe import BPETokenizer
from genlab.data.clean import clean
from genlab.data.corpus import read_source, resolve_source, split_corpus
from genlab.data.dedup import deduplicate
from genlab.data.lm import build_lm_data
from genlab.data.prepare import CACHE_ENV, DOC_SEPARATOR, prepare_dataset
from genlab.data.shards import plan_shards, shard_size
from genlab.data.split import split_documents
from genlab.evaluation.run import held_out_documents

QUIET = Console(quiet=True)
SMALL_SHARDS = "data.shard_mb=0.002"  # ~2 KB shards: a small corpus is cut into several


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def _corpus(tmp_path, n=60, kind="jsonl"):
    """Labelled documents with exact and near copies far apart (other shards), an empty
    record and one that cleaning drops; as CSV, also blank rows, CRLF line ends and cells
    spanning lines (quoted, with doubled quotes)."""
    rng = random.Random(3)
    texts = make_docs(n, words=40, seed=5)
    rows = [{"key": f"d{i}", "body": t, "y": "ab"[i % 2]} for i, t in enumerate(texts)]
    for i in range(0, n, 7):
        rows.append({"key": f"d{i}-near", "body": near_copy(texts[i], i), "y": "a"})
        rows.append({"key": f"d{i}-exact", "body": "  " + texts[i].upper(), "y": "b"})
    rng.shuffle(rows)
    rows += [
        {"key": "empty", "body": "", "y": "a"},
        {"key": "short", "body": "two words", "y": "b"},
    ]
    if kind == "jsonl":
        return write_jsonl(tmp_path / "c.jsonl", rows)
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, ["key", "body", "y"], lineterminator="\r\n")
    writer.writeheader()
    for i, row in enumerate(rows):
        if i % 9 == 4:
            row = {**row, "body": row["body"].replace(" ", '\n"quoted" ', 2)}
        writer.writerow(row)
        if i % 11 == 0:
            out.write(",,\n" if i % 2 else "\r\n")
    path = tmp_path / "c.csv"
    path.write_bytes(out.getvalue().encode())
    return path


def _cfg(path, *more):
    base = [f"data.source={path}", "data.text_field=body", "data.id_field=key"]
    base += ["data.clean.min_words=5", "data.tokenizer=bpe", "data.vocab_size=300", SMALL_SHARDS]
    return config.load(None, [*base, *more])


def _in_memory(cfg):
    """The reference: the list functions chained, as the in-memory path always ran."""
    data = cfg.data
    docs = read_source(data).documents
    cleaned = clean(docs, data.clean)
    deduped = deduplicate(cleaned.kept, data.dedup, seed=0)
    parts = split_documents(deduped.kept, data.split, seed=cfg.seed, folds=0)
    tok = BPETokenizer.train([d.text for d in parts.train], vocab_size=data.vocab_size)
    sep = tok.encode(DOC_SEPARATOR)
    tokens = {
        name: np.asarray([t for d in split for t in [*tok.encode(d.text), *sep]], np.int64)
        for name, split in parts.splits().items()
    }
    return parts, tokens, [*cleaned.removed, *deduped.removed]


@pytest.mark.parametrize(("workers", "kind"), [(1, "jsonl"), (2, "jsonl"), (2, "csv")])
def test_streaming_build_equals_the_in_memory_chain(tmp_path, workers, kind):
    """A JSONL file or one CSV file cut into ~6 shards (CSV: at record ends, genlab.data.
    csv_plan) builds what reading the file whole and chaining the list functions does."""
    src = _corpus(tmp_path, kind=kind)
    if kind == "csv":
        shards, _ = plan_shards(_cfg(src).data, resolve_source(str(src)), 2048)
        assert len(shards) > 4 and {s.kind for s in shards} == {"csv"}
    cfg = _cfg(src, "data.split.val=0.2", "data.split.test=0.1", f"data.workers={workers}")
    _assert_streaming_equals_in_memory(
        cfg, ("train", "val", "test"), {"exact_dup", "near_dup", "min_words"}
    )


def _assert_streaming_equals_in_memory(cfg, splits, reasons) -> None:
    """The streaming build (with SMALL_SHARDS: about 6, so duplicates and their originals sit in
    different shards) has the in-memory chain's split ids, tokens, held-out documents and
    removals, with removals for each of `reasons`."""
    parts, tokens, removed = _in_memory(cfg)
    built = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    ids = json.loads((built.directory / "split_ids.json").read_text())
    for name in splits:
        assert ids[name] == [d.id for d in getattr(parts, name)], name
        assert np.array_equal(np.asarray(built.tokens(name), np.int64), tokens[name]), name
        if name != "train":
            assert built.documents(name) == getattr(parts, name)
    lines = (built.directory / "removed.jsonl").read_text().splitlines()
    streamed = sorted((r["id"], r["reason"], r.get("kept_id")) for r in map(json.loads, lines))
    assert streamed == sorted((r.id, r.reason, r.kept_id) for r in removed)
    assert {r[1] for r in streamed} == reasons


@pytest.mark.parametrize("bad_bytes", [False, True])
def test_one_text_file_cut_at_paragraph_breaks_builds_what_the_in_memory_chain_does(
    tmp_path, bad_bytes
):
    """A single .txt source (documents at blank lines) cut into ~6 pieces at paragraph
    breaks (genlab.data.text_plan), copies planted in other pieces, built by 2 workers; with
    invalid UTF-8 in some documents, replaced (data.on_invalid_utf8=replace) as in the whole
    file, which is counted once."""
    texts = make_docs(60, words=40, seed=7)
    texts += [near_copy(texts[i], i) for i in range(0, 60, 7)] + [texts[3].upper()]
    random.Random(1).shuffle(texts)
    breaks = ["\n\n", "\r\n\r\n", "\n  \n\n", "\n\u3000\n"]
    src = tmp_path / "corpus.txt"
    body = "".join(t + breaks[i % 4] for i, t in enumerate(texts)).encode()
    if bad_bytes:
        body = body.replace(b" doc1", b" \xffdoc1")  # doc1, doc10-19: across pieces
    src.write_bytes(body)
    cfg = config.load(None, [f"data.source={src}", "data.tokenizer=bpe", "data.vocab_size=300",
                             "data.split.val=0.2", "data.workers=2",
                             "data.on_invalid_utf8=replace", SMALL_SHARDS])  # fmt: skip
    shards, counts = plan_shards(cfg.data, resolve_source(str(src)), 2048)
    assert len(shards) > 4 and {s.kind for s in shards} == {"paragraph_range"}
    assert counts["invalid_utf8_replaced"] == int(bad_bytes)
    if bad_bytes:  # under `skip` the reader refuses the file: it stays whole for it to say so
        skip = config.load(None, [f"data.source={src}", "data.on_invalid_utf8=skip"]).data
        assert [s.kind for s in plan_shards(skip, resolve_source(str(src)), 2048)[0]] == [
            "paragraphs"
        ]
    _assert_streaming_equals_in_memory(cfg, ("train", "val"), {"exact_dup", "near_dup"})


def test_a_saved_hf_dataset_cut_into_row_ranges_builds_what_the_in_memory_chain_does(tmp_path):
    """A DatasetDict saved to disk (two splits, read in name order) cut into row ranges of
    ~2 KB, copies planted across ranges and splits, built by 2 workers."""
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in _corpus(tmp_path).read_text().splitlines()]
    half = len(rows) // 2
    parts = {name: datasets.Dataset.from_list(part) for name, part in
             (("b_second", rows[half:]), ("a_first", rows[:half]))}  # fmt: skip
    src = tmp_path / "saved"
    datasets.DatasetDict(parts).save_to_disk(str(src))
    cfg = _cfg(src, "data.split.val=0.2", "data.workers=2")
    shards, _ = plan_shards(cfg.data, resolve_source(str(src)), 2048)
    assert len(shards) > 4 and shards[0].part == "a_first"  # splits in name order
    assert {s.part for s in shards} == {"a_first", "b_second"}
    _assert_streaming_equals_in_memory(
        cfg, ("train", "val"), {"exact_dup", "near_dup", "min_words"}
    )


def test_stratified_folds_match_split_corpus(tmp_path):
    src = _corpus(tmp_path)
    cfg = _cfg(src, "data.label_field=y", "data.cv_folds=3", "data.cv_fold=1")
    built = prepare_dataset(cfg.data, cfg.seed, console=QUIET)
    ids = json.loads((built.directory / "split_ids.json").read_text())
    reference = split_corpus(cfg.data, cfg.seed)
    assert ids["train"] == [d.id for d in reference.train]
    assert ids["val"] == [d.id for d in reference.val]
    assert ids["folds"] == reference.folds
    assert built.documents("val") == reference.val


def test_dask_local_cluster_builds_the_same_dataset(tmp_path):
    pytest.importorskip("distributed")
    src = _corpus(tmp_path, n=40)
    local = _cfg(src, "data.workers=1")
    dask = _cfg(src, "data.engine=dask", "data.workers=2")
    a = prepare_dataset(local.data, 0, tmp_path / "a", QUIET)
    b = prepare_dataset(dask.data, 0, tmp_path / "b", QUIET)
    assert a.cache_key == b.cache_key  # the engine does not shape the dataset
    for name in ("train", "val"):
        assert a.manifest["splits"][name]["sha256"] == b.manifest["splits"][name]["sha256"]
    assert a.documents("val") == b.documents("val")


def test_eval_reads_held_out_documents_from_the_prepared_dataset(tmp_path):
    src, _ = planted_corpus(tmp_path / "c.jsonl")
    cfg = config.load(
        None, [f"data.source={src}", "data.text_field=body", "data.id_field=key",
               "data.split.test=0.2", "data.block_size=8"],
    )  # fmt: skip
    expected = {n: split_corpus(cfg.data, cfg.seed)[n] for n in ("val", "test")}
    run = tmp_path / "run"
    run.mkdir()
    build_lm_data(cfg.data, cfg.seed, console=QUIET).write_provenance(run)
    src.unlink()  # the source is never read again: the dataset holds the held-out documents
    for name in ("val", "test"):
        assert held_out_documents(cfg, name, run) == expected[name]


def test_bpe_learns_from_the_sampled_train_documents(tmp_path):
    """With data.tokenizer_train_mb below the train split's size, the tokenizer is the one
    trained on the documents training_sample picks (checked on its own in test_bpe)."""
    from genlab.data.bpe import training_sample

    src = _corpus(tmp_path)
    cfg = _cfg(src, "data.split.val=0.2")
    parts, _, _ = _in_memory(cfg)
    sizes = np.asarray([len(d.text.encode("utf-8")) for d in parts.train])
    budget = float(sizes.sum()) / 2e6  # half the train text
    take = training_sample(sizes, budget)
    assert 0 < take.sum() < len(take)
    sampled = [d.text for d, t in zip(parts.train, take) if t]
    expected = BPETokenizer.train(sampled, vocab_size=cfg.data.vocab_size)
    capped = _cfg(src, "data.split.val=0.2", f"data.tokenizer_train_mb={budget}")
    built = prepare_dataset(capped.data, capped.seed, console=QUIET)
    assert built.tokenizer.hf.to_str() == expected.hf.to_str()
    everything = BPETokenizer.train([d.text for d in parts.train], vocab_size=cfg.data.vocab_size)
    assert built.tokenizer.hf.to_str() != everything.hf.to_str()  # the sample mattered


def test_workers_start_early_only_for_a_source_cut_into_several_shards(tmp_path):
    """`likely_several` (judged from sizes, before planning) agrees with the plan: a large
    JSONL, CSV or plain-text file of paragraphs is cut, small ones are not."""
    from genlab.data.corpus import resolve_source
    from genlab.data.shards import likely_several, plan_shards

    rows = [{"key": f"d{i}", "body": t} for i, t in enumerate(make_docs(200, words=40, seed=1))]
    big = write_jsonl(tmp_path / "big.jsonl", rows)
    small = write_jsonl(tmp_path / "small.jsonl", rows[:3])
    text = tmp_path / "paragraphs.txt"
    text.write_text("\n\n".join(r["body"] for r in rows), encoding="utf-8")
    small_text = tmp_path / "short.txt"
    small_text.write_text("\n\n".join(r["body"] for r in rows[:3]), encoding="utf-8")
    table = tmp_path / "big.csv"
    table.write_text("key,body\n" + "".join(f"{r['key']},{r['body']}\n" for r in rows))
    shard = 4096
    cases = [(big, True), (small, False), (text, True), (small_text, False), (table, True)]
    for path, several in cases:
        spec = resolve_source(str(path))
        planned, _ = plan_shards(_cfg(path).data, spec, shard)
        assert likely_several(spec, shard) is several
        assert (len(planned) > 1) is several


@pytest.mark.parametrize("kind", ["csv", "txt"])
def test_the_real_command_cuts_one_large_file_into_shards(tmp_path, kind):
    """`genlab data prepare` in a fresh process, 2 workers and ~2 KB shards (data.shard_mb):
    one CSV file (cut at record ends) or one text file (at paragraph breaks) builds the split
    ids and tokens of the in-memory chain."""
    if kind == "csv":
        src = _corpus(tmp_path, kind="csv")
        cfg = _cfg(src, "data.split.val=0.2", "data.workers=2")
    else:
        src = tmp_path / "corpus.txt"
        src.write_text("\n\n".join(make_docs(60, words=40, seed=2)), encoding="utf-8")
        cfg = config.load(None, [f"data.source={src}", "data.tokenizer=bpe", "data.vocab_size=300",
                                 "data.split.val=0.2", "data.workers=2", SMALL_SHARDS])  # fmt: skip
    assert len(plan_shards(cfg.data, resolve_source(str(src)), shard_size(cfg.data))[0]) > 4
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps({"seed": cfg.seed, "data": cfg.data.model_dump(mode="json")}))
    out = tmp_path / "built"
    genlab = str(Path(sys.executable).with_name("genlab"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", CACHE_ENV: str(tmp_path / "cache")}
    done = subprocess.run([genlab, "data", "prepare", str(path), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    parts, tokens, _ = _in_memory(cfg)
    ids = json.loads((out / "split_ids.json").read_text())
    built = prepare_dataset(cfg.data, cfg.seed, out_dir=out, console=QUIET)  # reuses `out`
    assert built.cached
    report = json.loads((out / "report.json").read_text())
    assert report["parallel"]["shards"] > 4 and report["parallel"]["workers"] == 2
    for name in ("train", "val"):
        assert ids[name] == [d.id for d in getattr(parts, name)], name
        assert np.array_equal(np.asarray(built.tokens(name), np.int64), tokens[name]), name
