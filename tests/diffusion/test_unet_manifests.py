"""Released SD-family files, as key/shape manifests: split, detection, config, strict meta-device load."""

import json
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint_keys import (
    ModelFamily,
    detect_family,
    detect_unet_layout,
    is_ignorable,
    split_checkpoint,
)
from diffusion.keymaps_unet import diffusers_to_ldm, ldm_to_diffusers
from diffusion.unet import UNetModel, make_input_blocks
from diffusion.unet_config import load_unet, unet_config_from_diffusers, unet_config_from_state_dict
from tests.paths import SHARED

MANIFESTS = SHARED / "reference/manifests"
UNET_PREFIX = "model.diffusion_model."

_SD_DOWN = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
_SD_UP = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
# diffusers unet/config.json of each release (sd_formats.md §2.1, §9), to cross-check the json path.
DIFFUSERS_CONFIGS = {
    "sd15_v1-5-pruned-emaonly": dict(block_out_channels=[320, 640, 1280, 1280], down_block_types=_SD_DOWN,
                                     up_block_types=_SD_UP, cross_attention_dim=768, attention_head_dim=8),
    "sd15_inpainting": dict(in_channels=9, block_out_channels=[320, 640, 1280, 1280], down_block_types=_SD_DOWN,
                            up_block_types=_SD_UP, cross_attention_dim=768, attention_head_dim=8),
    "sd21_768_v": dict(block_out_channels=[320, 640, 1280, 1280], down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                       cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
                       upcast_attention=True),
    "sdxl_base_1.0": dict(block_out_channels=[320, 640, 1280],
                          down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                          up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                          cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                          transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
                          addition_embed_type="text_time", addition_time_embed_dim=256,
                          projection_class_embeddings_input_dim=2816),
    "sdxl_refiner_1.0": dict(block_out_channels=[384, 768, 1536, 1536],
                             down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "DownBlock2D"],
                             up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                             cross_attention_dim=1280, attention_head_dim=[6, 12, 24, 24],
                             transformer_layers_per_block=4, use_linear_projection=True,
                             addition_embed_type="text_time", addition_time_embed_dim=256,
                             projection_class_embeddings_input_dim=2560),
}
EXPECTED_FAMILY = {
    "sd15_v1-5-pruned-emaonly": ModelFamily("sd1", 4, "eps"),
    "sd15_inpainting": ModelFamily("sd1", 9, "eps"),
    "sd21_768_v": ModelFamily("sd2", 4, None),  # eps vs v is not in the keys
    "sdxl_base_1.0": ModelFamily("sdxl", 4, "eps"),
    "sdxl_refiner_1.0": ModelFamily("sdxl_refiner", 4, "eps"),
}
EXPECTED_TEXT_ENCODERS = {
    "sd15_v1-5-pruned-emaonly": {"clip_l": "hf"},
    "sd15_inpainting": {"clip_l": "hf"},
    "sd21_768_v": {"clip_h": "open_clip"},
    "sdxl_base_1.0": {"clip_l": "hf", "clip_g": "open_clip"},
    "sdxl_refiner_1.0": {"clip_g": "open_clip"},
}
UNET_TENSORS = {"sd15_v1-5-pruned-emaonly": 686, "sd15_inpainting": 686, "sd21_768_v": 686,
                "sdxl_base_1.0": 1680, "sdxl_refiner_1.0": 1220}


def _manifest(name):
    path = MANIFESTS / f"{name}.json"
    if not path.exists():
        pytest.skip("reference manifests not available")
    return json.loads(path.read_text())


