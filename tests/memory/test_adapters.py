"""LoRA-family patch math against the spec formulas (sd_formats.md §4.2, random tensors), grouping of
file keys by suffix, and LoRA name → parameter resolution (§4.1 examples, reference manifests)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusion.adapters import (DORA_EPS, GLoRA, LoHa, LoKr, LoRA, OFT, Diff, SetWeight, apply_chain,
                                build_adapters, group_tensors)
from diffusion.keymaps_lora import clip_lora_keys, resolve, unet_lora_keys
from diffusion.text_encoders import ClipTextEncoder
from diffusion.unet import UNetModel
from tools.make_random_checkpoint import CLIP_G, CLIP_L, RECIPES
from tests.paths import SHARED

MANIFESTS = SHARED / "reference/manifests"
GEN = torch.Generator().manual_seed(0)


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- formulas -----------------------------------------------------------------------------------


def test_lora_linear_with_and_without_alpha():
    w, up, down = r(12, 10), r(12, 4), r(4, 10)
    close(LoRA(up, down, alpha=2.0).apply(w, 0.7), w + 0.7 * (2.0 / 4) * (up @ down))
    close(LoRA(up, down).apply(w, -1.5), w - 1.5 * (up @ down))  # PEFT: no alpha, scale 1


def test_locon_conv_and_its_conv_equivalence():
    w, up, down = r(8, 6, 3, 3), r(8, 4, 1, 1), r(4, 6, 3, 3)
    patched = LoRA(up, down, alpha=4.0).apply(w, 1.0)
    close(patched, w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape))
    x = r(1, 6, 7, 7)  # the patch is what running down then up as convolutions adds
    close(F.conv2d(x, patched, padding=1), F.conv2d(x, w, padding=1) + F.conv2d(F.conv2d(x, down, padding=1), up))


def test_locon_tucker_mid_is_down_then_mid():
    w, up, down, mid = r(8, 6, 3, 3), r(8, 4, 1, 1), r(4, 6, 1, 1), r(4, 4, 3, 3)
    x = r(1, 6, 7, 7)
    delta = LoRA(up, down, mid, alpha=4.0).apply(w, 1.0) - w
    close(F.conv2d(x, delta, padding=1), F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up))
    # spec: down' = reshape(downᵀ.flatten(1) @ midᵀ.flatten(1)) as [r, in, kh, kw]
    composed = (down.transpose(0, 1).flatten(1) @ mid.transpose(0, 1).flatten(1)).reshape(6, 4, 3, 3).transpose(0, 1)
    close(delta, (up.flatten(1) @ composed.flatten(1)).reshape(w.shape))


def test_loha_plain_and_cp():
    w = r(12, 10)
    w1a, w1b, w2a, w2b = r(12, 4), r(4, 10), r(12, 4), r(4, 10)
    close(LoHa(w1a, w1b, w2a, w2b, alpha=2.0).apply(w, 0.5), w + 0.5 * (2.0 / 4) * (w1a @ w1b) * (w2a @ w2b))
    wc = r(8, 6, 3, 3)
    t1, t2 = r(4, 4, 3, 3), r(4, 4, 3, 3)
    a1, b1, a2, b2 = r(4, 8), r(4, 6), r(4, 8), r(4, 6)
    m1 = torch.einsum("ijkl,jr,ip->prkl", t1, b1, a1)
    m2 = torch.einsum("ijkl,jr,ip->prkl", t2, b2, a2)
    close(LoHa(a1, b1, a2, b2, t1, t2, alpha=1.0).apply(wc, 1.0), wc + (1.0 / 4) * m1 * m2)


def test_lokr_full_decomposed_and_conv():
    w = r(12, 10)
    w1, w2 = r(3, 2), r(4, 5)
    close(LoKr(w1=w1, w2=w2, alpha=7.0).apply(w, 1.0), w + torch.kron(w1, w2))  # alpha ignored: no decomposition
    w2a, w2b = r(4, 2), r(2, 5)
    close(LoKr(w1=w1, w2a=w2a, w2b=w2b, alpha=1.0).apply(w, 2.0), w + 2.0 * (1.0 / 2) * torch.kron(w1, w2a @ w2b))


def test_lokr_conv_unsqueezes_w1():
    wc, w1, w2 = r(6, 4, 3, 3), r(2, 2), r(3, 2, 3, 3)
    close(LoKr(w1=w1, w2=w2).apply(wc, 1.0), wc + torch.kron(w1[:, :, None, None], w2))
    w2a, w2b = r(3, 5), r(5, 2, 3, 3)  # decomposed conv factor: w2a @ w2b.flatten(1) as [3, 2, 3, 3]
    w2 = (w2a @ w2b.flatten(1)).reshape(3, 2, 3, 3)
    close(LoKr(w1=w1, w2a=w2a, w2b=w2b, alpha=10.0).apply(wc, 1.0),
          wc + (10.0 / 5) * torch.kron(w1[:, :, None, None], w2))


def test_glora_both_layouts():
    w = r(12, 10)
    a1, a2, b1, b2 = r(10, 4), r(4, 10), r(12, 4), r(4, 10)  # new: (W@a1)@a2 + b1@b2
    close(GLoRA(a1, a2, b1, b2, alpha=2.0).apply(w, 1.0), w + (2.0 / 4) * ((w @ a1) @ a2 + b1 @ b2))
    a1, a2, b1, b2 = r(4, 10), r(10, 4), r(4, 10), r(12, 4)  # old: b2@b1 + (W@a2)@a1
    close(GLoRA(a1, a2, b1, b2, alpha=2.0).apply(w, 0.5), w + 0.5 * (2.0 / 4) * (b2 @ b1 + (w @ a2) @ a1))


def test_oft_cayley_rotation_and_norm_constraint():
    w = r(8, 5)
    blocks = r(2, 4, 4) * 0.1
    q = blocks - blocks.transpose(1, 2)
    eye = torch.eye(4).expand(2, 4, 4)
    rot = (eye + q) @ torch.linalg.inv(eye - q)
    expected = w + torch.einsum("nij,njk->nik", 0.8 * rot - 0.8 * eye, w.reshape(2, 4, 5)).reshape(8, 5)
    close(OFT(blocks).apply(w, 0.8), expected)
    small = 0.5 * q.norm().item()
    qs = q * (small / q.norm())
    rot = (eye + qs) @ torch.linalg.inv(eye - qs)
    close(OFT(blocks, alpha=small).apply(w, 1.0), torch.einsum("nij,njk->nik", rot, w.reshape(2, 4, 5)).reshape(8, 5))


def test_diff_set_and_bias():
    w, d, b, db = r(6, 5), r(6, 5), r(6), r(6)
    weight, bias = build_adapters({"diff": d, "diff_b": db})
    close(weight.apply(w, 0.3), w + 0.3 * d)
    close(bias.apply(b, 0.3), b + 0.3 * db)
    new = r(6, 5)
    close(SetWeight(new).apply(w, 0.2), new)
    weight, bias = build_adapters({"w_norm": d[0], "b_norm": db})
    close(weight.apply(w[0], 2.0), w[0] + 2.0 * d[0])


@pytest.mark.parametrize("form", ["output", "input"])
def test_dora_magnitude_forms(form):
    w, up, down = r(12, 10), r(12, 4), r(4, 10)
    delta = (3.0 / 4) * (up @ down)
    combined = w + delta
    if form == "output":  # magnitude per output row, normalised by the ORIGINAL weight's norms
        scale = r(12, 1).abs()
        norm = w.norm(dim=1, keepdim=True)
    else:  # kohya / LyCORIS [1, in]: per input column of W + ΔW
        scale = r(1, 10).abs()
        norm = combined.norm(dim=0, keepdim=True)
    wc = combined * scale / (norm + DORA_EPS)
    adapter = LoRA(up, down, alpha=3.0, dora_scale=scale)
    close(adapter.apply(w, 1.0), wc)
    close(adapter.apply(w, 0.4), w + 0.4 * (wc - w))


def test_chain_applies_in_order():
    w, d = r(4, 4), r(4, 4)
    out = apply_chain(w, [(SetWeight(d), 1.0), (Diff(d), 2.0)])
    close(out, 3 * d)
    assert apply_chain(w.half(), []).dtype == torch.float32


# -- grouping and building --------------------------------------------------------------------


def test_group_tensors_all_spellings():
    t = torch.zeros(1)
    keys = {
        "lora_unet_a.lora_up.weight": "up", "lora_unet_a.lora_down.weight": "down", "lora_unet_a.alpha": "alpha",
        "unet.b.processor.to_q_lora.up.weight": "up", "unet.b.processor.to_q_lora.down.weight": "down",
        "unet.c.to_k.lora_B.weight": "up", "unet.c.to_k.lora_A.weight": "down",
        "d.lora.up.weight": "up", "e.lora_linear_layer.down.weight": "down", "f.lora_B.default.weight": "up",
        "g.hada_w1_a": "hada_w1_a", "g.lokr_w1_b": "lokr_w1_b", "g.lokr_w1": "lokr_w1", "g.diff_b": "diff_b",
        "g.diff": "diff", "g.dora_scale": "dora_scale", "g.a1.weight": "a1", "g.oft_blocks": "oft_blocks",
    }
    groups, unknown = group_tensors({**{k: t for k in keys}, "something.else": t})
    assert unknown == ["something.else"]
    assert set(groups) == {"lora_unet_a", "unet.b.processor.to_q", "unet.c.to_k", "d", "e", "f", "g"}
    assert set(groups["lora_unet_a"]) == {"up", "down", "alpha"}
    assert set(groups["g"]) == {"hada_w1_a", "lokr_w1_b", "lokr_w1", "diff_b", "diff", "dora_scale", "a1", "oft_blocks"}


def test_build_adapters_picks_the_format():
    t2, t4 = torch.zeros(2, 2), torch.zeros(2, 2, 1, 1)
    assert isinstance(build_adapters({"up": t2, "down": t2, "alpha": torch.tensor(1.0)})[0], LoRA)
    assert isinstance(build_adapters({"hada_w1_a": t2, "hada_w1_b": t2, "hada_w2_a": t2, "hada_w2_b": t2})[0], LoHa)
    assert isinstance(build_adapters({"lokr_w1": t2, "lokr_w2": t2})[0], LoKr)
    assert isinstance(build_adapters({"a1": t2, "a2": t2, "b1": t2, "b2": t2})[0], GLoRA)
    assert isinstance(build_adapters({"oft_blocks": t4[..., 0]})[0], OFT)
    assert isinstance(build_adapters({"set_weight": t2})[0], SetWeight)
    assert build_adapters({"alpha": torch.tensor(1.0)}) == (None, None)
    lora = build_adapters({"up": t2, "down": t2, "alpha": torch.tensor(3.0), "dora_scale": t2[:, :1]})[0]
    assert lora.alpha == 3.0 and lora.dora_scale is not None


# -- names ------------------------------------------------------------------------------------


def _meta(factory):
    with torch.device("meta"):
        return factory()


@pytest.fixture(scope="module")
def sd15_map():
    unet = _meta(lambda: UNetModel(RECIPES[("sd15", False)].unet))
    encoder = _meta(lambda: ClipTextEncoder(CLIP_L))
    key_map = unet_lora_keys(unet.config, unet.state_dict())
    key_map.update(clip_lora_keys({"clip_l": encoder.state_dict()}))
    return key_map


def _comfy_name(target) -> str:
    """The manifest's ComfyUI target names for our (component, key) targets."""
    if target.component == "unet":
        return "diffusion_model." + target.key
    return f"{target.component}.transformer.text_model.{target.key.removeprefix('transformer.')}"


