"""CLIPTextEncode & co. on tiny checkpoints: equal to direct diffusion.text_encoders calls on the same
weights, prompt weights, embedding files (SD1 .pt / .safetensors, SDXL clip_l + clip_g), clip skip."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from diffusion.text_encoders import (SD1_CLIP_L, SDXL_CLIP_G, SDXL_CLIP_L, encode_chunks, encode_prompt,
                                     load_clip_text)
from diffusion.tokenizer import ClipTokenizer
from diffusion.prompt import tokenize_prompt
from nodes.conditioning import CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from nodes.loaders import CLIPSetLastLayer


def _tower(state_dict: dict, prefix: str):
    """The text encoder built straight from the file's weights, independent of the loader nodes."""
    return load_clip_text({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})


@pytest.fixture
def sd1(load_checkpoint, tiny_state_dict):
    _, clip, _ = load_checkpoint("sd15")
    return clip, _tower(tiny_state_dict("sd15"), "cond_stage_model.transformer.")


@pytest.fixture
def embeddings_dir(services):
    folder = services.folders.models["embeddings"][0]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _encode(clip, text, rt):
    (entry,), = CLIPTextEncode().execute(text, clip, rt)
    return entry


def test_clip_text_encode_equals_direct_call(sd1, rt):
    clip, tower = sd1
    cond, options = _encode(clip, "a photo of a cat, (masterpiece:1.2)", rt)
    want_cond, want_pooled = encode_prompt([(tower, SD1_CLIP_L)], "a photo of a cat, (masterpiece:1.2)")
    assert cond.shape == (1, 77, 32)
    assert torch.equal(cond, want_cond)
    assert torch.equal(options["pooled_output"], want_pooled)
    assert set(options) == {"pooled_output"}


def test_prompt_weight_scales_against_the_empty_prompt(sd1, rt):
    clip, tower = sd1
    plain, _ = _encode(clip, "a cat", rt)
    weighted, _ = _encode(clip, "a (cat:1.5)", rt)
    tokenizer = ClipTokenizer()
    empty, _ = encode_chunks(tower, SD1_CLIP_L, tokenize_prompt("", tokenizer))
    cat = 2  # [BOS, a, cat, EOS, ...]
    expected = empty[:, cat] + 1.5 * (plain[:, cat] - empty[:, cat])
    torch.testing.assert_close(weighted[:, cat], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted[:, :cat], plain[:, :cat], atol=1e-5, rtol=1e-5)  # causal: earlier tokens


def test_long_prompts_are_chunked(sd1, rt):
    clip, _ = sd1
    cond, _ = _encode(clip, " ".join(["cat"] * 100), rt)
    assert cond.shape == (1, 154, 32)


