"""tune.storage URLs: a driver is named when the URL has none (SQLAlchemy's default for
postgresql:// is psycopg 3; the `tune` extra installs psycopg2), and what cannot work is a
one-line GenlabError before any trial, never echoing a password."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from genlab.errors import ConfigError, MissingDependencyError
from genlab.tuning.storage import resolve_url


def _installed(monkeypatch, *names: str) -> None:
    for name in names:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)


def _missing(monkeypatch, *names: str) -> None:
    for name in names:  # find_spec answers None for a None entry
        monkeypatch.setitem(sys.modules, name, None)


def test_a_url_without_driver_gets_the_first_installed_one(monkeypatch):
    _installed(monkeypatch, "psycopg2")
    assert resolve_url("postgresql://me:pw@db:5432/s") == "postgresql+psycopg2://me:pw@db:5432/s"
    _missing(monkeypatch, "psycopg2")
    _installed(monkeypatch, "psycopg")
    assert resolve_url("postgresql://me@db/s") == "postgresql+psycopg://me@db/s"
    _missing(monkeypatch, "pymysql")
    _installed(monkeypatch, "MySQLdb")
    assert resolve_url("mysql://me@db/s") == "mysql+mysqldb://me@db/s"
    # A named driver is kept as it is.
    _installed(monkeypatch, "pymysql")
    assert resolve_url("mysql+pymysql://me@db/s") == "mysql+pymysql://me@db/s"


def test_what_cannot_work_is_a_clear_error(monkeypatch):
    _missing(monkeypatch, "pymysql", "MySQLdb", "mysql", "psycopg2", "psycopg", "pg8000")
    with pytest.raises(MissingDependencyError, match=r"needs a mysql driver.*pip install pymysql"):
        resolve_url("mysql://me:secret@db/s")
    with pytest.raises(MissingDependencyError, match=r"pip install 'genlab\[tune\]'") as exc:
        resolve_url("postgresql://me:secret@db/s")
    assert "secret" not in str(exc.value) and "me:***@db" in str(exc.value)
    with pytest.raises(MissingDependencyError, match="needs the psycopg2 driver"):
        resolve_url("postgresql+psycopg2://me@db/s")
    with pytest.raises(ConfigError, match="names driver 'asyncpg'; use one of psycopg2"):
        resolve_url("postgresql+asyncpg://me@db/s")
    with pytest.raises(ConfigError, match="is not a database URL"):
        resolve_url("not a url")