@pytest.mark.parametrize("manifest", ["lora_sd15_kohya_default_rank4", "lora_sd15_kohya_locon_rank4"])
def test_every_manifest_module_resolves_to_its_weight(manifest, sd15_map):
    path = MANIFESTS / f"{manifest}.json"
    if not path.exists():
        pytest.skip("reference manifests not available")
    data = json.loads(path.read_text())
    matched, unmatched = resolve(data["module_to_model_weight"], sd15_map)
    assert unmatched == []
    for name, info in data["module_to_model_weight"].items():
        assert _comfy_name(matched[name]) == info["comfyui_target"], name
    groups, stray = group_tensors({k: torch.zeros(0) for k in data["keys"]})
    assert stray == [] and set(groups) == set(data["module_to_model_weight"])


@pytest.mark.parametrize("name, key", [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
     "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"),
    ("lora_unet_down_blocks_0_resnets_0_conv1", "input_blocks.1.0.in_layers.2.weight"),
    ("lora_unet_mid_block_attentions_0_proj_in", "middle_block.1.proj_in.weight"),
    ("lora_unet_time_embedding_linear_1", "time_embed.0.weight"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", "output_blocks.2.1.conv.weight"),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
     "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
     "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",  # PEFT spelling
     "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"),
    ("unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
     "input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight"),
    ("lycoris_down_blocks_0_resnets_0_conv1", "input_blocks.1.0.in_layers.2.weight"),
    ("diffusion_model.input_blocks.1.1.proj_out", "input_blocks.1.1.proj_out.weight"),
    ("input_blocks.1.1.proj_out", "input_blocks.1.1.proj_out.weight"),
])
def test_sd15_unet_spellings(name, key, sd15_map):
    assert sd15_map[name].component == "unet" and sd15_map[name].key == key


