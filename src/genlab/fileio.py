"""Writing files so that a crash leaves the old file or the new one, never half of either,
and so that what genlab writes gets the permissions the user's umask gives any new file
(temp files are created private, 0600; renamed into place they would stay so)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def unwritable(path: Path) -> str | None:
    """Why `path` could not be made, or None when it could: its nearest folder that exists
    must take a new entry, so an empty folder is made there and removed. Permission bits
    (os.access) say yes to root everywhere and know nothing of a read-only mount, a pseudo
    filesystem such as /sys or a full quota; commands ask this before their work, so a bad
    --out costs a second, not the work and then a traceback."""
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is None:
        return None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genlab-probe-", dir=existing))
    except OSError as exc:
        return f"{str(existing)!r} takes no writes ({exc.strerror or type(exc).__name__})"
    return None


def require_writable(path: Path, flag: str, given: bool = True) -> None:
    """A RunDirError naming the option (`flag`, e.g. --out) when `path` could not be made.
    `given`: the user passed `flag`; else `path` is its default (inside the run), and the
    message says so rather than quoting an option the user never typed."""
    from genlab.errors import RunDirError

    why = unwritable(path)
    if why is not None:
        from genlab.safe_yaml import short

        what = f"{flag} {short(str(path), 100)}" if given else f"the default {flag}"
        raise RunDirError(f"{what} cannot be written: {why}; pass {flag} with a writable location")


def publish(path: str | Path, directory: bool = False) -> None:
    """Give `path` the mode a plain new file (0666) or directory (0777) gets under the
    user's umask: what a temp file or `mkdtemp` made private becomes like its siblings."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_tree(directory: str | Path) -> None:
    """`publish` every file under `directory` (what safetensors and save_pretrained wrote)."""
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            publish(path)


def write_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it (before a manifest says the file is complete).
    A plain new file: it gets the user's umask."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: Path) -> None:
    """Flush a file another writer made (safetensors, torch.distributed.checkpoint) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
