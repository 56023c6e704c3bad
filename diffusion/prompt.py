"""ComfyUI prompt syntax: weights, `embedding:NAME` references, 77-token chunks and clip skip (spec §5, §7.10).

The pipeline is text → `parse_weights` (segments with weights) → `tokenize_groups` (token groups, with
textual-inversion vectors in place of ids) → `chunk_groups` (BOS + ≤75 tokens + EOS + padding). Tokens
are `(id_or_vector, weight)` pairs; a vector is a raw token-embedding row that the text encoder inserts
instead of looking up an id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .tokenizer import ClipTokenizer

log = logging.getLogger(__name__)

Token = int | torch.Tensor
WeightedToken = tuple[Token, float]
# (name, embedding key "clip_l" / "clip_h" / "clip_g") → [n_vectors, dim] or None when unknown.
EmbeddingLookup = Callable[[str, str], torch.Tensor | None]

CHUNK_LENGTH = 77
MAX_WORD_LENGTH = 8  # token groups at least this long may be split across chunks
EMBEDDING_PREFIX = "embedding:"
# Escaped parentheses are swapped for private-use characters while parsing, then restored.
_ESCAPES = {"\\(": "\ue000", "\\)": "\ue001"}


def _escape(text: str) -> str:
    for seq, placeholder in _ESCAPES.items():
        text = text.replace(seq, placeholder)
    return text


def _unescape(text: str) -> str:
    for seq, placeholder in _ESCAPES.items():
        text = text.replace(placeholder, seq[1])
    return text


def _split_top_level(text: str) -> list[str]:
    """Split into plain runs and balanced top-level `( … )` groups.

    Like ComfyUI, a stray `)` drives the depth negative, so following text (parentheses included)
    stays literal until the depth is back to zero; an unclosed `(` leaves the rest literal."""
    parts, current, depth = [], "", 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                parts.append(current)
            current = ""
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + char)
                current = ""
                continue
        current += char
    if current:
        parts.append(current)
    return parts


def _parse(text: str, weight: float) -> list[tuple[str, float]]:
    out = []
    for part in _split_top_level(text):
        if len(part) < 2 or part[0] != "(" or part[-1] != ")":
            out.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon > 0:  # `(text:w)` sets the weight outright; a leading colon is never a separator
            try:
                inner, inner_weight = inner[:colon], float(inner[colon + 1 :])
            except ValueError:
                pass
        out.extend(_parse(inner, inner_weight))
    return out


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) segments with ComfyUI semantics (spec §5.3).

    `(x)` multiplies by 1.1 (nesting compounds), `(x:w)` sets w ignoring outer groups, `\\(` / `\\)`
    are literal parentheses and square brackets are plain text."""
    return [(_unescape(t), w) for t, w in _parse(_escape(text), 1.0)]


def select_embedding(data: Any, key: str, dim: int) -> torch.Tensor | None:
    """Pick the vectors for one text encoder out of a loaded embedding file (spec §5.1 order).

    `data` is what the file holds (a dict of tensors / nested dicts, or a list of dicts); `key` is
    "clip_l", "clip_h" or "clip_g"; `dim` the encoder width. Returns [n_vectors, D] or None."""
    if isinstance(data, list):
        parts = [t.reshape(-1, dim) for d in data for t in d.values() if torch.is_tensor(t) and t.shape[-1] == dim]
        return torch.cat(parts) if parts else None
    if isinstance(data.get("string_to_param"), Mapping):
        found = next(iter(data["string_to_param"].values()))
    elif key in data:
        found = data[key]
    else:
        bundled = [k for k in data if re.fullmatch(r"bundle_emb\.[^.]+\.string_to_param\..+", k)]
        bundled += [k for k in data if re.fullmatch(rf"bundle_emb\.[^.]+\.{re.escape(key)}", k)]
        found = data[bundled[0]] if bundled else next(iter(data.values()), None)
    return found.reshape(-1, found.shape[-1]) if torch.is_tensor(found) else None


def _split_embedding_refs(segment: str) -> list[str]:
    """Pieces of a segment; each piece after the first starts with `embedding:` (which must begin a word)."""
    pieces = re.split(rf"[ \n]{re.escape(EMBEDDING_PREFIX)}", segment)
    return [pieces[0]] + [EMBEDDING_PREFIX + p for p in pieces[1:]]


