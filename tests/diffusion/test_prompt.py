"""ComfyUI prompt syntax: weights (spec §5.3), embeddings (§5.1-5.2), chunking (§5.4), clip skip (§7.10)."""

import pytest
import torch

from diffusion.prompt import (
    chunk_groups,
    clip_skip_to_layer,
    layers_to_run,
    parse_weights,
    select_embedding,
    tokenize_groups,
    tokenize_prompt,
)
from diffusion.tokenizer import ClipTokenizer

CAT = [320, 1125, 539, 320, 2368]  # "a photo of a cat"


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


def _approx(pairs):
    return [(t, round(w, 6)) for t, w in pairs]


@pytest.mark.parametrize(
    "text, expected",
    [
        (  # the spec's example: 1.2 set, 1.1 per paren level, escaped parens and [] are literal
            r"(masterpiece:1.2), a (cat) \(dog\) ((big)) [small]",
            [("masterpiece", 1.2), (", a ", 1.0), ("cat", 1.1), (r" (dog) ", 1.0), ("big", 1.21), (" [small]", 1.0)],
        ),
        ("((red:1.5) ball:0.8)", [("red", 1.5), (" ball", 0.8)]),  # inner weight replaces, not multiplies
        ("(a (b) c)", [("a ", 1.1), ("b", 1.21), (" c", 1.1)]),
        ("(word:)", [("word:", 1.1)]),  # unparsable weight: colon stays, 1.1
        ("(:1.5)", [(":1.5", 1.1)]),  # a colon at index 0 is no separator
        ("(a:b:2)", [("a:b", 2.0)]),  # the last colon splits
        ("(unclosed", [("(unclosed", 1.0)]),
        ("a) (b)", [("a) (b)", 1.0)]),  # a stray ')' keeps the rest literal
        ("plain", [("plain", 1.0)]),
        ("", []),
    ],
)
def test_parse_weights(text, expected):
    assert _approx(parse_weights(text)) == _approx(expected)


def test_token_weights(tok):
    (chunk,) = tokenize_prompt("(a photo:1.3) of a (cat)", tok)
    assert [t for t, _ in chunk[:7]] == [49406, *CAT, 49407]
    assert _approx(chunk[:7]) == _approx(
        [(49406, 1.0), (320, 1.3), (1125, 1.3), (539, 1.0), (320, 1.0), (2368, 1.1), (49407, 1.0)]
    )


def test_empty_prompt_is_one_chunk(tok):
    (chunk,) = tokenize_prompt("", tok)
    assert [t for t, _ in chunk] == [49406, 49407] + [49407] * 75
    (chunk_g,) = tokenize_prompt("", ClipTokenizer(pad_token=0))
    assert [t for t, _ in chunk_g] == [49406, 49407] + [0] * 75


def test_100_token_prompt_splits_at_75(tok):
    chunks = tokenize_prompt(" ".join(["a photo of a cat"] * 20), ClipTokenizer(pad_token=0))
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    ids = [[t for t, _ in c] for c in chunks]
    assert ids[0] == [49406] + CAT * 15 + [49407]
    assert ids[1] == [49406] + CAT * 5 + [49407] + [0] * 50


def _fake_groups(*sizes):
    return [[(1000 + i, 1.0)] * n for i, n in enumerate(sizes)]


def test_short_group_moves_whole_long_group_splits(tok):
    chunks = chunk_groups(_fake_groups(73, 3, 2), tok)  # 3 < 8 tokens: moves to chunk 2
    assert [t for t, _ in chunks[0][72:]] == [1000, 1000, 49407, 49407, 49407]
    assert [t for t, _ in chunks[1][:7]] == [49406, 1001, 1001, 1001, 1002, 1002, 49407]
    chunks = chunk_groups(_fake_groups(73, 8), tok)  # 8 tokens: 2 fill chunk 1, 6 continue
    assert [t for t, _ in chunks[0][73:]] == [1000, 1001, 1001, 49407]
    assert [t for t, _ in chunks[1][:8]] == [49406] + [1001] * 6 + [49407]
    assert len(chunk_groups(_fake_groups(75), tok)) == 1 and len(chunk_groups(_fake_groups(76), tok)) == 2


