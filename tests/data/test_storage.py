"""Memmap storage: windows equal in-memory windows, manifest, hashes, cache key."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from genlab.data.storage import (
    TokenFile,
    cache_key,
    is_cached,
    read_manifest,
    token_dtype,
    verify,
    windows_from_tensor,
    write_manifest,
    write_split,
)
from genlab.errors import CheckpointError, DataError


def _docs_tokens(rng, vocab, n_docs=20):
    return [rng.integers(0, vocab, size=rng.integers(5, 200)).tolist() for _ in range(n_docs)]


@pytest.mark.parametrize("vocab", [300, 70000])
def test_memmap_windows_equal_in_memory_windows(tmp_path, vocab):
    rng = np.random.default_rng(0)
    docs = _docs_tokens(rng, vocab)
    entry = write_split(tmp_path, "train", docs, vocab_size=vocab, separator=vocab - 1)
    write_manifest(tmp_path, {"train": entry}, config={"block_size": 16}, vocab_size=vocab)
    assert entry["dtype"] == ("uint16" if vocab <= 65536 else "uint32")
    tf = TokenFile.open(tmp_path, "train")
    assert isinstance(tf.tokens, np.memmap)  # mapped, not loaded
    flat = torch.tensor([t for d in docs for t in [*d, vocab - 1]], dtype=torch.long)
    assert len(tf) == entry["tokens"] == flat.numel()
    starts = [0, 1, 17, len(tf) - 17]
    x, y = tf.windows(starts, block_size=16)
    ex, ey = windows_from_tensor(flat, starts, block_size=16)
    assert x.dtype == torch.int64 and x.shape == (4, 16)
    assert torch.equal(x, ex) and torch.equal(y, ey)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    offsets = tf.document_offsets()
    assert offsets[0] == 0 and offsets[-1] == len(tf) and len(offsets) == len(docs) + 1
    assert int(offsets[1]) == len(docs[0]) + 1


def test_window_bounds_and_short_split(tmp_path):
    entry = write_split(tmp_path, "val", [[1, 2, 3]], vocab_size=10)
    write_manifest(tmp_path, {"val": entry}, config={}, vocab_size=10)
    tf = TokenFile.open(tmp_path, "val")
    with pytest.raises(DataError, match="block_size"):
        tf.windows([0], block_size=8)
    with pytest.raises(DataError, match="window starts"):
        tf.windows([1], block_size=2)
    with pytest.raises(DataError, match="not in dataset"):
        TokenFile.open(tmp_path, "test")


def test_out_of_range_token_rejected(tmp_path):
    with pytest.raises(DataError, match="out of range"):
        write_split(tmp_path, "train", [[1, 2, 300]], vocab_size=256)


def test_manifest_hashes_and_verify(tmp_path):
    entry = write_split(tmp_path, "train", [[1, 2, 3, 4]], vocab_size=10)
    write_manifest(tmp_path, {"train": entry}, config={"seed": 1}, vocab_size=10, cache_key="k")
    manifest = read_manifest(tmp_path)
    assert manifest["config"] == {"seed": 1} and manifest["splits"]["train"]["tokens"] == 4
    assert is_cached(tmp_path, "k") and not is_cached(tmp_path, "other")
    verify(tmp_path)
    (tmp_path / "train.bin").write_bytes(b"\x00\x00" * 4)
    with pytest.raises(CheckpointError, match="changed"):
        verify(tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_unfinished_directory_is_not_cached(tmp_path):
    write_split(tmp_path, "train", [[1, 2]], vocab_size=10)  # no manifest: build not finished
    assert not is_cached(tmp_path, "k")
    with pytest.raises(CheckpointError, match="manifest"):
        read_manifest(tmp_path)


def test_cache_key_changes_when_file_changes_and_not_otherwise(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first", encoding="utf-8")
    b.write_text("second", encoding="utf-8")
    cfg = {"text_field": "text", "dedup": {"near": True, "threshold": 0.8}}
    key = cache_key(cfg, [a, b])
    assert cache_key(dict(reversed(list(cfg.items()))), [b, a]) == key  # order-insensitive
    assert cache_key({**cfg, "text_field": "body"}, [a, b]) != key
    stat = a.stat()
    a.write_text("fir5t", encoding="utf-8")  # same size, same mtime: content hash differs
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(cfg, [a, b]) != key
    a.write_text("first", encoding="utf-8")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(cfg, [a, b]) == key  # restored exactly: same key again
    with pytest.raises(DataError, match="does not exist"):
        cache_key(cfg, [tmp_path / "gone.txt"])


def test_token_dtype():
    # The smallest unsigned type that holds every id 0..vocab-1, and a name the manifest
    # (JSON) stores and numpy reads back.
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    ids = np.arange(65536, dtype=np.int64)
    assert np.array_equal(ids.astype(token_dtype(65536)), ids)
    name = json.loads(json.dumps({"dtype": token_dtype(10).name}))["dtype"]
    assert name == "uint16" and np.dtype(name) == np.uint16
