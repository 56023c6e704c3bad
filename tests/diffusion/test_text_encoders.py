"""CLIP text encoders: open_clip → HF conversion against an independent open_clip-math forward,
HF's own forward, clip-skip / LayerNorm rules, prompt weights and textual-inversion vectors."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTextModelWithProjection

from diffusion.keymaps_clip import hf_to_open_clip, is_open_clip, module_to_hf, open_clip_to_hf, to_module_keys
from diffusion.prompt import tokenize_prompt
from diffusion.text_encoders import (
    SD1_CLIP_L,
    SD2_CLIP_H,
    SDXL_CLIP_G,
    SDXL_CLIP_L,
    ClipTextConfig,
    ClipTextEncoder,
    encode_chunks,
    encode_prompt,
    load_clip_text,
)
from diffusion.tokenizer import ClipTokenizer

ATOL = 1e-5
PROMPT = "a photo of a (cat:1.4), (dog)"


def _random_open_clip(width=48, layers=3, mlp=96, seed=0):
    """A tiny open_clip-layout text tower with every tensor random (LayerNorms included)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.2: torch.randn(*s, generator=g) * scale  # noqa: E731
    sd = {"token_embedding.weight": r(49408, width), "positional_embedding": r(77, width), "logit_scale": torch.tensor(4.6)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        sd |= {
            p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width),
            p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
            p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
            p + "ln_2.weight": 1 + r(width), p + "ln_2.bias": r(width),
            p + "mlp.c_fc.weight": r(mlp, width), p + "mlp.c_fc.bias": r(mlp),
            p + "mlp.c_proj.weight": r(width, mlp), p + "mlp.c_proj.bias": r(width),
        }
    return sd | {"ln_final.weight": 1 + r(width), "ln_final.bias": r(width), "text_projection": r(width, 24)}