@pytest.mark.parametrize("filename, content", [
    ("emb.pt", lambda v: {"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "emb", "step": 10}),
    ("emb.safetensors", lambda v: {"emb_params": v}),
])
def test_embedding_files_are_inserted_as_token_vectors(filename, content, sd1, rt, embeddings_dir):
    clip, tower = sd1
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    path = embeddings_dir / filename
    data = content(vectors)
    torch.save(data, path) if filename.endswith(".pt") else save_file(data, str(path))
    try:
        cond, _ = _encode(clip, "a embedding:emb cat", rt)
        want, _ = encode_prompt([(tower, SD1_CLIP_L)], "a embedding:emb cat",
                                embedding_lookup=lambda name, key: vectors if name == "emb" else None)
        assert torch.equal(cond, want)
        without, _ = _encode(clip, "a cat", rt)
        assert not torch.allclose(cond[:, 2], without[:, 2])  # two vectors took the place after "a"
        # "embedding:name.pt" and a weighted reference resolve the same file
        assert torch.equal(_encode(clip, f"a embedding:{filename} cat", rt)[0], cond)
        weighted, _ = _encode(clip, "a (embedding:emb:1.3) cat", rt)
        assert not torch.equal(weighted, cond)
    finally:
        path.unlink()


def test_unknown_and_escaping_embeddings_are_dropped(sd1, rt):
    clip, _ = sd1
    plain, _ = _encode(clip, "a cat", rt)
    assert torch.equal(_encode(clip, "a embedding:missing cat", rt)[0], plain)
    assert torch.equal(_encode(clip, "a embedding:../../../etc/passwd cat", rt)[0], plain)


def test_sdxl_embedding_with_clip_l_and_clip_g(load_checkpoint, tiny_state_dict, rt, embeddings_dir):
    _, clip, _ = load_checkpoint("sdxl")
    sd = tiny_state_dict("sdxl")
    # Layer indices count from what the tiny towers hold (3 layers), as the loader does.
    towers = [(_tower(sd, "conditioner.embedders.0.transformer."), replace(SDXL_CLIP_L, layers=3)),
              (_tower(sd, "conditioner.embedders.1.model."), replace(SDXL_CLIP_G, layers=3))]
    gen = torch.Generator().manual_seed(2)
    vectors = {"clip_l": torch.randn(1, 32, generator=gen), "clip_g": torch.randn(1, 64, generator=gen)}
    save_file(vectors, str(embeddings_dir / "xl_style.safetensors"))
    cond, options = _encode(clip, "embedding:xl_style, a cat", rt)
    want_cond, want_pooled = encode_prompt(towers, "embedding:xl_style, a cat",
                                           embedding_lookup=lambda name, key: vectors[key] if name == "xl_style" else None)
    assert cond.shape == (1, 77, 96) and options["pooled_output"].shape == (1, 64)
    torch.testing.assert_close(cond, want_cond, atol=1e-6, rtol=0)
    torch.testing.assert_close(options["pooled_output"], want_pooled, atol=1e-6, rtol=0)
    plain, _ = _encode(clip, "a cat", rt)
    assert cond.shape == plain.shape and not torch.allclose(cond[:, 1], plain[:, 1])


def test_clip_set_last_layer_selects_the_layer(sd1, rt):
    clip, tower = sd1
    skipped, = CLIPSetLastLayer().execute(clip, -2)
    assert skipped.layer == -2 and clip.layer is None  # the clone changed, not the input
    cond_last, _ = _encode(clip, "a cat", rt)
    cond_skip, _ = _encode(skipped, "a cat", rt)
    assert not torch.allclose(cond_last, cond_skip)
    usage = replace(SD1_CLIP_L, layers=tower.config.layers)
    want, _ = encode_prompt([(tower, usage)], "a cat", stop_at_clip_layer=-2)
    assert torch.equal(cond_skip, want)
    # by hand: the output of layer 2 of 3, then the final LayerNorm (SD1 semantics, spec §7.10)
    chunks = tokenize_prompt("a cat", ClipTokenizer())
    x = tower.embed([[t for t, _ in chunks[0]]])
    for layer in tower.transformer.encoder.layers[:2]:
        x = layer(x, None, is_causal=True)
    torch.testing.assert_close(cond_skip, tower.transformer.final_layer_norm(x), atol=1e-6, rtol=0)
    minus_one, = CLIPSetLastLayer().execute(clip, -1)
    assert torch.equal(_encode(minus_one, "a cat", rt)[0], cond_last)


def test_sdxl_encoders(load_checkpoint, rt):
    _, clip, _ = load_checkpoint("sdxl")
    (cond, options), = CLIPTextEncodeSDXL().execute(clip, 1024, 768, 8, 16, 2048, 1536, "a cat",
                                                   " ".join(["dog"] * 100), rt)[0]
    assert cond.shape == (1, 154, 96)  # text_l needs two chunks; text_g is padded with an empty chunk
    assert options["pooled_output"].shape == (1, 64)
    assert {k: v for k, v in options.items() if k != "pooled_output"} == {
        "width": 1024, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 2048, "target_height": 1536}
    (plain, plain_options), = CLIPTextEncode().execute("a cat", clip, rt)[0]
    # pooled comes from text_g's first chunk (batched with the padding chunk here, hence not bit-equal)
    torch.testing.assert_close(options["pooled_output"], plain_options["pooled_output"], atol=1e-6, rtol=0)
    torch.testing.assert_close(cond[:, :77, 32:], plain[:, :, 32:], atol=1e-6, rtol=0)  # bigG part of chunk 1

    _, refiner_clip, _ = load_checkpoint("sdxl-refiner")
    (cond, options), = CLIPTextEncodeSDXLRefiner().execute(2.5, 1024, 1024, "a cat", refiner_clip, rt)[0]
    assert cond.shape == (1, 77, 64)
    assert options["aesthetic_score"] == 2.5 and (options["width"], options["height"]) == (1024, 1024)
    with pytest.raises(ValueError, match="CLIP-L and bigG"):
        CLIPTextEncodeSDXL().execute(refiner_clip, 1024, 1024, 0, 0, 1024, 1024, "a", "b", rt)


def test_missing_clip_is_reported(rt):
    with pytest.raises(ValueError, match="holds no text encoder"):
        CLIPTextEncode().execute("a cat", None, rt)
