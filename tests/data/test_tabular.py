"""File sources: JSONL/CSV fields, invalid UTF-8 policies, binary files, globs."""

from __future__ import annotations

import json
import sys

import pytest

from genlab import config
from genlab.config import DataConfig
from genlab.data.tabular import (
    read_csv,
    read_hf_dataset,
    read_jsonl,
    read_path,
    read_text_files,
)
from genlab.errors import ConfigError, DataError, MissingDependencyError


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_reads_fields_and_position(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"body": "one", "y": "a", "key": 7}, {"body": "two"}])
    path.write_text(path.read_text() + "\n", encoding="utf-8")  # a blank line is ignored
    opts = DataConfig(text_field="body", label_field=None, id_field=None)
    result = read_jsonl(path, opts)
    assert [d.text for d in result.documents] == ["one", "two"]
    assert result.documents[1].position == f"{path}:line 2"
    assert result.documents[0].source == str(path)
    assert result.counts["documents"] == 2


def test_jsonl_missing_field_names_present_fields(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"body": "x", "meta": 1}])
    with pytest.raises(DataError, match=r"'text'.*\['body', 'meta'\]"):
        read_jsonl(path, DataConfig())


def test_jsonl_label_and_id_fields(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "x", "y": 1, "k": "doc-9"}])
    doc = read_jsonl(path, DataConfig(label_field="y", id_field="k")).documents[0]
    assert (doc.id, doc.label) == ("doc-9", "1")
    with pytest.raises(DataError, match=r"data\.label_field"):
        read_jsonl(path, DataConfig(label_field="missing"))


def test_jsonl_invalid_json_is_data_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(path, DataConfig())


def test_csv_fields_rows_and_multiline(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"first\nspans lines",pos\nsecond,neg\n', encoding="utf-8")
    docs = read_csv(path, DataConfig(label_field="label")).documents
    assert [d.text for d in docs] == ["first\nspans lines", "second"]
    assert [d.label for d in docs] == ["pos", "neg"]
    assert docs[1].position == f"{path}:row 2 (line 4)"
    with pytest.raises(DataError, match=r"'body'.*\['text', 'label'\]"):
        read_csv(path, DataConfig(text_field="body"))


@pytest.mark.parametrize("policy", ["replace", "skip"])
def test_invalid_utf8_replace_vs_skip_counted(tmp_path, policy):
    bad = b'{"text": "caf\xe9"}\n'
    good = b'{"text": "fine"}\n'
    path = tmp_path / "d.jsonl"
    path.write_bytes(good + bad + good)
    result = read_jsonl(path, DataConfig(on_invalid_utf8=policy))
    if policy == "replace":
        assert [d.text for d in result.documents] == ["fine", "caf\ufffd", "fine"]
        assert result.counts["invalid_utf8_replaced"] == 1
        assert result.counts["invalid_utf8_skipped"] == 0
    else:
        assert [d.text for d in result.documents] == ["fine", "fine"]
        assert result.counts["invalid_utf8_skipped"] == 1

    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"text\nfine\ncaf\xe9\nfine\n")
    result = read_csv(csv_path, DataConfig(on_invalid_utf8=policy))
    assert len(result.documents) == (3 if policy == "replace" else 2)
    assert result.counts[f"invalid_utf8_{'replaced' if policy == 'replace' else 'skipped'}"] == 1


def test_invalid_policy_is_config_error():
    with pytest.raises(ConfigError, match=r"data\.on_invalid_utf8.*'ignore'") as err:
        config.load(None, ["data.on_invalid_utf8=ignore"])
    assert "\n" not in str(err.value)


def test_text_glob_skips_binary_and_counts(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "sub" / "b.txt").write_text("beta", encoding="utf-8")
    (tmp_path / "c.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "d.txt").write_bytes(b"bad \xff byte")
    result = read_text_files(str(tmp_path / "**" / "*.txt"), DataConfig(on_invalid_utf8="skip"))
    assert sorted(d.text for d in result.documents) == ["alpha", "beta"]
    assert result.counts["binary_skipped"] == 1
    assert result.counts["invalid_utf8_skipped"] == 1
    assert result.counts["files"] == 4
    with pytest.raises(DataError, match="no files match"):
        read_text_files(str(tmp_path / "*.md"), DataConfig())


def test_read_path_dispatches_by_suffix(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    assert read_path(path, DataConfig()).documents[0].text == "x"
    with pytest.raises(DataError, match="does not exist"):
        read_path(tmp_path / "missing.jsonl", DataConfig())


def test_hf_dataset_without_datasets_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"genlab\[data\]"):
        read_hf_dataset(tmp_path, DataConfig())


def test_a_saved_dataset_reads_row_by_row_what_datasets_holds(tmp_path, monkeypatch):
    """Rows are read a slice at a time (here 7 rows, so slices end mid-split): the documents
    are the rows datasets gives one by one, in split-name order, numbered within each split,
    with empty texts skipped and labels kept."""
    datasets = pytest.importorskip("datasets")
    from genlab.data import tabular

    monkeypatch.setattr(tabular, "_HF_BATCH", 7)
    splits = {
        "train": [{"body": f"text {i}" if i % 5 else "", "y": i % 3} for i in range(30)],
        "extra": [{"body": f"more {i}", "y": 1} for i in range(9)],
    }
    path = tmp_path / "saved"
    saved = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    saved.save_to_disk(str(path))
    options = DataConfig(text_field="body", label_field="y")
    docs = read_hf_dataset(path, options).documents
    expected = [
        (row["body"], str(row["y"]), f"{path}[{name}]:row {i}")
        for name in sorted(splits)
        for i, row in enumerate(datasets.load_from_disk(str(path))[name])
        if row["body"]
    ]
    assert [(d.text, d.label, d.position) for d in docs] == expected
