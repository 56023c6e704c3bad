"""Loading tiny checkpoints in the real layouts: single files (fp32/fp16/bf16, safetensors/ckpt), diffusers
folders, single-component files, and errors that name the file and the keys."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from diffusion.checkpoint import CheckpointError
from diffusion.checkpoint import load_checkpoint as build_checkpoint
from diffusion.checkpoint_keys import UNET_PREFIX, VAE_PREFIX
from diffusion.keymaps_clip import hf_to_open_clip, open_clip_to_hf
from diffusion.latent_formats import SD15, SDXL
from model_management.files import list_diffusers
from model_management.folders import PathRefused
from model_management.handles import ClipHandle, ModelHandle, VaeHandle
from nodes.latent import VAEDecode
from nodes.loaders import (CheckpointLoader, CheckpointLoaderSimple, CLIPLoader, DiffusersLoader,
                           DualCLIPLoader, UNETLoader, VAELoader)
from tools.make_random_checkpoint import RECIPES

# family -> (detected family, prediction, inpaint, latent format, text encoders in order)
EXPECTED = {
    "sd15": ("sd1", "eps", False, SD15, ["clip_l"]),
    "sd15-inpaint": ("sd1", "eps", True, SD15, ["clip_l"]),
    "sd21-v": ("sd2", "v_prediction", False, SD15, ["clip_h"]),
    "sdxl": ("sdxl", "eps", False, SDXL, ["clip_l", "clip_g"]),
    "sdxl-refiner": ("sdxl_refiner", "eps", False, SDXL, ["clip_g"]),
}


def _part(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _assert_same_weights(module: torch.nn.Module, expected: dict, exact: bool = True) -> None:
    got = module.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        if exact:
            assert torch.equal(got[key], value.to(got[key].dtype)), key
        else:
            torch.testing.assert_close(got[key], value.to(got[key].dtype), atol=1e-6, rtol=0, msg=key)


def _clip_outputs(clip: ClipHandle, text: str = "a photo of a cat") -> tuple[torch.Tensor, torch.Tensor]:
    return clip.encode(text)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_single_file_loads_with_shape_derived_config(family, load_checkpoint, tiny_state_dict):
    model, clip, vae = load_checkpoint(family)
    name, prediction, inpaint, latent_format, encoders = EXPECTED[family]
    assert isinstance(model, ModelHandle) and isinstance(clip, ClipHandle) and isinstance(vae, VaeHandle)
    denoiser = model.denoiser
    assert (denoiser.family, denoiser.schedule.prediction, denoiser.inpaint) == (name, prediction, inpaint)
    assert denoiser.latent_format.scale_factor == latent_format.scale_factor
    assert denoiser.latent_format.rgb_factors is not None  # fitted to the checkpoint's VAE
    recipe = RECIPES[(family, True)]
    config = denoiser.unet.config
    for field in ("in_channels", "model_channels", "channel_mult", "num_res_blocks", "transformer_depth",
                  "transformer_depth_output", "transformer_depth_middle", "context_dim",
                  "use_linear_in_transformer", "adm_in_channels"):
        assert getattr(config, field) == getattr(recipe.unet, field), field
    assert [slot.key for slot in clip.slots] == encoders
    assert clip.family == name
    assert (vae.downscale_factor, vae.latent_channels) == (8, 4)
    sd = tiny_state_dict(family)
    _assert_same_weights(denoiser.unet, _part(sd, UNET_PREFIX))
    _assert_same_weights(vae.vae, _part(sd, VAE_PREFIX))
    assert next(denoiser.unet.parameters()).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_half_precision_files_load_as_their_values_in_fp32(family, dtype, load_checkpoint, tiny_state_dict):
    model, clip, vae = load_checkpoint(family, dtype)
    sd = tiny_state_dict(family, dtype)
    assert next(model.base.unet.parameters()).dtype == torch.float32  # the CPU policy computes in fp32
    _assert_same_weights(model.base.unet, _part(sd, UNET_PREFIX))
    _assert_same_weights(vae.vae, _part(sd, VAE_PREFIX))
    assert clip.encode("a cat")[0].dtype == torch.float32


@pytest.mark.parametrize("family", ["sd15", "sdxl-refiner"])
def test_ckpt_pickle_loads_like_safetensors(family, load_checkpoint):
    a_model, a_clip, a_vae = load_checkpoint(family)
    b_model, b_clip, b_vae = load_checkpoint(family, fmt="ckpt")
    _assert_same_weights(b_model.base.unet, a_model.base.unet.state_dict())
    _assert_same_weights(b_vae.vae, a_vae.vae.state_dict())
    assert torch.equal(_clip_outputs(a_clip)[0], _clip_outputs(b_clip)[0])


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_diffusers_folder_matches_single_file(family, load_checkpoint, write_checkpoint, rt):
    model, clip, vae = load_checkpoint(family)
    d_model, d_clip, d_vae = DiffusersLoader().execute(write_checkpoint(family, fmt="diffusers"), rt)
    assert d_model.denoiser.family == model.denoiser.family
    assert d_model.denoiser.schedule.prediction == model.denoiser.schedule.prediction
    assert d_model.base.unet.config == model.base.unet.config
    _assert_same_weights(d_model.base.unet, model.base.unet.state_dict())
    _assert_same_weights(d_vae.vae, vae.vae.state_dict())
    assert [s.key for s in d_clip.slots] == [s.key for s in clip.slots]
    cond, _ = _clip_outputs(clip)
    d_cond, _ = _clip_outputs(d_clip)
    # SD2's diffusers text encoder lacks its last layer, which the default (penultimate) layer never uses.
    torch.testing.assert_close(d_cond, cond, atol=1e-6, rtol=0)


def test_sd2_prediction_follows_the_weight_rule(write_checkpoint, rt, tiny_state_dict, model_base):
    sd = dict(tiny_state_dict("sd21-v"))
    key = next(k for k in sd if k.endswith("output_blocks.3.1.transformer_blocks.0.norm1.bias"))
    sd[key] = torch.full_like(sd[key], 0.01)  # no spread: a 512-base (eps) model
    save_file(sd, str(model_base / "models" / "checkpoints" / "sd21-base.safetensors"))
    model, _, _ = CheckpointLoaderSimple().execute("sd21-base.safetensors", rt)
    assert model.denoiser.schedule.prediction == "eps"


def test_sdxl_v_pred_marker(rt, tiny_state_dict, model_base):
    sd = {**tiny_state_dict("sdxl"), "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}
    save_file(sd, str(model_base / "models" / "checkpoints" / "sdxl-vpred.safetensors"))
    model, _, _ = CheckpointLoaderSimple().execute("sdxl-vpred.safetensors", rt)
    schedule = model.denoiser.schedule
    assert schedule.prediction == "v_prediction"
    assert schedule.sigma_max.item() > 4000  # zero-terminal-SNR schedule (spec §7.1)


# ---- errors ----------------------------------------------------------------------------------


def _save(model_base, name: str, state_dict: dict) -> str:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(model_base / "models" / "checkpoints" / name))
    return name


def test_truncated_file_names_the_file(load_checkpoint, write_checkpoint, model_base, rt):
    source = model_base / "models" / "checkpoints" / write_checkpoint("sd15")
    data = source.read_bytes()
    (model_base / "models" / "checkpoints" / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: cannot read"):
        CheckpointLoaderSimple().execute("cut.safetensors", rt)


def test_garbage_ckpt_names_the_file(model_base, rt):
    (model_base / "models" / "checkpoints" / "junk.ckpt").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match=r"junk\.ckpt: cannot read"):
        CheckpointLoaderSimple().execute("junk.ckpt", rt)


def test_foreign_file_lists_unexpected_keys(model_base, rt):
    name = _save(model_base, "lora.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)})
    with pytest.raises(CheckpointError) as error:
        CheckpointLoaderSimple().execute(name, rt)
    message = str(error.value)
    assert "lora.safetensors" in message and "holds no UNet" in message
    assert "unexpected keys: lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" in message


def test_missing_and_unexpected_unet_keys_are_named(model_base, rt, tiny_state_dict):
    sd = dict(tiny_state_dict("sd15"))
    del sd[UNET_PREFIX + "middle_block.0.emb_layers.1.weight"]
    sd[UNET_PREFIX + "middle_block.9.extra.weight"] = torch.zeros(2)
    name = _save(model_base, "broken-unet.safetensors", sd)
    with pytest.raises(CheckpointError) as error:
        CheckpointLoaderSimple().execute(name, rt)
    err = error.value
    assert "broken-unet.safetensors" in str(err) and "UNet" in str(err)
    assert err.missing == ["middle_block.0.emb_layers.1.weight"]
    assert err.unexpected == ["middle_block.9.extra.weight"]
    assert "missing keys: middle_block.0.emb_layers.1.weight" in str(err)


def test_missing_vae_key_is_named(model_base, rt, tiny_state_dict):
    sd = dict(tiny_state_dict("sd15"))
    del sd[VAE_PREFIX + "decoder.conv_out.bias"]
    name = _save(model_base, "broken-vae.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"broken-vae\.safetensors: the VAE .*missing keys: decoder\.conv_out\.bias"):
        CheckpointLoaderSimple().execute(name, rt)


def test_checkpoint_without_vae_gives_none_and_a_clear_error(model_base, rt, tiny_state_dict):
    sd = {k: v for k, v in tiny_state_dict("sd15").items() if not k.startswith(VAE_PREFIX)}
    model, clip, vae = CheckpointLoaderSimple().execute(_save(model_base, "novae.safetensors", sd), rt)
    assert vae is None and model is not None and clip is not None
    assert model.latent_format.rgb_factors is None
    with pytest.raises(ValueError, match="holds no VAE"):
        VAEDecode().execute({"samples": torch.zeros(1, 4, 8, 8)}, vae)


def test_checkpoint_loader_with_config_validates_the_config(write_checkpoint, model_base, rt):
    name = write_checkpoint("sd15")
    with pytest.raises(FileNotFoundError, match="v1-inference.yaml"):
        CheckpointLoader().execute("v1-inference.yaml", name, rt)
    (model_base / "models" / "configs" / "v1-inference.yaml").write_text("model: {}\n")
    model, clip, vae = CheckpointLoader().execute("v1-inference.yaml", name, rt)
    assert model.family == "sd1"


# ---- single-component files ------------------------------------------------------------------


def test_unet_loader_bare_ldm_and_diffusers(model_base, rt, load_checkpoint, tiny_state_dict, write_checkpoint):
    model, _, _ = load_checkpoint("sdxl")
    unet_dir = model_base / "models" / "diffusion_models"
    save_file(_part(tiny_state_dict("sdxl"), UNET_PREFIX), str(unet_dir / "sdxl_unet.safetensors"))
    loaded, = UNETLoader().execute("sdxl_unet.safetensors", "default", rt)
    assert loaded.family == "sdxl"
    _assert_same_weights(loaded.base.unet, model.base.unet.state_dict())

    diffusers_unet = model_base / "models" / "diffusers" / write_checkpoint("sdxl", fmt="diffusers") / "unet"
    shutil.copytree(diffusers_unet, unet_dir / "sdxl_diffusers", dirs_exist_ok=True)
    loaded, = UNETLoader().execute("sdxl_diffusers/diffusion_pytorch_model.safetensors", "default", rt)
    _assert_same_weights(loaded.base.unet, model.base.unet.state_dict())


def test_unet_loader_fp8_rounds_weights(model_base, rt, tiny_state_dict):
    unet = _part(tiny_state_dict("sd15"), UNET_PREFIX)
    save_file(unet, str(model_base / "models" / "diffusion_models" / "sd15_unet.safetensors"))
    loaded, = UNETLoader().execute("sd15_unet.safetensors", "fp8_e4m3fn", rt)
    weight = loaded.base.unet.state_dict()["out.2.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, unet["out.2.weight"].to(torch.float8_e4m3fn).float())


def test_vae_loader_ldm_and_diffusers(model_base, rt, load_checkpoint, tiny_state_dict, write_checkpoint):
    _, _, vae = load_checkpoint("sd15")
    vae_dir = model_base / "models" / "vae"
    save_file(_part(tiny_state_dict("sd15"), VAE_PREFIX), str(vae_dir / "bare.safetensors"))
    diffusers_vae = model_base / "models" / "diffusers" / write_checkpoint("sd15", fmt="diffusers") / "vae"
    shutil.copy(diffusers_vae / "diffusion_pytorch_model.safetensors", vae_dir / "diffusers_vae.safetensors")
    for name in ("bare.safetensors", "diffusers_vae.safetensors"):
        loaded, = VAELoader().execute(name, rt)
        _assert_same_weights(loaded.vae, vae.vae.state_dict())


def test_clip_loaders_match_the_checkpoint_text_encoders(model_base, rt, load_checkpoint, tiny_state_dict):
    te_dir = model_base / "models" / "text_encoders"
    _, sd1_clip, _ = load_checkpoint("sd15")
    save_file(_part(tiny_state_dict("sd15"), "cond_stage_model.transformer."), str(te_dir / "tiny_l.safetensors"))
    clip, = CLIPLoader().execute("tiny_l.safetensors", "stable_diffusion", rt)
    assert clip.family == "sd1"
    assert torch.equal(clip.encode("a cat")[0], sd1_clip.encode("a cat")[0])

    _, sd2_clip, _ = load_checkpoint("sd21-v")
    save_file(_part(tiny_state_dict("sd21-v"), "cond_stage_model.model."), str(te_dir / "tiny_h.safetensors"))
    clip, = CLIPLoader().execute("tiny_h.safetensors", "stable_diffusion", rt, device="cpu")
    assert clip.family == "sd2"
    assert torch.equal(clip.encode("a cat")[0], sd2_clip.encode("a cat")[0])

    _, xl_clip, _ = load_checkpoint("sdxl")
    sd = tiny_state_dict("sdxl")
    save_file(_part(sd, "conditioner.embedders.0.transformer."), str(te_dir / "xl_l.safetensors"))
    # bigG as a HF-layout file, the way standalone clip_g files are usually shipped
    save_file(open_clip_to_hf(_part(sd, "conditioner.embedders.1.model.")), str(te_dir / "xl_g.safetensors"))
    clip, = DualCLIPLoader().execute("xl_g.safetensors", "xl_l.safetensors", "sdxl", rt)  # order does not matter
    assert [s.key for s in clip.slots] == ["clip_l", "clip_g"]
    for got, want in zip(clip.encode("a cat"), xl_clip.encode("a cat")):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # same weights; kernels may round differently


def test_clip_loader_rejects_other_families_and_non_clip_files(model_base, rt, tiny_state_dict):
    with pytest.raises(ValueError, match="not supported"):
        CLIPLoader().execute("anything.safetensors", "sd3", rt)
    with pytest.raises(ValueError, match="not supported"):
        DualCLIPLoader().execute("a", "b", "flux", rt)
    save_file(_part(tiny_state_dict("sd15"), VAE_PREFIX), str(model_base / "models" / "text_encoders" / "vae.sft"))
    with pytest.raises(CheckpointError, match=r"vae\.sft: holds no CLIP text encoder"):
        CLIPLoader().execute("vae.sft", "stable_diffusion", rt)


def test_missing_file_and_escaping_names(rt):
    with pytest.raises(FileNotFoundError):
        CheckpointLoaderSimple().execute("nope.safetensors", rt)
    with pytest.raises(PathRefused):
        CheckpointLoaderSimple().execute("../../../etc/passwd", rt)


def test_diffusers_listing(write_checkpoint, services):
    name = write_checkpoint("sd15", fmt="diffusers")
    assert name in list_diffusers(services.folders)
    index = json.loads((services.folders.models["diffusers"][0] / name / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_open_clip_round_trip_of_tool_output(tiny_state_dict):
    """The tool writes SD2/bigG towers in open_clip layout (q/k/v fused, projection transposed)."""
    sd = tiny_state_dict("sd21-v")
    tower = _part(sd, "cond_stage_model.model.")
    assert tower["transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 48, 48)
    back = hf_to_open_clip(open_clip_to_hf(tower))
    assert set(back) == set(tower) - {"logit_scale"}
    assert all(torch.equal(back[k], tower[k]) for k in back)


def test_unsupported_unet_input_names_the_file(tiny_state_dict):
    sd = dict(tiny_state_dict("sd15"))
    sd[UNET_PREFIX + "input_blocks.0.0.weight"] = torch.zeros(64, 8, 3, 3)  # InstructPix2Pix-style input
    with pytest.raises(CheckpointError, match=r"p2p\.safetensors: UNet input of 8 channels is not supported"):
        build_checkpoint("p2p.safetensors", sd)
