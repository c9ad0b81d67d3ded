"""Tokenizers: text <-> integer ids. Every tokenizer saves itself as `tokenizer.json` in a
directory (with a "kind" field) so `load_tokenizer` can rebuild it for generation and evaluation.

`byte` needs no training (vocab 256, any text round-trips). `char` learns its alphabet from the
training split only; characters it never saw map to id 0, the unknown symbol."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from genlab.errors import CheckpointError
from genlab.registry import Registry

TOKENIZER_FILE = "tokenizer.json"
UNKNOWN_CHAR = "\ufffd"  # shown for id 0 of the char tokenizer


@runtime_checkable
class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, directory: Path) -> None: ...

    def byte_lengths(self) -> np.ndarray | None:
        """(V,) the UTF-8 bytes each id stands for, or None where a token's bytes are not
        known by itself (bits-per-byte then decodes whole windows)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens. decode() replaces invalid byte sequences (a sample may cut a
    multi-byte character in half)."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def byte_lengths(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)

    def save(self, directory: Path) -> None:
        _write_json(Path(directory) / TOKENIZER_FILE, {"kind": self.kind})

    @classmethod
    def from_spec(cls, spec: dict, directory: Path) -> ByteTokenizer:
        return cls()


class CharTokenizer:
    """One id per character seen in training text; id 0 is the unknown character."""

    kind = "char"

    def __init__(self, alphabet: Sequence[str]):
        self.alphabet = [UNKNOWN_CHAR, *(c for c in alphabet if c != UNKNOWN_CHAR)]
        self._id = {c: i for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(self.alphabet)

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        get = self._id.get
        return [get(c, 0) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)

    def byte_lengths(self) -> np.ndarray:
        """Each character's UTF-8 length (id 0, a character unseen in training, counts as
        its stand-in U+FFFD: 3 bytes)."""
        return np.array([len(c.encode("utf-8")) for c in self.alphabet], dtype=np.int64)

    def save(self, directory: Path) -> None:
        spec = {"kind": self.kind, "alphabet": self.alphabet}
        _write_json(Path(directory) / TOKENIZER_FILE, spec)

    @classmethod
    def from_spec(cls, spec: dict, directory: Path) -> CharTokenizer:
        alphabet = spec.get("alphabet")
        if not isinstance(alphabet, list) or not all(isinstance(c, str) for c in alphabet):
            raise CheckpointError(
                f"the char tokenizer in {Path(directory) / TOKENIZER_FILE} has no alphabet "
                "list; restore tokenizer.json from the run's dataset directory"
            )
        return cls(alphabet[1:])


# Every tokenizer kind, by the "kind" field of its tokenizer.json: kind -> its loader, a
# `from_spec(spec, directory)` imported on lookup (a fresh `genlab generate` finds them all).
TOKENIZERS = Registry(
    "tokenizer kind",
    {
        "byte": "genlab.data.tokenizers:ByteTokenizer.from_spec",
        "char": "genlab.data.tokenizers:CharTokenizer.from_spec",
        "bpe": "genlab.data.bpe:BPETokenizer.from_spec",
        "hf": "genlab.data.bpe:HFTokenizer.from_spec",
        "hf_pretrained": "genlab.models.hf:HFPretrainedTokenizer.from_spec",
    },
    error=CheckpointError,
)


def load_tokenizer(directory: Path) -> Tokenizer:
    """Rebuild the tokenizer saved in `directory` (its tokenizer.json)."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no tokenizer found: {path} does not exist; point at a run or dataset directory "
            "that genlab wrote"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable genlab tokenizer record ({type(exc).__name__}); "
            "restore it from the dataset directory the run names in data.json"
        ) from None
    kind = spec.get("kind") if isinstance(spec, dict) else None
    return TOKENIZERS.lookup(kind, where=str(path))(spec, Path(directory))


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
