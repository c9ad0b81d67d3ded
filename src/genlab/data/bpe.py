"""Subword tokenizers backed by Hugging Face `tokenizers` (imported lazily).

`BPETokenizer` ("bpe") is a byte-level BPE trained here on the TRAIN split's texts only (so no
validation/test text shapes the vocabulary). Byte-level means the 256 byte symbols are always
in the vocabulary, so any text round-trips exactly. `HFTokenizer` ("hf") wraps a local
Hugging Face tokenizer directory (its tokenizer.json; never the network).

Both save into a directory as genlab's `tokenizer.json` ({"kind": ..., "file": ...}) next to
the Hugging Face JSON under another name (`bpe.json` / `hf_tokenizer.json`);
`genlab.data.tokenizers.TOKENIZERS` names their `from_spec` loaders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genlab.data.tokenizers import TOKENIZER_FILE
from genlab.errors import CheckpointError, ConfigError, DataError, first_line, require

BPE_FILE = "bpe.json"
HF_FILE = "hf_tokenizer.json"
END_OF_TEXT = "<|endoftext|>"
_BYTE_ALPHABET = 256
# A cut in a text that byte-level BPE cannot see: before a space followed by a word
# character or ASCII punctuation. GPT-2's pre-tokenizer (the `ByteLevel` regex) never joins
# such a space to what precedes it (no pre-token holds a space after other characters, and a
# whitespace run ends before its last space when a non-space follows), and nothing before a
# cut changes what is matched after it, so the ids of a text are the ids of its chunks,
# joined. Prose repeats its chunks (" the", " of"), so each is encoded once and remembered.
# Most texts have no space that stays joined, and for them the chunks are `text.split(" ")`
# (a space put back before all but the first): several times faster than the regex.
_CUTS_BEFORE = r"[\w!-/:-@\[-`{-~]"  # what a space is cut before
_CHUNK = re.compile(r" ?[^ ]*(?: (?!" + _CUTS_BEFORE + r")[^ ]*)*")
_JOINED_SPACE = re.compile(r" (?!" + _CUTS_BEFORE + ")")  # a space no cut comes before
# In ASCII every printable character but the space is cut before, so a joined space is one
# followed by a space, a control character or the end. Control characters mapped to spaces,
# that is a double or a final space; one may also come from a control character before a
# space, which only sends the text down the regex path (right for every text).
_CONTROL_TO_SPACE = bytes.maketrans(bytes([*range(32), 127]), b" " * 33)
_CHUNK_CACHE = 1 << 18  # chunks remembered (a few tens of MB at most); then it starts over
_CHUNK_CHARS = 48  # longer chunks (a URL, a run without spaces) are encoded, not remembered
# The pipeline BPETokenizer.train builds; only it is known to allow the cuts above.
_PLAIN_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def byte_level_lengths(backend: Any) -> np.ndarray | None:
    """(V,) raw bytes per id of a byte-level `tokenizers.Tokenizer` (GPT-2 style: every
    vocabulary entry is spelled in a 256-symbol alphabet, one symbol per byte), so a token
    holding half of a UTF-8 character counts the bytes it holds. None for other tokenizers."""
    tk = require("tokenizers", "data")
    if not isinstance(backend.decoder, tk.decoders.ByteLevel):
        return None
    alphabet = set(tk.pre_tokenizers.ByteLevel.alphabet())
    size = backend.get_vocab_size(with_added_tokens=True)
    out = np.zeros(size, dtype=np.int64)
    for token, i in backend.get_vocab(with_added_tokens=True).items():
        if i < size:  # added tokens such as <|endoftext|> are stored as their plain text
            out[i] = len(token) if set(token) <= alphabet else len(token.encode("utf-8"))
    return out


def training_sample(sizes: np.ndarray, megabytes: float | None) -> np.ndarray:
    """Which train documents a BPE learns from: (n,) bool over documents of `sizes` UTF-8
    bytes, every one when they hold at most `megabytes` MB (or it is None), else evenly
    spaced ones (the k-th of every n/k) holding about that much. Learning merges costs about
    a quarter of a CPU second per MB and serially; a sample keeps it bounded, and merges
    learned from tens of MB of a corpus barely change with more of it."""
    n = len(sizes)
    total = int(np.sum(sizes, dtype=np.int64))
    if megabytes is None or total <= megabytes * 1e6:
        return np.ones(n, dtype=bool)
    ratio = megabytes * 1e6 / total
    steps = np.floor(np.arange(n + 1) * ratio)
    return steps[1:] > steps[:-1]  # document j is taken where the running share steps up


class _HFBacked:
    """Shared encode/decode over a `tokenizers.Tokenizer`."""

    kind = ""
    file_name = ""

    def __init__(self, hf: Any):
        self.hf = hf
        self.vocab_size = int(hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode many texts at once (in Rust), as (n,) int64 arrays."""
        encoded = self.hf.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def byte_lengths(self) -> np.ndarray | None:
        return byte_level_lengths(self.hf)

    def token_id(self, token: str) -> int | None:
        """Id of a token string (e.g. END_OF_TEXT), or None if it is not in the vocabulary."""
        return self.hf.token_to_id(token)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / self.file_name))
        spec = {"kind": self.kind, "file": self.file_name, "vocab_size": self.vocab_size}
        (directory / TOKENIZER_FILE).write_text(json.dumps(spec), encoding="utf-8")

    @classmethod
    def from_spec(cls, spec: dict, directory: Path) -> Any:
        """Rebuild from genlab's tokenizer.json record (`spec`) in `directory`."""
        tokenizers = require("tokenizers", "data")
        name = spec.get("file", cls.file_name)
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(
                f"{cls.kind} tokenizer record in {directory} names file {str(name)[:60]!r}, "
                f"expected a file name such as {cls.file_name!r}; restore tokenizer.json"
            )
        path = Path(directory) / name
        if not path.is_file():
            raise CheckpointError(
                f"{cls.kind} tokenizer file {path} is missing; the directory is incomplete, "
                "prepare the data again"
            )
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as exc:  # the Rust parser raises plain Exceptions
            raise CheckpointError(
                f"{cls.kind} tokenizer file {path} cannot be read ({first_line(exc)[:120]}); "
                "prepare the data again"
            ) from None


