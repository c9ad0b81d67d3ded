"""genlab tokenizers in the ecosystem's tokenizer formats, with the same ids for the same text.

- `backend_tokenizer`: a Hugging Face `tokenizers.Tokenizer` (what `tokenizer.json` holds):
  char: one token per character (a `Split` on every character + `WordLevel`, unknown
  characters → id 0, U+FFFD, as genlab does; decoding concatenates); byte: byte-level BPE with
  the 256 byte symbols as ids 0-255 and no merges; bpe / hf: the run's own tokenizer.
- `transformers_tokenizer`: that backend as a `PreTrainedTokenizerFast` with its special tokens.
- `gguf_vocab`: the vocabulary as llama.cpp stores it: byte and BPE tokenizers as a GPT-2 style
  byte-level BPE (`tokenizer.ggml.model = gpt2`); a char tokenizer as a SentencePiece-style
  vocabulary of single characters (`llama`, space spelled U+2581, no prefix space), the only
  llama.cpp vocabulary type that can hold multi-byte characters as single tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from genlab.data.tokenizers import Tokenizer
from genlab.errors import ConfigError, require

END_OF_TEXT = "<|endoftext|>"
SPM_SPACE = "\u2581"  # SentencePiece's spelling of " "
ROLES = ("bos", "eos", "pad", "unk")


def _tokenizers() -> Any:
    return require("tokenizers", "export")


def _byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: the printable symbol standing for each byte 0-255 (the
    byte's own character when printable, else the next unused code point from 256 on)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols, shift = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:  # bytes without a printable form map past 255, in byte order
            symbols[b] = chr(256 + shift)
            shift += 1
    return [symbols[b] for b in range(256)]


def backend_tokenizer(tok: Tokenizer) -> Any:
    """A `tokenizers.Tokenizer` that maps text to the ids `tok` gives (see module doc)."""
    tk = _tokenizers()
    if tok.kind == "char":
        alphabet = tok.alphabet  # id 0 is U+FFFD, genlab's unknown character
        hf = tk.Tokenizer(
            tk.models.WordLevel({c: i for i, c in enumerate(alphabet)}, unk_token=alphabet[0])
        )
        # Every character is its own piece ([\s\S]: any character, newlines included).
        hf.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = tk.decoders.Fuse()
        return hf
    if tok.kind == "byte":
        vocab = {symbol: b for b, symbol in enumerate(_byte_symbols())}
        hf = tk.Tokenizer(tk.models.BPE(vocab, []))
        hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = tk.decoders.ByteLevel()
        return hf
    if tok.kind in ("bpe", "hf"):
        return tk.Tokenizer.from_str(tok.hf.to_str())  # a copy: the run's stays untouched
    if tok.kind == "hf_pretrained":
        return tk.Tokenizer.from_str(tok.tok.backend_tokenizer.to_str())
    raise ConfigError(f"cannot export a {tok.kind!r} tokenizer; known: char, byte, bpe, hf")


def special_tokens(tok: Tokenizer) -> dict[str, str]:
    """The special tokens of `tok` by role (bos, eos, pad, unk): byte-level BPE's end-of-text
    token. Byte and char tokenizers have none: generation runs to its length limit. (The char
    tokenizer's unknown character, id 0, is handled inside the backend's WordLevel model and
    is deliberately not declared special: decoding with `skip_special_tokens=True`, as
    transformers' pipelines do, must still show it as genlab does.)"""
    if tok.kind in ("bpe", "hf") and tok.hf.token_to_id(END_OF_TEXT) is not None:
        return {"bos": END_OF_TEXT, "eos": END_OF_TEXT, "pad": END_OF_TEXT}
    if tok.kind == "hf_pretrained":
        t = tok.tok
        roles = {"bos": t.bos_token, "eos": t.eos_token, "pad": t.pad_token, "unk": t.unk_token}
        return {k: v for k, v in roles.items() if v is not None}
    return {}


def special_ids(tok: Tokenizer) -> dict[str, int | None]:
    """The ids of `special_tokens(tok)` by role (None for a role it does not have)."""
    backend = backend_tokenizer(tok)
    roles = special_tokens(tok)
    return {r: backend.token_to_id(roles[r]) if r in roles else None for r in ROLES}


def transformers_tokenizer(tok: Tokenizer, model_max_length: int) -> Any:
    """`tok` as a `transformers.PreTrainedTokenizerFast` (hf_pretrained runs: their own)."""
    from genlab.models.hf import transformers_offline

    transformers = transformers_offline()
    if tok.kind == "hf_pretrained":
        return tok.tok
    roles = special_tokens(tok)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend_tokenizer(tok),
        model_max_length=model_max_length,
        # Decoding must give back the text exactly: no space "clean-up" around punctuation.
        clean_up_tokenization_spaces=False,
        **{f"{role}_token": value for role, value in roles.items()},
    )


