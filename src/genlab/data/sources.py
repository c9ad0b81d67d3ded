"""The built-in corpora (files on disk are read by `genlab.data.corpus`).

`python-docs` is the English text of CPython's `pydoc_data.topics` (about 465 KB, one document
per help topic); it ships with Python, so the quickstart needs no download. `sklearn-docs` is
scikit-learn's dataset descriptions, a second corpus for fine-tuning. `stdlib-topics` is
labelled: standard-library docstrings labelled by topic (genlab.data.stdlib_topics), for
`task: classify`."""

from __future__ import annotations

from pathlib import Path

from genlab.data.documents import Document
from genlab.errors import DataError

BUILTIN_TEXT_CORPORA = ("python-docs", "sklearn-docs", "stdlib-topics")
# The built-in corpora whose documents carry labels (the others are unlabelled text).
LABELLED_CORPORA = ("stdlib-topics",)


def builtin_documents(name: str) -> list[Document]:
    """The documents of a built-in corpus (see BUILTIN_TEXT_CORPORA)."""
    if name == "stdlib-topics":
        from genlab.data.stdlib_topics import stdlib_topics

        return stdlib_topics()
    return python_docs() if name == "python-docs" else sklearn_docs()


def builtin_files(name: str) -> list[Path]:
    """The files a built-in corpus is read from (they key the dataset cache)."""
    if name == "python-docs":
        from pydoc_data import topics

        return [Path(topics.__file__)]
    if name == "stdlib-topics":
        from genlab.data.stdlib_topics import module_files

        return module_files()
    return _sklearn_descr_files()


def sklearn_docs() -> list[Document]:
    """scikit-learn's dataset descriptions (about 43 KB of English reStructuredText, one
    document per dataset): a second, different corpus that ships with a dependency, e.g. to
    fine-tune a model pretrained on python-docs."""
    return [
        Document(
            id=f.stem, text=_read_text(f).strip() + "\n", source="sklearn-docs", position=f.name
        )
        for f in _sklearn_descr_files()
    ]


def _sklearn_descr_files() -> list[Path]:
    """Found without importing scikit-learn (~1-2.5 s): every run on sklearn-docs lists them
    to key its dataset cache, also when the cache already holds the dataset."""
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError(
            "data.source 'sklearn-docs' needs scikit-learn; install it: pip install scikit-learn"
        )
    return sorted((Path(spec.origin).parent / "datasets" / "descr").glob("*.rst"))


def python_docs() -> list[Document]:
    from pydoc_data.topics import topics

    return [
        Document(id=name, text=text.strip() + "\n", source="python-docs", position=name)
        for name, text in sorted(topics.items())
        if text.strip()
    ]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise DataError(
            f"data file {str(path)!r} looks binary (NUL bytes); remove it or use a text file"
        )
    # Invalid UTF-8 is replaced (U+FFFD) rather than failing the whole run.
    return data.decode("utf-8", errors="replace")