def test_text_encoder_spellings(sd15_map):
    target = sd15_map["lora_te_text_model_encoder_layers_3_self_attn_q_proj"]
    assert (target.component, target.key) == ("clip_l", "transformer.encoder.layers.3.self_attn.q_proj.weight")
    target = sd15_map["text_encoder.text_model.encoder.layers.3.mlp.fc2"]
    assert target.key == "transformer.encoder.layers.3.mlp.fc2.weight"
    assert sd15_map["text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1"].component == "clip_l"


def test_sdxl_spellings():
    unet = _meta(lambda: UNetModel(RECIPES[("sdxl", False)].unet))
    key_map = unet_lora_keys(unet.config, unet.state_dict())
    assert key_map["lora_unet_up_blocks_0_upsamplers_0_conv"].key == "output_blocks.2.2.conv.weight"
    assert key_map["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"].key == \
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    assert key_map["lora_unet_label_emb_0_0"].key == "label_emb.0.0.weight"
    layers = {"clip_l": _meta(lambda: ClipTextEncoder(CLIP_L)).state_dict(),
              "clip_g": _meta(lambda: ClipTextEncoder(CLIP_G)).state_dict()}
    clip_map = clip_lora_keys(layers)
    assert clip_map["lora_te1_text_model_encoder_layers_0_mlp_fc1"].component == "clip_l"
    assert clip_map["lora_te2_text_model_encoder_layers_31_mlp_fc1"].component == "clip_g"
    assert clip_map["lora_te_text_model_encoder_layers_0_mlp_fc1"].component == "clip_l"
    assert clip_map["text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj"].component == "clip_g"
    refiner = clip_lora_keys({"clip_g": layers["clip_g"]})
    assert refiner["lora_te_text_model_encoder_layers_0_mlp_fc1"].component == "clip_g"


def test_unmatched_names_are_reported_and_bundled_embeddings_are_not(sd15_map):
    matched, unmatched = resolve(["lora_unet_nothing_here", "bundle_emb.x", "lora_unet_mid_block_attentions_0_proj_in"],
                                 sd15_map)
    assert unmatched == ["lora_unet_nothing_here"] and list(matched) == ["lora_unet_mid_block_attentions_0_proj_in"]