@dataclass(frozen=True)
class GGUFVocab:
    """A vocabulary in llama.cpp's `tokenizer.ggml.*` terms."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
    pre: str  # pre-tokenizer name llama.cpp knows ("gpt-2", "default")
    tokens: list[str]
    token_types: list[int]  # gguf.TokenType values
    merges: list[str] | None  # "a b" per merge (gpt2 model only)
    scores: list[float] | None
    ids: dict[str, int | None]  # bos, eos, pad, unk
    add_space_prefix: bool | None


def gguf_vocab(tok: Tokenizer) -> GGUFVocab:
    """`tok`'s vocabulary for a GGUF file (see module doc); a ConfigError for a tokenizer that
    is not byte-level BPE, char or byte."""
    normal, unknown, control, user = 1, 2, 3, 4  # gguf.TokenType
    if tok.kind == "char":
        # Space is spelled U+2581 in a SentencePiece vocabulary; a literal U+2581 in the
        # alphabet would then mean two characters.
        if SPM_SPACE in tok.alphabet:
            raise ConfigError(
                "the run's char alphabet contains U+2581, which a GGUF (SentencePiece) "
                "vocabulary uses for the space character; export with --format hf or onnx"
            )
        tokens = [SPM_SPACE if c == " " else c for c in tok.alphabet]
        types = [unknown] + [normal] * (len(tokens) - 1)
        ids = {"bos": None, "eos": None, "pad": None, "unk": 0}
        return GGUFVocab("llama", "default", tokens, types, None, [0.0] * len(tokens), ids, False)
    backend = backend_tokenizer(tok)
    spec = json.loads(backend.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel":
        raise ConfigError(
            f"GGUF export holds byte-level BPE, char and byte tokenizers; this run's "
            f"{tok.kind!r} tokenizer is {model.get('type')!r} with a {pre.get('type')!r} "
            "pre-tokenizer; export with --format hf or onnx"
        )
    size = backend.get_vocab_size(with_added_tokens=True)
    tokens: list[Any] = [None] * size
    for token, i in model["vocab"].items():
        tokens[i] = token
    types = [normal] * size
    for added in spec.get("added_tokens") or []:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = control if added["special"] else user
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise ConfigError(
            f"the run's tokenizer has no token for ids {missing[:5]}; a GGUF vocabulary needs "
            "every id spelled; export with --format hf or onnx"
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    # "gpt-2": GPT-2's split pattern, the one ByteLevel(use_regex=True) applies. (A byte
    # tokenizer has no merges, so where it splits changes nothing.)
    return GGUFVocab("gpt2", "gpt-2", tokens, types, merges, [0.0] * size, special_ids(tok), None)


__all__ = [
    "END_OF_TEXT",
    "GGUFVocab",
    "backend_tokenizer",
    "gguf_vocab",
    "special_ids",
    "special_tokens",
    "transformers_tokenizer",
]
