"""The building blocks chained as `genlab data prepare` will chain them."""

from __future__ import annotations

import json

import torch

from genlab.config import CleanSection, DataConfig, DedupSection, SplitSection
from genlab.data.bpe import BPETokenizer
from genlab.data.clean import clean
from genlab.data.dedup import deduplicate
from genlab.data.provenance import build_report, ensure_not_empty, write_removed, write_report
from genlab.data.split import split_documents
from genlab.data.storage import TokenFile, cache_key, is_cached, write_manifest, write_split
from genlab.data.tabular import read_jsonl
from genlab.data.tokenizers import load_tokenizer


def test_read_clean_dedup_split_tokenize_store(tmp_path):
    rows = [
        {"text": f"Document {i} explains how module {i % 7} parses its input. " * 3}
        for i in range(40)
    ]
    rows += [{"text": rows[3]["text"]}, {"text": "ok"}]  # an exact duplicate, a too-short doc
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "dataset"
    config = {"text_field": "text", "dedup": {"near": True, "threshold": 0.8}}
    key = cache_key(config, [src])
    assert not is_cached(out, key)

    read = read_jsonl(src, DataConfig())
    cleaned = clean(read.documents, CleanSection(min_words=3))
    deduped = deduplicate(cleaned.kept, DedupSection(), seed=0)
    removals = cleaned.removed + deduped.removed
    ensure_not_empty(deduped.kept, removals, total_before=len(read.documents))
    split = split_documents(deduped.kept, SplitSection(val=0.2), seed=0, folds=0)
    tok = BPETokenizer.train((d.text for d in split.train), vocab_size=320)
    tok.save(out)
    entries = {
        name: write_split(
            out,
            name,
            tok.encode_batch([d.text for d in docs]),
            tok.vocab_size,
            separator=tok.eot_id,
        )
        for name, docs in split.splits().items()
    }
    write_removed(out, removals)
    write_report(out, build_report([("read", 42, 42)], removals, split.splits(), read.documents))
    write_manifest(out, entries, config, tok.vocab_size, cache_key=key, extra=split.ids())

    assert is_cached(out, key)
    assert {r.reason for r in removals} >= {"min_words", "exact_dup"}
    reloaded = load_tokenizer(out)
    x, y = TokenFile.open(out, "val").windows([0, 5], block_size=8)
    assert x.shape == (2, 8) and torch.equal(x[:, 1:], y[:, :-1])
    first_val = split.val[0].text
    assert reloaded.decode(x[0].tolist()) == reloaded.decode(tok.encode(first_val)[:8])