def _lookup_embedding(
    reference: str, lookup: EmbeddingLookup, key: str, dim: int | None
) -> tuple[torch.Tensor | None, str]:
    """Resolve `embedding:NAME rest…` to (vectors or None, text left over after the name)."""
    name, leftover = (reference[len(EMBEDDING_PREFIX) :].split(None, 1) + ["", ""])[:2]
    vectors = lookup(name, key)
    if vectors is None and name.rstrip(",") != name:
        stripped = name.rstrip(",")
        vectors, leftover = lookup(stripped, key), f"{name[len(stripped):]} {leftover}"
    if vectors is None:
        log.warning("embedding %r not found, ignored", name)
    elif dim is not None and vectors.shape[-1] != dim:
        log.warning("embedding %r has width %d, the text encoder %d: ignored", name, vectors.shape[-1], dim)
        vectors = None
    return vectors, leftover


def tokenize_groups(
    text: str,
    tokenizer: ClipTokenizer,
    embedding_lookup: EmbeddingLookup | None = None,
    embedding_key: str = "clip_l",
    embedding_dim: int | None = None,
) -> list[list[WeightedToken]]:
    """Weighted token groups: the unit that chunking keeps together (text between embedding
    references, or one embedding's vectors). Without a lookup `embedding:` is plain text."""
    groups = []
    for segment, weight in parse_weights(text):
        pieces = _split_embedding_refs(segment) if embedding_lookup else [segment]
        for piece in filter(None, pieces):
            if embedding_lookup and piece.startswith(EMBEDDING_PREFIX):
                vectors, piece = _lookup_embedding(piece, embedding_lookup, embedding_key, embedding_dim)
                if vectors is not None:
                    groups.append([(v, weight) for v in vectors.reshape(-1, vectors.shape[-1])])
            ids = tokenizer.encode(piece) if piece.strip() else []
            if ids:
                groups.append([(t, weight) for t in ids])
    return groups


def chunk_groups(groups: list[list[WeightedToken]], tokenizer: ClipTokenizer) -> list[list[WeightedToken]]:
    """Pack groups into 77-token chunks `[BOS] + ≤75 tokens + [EOS] + padding` (spec §5.4).

    A group that does not fit in the current chunk moves whole to the next one, unless it is at least
    `MAX_WORD_LENGTH` tokens long: then it fills the chunk and continues in the next. Special tokens
    and padding have weight 1."""
    room = CHUNK_LENGTH - 2
    chunks, current = [], []

    def close() -> None:
        pad = [(tokenizer.pad, 1.0)] * (room - len(current))
        chunks.append([(tokenizer.bos, 1.0), *current, (tokenizer.eos, 1.0), *pad])

    for group in groups:
        splittable = len(group) >= MAX_WORD_LENGTH
        while len(current) + len(group) > room:
            if splittable:
                take = room - len(current)
                current, group = current + group[:take], group[take:]
            close()
            current = []
        current = current + group
    close()
    return chunks


def tokenize_prompt(
    text: str,
    tokenizer: ClipTokenizer,
    embedding_lookup: EmbeddingLookup | None = None,
    embedding_key: str = "clip_l",
    embedding_dim: int | None = None,
) -> list[list[WeightedToken]]:
    """Prompt → 77-token chunks of (id or vector, weight), as ComfyUI's `tokenize_with_weights`."""
    return chunk_groups(tokenize_groups(text, tokenizer, embedding_lookup, embedding_key, embedding_dim), tokenizer)


def clip_skip_to_layer(clip_skip: int) -> int:
    """A1111 "Clip skip" N as ComfyUI's CLIPSetLastLayer value (−N); 1 means the last layer."""
    if clip_skip < 1:
        raise ValueError("clip skip counts from 1")
    return -clip_skip


def layers_to_run(stop_at_clip_layer: int, num_layers: int) -> int | None:
    """Transformer layers whose output a CLIPSetLastLayer value selects (−1 → all, −2 → all but one).

    None means out of range, where ComfyUI falls back to the plain last layer with the final LN."""
    index = stop_at_clip_layer if stop_at_clip_layer >= 0 else num_layers + stop_at_clip_layer
    return index + 1 if 0 <= index < num_layers else None
