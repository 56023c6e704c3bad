"""LDM UNet parity with the sd15_unet_tiny / sdxl_unet_tiny reference vectors, key maps and control hooks."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion.keymaps_unet import diffusers_to_ldm, ldm_to_diffusers
from diffusion.unet import ControlResiduals, UNetModel, make_input_blocks, timestep_embedding
from diffusion.unet_config import load_unet, unet_config_from_diffusers, unet_config_from_state_dict
from tests.paths import SHARED

VECTORS = SHARED / "reference/vectors"
# Head layouts are invisible in weights; these are the vectors' documented configs.
HEADS = {
    "sd15_unet_tiny": {"num_heads": 2, "num_head_channels": None},
    "sdxl_unet_tiny": {"num_heads": None, "num_head_channels": 16},
}
ATOL = 1e-5  # the vectors' stated bound for an independent fp32 implementation
CONFIG_FIELDS = ("in_channels", "out_channels", "model_channels", "channel_mult", "num_res_blocks",
                 "transformer_depth", "transformer_depth_output", "transformer_depth_middle", "context_dim",
                 "use_linear_in_transformer", "adm_in_channels", "num_heads", "num_head_channels")


def _load_vector(name):
    if not (VECTORS / f"{name}.safetensors").exists():
        pytest.skip("reference vectors not available")
    tensors = load_file(VECTORS / f"{name}.safetensors")
    meta = json.loads((VECTORS / f"{name}.json").read_text())
    split = {p: {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)} for p in ("w.", "in.", "out.")}
    return split["w."], split["in."], split["out."], meta


@pytest.fixture(scope="module", params=sorted(HEADS))
def vector(request):
    return (request.param, *_load_vector(request.param))


def _run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(inputs["x"], inputs["timesteps"], inputs["context"], inputs.get("y"), **kwargs)


def test_derived_config_matches_reference(vector):
    name, weights, _, _, meta = vector
    config = unet_config_from_state_dict(weights, **HEADS[name])
    reference = meta["config_comfyui_UNetModel"]
    for field in CONFIG_FIELDS:
        value = getattr(config, field)
        expected = reference[field]
        expected = None if expected == -1 else expected  # ComfyUI writes "unset" heads as -1
        assert (list(value) if isinstance(value, tuple) else value) == expected, field
    assert config == unet_config_from_diffusers(meta["config_diffusers_UNet2DConditionModel"])


def test_forward_matches_reference(vector):
    name, weights, inputs, outputs, _ = vector
    model = load_unet(weights, **HEADS[name])
    eps = _run(model, inputs)
    err = (eps - outputs["eps"]).abs().max().item()
    print(f"{name}: max abs err {err:.3g}")
    assert eps.shape == outputs["eps"].shape
    assert err < ATOL


def test_family_default_heads_are_reported_when_they_do_not_fit(vector):
    name, weights, *_ = vector
    config = unet_config_from_state_dict(weights)  # not SD1 (context 24): 64-channel heads on 32 channels
    assert config.num_head_channels == 64
    with pytest.raises(ValueError, match="heads"):
        UNetModel(config)


def test_keymap_matches_reference_map(vector):
    name, weights, _, _, meta = vector
    config = unet_config_from_state_dict(weights, **HEADS[name])
    reference = meta["ldm_to_diffusers_keys"]
    mapped = ldm_to_diffusers({k: k for k in weights}, config, adm_prefix="class_embedding.")
    ours = {ldm: diffusers for diffusers, ldm in mapped.items()}
    assert set(ours) == set(reference) == set(weights)
    # The reference map has one collision artifact (label_emb.0.2.weight -> add_embedding.*): diffusers
    # accepts either MLP name, so only the embedding name may differ there.
    mismatched = {k for k in reference if ours[k] != reference[k]}
    assert all(k.startswith("label_emb.") for k in mismatched)
    assert all(ours[k].split(".", 1)[1] == reference[k].split(".", 1)[1] for k in mismatched)


def test_diffusers_round_trip_and_forward(vector):
    name, weights, inputs, _, meta = vector
    config = unet_config_from_state_dict(weights, **HEADS[name])
    diffusers_sd = ldm_to_diffusers(weights, config)
    assert not set(diffusers_sd) & set(weights)
    back = diffusers_to_ldm(diffusers_sd, config)
    assert back.keys() == weights.keys()
    assert all(torch.equal(back[k], weights[k]) for k in weights)

    from_diffusers = load_unet(diffusers_sd, diffusers_config=meta["config_diffusers_UNet2DConditionModel"])
    assert from_diffusers.config == config
    assert torch.equal(_run(from_diffusers, inputs), _run(load_unet(weights, **HEADS[name]), inputs))


def test_diffusers_to_ldm_reshapes_projections_and_rejects_strangers(vector):
    name, weights, _, _, _ = vector
    config = unet_config_from_state_dict(weights, **HEADS[name])
    diffusers_sd = ldm_to_diffusers(weights, config)
    proj = next(k for k in diffusers_sd if k.endswith("proj_in.weight"))
    w = diffusers_sd[proj]
    diffusers_sd[proj] = w[:, :, None, None] if w.ndim == 2 else w[:, :, 0, 0]
    back = diffusers_to_ldm(diffusers_sd, config)
    assert all(torch.equal(back[k], weights[k]) for k in weights)
    with pytest.raises(KeyError):
        diffusers_to_ldm({**diffusers_sd, "down_blocks.0.resnets.0.nonsense.weight": w}, config)


def test_timestep_embedding_is_cos_then_sin_of_fractional_t():
    t = torch.tensor([0.0, 421.5, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = [math.exp(-math.log(10000) * k / 4) for k in range(4)]
    expected = torch.tensor([[math.cos(v * f) for f in freqs] + [math.sin(v * f) for f in freqs] for v in t.tolist()])
    assert torch.allclose(emb, expected, atol=1e-4)


def test_scalar_timestep_broadcasts_and_odd_sizes_work():
    weights, inputs, _, _ = _load_vector("sd15_unet_tiny")
    model = load_unet(weights, **HEADS["sd15_unet_tiny"])
    x = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_scalar = model(x, torch.tensor(421.0), inputs["context"])
        out_vector = model(x, torch.tensor([421.0, 421.0]), inputs["context"])
        out_fraction = model(x, torch.tensor(421.5), inputs["context"])
    assert out_scalar.shape == (2, 4, 9, 7)
    assert torch.equal(out_scalar, out_vector)
    assert not torch.equal(out_scalar, out_fraction)


def _skip_channels(model):
    return make_input_blocks(model.config)[1]


def test_control_residuals_land_where_controlnet_and_t2i_adapter_put_them():
    name = "sdxl_unet_tiny"
    weights, inputs, _, _ = _load_vector(name)
    model = load_unet(weights, **HEADS[name])
    base = _run(model, inputs)
    gen = torch.Generator().manual_seed(1)

    # Collect the real per-block shapes to build residuals.
    shapes = []
    hooks = [b.register_forward_hook(lambda m, a, out: shapes.append(out.shape)) for b in model.input_blocks]
    _run(model, inputs)
    for h in hooks:
        h.remove()
    n = len(model.input_blocks)
    assert [s[1] for s in shapes] == _skip_channels(model)

    assert torch.equal(_run(model, inputs, control=ControlResiduals(skip=[None] * n)), base)
    zeros = ControlResiduals(skip=[torch.zeros(s) for s in shapes], middle=torch.zeros(shapes[-1]))
    assert torch.equal(_run(model, inputs, control=zeros), base)

    # ControlNet: residual i is added to the skip saved by input block i, consumed by output block n-1-i.
    i = 1
    r = torch.randn(shapes[i], generator=gen)
    out = _run(model, inputs, control=ControlResiduals(skip=[None] * i + [r]))
    hook = model.output_blocks[n - 1 - i].register_forward_pre_hook(
        lambda m, args: (torch.cat([args[0][:, : -r.shape[1]], args[0][:, -r.shape[1]:] + r], 1), *args[1:]))
    assert torch.allclose(out, _run(model, inputs), atol=1e-6)
    hook.remove()
    assert not torch.allclose(out, base, atol=1e-3)

    # Middle residual: added to the middle-block output.
    m = torch.randn(shapes[-1], generator=gen)
    out = _run(model, inputs, control=ControlResiduals(middle=m))
    hook = model.middle_block.register_forward_hook(lambda mod, args, o: o + m)
    assert torch.allclose(out, _run(model, inputs), atol=1e-6)
    hook.remove()

    # T2I-Adapter: added to the hidden state right after input block i (so it reaches the skip too).
    out = _run(model, inputs, control=ControlResiduals(input=[None] * i + [r]))
    hook = model.input_blocks[i].register_forward_hook(lambda mod, args, o: o + r)
    assert torch.allclose(out, _run(model, inputs), atol=1e-6)
    hook.remove()


def test_adm_model_requires_y():
    weights, inputs, _, _ = _load_vector("sdxl_unet_tiny")
    model = load_unet(weights, **HEADS["sdxl_unet_tiny"])
    with pytest.raises(ValueError, match="y"):
        model(inputs["x"], inputs["timesteps"], inputs["context"])


def test_half_precision_with_fp32_attention_stays_close():
    name = "sd15_unet_tiny"
    weights, inputs, outputs, _ = _load_vector(name)
    bf16 = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    model = load_unet(bf16, upcast_attention=True, **HEADS[name])
    assert model.time_embed[0].weight.dtype == torch.bfloat16
    eps = _run(model, inputs)
    assert eps.dtype == torch.bfloat16
    rel = ((eps.float() - outputs["eps"]).norm() / outputs["eps"].norm()).item()
    assert rel < 5e-2