def _reference_forward(sd, ids, heads):
    """open_clip text-tower maths written out: returns (outputs after each layer, ln_final output, pooled)."""
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    width = sd["positional_embedding"].shape[1]
    ln = lambda x, p: F.layer_norm(x, (width,), sd[p + ".weight"], sd[p + ".bias"], 1e-5)  # noqa: E731
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    t, hd = ids.shape[1], width // heads
    causal = torch.full((t, t), float("-inf")).triu(1)
    outs = []
    for i in range(n_layers):
        p = f"transformer.resblocks.{i}."
        qkv = ln(x, p + "ln_1") @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = (z.reshape(*z.shape[:2], heads, hd).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, dim=-1) @ v
        att = att.transpose(1, 2).reshape(x.shape)
        x = x + att @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.gelu(ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        outs.append(x)
    final = ln(x, "ln_final")
    pooled = final[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ sd["text_projection"]
    return outs, final, pooled


@pytest.fixture(scope="module")
def open_clip_sd():
    return _random_open_clip()


@pytest.fixture(scope="module")
def encoder(open_clip_sd):
    return load_clip_text(open_clip_sd, heads=2)


@pytest.fixture(scope="module")
def chunks():
    return tokenize_prompt(PROMPT + " " + "word " * 80, ClipTokenizer(pad_token=0))  # two chunks, G padding


def _ids(chunks):
    return torch.tensor([[t for t, _ in c] for c in chunks])


def _usage(usage, layers=3):
    return dataclasses.replace(usage, layers=layers)


def test_open_clip_round_trip_is_exact(open_clip_sd):
    hf = open_clip_to_hf(open_clip_sd)
    assert "logit_scale" not in str(hf.keys()) and hf["text_projection.weight"].shape == (24, 48)
    q = hf["text_model.encoder.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(q, open_clip_sd["transformer.resblocks.1.attn.in_proj_weight"][:48])
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.v_proj.bias"], open_clip_sd["transformer.resblocks.1.attn.in_proj_bias"][96:])
    back = hf_to_open_clip(hf)
    expected = {k: v for k, v in open_clip_sd.items() if k != "logit_scale"}
    assert back.keys() == expected.keys() and all(torch.equal(back[k], expected[k]) for k in expected)
    assert is_open_clip(open_clip_sd) and not is_open_clip(hf)


def test_config_from_shapes(encoder):
    c = encoder.config
    assert (c.width, c.layers, c.heads, c.mlp_width, c.projection_dim, c.activation) == (48, 3, 2, 96, 24, "gelu")
    assert ClipTextConfig.from_state_dict(to_module_keys(_random_open_clip(width=64, layers=1))).heads == 1


@torch.no_grad()
def test_matches_open_clip_maths(encoder, open_clip_sd, chunks):
    ids = _ids(chunks)
    outs, final, pooled_ref = _reference_forward(open_clip_sd, ids, heads=2)
    x = encoder.embed(ids.tolist())
    eos = (ids == 49407).int().argmax(dim=-1)
    last, pooled = encoder(x, eos, None, True)
    assert (last - final).abs().max() < ATOL and (pooled - pooled_ref).abs().max() < ATOL
    penultimate, _ = encoder(x, eos, 2, False)
    assert (penultimate - outs[1]).abs().max() < ATOL
    penultimate_ln, _ = encoder(x, eos, 2, True)
    ln = F.layer_norm(outs[1], (48,), open_clip_sd["ln_final.weight"], open_clip_sd["ln_final.bias"], 1e-5)
    assert (penultimate_ln - ln).abs().max() < ATOL


@torch.no_grad()
def test_matches_transformers_forward(encoder, chunks):
    """Our layer driving equals transformers' own CLIPTextModelWithProjection on the converted keys."""
    hf = CLIPTextModelWithProjection(encoder.config.to_hf()).eval()
    hf.load_state_dict(module_to_hf(encoder.state_dict()), strict=True)
    ids = _ids(chunks)
    ref = hf(input_ids=ids, output_hidden_states=True)
    last, pooled = encoder(encoder.embed(ids.tolist()), (ids == 49407).int().argmax(dim=-1), None, True)
    assert (last - ref.last_hidden_state).abs().max() < ATOL and (pooled - ref.text_embeds).abs().max() < ATOL
    hidden, _ = encoder(encoder.embed(ids.tolist()), (ids == 49407).int().argmax(dim=-1), 2, False)
    assert (hidden - ref.hidden_states[-2]).abs().max() < ATOL


@torch.no_grad()
def test_clip_skip_rules(encoder, open_clip_sd, chunks):
    """Default and CLIPSetLastLayer selections per family (spec §1.6 / §7.10)."""
    outs, final, _ = _reference_forward(open_clip_sd, _ids(chunks[:1]), heads=2)
    ln = lambda x: F.layer_norm(x, (48,), open_clip_sd["ln_final.weight"], open_clip_sd["ln_final.bias"], 1e-5)  # noqa: E731
    plain = [[(t, 1.0) for t, _ in chunks[0]]]
    cases = [
        (SD1_CLIP_L, None, final), (SD1_CLIP_L, -2, ln(outs[1])),  # SD1: last; clip skip 2 = penultimate + LN
        (SD2_CLIP_H, None, ln(outs[1])), (SD2_CLIP_H, -1, final),  # SD2: penultimate + LN by default
        (SDXL_CLIP_G, None, outs[1]), (SDXL_CLIP_G, -1, outs[2]),  # SDXL: hidden layers without LN
        (SDXL_CLIP_L, -3, outs[0]), (SDXL_CLIP_L, -7, final),  # out of range: last + LN
    ]
    for usage, layer, expected in cases:
        cond, _ = encode_chunks(encoder, _usage(usage), plain, layer)
        assert (cond - expected).abs().max() < ATOL, (usage, layer)
    # A tower stored with fewer layers than its family counts (diffusers SD2: 23 of 24) ends at the default layer.
    cond, _ = encode_chunks(encoder, _usage(SD2_CLIP_H, layers=4), plain)
    assert (cond - final).abs().max() < ATOL


@torch.no_grad()
def test_prompt_weights_relative_to_empty(encoder, chunks):
    usage = _usage(SDXL_CLIP_G)
    weighted, pooled_w = encode_chunks(encoder, usage, chunks)
    plain, pooled = encode_chunks(encoder, usage, [[(t, 1.0) for t, _ in c] for c in chunks])
    empty, _ = encode_chunks(encoder, usage, [[(49406, 1.0), (49407, 1.0)] + [(0, 1.0)] * 75])
    w = torch.tensor([w for c in chunks for _, w in c])[None, :, None]
    assert weighted.shape == (1, 154, 48) and not torch.allclose(weighted, plain)
    expected = empty.repeat(1, 2, 1) + (plain - empty.repeat(1, 2, 1)) * w
    assert (weighted - expected).abs().max() < ATOL
    assert torch.equal(pooled_w, pooled) and pooled.shape == (1, 24)  # pooled: first chunk, unweighted


@torch.no_grad()
def test_embedding_vector_equals_its_token(encoder):
    row = encoder.transformer.embeddings.token_embedding.weight[2368].clone()  # "cat</w>"
    usage = _usage(SD1_CLIP_L)
    lookup = lambda name, key: row[None] if (name, key) == ("kitty", "clip_l") else None  # noqa: E731
    by_vector, _ = encode_prompt([(encoder, usage)], "a embedding:kitty", embedding_lookup=lookup)
    by_id, _ = encode_prompt([(encoder, usage)], "a cat")
    assert torch.equal(by_vector, by_id)


@torch.no_grad()
def test_sdxl_composition(encoder):
    sd_l = {k: v for k, v in _random_open_clip(width=32, layers=2, seed=1).items() if k != "text_projection"}
    clip_l = load_clip_text(sd_l, heads=2, activation="quick_gelu")  # SDXL's CLIP-L has no projection
    encoders = [(clip_l, _usage(SDXL_CLIP_L, 2)), (encoder, _usage(SDXL_CLIP_G))]
    cond, pooled = encode_prompt(encoders, PROMPT)
    cond_l, _ = encode_prompt(encoders[:1], PROMPT)
    cond_g, pooled_g = encode_prompt(encoders[1:], PROMPT)
    assert cond.shape == (1, 77, 80) and torch.equal(cond, torch.cat([cond_l, cond_g], dim=-1))
    assert torch.equal(pooled, pooled_g)