def _meta(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", params=sorted(DIFFUSERS_CONFIGS))
def checkpoint(request):
    manifest = _manifest(request.param)
    return request.param, manifest, split_checkpoint(_meta(manifest["keys"]))


def test_split_accounts_for_every_key(checkpoint):
    name, manifest, parts = checkpoint
    assert parts.unknown == []
    assert sorted(parts.ignored) == sorted(manifest.get("inferred_keys", {}) | manifest.get("nonfloat_keys", {}))
    assert all(is_ignorable(k) for k in parts.ignored)
    assert len(parts.unet) == UNET_TENSORS[name]
    assert len(parts.vae) == 248
    assert {k: v.layout for k, v in parts.text_encoders.items()} == EXPECTED_TEXT_ENCODERS[name]
    by_part = manifest["params_by_part"]
    assert sum(v.numel() for v in parts.vae.values()) == by_part["vae (first_stage_model.)"]
    te_params = sum(v.numel() for te in parts.text_encoders.values() for v in te.state_dict.values())
    assert te_params == by_part["text_encoders"]
    assert len(parts.unet) + len(parts.vae) + len(parts.ignored) + sum(
        len(te.state_dict) for te in parts.text_encoders.values()) == manifest["tensor_count"]


def test_family(checkpoint):
    name, _, parts = checkpoint
    assert parts.family == EXPECTED_FAMILY[name]
    assert parts.family.inpaint == (name == "sd15_inpainting")


def test_derived_config_equals_comfyui_detection(checkpoint):
    _, manifest, parts = checkpoint
    config = unet_config_from_state_dict(parts.unet)
    for field, expected in manifest["comfyui_detected_unet_config"].items():
        if hasattr(config, field):
            value = getattr(config, field)
            assert (list(value) if isinstance(value, tuple) else value) == expected, field


def test_meta_unet_consumes_every_key_with_right_shapes(checkpoint):
    name, manifest, parts = checkpoint
    config = unet_config_from_state_dict(parts.unet)
    with torch.device("meta"):
        model = UNetModel(config)
    expected = {k[len(UNET_PREFIX):]: tuple(s) for k, s in manifest["keys"].items() if k.startswith(UNET_PREFIX)}
    assert _shapes(model) == expected  # zero missing, zero unexpected, every shape equal
    result = model.load_state_dict(parts.unet, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert _params(model) == manifest["params_by_part"]["unet (model.diffusion_model.)"]


def test_diffusers_config_and_keymap_at_full_size(checkpoint):
    name, _, parts = checkpoint
    config = unet_config_from_state_dict(parts.unet)
    assert unet_config_from_diffusers(DIFFUSERS_CONFIGS[name]) == config
    diffusers_sd = ldm_to_diffusers(parts.unet, config)
    assert len(diffusers_sd) == len(parts.unet)
    assert detect_unet_layout(diffusers_sd) == ("diffusers", "")
    assert diffusers_to_ldm(diffusers_sd, config) == parts.unet


def test_detect_unet_layout_variants():
    manifest = _manifest("sd15_v1-5-pruned-emaonly")
    assert detect_unet_layout(manifest["keys"]) == ("ldm", UNET_PREFIX)
    bare = [k[len(UNET_PREFIX):] for k in manifest["keys"] if k.startswith(UNET_PREFIX)]
    assert detect_unet_layout(bare) == ("ldm", "")
    assert detect_unet_layout(["first_stage_model.encoder.conv_in.weight"]) is None


def test_marker_keys_set_sdxl_prediction():
    manifest = _manifest("sdxl_base_1.0")
    keys = _meta(manifest["keys"])
    parts = split_checkpoint({**keys, "v_pred": torch.empty(0), "ztsnr": torch.empty(0)})
    assert parts.family == ModelFamily("sdxl", 4, "v", zero_terminal_snr=True)
    assert set(parts.markers) == {"v_pred", "ztsnr"}
    assert detect_family(parts.unet, ["edm_mean", "edm_std"]).prediction == "edm"


def test_old_sd1_text_encoder_layout_gets_text_model_level():
    parts = split_checkpoint({
        "cond_stage_model.transformer.embeddings.token_embedding.weight": torch.empty(4, 2),
        "model_ema.decay": torch.empty(()),
        "model_ema.diffusion_modelinput_blocks00weight": torch.empty(1),
        "something.else": torch.empty(1),
    })
    assert list(parts.text_encoders["clip_l"].state_dict) == ["text_model.embeddings.token_embedding.weight"]
    assert parts.ignored == ["model_ema.decay", "model_ema.diffusion_modelinput_blocks00weight"]
    assert parts.unknown == ["something.else"]
    assert parts.family is None


def test_paintsundo_single_frame_unet_from_diffusers_layout():
    manifest = _manifest("paintsundo_single_frame_unet")
    model = load_unet(_meta(manifest["keys"]), diffusers_config=manifest["config"])
    assert model.config.in_channels == 8  # conv_in widened after loading; the shapes win over config.json
    assert model.config.adm_in_channels == 256  # operation-step embedding through add_embedding -> label_emb
    assert model.config.num_heads == 8
    assert _params(model) == manifest["params"]


def test_controlnet_encoder_matches_unet_encoder_and_skip_channels():
    manifest = _manifest("controlnet_v11p_sd15_canny")
    control = _meta(manifest["keys"])
    config = unet_config_from_state_dict(control, prefix="control_model.")
    sd15 = split_checkpoint(_meta(_manifest("sd15_v1-5-pruned-emaonly")["keys"]))
    assert config == unet_config_from_state_dict(sd15.unet)

    with torch.device("meta"):
        unet = UNetModel(config)
    encoder = {k: s for k, s in _shapes(unet).items() if k.startswith(("time_embed.", "input_blocks.", "middle_block."))}
    cn = {k[len("control_model."):]: tuple(v.shape) for k, v in control.items()}
    assert {k: cn[k] for k in encoder} == encoder
    # ControlNet residual i must fit the skip of input block i; the middle one the middle output.
    skips = make_input_blocks(config)[1]
    assert [cn[f"zero_convs.{i}.0.weight"][0] for i in range(len(skips))] == skips
    assert cn["middle_block_out.0.weight"][0] == skips[-1]
