"""`stdlib-topics`: a labelled text set built from the standard library's own docstrings.

Every document is one docstring (a module's, or a public function's, class's or method's
defined in that module) of about 130 standard-library modules; its label is the topic the
module belongs to. The topics follow the chapters of the Python Library Reference, with
small neighbouring chapters merged (the table below is the whole definition):

    text         Text Processing Services + Structured Markup (html, xml)
    numeric      Numeric and Mathematical Modules
    datatypes    Data Types + Functional Programming Modules
    files        File and Directory Access + Data Compression and Archiving
    formats      Data Persistence + File Formats + Internet Data Handling (json, base64, ...)
    concurrency  Concurrent Execution + asyncio
    internet     Internet Protocols and Support + networking (socket, ssl, select)
    devtools     Development Tools + Debugging and Profiling
    language     Python Language Services (ast, dis, tokenize, importlib, ...)

A docstring shorter than MIN_CHARS characters is left out, as is any exact repeat (an
inherited or shared docstring would otherwise carry two labels). Text is `inspect.cleandoc`'d
and a C function's leading signature line is dropped: names are not part of the text, so a
model has to read the prose. Modules that a Python build lacks
(sqlite3, ssl, lzma, ...) are skipped, so the set depends on the Python version: the documents
are read afresh from the interpreter that runs genlab, nothing is downloaded.

Measured on CPython 3.11 (before genlab's cleaning and deduplication, which drop about 1%
as near-copies): 1,281 documents, unbalanced as real label sets are, the largest topic 4.2
times the smallest:

    internet 302 · files 171 · devtools 140 · datatypes 138 · numeric 124 · language 123
    · text 112 · formats 99 · concurrency 72          (`topic_counts()` for your Python)
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from genlab.data.documents import Document

NAME = "stdlib-topics"
MIN_CHARS = 80  # shorter docstrings ("Return self+value.") say nothing about a topic

TOPICS: dict[str, tuple[str, ...]] = {
    "text": (
        "string", "re", "difflib", "textwrap", "unicodedata", "stringprep", "html",
        "html.parser", "html.entities", "xml.dom.minidom", "xml.dom.pulldom",
        "xml.etree.ElementTree", "xml.sax", "xml.sax.saxutils", "xml.parsers.expat",
    ),
    "numeric": (
        "math", "cmath", "decimal", "fractions", "random", "statistics", "numbers",
    ),
    "datatypes": (
        "datetime", "zoneinfo", "calendar", "collections", "collections.abc", "heapq",
        "bisect", "array", "weakref", "types", "copy", "pprint", "reprlib", "enum",
        "graphlib", "itertools", "functools", "operator",
    ),
    "files": (
        "pathlib", "os.path", "stat", "filecmp", "tempfile", "glob", "fnmatch", "linecache",
        "shutil", "fileinput", "zlib", "gzip", "bz2", "lzma", "zipfile", "tarfile",
    ),
    "formats": (
        "pickle", "copyreg", "shelve", "marshal", "dbm", "sqlite3", "csv", "configparser",
        "tomllib", "netrc", "plistlib", "json", "base64", "binascii", "quopri", "mailbox",
        "mimetypes",
    ),
    "concurrency": (
        "threading", "multiprocessing", "concurrent.futures", "subprocess", "sched", "queue",
        "contextvars", "asyncio",
    ),
    "internet": (
        "socket", "ssl", "select", "selectors", "urllib.parse", "urllib.request",
        "http.client", "http.cookies", "http.cookiejar", "smtplib", "ftplib", "poplib",
        "imaplib", "ipaddress", "uuid", "socketserver", "webbrowser",
    ),
    "devtools": (
        "unittest", "unittest.mock", "doctest", "pydoc", "pdb", "bdb", "trace", "timeit",
        "cProfile", "profile", "pstats", "faulthandler", "tracemalloc",
    ),
    "language": (
        "ast", "symtable", "token", "keyword", "tokenize", "tabnanny", "pyclbr",
        "py_compile", "compileall", "dis", "pickletools", "importlib", "importlib.util",
        "pkgutil", "modulefinder", "runpy", "zipimport", "codeop", "code",
    ),
}  # fmt: skip


def stdlib_topics() -> list[Document]:
    """The labelled documents, in a fixed order (topic, module, member name)."""
    docs: list[Document] = []
    seen: set[str] = set()
    for topic, names in TOPICS.items():
        for name in names:
            module = _import(name)
            if module is None:
                continue
            for qualname, text in _docstrings(module):
                if len(text) < MIN_CHARS or text in seen:
                    continue
                seen.add(text)
                where = f"{name}.{qualname}" if qualname else name
                docs.append(Document(where, text + "\n", NAME, position=where, label=topic))
    return docs


def topic_counts() -> dict[str, int]:
    """Documents per topic (before genlab's cleaning and deduplication)."""
    return dict(Counter(d.label for d in stdlib_topics()))


def module_files() -> list[Path]:
    """The source files of the modules read (they key a prepared dataset's cache)."""
    files = []
    for names in TOPICS.values():
        for name in names:
            module = _import(name)
            file = getattr(module, "__file__", None)
            if file:
                files.append(Path(file))
    return sorted(set(files))


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:  # a build without the module (e.g. no _ssl): the topic just has less
        return None


def _docstrings(module: ModuleType) -> list[tuple[str, str]]:
    """(qualified name, cleaned docstring) of the module and of its public functions,
    classes and their own methods; only what the module itself defines (not re-exports)."""
    out = [("", _clean(module.__doc__))]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            out.append((attr, _clean(obj.__doc__)))
            for member, value in sorted(vars(obj).items()):
                if not member.startswith("_"):
                    out.append((f"{attr}.{member}", _clean(_doc_of(value))))
        elif callable(obj):
            out.append((attr, _clean(obj.__doc__)))
    return [(q, t) for q, t in out if t]


def _doc_of(value: Any) -> str | None:
    if isinstance(value, classmethod | staticmethod):
        value = value.__func__
    if not (callable(value) or isinstance(value, property)):
        return None  # a constant: its __doc__ is its type's
    doc = getattr(value, "__doc__", None)
    return doc if isinstance(doc, str) else None


# A C function's docstring opens with its signature ("group([group1, ...]) -> str or tuple.").
_SIGNATURE = re.compile(r"[\w.]+\(.*\)\s*((->|-->|--).*)?")


def _clean(doc: str | None) -> str:
    """The docstring's prose: cleaned indentation, without a leading signature line (it
    names the function)."""
    if not isinstance(doc, str):
        return ""
    lines = inspect.cleandoc(doc).splitlines()
    while lines and (_SIGNATURE.fullmatch(lines[0].strip()) or not lines[0].strip()):
        lines = lines[1:]
    return "\n".join(lines).strip()