def _may_join_space(text: str) -> bool:
    """Whether `text` may hold a space no cut comes before (`_JOINED_SPACE`); exact for
    non-ASCII texts, and for ASCII ones a C pass over the bytes ~3x cheaper than the regex
    (a false True costs only speed)."""
    if not text.isascii():
        return _JOINED_SPACE.search(text) is not None
    spaced = text.encode("ascii").translate(_CONTROL_TO_SPACE)
    return b"  " in spaced or spaced.endswith(b" ")


class BPETokenizer(_HFBacked):
    """Byte-level BPE trained on the training split. Id of END_OF_TEXT is `eot_id`."""

    kind = "bpe"
    file_name = BPE_FILE

    def __init__(self, hf: Any):
        super().__init__(hf)
        self.eot_id = self.token_id(END_OF_TEXT)
        spec = json.loads(hf.to_str())
        pre = spec.get("pre_tokenizer") or {}
        self.chunked = (
            spec.get("normalizer") is None
            and spec.get("post_processor") is None
            and all(pre.get(k) == v for k, v in _PLAIN_BYTE_LEVEL.items())
            and (spec.get("model") or {}).get("dropout") is None
        )
        # Added tokens (<|endoftext|>) are matched in the raw text before any cut: a text
        # holding one is encoded whole.
        self.specials = [t["content"] for t in spec.get("added_tokens", [])]
        self.chunks: dict[str, bytes] = {}  # a text's first chunk -> its ids (uint32 bytes)
        self.spaced: dict[str, bytes] = {}  # word -> the ids of " " + word (uint32 bytes)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of many texts, as (n,) int64 arrays: equal to `encode` of each (the
        tests check it against the library), about ten times faster on prose."""
        if not self.chunked:
            return super().encode_batch(texts)
        # Each text as a head chunk (no space before it) and the words after its cuts: the
        # ids of text = ids(head) + ids(" " + word) for each word.
        heads: list[str] = []
        words: list[list[str]] = []
        whole: list[int] = []  # texts holding a special token: encoded whole
        for i, text in enumerate(texts):
            if any(s in text for s in self.specials):
                whole.append(i)
                heads.append("")
                words.append([])
            elif not _may_join_space(text):
                parts = text.split(" ")
                heads.append(parts[0])
                words.append(parts[1:])
            else:  # every chunk after the first starts with its space
                chunks = _CHUNK.findall(text)
                heads.append(chunks[0])
                words.append([c[1:] for c in chunks[1:] if c])
        lone, spaced = self.chunks, self.spaced
        out: list[np.ndarray | None] = [None] * len(texts)
        missed: list[int] = []  # texts with a chunk not remembered yet
        for i, (head, tail) in enumerate(zip(heads, words)):
            try:
                ids = lone[head] + b"".join(map(spaced.__getitem__, tail))
            except KeyError:
                missed.append(i)
                continue
            out[i] = np.frombuffer(ids, np.uint32)
        if missed:  # prose repeats its chunks: after a few batches few texts get here
            fresh_heads = list({heads[i] for i in missed} - lone.keys())
            fresh_words = list(set().union(*(words[i] for i in missed)) - spaced.keys())
            if len(lone) + len(fresh_heads) > _CHUNK_CACHE:
                lone.clear()
                fresh_heads = list({heads[i] for i in missed})
            if len(spaced) + len(fresh_words) > _CHUNK_CACHE:
                spaced.clear()
                fresh_words = list(set().union(*(words[i] for i in missed)))
            lone.update(zip(fresh_heads, self._encode_many(fresh_heads)))
            spaced.update(zip(fresh_words, self._encode_many([" " + w for w in fresh_words])))
            for i in missed:
                ids = lone[heads[i]] + b"".join(map(spaced.__getitem__, words[i]))
                out[i] = np.frombuffer(ids, np.uint32)
            for cache, fresh in ((lone, fresh_heads), (spaced, fresh_words)):
                for chunk in fresh:
                    if len(chunk) >= _CHUNK_CHARS:
                        del cache[chunk]
        for i, ids in zip(whole, self._encode_many([texts[i] for i in whole])):
            out[i] = np.frombuffer(ids, np.uint32)
        return [ids.astype(np.int64) for ids in out]  # type: ignore[union-attr]

    def _encode_many(self, texts: list[str]) -> list[bytes]:
        if not texts:
            return []
        encoded = self.hf.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32).tobytes() for e in encoded]

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 4096,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (END_OF_TEXT,),
    ) -> BPETokenizer:
        """Learn merges from `texts` — pass the TRAIN split's texts only.

        vocab_size counts the 256 byte symbols, the special tokens and the merges; the result
        may be smaller when the text has too few distinct pairs.
        """
        minimum = _BYTE_ALPHABET + len(special_tokens) + 1
        if vocab_size < minimum:
            raise ConfigError(
                f"data.tokenizer.vocab_size must be >= {minimum} for byte-level BPE "
                f"(256 bytes + special tokens + at least one merge), got {vocab_size}; "
                "4096-32768 is usual"
            )
        if min_frequency < 1:
            raise ConfigError(
                f"data.tokenizer.min_frequency must be >= 1, got {min_frequency}; 2 is usual"
            )
        tk = require("tokenizers", "data")
        hf = tk.Tokenizer(tk.models.BPE())
        # No prefix space: encoding must not change the text, so decode(encode(t)) == t.
        hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            # All 256 byte symbols, even those absent from the training text: any input
            # (emoji, other scripts) still encodes, as bytes.
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        seen = [0]

        def counted() -> Iterable[str]:
            for text in texts:
                seen[0] += 1
                yield text

        hf.train_from_iterator(counted(), trainer=trainer)
        if seen[0] == 0:
            raise DataError(
                "cannot train a BPE tokenizer on an empty training split; add training data"
            )
        return cls(hf)


class HFTokenizer(_HFBacked):
    """A tokenizer from a local Hugging Face directory (or tokenizer.json file path)."""

    kind = "hf"
    file_name = HF_FILE

    @classmethod
    def from_local(cls, path: str | Path) -> HFTokenizer:
        """Load `path/tokenizer.json` (or `path` itself if it is a file); no network access."""
        tk = require("tokenizers", "data")
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise DataError(
                f"no Hugging Face tokenizer at {file}; point data.tokenizer.path at a local "
                "directory containing tokenizer.json (save one with "
                "AutoTokenizer.from_pretrained(...).save_pretrained(dir))"
            )
        try:
            spec = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{file} is not valid JSON ({exc}); re-save the tokenizer") from None
        if "model" not in spec:
            hint = (
                " (it is a genlab tokenizer; load it with load_tokenizer)" if "kind" in spec else ""
            )
            raise DataError(
                f"{file} is not a Hugging Face tokenizer.json: it has no 'model' entry{hint}; "
                "point data.tokenizer.path at a Hugging Face tokenizer directory"
            )
        return cls(tk.Tokenizer.from_file(str(file)))
