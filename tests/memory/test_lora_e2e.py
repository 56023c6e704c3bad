"""LoRA files end to end on a tiny SD1 checkpoint: a kohya-layout LoRA / LoCon through LoraLoader changes
the UNet and text-encoder outputs exactly as merged weights would, unpatching gives back the very same
tensors, other spellings (PEFT, old diffusers processors) and the A1111 tag loader, hypernetworks."""
from __future__ import annotations

import copy
import logging
import re

import pytest
import torch
from torch import nn

from diffusion.hypernetwork import load_hypernetwork
from diffusion.text_encoders import SD1_CLIP_L, encode_prompt
from model_management.manager import MemorySettings, ModelManager
from model_management.patcher import resolve_adapters
from nodes.conditioning import CLIPTextEncode
from nodes.lora import (HypernetworkLoader, LoraLoader, LoraLoaderModelOnly, LoraTagLoader, find_model_file,
                        parse_tags)

GEN = torch.Generator().manual_seed(3)


def _x() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4, 8, 8, generator=GEN), torch.randn(2, 77, 32, generator=GEN)


@torch.no_grad()
def _unet_out(unet: nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return unet(x, torch.tensor([999.0, 421.0]), context)


@torch.no_grad()
def _apply(model, x, context) -> torch.Tensor:
    return _unet_out(model.to_device().unet, x, context)


def _snapshot(module: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    return {k: (v.clone(), v.data_ptr()) for k, v in module.state_dict().items()}


def _assert_restored(module: nn.Module, snapshot: dict) -> None:
    for k, v in module.state_dict().items():
        saved, pointer = snapshot[k]
        assert torch.equal(v, saved) and v.data_ptr() == pointer, k


@pytest.mark.parametrize("conv", [False, True], ids=["lora", "locon"])
def test_kohya_lora_equals_merged_weights_and_unpatches_exactly(conv, make_rt, load, kohya_lora, write_model):
    manager = ModelManager(MemorySettings())
    rt = make_rt(manager)
    model, clip, _ = load(rt)
    lora = kohya_lora(model, clip, conv=conv)
    name = write_model("loras", f"kohya_{conv}.safetensors", lora.state_dict)
    unet_before, encoder_before = _snapshot(model.base.unet), _snapshot(clip.slots[0].encoder)
    x, context = _x()
    base_out = _unet_out(model.base.unet, x, context)
    merged = lora.merged_unet(model, 0.8)
    want = _unet_out(merged, x, context)
    want_cond, _ = encode_prompt([(lora.merged_encoder(clip, 0.6), SD1_CLIP_L)], "a photo of a cat")

    patched_model, patched_clip = LoraLoader().execute(model, clip, name, 0.8, 0.6, rt)
    assert set(patched_model.patches) == set(lora.unet_deltas) and len(lora.clip_deltas["clip_l"]) == 18
    assert any(".in_layers." in k for k in lora.unet_deltas) == conv
    got = _apply(patched_model, x, context)
    loaded = model.base.unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in merged.state_dict().items())  # the merged weights, bit for bit
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # (kernels may round by buffer alignment)
    assert not torch.allclose(got, base_out, atol=1e-3)

    ((cond, _),), = CLIPTextEncode().execute("a photo of a cat", patched_clip, rt)
    torch.testing.assert_close(cond, want_cond, atol=1e-5, rtol=1e-5)

    # the unpatched model reloads its own weights: the very same tensors as before
    plain = _apply(model, x, context)
    _assert_restored(model.base.unet, unet_before)
    torch.testing.assert_close(plain, base_out, atol=0, rtol=0)
    manager.unload_all()
    _assert_restored(model.base.unet, unet_before)
    _assert_restored(clip.slots[0].encoder, encoder_before)
    assert {e.kind for e in manager.events} >= {"load", "unload"}


def test_strengths_stack_in_order_and_zero_is_a_no_op(make_rt, load, kohya_lora, write_model):
    rt = make_rt()
    model, clip, _ = load(rt)
    a, b = kohya_lora(model, clip, seed=1), kohya_lora(model, clip, seed=2)
    name_a = write_model("loras", "a.safetensors", a.state_dict)
    name_b = write_model("loras", "b.safetensors", b.state_dict)
    assert LoraLoader().execute(model, clip, name_a, 0.0, 0.0, rt) == (model, clip)
    m1, c1 = LoraLoader().execute(model, clip, name_a, 1.0, 1.0, rt)
    m2, _ = LoraLoader().execute(m1, c1, name_b, -0.5, 1.0, rt)
    key = next(iter(a.unet_deltas))
    assert [p.strength for p in m2.patches[key]] == [1.0, -0.5] and len(m1.patches[key]) == 1
    x, context = _x()
    unet = m2.to_device().unet
    expected = model.manager.originals(model)[key] + a.unet_deltas[key] - 0.5 * b.unet_deltas[key]
    torch.testing.assert_close(unet.get_parameter(key), expected, atol=1e-6, rtol=1e-6)
    assert torch.isfinite(_unet_out(unet, x, context)).all()


def test_model_only_and_unmatched_keys_are_reported(make_rt, load, kohya_lora, write_model, caplog):
    rt = make_rt()
    model, clip, _ = load(rt)
    lora = kohya_lora(model, clip)
    extra = dict(lora.state_dict)
    extra["lora_unet_not_a_module.lora_up.weight"] = torch.zeros(4, 4)
    extra["lora_unet_not_a_module.lora_down.weight"] = torch.zeros(4, 4)
    name = write_model("loras", "extra.safetensors", extra)
    with caplog.at_level(logging.WARNING):
        (patched,) = LoraLoaderModelOnly().execute(model, name, 1.0, rt)
    assert "19 lora key(s) not loaded" in caplog.text  # the fake module and the 18 text-encoder modules
    assert "lora_unet_not_a_module" in resolve_adapters(extra, model, None).unmatched
    assert set(patched.patches) == set(lora.unet_deltas)


def test_peft_and_processor_spellings_patch_the_same_weights(make_rt, load, kohya_lora, write_model):
    rt = make_rt()
    model, clip, _ = load(rt)
    lora = kohya_lora(model, None)
    peft, old = {}, {}
    for key, value in lora.state_dict.items():
        base, _, suffix = key.partition(".")
        path = base.removeprefix("lora_unet_")
        diffusers = {k.replace(".", "_"): k for k in _diffusers_paths(model)}[path]
        role = {"lora_up.weight": "lora_B.weight", "lora_down.weight": "lora_A.weight"}.get(suffix)
        if role is None:
            continue  # PEFT and the processor format carry no alpha: scale 1
        peft[f"unet.{diffusers}.{role}"] = value
        processor = re.sub(r"\.(attn[12])\.to_", r".\1.processor.to_", diffusers)
        processor = processor.replace("processor.to_out.0", "processor.to_out")
        old_suffix = "_lora.up.weight" if suffix == "lora_up.weight" else "_lora.down.weight"
        old[f"unet.{processor}{old_suffix}" if "processor" in processor else f"unet.{diffusers}.{role}"] = value
    results = []
    for name, weights in (("peft.safetensors", peft), ("old.safetensors", old)):
        write_model("loras", name, weights)
        (patched,) = LoraLoaderModelOnly().execute(model, name, 1.0, rt)
        assert set(patched.patches) == set(lora.unet_deltas)
        results.append(patched.manager.state_dict(patched))
    for key, delta in lora.unet_deltas.items():
        torch.testing.assert_close(results[0][key], results[1][key])
        original = model.manager.originals(model)[key]
        torch.testing.assert_close(results[0][key], original + delta * 4 / 2, atol=1e-6, rtol=1e-6)  # alpha/r = 1/2


def _diffusers_paths(model) -> list[str]:
    from diffusion.keymaps_unet import ldm_to_diffusers
    unet = model.base.unet
    return [k[: -len(".weight")] for k in ldm_to_diffusers({k: k for k in unet.state_dict()}, unet.config)
            if k.endswith(".weight")]


def test_parse_a1111_tags():
    text, tags = parse_tags("masterpiece, <lora:add_detail:0.6>, a cat <lora:style:0.5:0.9> <lyco:loha:te=0.2:unet=0.3>"
                            " <lora:plain> <hypernet:net:0.4>")
    assert text == "masterpiece, , a cat"
    assert [(t.kind, t.name, t.te, t.unet) for t in tags] == [
        ("lora", "add_detail", 0.6, 0.6), ("lora", "style", 0.5, 0.9), ("lora", "loha", 0.2, 0.3),
        ("lora", "plain", 1.0, 1.0), ("hypernet", "net", 0.4, 0.4)]
    with pytest.raises(ValueError, match="not a number"):
        parse_tags("<lora:x:strong>")
    names = ["sub/Style.safetensors", "style.pt", "other.safetensors"]
    assert find_model_file(names, "sub/Style.safetensors") == "sub/Style.safetensors"
    assert find_model_file(names, "style") == "style.pt"
    assert find_model_file(names, "Style") == "sub/Style.safetensors"
    assert find_model_file(names, "missing") is None


def test_tag_loader_applies_tags_like_lora_loaders(make_rt, load, kohya_lora, write_model):
    rt = make_rt()
    model, clip, _ = load(rt)
    a, b = kohya_lora(model, clip, seed=5), kohya_lora(model, clip, seed=6)
    write_model("loras", "tags/first.safetensors", a.state_dict)
    write_model("loras", "second.safetensors", b.state_dict)
    node = LoraTagLoader()
    m, c, text = node.execute(model, clip, "a cat <lora:first:0.5:0.7>, <lora:second:1.0> <lora:ghost:1>", rt)
    assert text == "a cat ,"
    ref_m, ref_c = LoraLoader().execute(model, clip, "tags/first.safetensors", 0.7, 0.5, rt)
    ref_m, ref_c = LoraLoader().execute(ref_m, ref_c, "second.safetensors", 1.0, 1.0, rt)
    assert {k: [p.strength for p in v] for k, v in m.patches.items()} == \
        {k: [p.strength for p in v] for k, v in ref_m.patches.items()}
    x, context = _x()
    torch.testing.assert_close(_apply(m, x, context), _apply(ref_m, x, context))
    assert {k: [p.strength for p in v] for k, v in c.patches.items()} == \
        {k: [p.strength for p in v] for k, v in ref_c.patches.items()}
    assert set(node.cached) == {"loras/tags/first.safetensors", "loras/second.safetensors"}


def _hypernetwork_file(widths: list[int], gen: torch.Generator) -> dict:
    def mlp(width: int) -> dict:
        return {"linear.0.weight": 0.1 * torch.randn(2 * width, width, generator=gen),
                "linear.0.bias": torch.zeros(2 * width),
                "linear.2.weight": 0.1 * torch.randn(width, 2 * width, generator=gen),
                "linear.2.bias": torch.zeros(width)}
    data: dict = {width: [mlp(width), mlp(width)] for width in widths}
    data.update(activation_func="relu", is_layer_norm=False, activate_output=False, layer_structure=[1, 2, 1])
    return data


def test_hypernetwork_rewrites_attention_context_while_loaded(make_rt, load, memory_base):
    rt = make_rt()
    model, _, _ = load(rt)
    data = _hypernetwork_file([32, 64], torch.Generator().manual_seed(0))
    path = memory_base / "models" / "hypernetworks" / "hn.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    # reference: the same hooks written by hand on a copy of the UNet
    mlps = load_hypernetwork(data)
    unet = copy.deepcopy(model.base.unet)
    for name, module in unet.named_modules():
        if name.endswith((".attn1", ".attn2")) and module.to_k.in_features in mlps:
            k, v = mlps[module.to_k.in_features]
            module.to_k.register_forward_pre_hook(lambda m, a, k=k: (a[0] + 0.5 * k(a[0]),))
            module.to_v.register_forward_pre_hook(lambda m, a, v=v: (a[0] + 0.5 * v(a[0]),))
    (hyper,) = HypernetworkLoader().execute(model, "hn.pt", 0.5, rt)
    x, context = _x()
    plain = _apply(model, x, context)
    got = _apply(hyper, x, context)
    torch.testing.assert_close(got, _unet_out(unet, x, context), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)
    torch.testing.assert_close(_apply(model, x, context), plain)  # hooks removed with the clone's load