class _Embeddings:
    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, name, key):
        self.calls.append((name, key))
        return self.table.get(name)


def test_embeddings_resolve_with_weights_and_leftover(tok):
    foo, bar = torch.randn(2, 768), torch.randn(768)
    lookup = _Embeddings({"foo": foo, "sub/bar.pt": bar, "wide": torch.randn(3, 1280)})
    groups = tokenize_groups(
        "a embedding:foo, cat (embedding:sub/bar.pt:1.2) embedding:missing dog embedding:wide xembedding:foo",
        tok,
        lookup,
        "clip_l",
        768,
    )
    assert ("foo,", "clip_l") in lookup.calls and ("foo", "clip_l") in lookup.calls  # trailing comma stripped
    flat = [(t if isinstance(t, int) else t.tolist(), round(w, 6)) for g in groups for t, w in g]
    ids = tok.encode
    assert flat == [
        (320, 1.0),
        (foo[0].tolist(), 1.0),
        (foo[1].tolist(), 1.0),
        *[(t, 1.0) for t in ids(", cat")],
        (bar.tolist(), 1.2),
        # "missing" is dropped, its leftover text stays; the 1280-wide embedding is dropped for a 768 encoder
        *[(t, 1.0) for t in ids("dog")],
        *[(t, 1.0) for t in ids("xembedding:foo")],  # must begin a word
    ]
    assert [len(g) for g in groups] == [1, 2, len(ids(", cat")), 1, 1, len(ids("xembedding:foo"))]


def test_embedding_is_plain_text_without_lookup(tok):
    (group,) = tokenize_groups("embedding:foo", tok)
    assert [t for t, _ in group] == tok.encode("embedding:foo")


def test_embedding_vectors_in_chunks(tok):
    vecs = torch.randn(10, 768)
    (chunk,) = tokenize_prompt("cat embedding:ten", tok, _Embeddings({"ten": vecs}), "clip_l", 768)
    assert chunk[1] == (2368, 1.0) and torch.equal(chunk[2][0], vecs[0]) and torch.equal(chunk[11][0], vecs[9])
    assert chunk[12] == (49407, 1.0)


def test_select_embedding_formats():
    l, g = torch.randn(2, 768), torch.randn(2, 1280)
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": l}, "name": "x"}
    assert select_embedding(a1111, "clip_l", 768) is not None and torch.equal(select_embedding(a1111, "clip_l", 768), l)
    sdxl = {"clip_g": g, "clip_l": l}
    assert torch.equal(select_embedding(sdxl, "clip_g", 1280), g) and torch.equal(select_embedding(sdxl, "clip_l", 768), l)
    assert torch.equal(select_embedding({"emb_params": l}, "clip_l", 768), l)
    assert torch.equal(select_embedding({"<tok>": l[0]}, "clip_l", 768), l[:1])  # diffusers single vector
    bundle = {"bundle_emb.x.clip_l": l, "bundle_emb.x.clip_g": g, "lora_unet_a.alpha": torch.tensor(1.0)}
    assert torch.equal(select_embedding(bundle, "clip_g", 1280), g)
    listed = [{"a": l, "b": g}, {"c": l[:1]}]
    assert select_embedding(listed, "clip_l", 768).shape == (3, 768)


def test_clip_skip_helpers():
    assert clip_skip_to_layer(1) == -1 and clip_skip_to_layer(2) == -2
    assert layers_to_run(-1, 12) == 12 and layers_to_run(-2, 12) == 11 and layers_to_run(-12, 12) == 1
    assert layers_to_run(-13, 12) is None and layers_to_run(0, 12) == 1
    with pytest.raises(ValueError):
        clip_skip_to_layer(0)
