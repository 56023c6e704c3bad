"""CLIP tokenizer built from the shipped BPE file: ids from spec §1.6 and the vocabulary layout."""

import pytest

from diffusion.tokenizer import BOS_TOKEN, EOS_TOKEN, VOCAB_SIZE, ClipTokenizer, clip_vocab_and_merges


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


@pytest.mark.parametrize(
    "text, ids",
    [
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        ("A  Photo\nof a CAT", [320, 1125, 539, 320, 2368]),  # lower-cased, whitespace collapsed
        (",", [267]),
        ("12345", [272, 273, 274, 275, 276]),  # digits are single tokens
        ("don't", [847, 713]),
        ("BREAK", [2568]),  # plain text in ComfyUI
        ("", []),
    ],
)
def test_known_ids(tok, text, ids):
    assert tok.encode(text) == ids


def test_full_sequence_with_specials(tok):
    assert tok.hf("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocabulary_layout():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["a</w>"] == 320
    assert vocab["<|startoftext|>"] == BOS_TOKEN and vocab["<|endoftext|>"] == EOS_TOKEN
    assert merges[0] == ("i", "n") and vocab["in"] == 512


def test_pad_token_per_family():
    assert ClipTokenizer().pad == EOS_TOKEN  # CLIP-L
    assert ClipTokenizer(pad_token=0).pad == 0  # open_clip H / bigG
