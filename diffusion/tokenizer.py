"""The CLIP BPE tokenizer shared by CLIP-L, OpenCLIP-H and bigG (spec §1.6), built fully offline.

Only the original merges file `data/bpe_simple_vocab_16e6.txt.gz` is shipped (see data/NOTICE.md).
The vocab.json / merges.txt pair that transformers' CLIPTokenizer wants is derived from it at load
time instead of being stored: the derivation is fixed (byte alphabet, the same with `</w>`, one entry
per merge, then the two specials), takes well under a second, and it keeps a single source of truth
of ~1.3 MB in the repository instead of ~2.5 MB of derived, uncompressed copies.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

BPE_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
BOS_TOKEN = 49406  # <|startoftext|>
EOS_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
# The vocabulary is the byte alphabet, the same with "</w>", one token per merge and the two specials.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2


def _byte_alphabet() -> list[str]:
    """GPT-2 style printable stand-in for each byte value, in CLIP's vocabulary order.

    Bytes that are already printable, non-space characters keep their own code point and come first;
    the rest are mapped to code points 256, 257, … in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) in transformers' CLIPTokenizer format, derived from the shipped BPE file."""
    lines = gzip.decompress(BPE_PATH.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


class ClipTokenizer:
    """Text → CLIP token ids without BOS/EOS; the prompt code adds those and the padding per chunk.

    `pad_token` is EOS for CLIP-L (SD1, SDXL clip_l) and 0 for the open_clip models (SD2 clip_h,
    SDXL clip_g), as in ComfyUI."""

    def __init__(self, pad_token: int = EOS_TOKEN):
        vocab, merges = clip_vocab_and_merges()
        self.hf = CLIPTokenizer(vocab=vocab, merges=merges)
        self.bos, self.eos, self.pad = BOS_TOKEN, EOS_TOKEN, pad_token

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]
