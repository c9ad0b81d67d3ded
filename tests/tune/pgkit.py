"""A throwaway PostgreSQL server for the tests: the system package's binaries, a temporary data
directory, a free port on 127.0.0.1, trust authentication, stopped and deleted afterwards.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (made by the
Debian package) or `nobody`, through `runuser`, in a directory that user owns."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testkit import free_port

USER = "genlab"


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None where there is none."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in candidates:
        if all((d / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root, and the uid/gid to own the server's files."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"], entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield the URL of its `postgres` database; stop it and remove its files."""
    prefix, uid, gid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    data, log = root / "data", root / "server.log"
    if uid is not None:
        os.chown(root, uid, gid)
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        start = ["-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), *start],
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
