import pytest

from genlab.fileio import atomic_write_text


def test_atomic_write_replaces_whole_file_and_a_failed_write_keeps_the_old(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.json"
    atomic_write_text(path, "old")
    assert path.read_text() == "old"

    def broken_fsync(fd):
        raise OSError("disk gone (simulated)")

    monkeypatch.setattr("genlab.fileio.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temp file left
