"""The spool: records written by a shard's scan read back whole, one at a time, as headers
and as the texts a flag list picks."""

from __future__ import annotations

from genlab.data import spool

RECORDS = [
    ["a:1", "plain text", "/data/a.jsonl", "line 1", None],
    ["a:2", 'two\nlines\r\n and a ["json"] look-alike\n', "/data/a.jsonl", "line 2", "pos"],
    ["ü:3", "ünïcödé 日本語 🙂\u2028", "/data/ü.jsonl", "line 3", "neg"],
    ["a:4", "", "/data/a.jsonl", "line 4", ""],
]


def _write(path):
    offsets = [0]
    with spool.SpoolWriter(path) as writer:
        for doc_id, text, source, position, label in RECORDS:
            offsets.append(writer.write(doc_id, text.encode("utf-8"), source, position, label))
    return offsets


def test_records_read_back_in_order_and_one_at_a_time(tmp_path):
    path = tmp_path / "spool.bin"
    offsets = _write(path)
    assert list(spool.records(path)) == RECORDS
    assert offsets[-1] == path.stat().st_size
    with open(path, "rb") as f:
        for i in (2, 0, 3, 1):  # any order
            assert spool.read_at(f, offsets[i]) == RECORDS[i]
            assert spool.read_at(f, offsets[i], with_text=False) == [
                *RECORDS[i][:1], None, *RECORDS[i][2:]
            ]  # fmt: skip


def test_texts_yields_only_the_flagged_ones(tmp_path):
    path = tmp_path / "spool.bin"
    _write(path)
    assert list(spool.texts(path, [False, True, True, False])) == [RECORDS[1][1], RECORDS[2][1]]
    assert list(spool.texts(path, [True, False, False, True])) == [RECORDS[0][1], ""]
