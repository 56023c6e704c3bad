"""/object_info of the loader, conditioning and latent nodes against the spec tables (comfy_api.md §9.1,
§9.2, §9.4, §9.9): display names, categories, input names / order / types / options, outputs, flags."""
from __future__ import annotations

import json

import pytest

from nodes.registry import NodeRegistry

R = 16384
STR = ["STRING", {"multiline": True, "dynamicPrompts": True}]
METHODS = [["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]]
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis"]
DUAL_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15", "kandinsky5",
              "kandinsky5_image", "ltxv", "newbie"]
DEVICE = [["default", "cpu"], {"advanced": True}]


def INT(default, lo, hi, step=None):  # noqa: N802 - reads like the spec tables
    options = {"default": default, "min": lo, "max": hi}
    return ["INT", options if step is None else {**options, "step": step}]


def FLOAT(default, lo, hi, step):  # noqa: N802
    return ["FLOAT", {"default": default, "min": lo, "max": hi, "step": step}]


TILED = {"tile_size": None, "overlap": INT(64, 0, 4096, 32), "temporal_size": INT(64, 8, 4096, 4),
         "temporal_overlap": INT(8, 4, 4096, 4)}

BUNDLED = [["sumi-tiny-shapes.safetensors"]]  # assets/checkpoints: listed even with an empty models/ folder
# name: (display name, category, required inputs in order, optional inputs, outputs, extra flags)
SPEC = {
    "CheckpointLoaderSimple": ("Load Checkpoint", "loaders", {"ckpt_name": BUNDLED}, {}, ["MODEL", "CLIP", "VAE"], {}),
    "CheckpointLoader": ("Load Checkpoint With Config (DEPRECATED)", "advanced/loaders",
                         {"config_name": [[]], "ckpt_name": BUNDLED}, {}, ["MODEL", "CLIP", "VAE"], {"deprecated": True}),
    "DiffusersLoader": ("DiffusersLoader", "advanced/loaders/deprecated", {"model_path": [[]]}, {},
                        ["MODEL", "CLIP", "VAE"], {}),
    "VAELoader": ("Load VAE", "loaders", {"vae_name": [[]]}, {}, ["VAE"], {}),
    "CLIPLoader": ("Load CLIP", "advanced/loaders", {"clip_name": [[]], "type": [CLIP_TYPES]}, {"device": DEVICE},
                   ["CLIP"], {}),
    "DualCLIPLoader": ("DualCLIPLoader", "advanced/loaders",
                       {"clip_name1": [[]], "clip_name2": [[]], "type": [DUAL_TYPES]}, {"device": DEVICE}, ["CLIP"], {}),
    "UNETLoader": ("Load Diffusion Model", "advanced/loaders",
                   {"unet_name": [[]], "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]]}, {},
                   ["MODEL"], {}),
    "CLIPSetLastLayer": ("CLIP Set Last Layer", "conditioning",
                         {"clip": ["CLIP"], "stop_at_clip_layer": INT(-1, -24, -1, 1)}, {}, ["CLIP"], {}),
    "CLIPTextEncode": ("CLIP Text Encode (Prompt)", "conditioning", {"text": STR, "clip": ["CLIP"]}, {},
                       ["CONDITIONING"], {}),
    "CLIPTextEncodeSDXL": ("CLIPTextEncodeSDXL", "advanced/conditioning", {
        "clip": ["CLIP"], "width": INT(1024, 0, R), "height": INT(1024, 0, R), "crop_w": INT(0, 0, R),
        "crop_h": INT(0, 0, R), "target_width": INT(1024, 0, R), "target_height": INT(1024, 0, R),
        "text_g": STR, "text_l": STR}, {}, ["CONDITIONING"], {}),
    "CLIPTextEncodeSDXLRefiner": ("CLIPTextEncodeSDXLRefiner", "advanced/conditioning", {
        "ascore": FLOAT(6.0, 0.0, 1000.0, 0.01), "width": INT(1024, 0, R), "height": INT(1024, 0, R), "text": STR,
        "clip": ["CLIP"]}, {}, ["CONDITIONING"], {}),
    "ConditioningCombine": ("Conditioning (Combine)", "conditioning",
                            {"conditioning_1": ["CONDITIONING"], "conditioning_2": ["CONDITIONING"]}, {},
                            ["CONDITIONING"], {}),
    "ConditioningAverage": ("ConditioningAverage", "conditioning", {
        "conditioning_to": ["CONDITIONING"], "conditioning_from": ["CONDITIONING"],
        "conditioning_to_strength": FLOAT(1.0, 0.0, 1.0, 0.01)}, {}, ["CONDITIONING"], {}),
    "ConditioningConcat": ("Conditioning (Concat)", "conditioning",
                           {"conditioning_to": ["CONDITIONING"], "conditioning_from": ["CONDITIONING"]}, {},
                           ["CONDITIONING"], {}),
    "ConditioningSetArea": ("Conditioning (Set Area)", "conditioning", {
        "conditioning": ["CONDITIONING"], "width": INT(64, 64, R, 8), "height": INT(64, 64, R, 8),
        "x": INT(0, 0, R, 8), "y": INT(0, 0, R, 8), "strength": FLOAT(1.0, 0.0, 10.0, 0.01)}, {},
        ["CONDITIONING"], {}),
    "ConditioningSetAreaPercentage": ("Conditioning (Set Area with Percentage)", "conditioning", {
        "conditioning": ["CONDITIONING"], "width": FLOAT(1.0, 0, 1.0, 0.01), "height": FLOAT(1.0, 0, 1.0, 0.01),
        "x": FLOAT(0, 0, 1.0, 0.01), "y": FLOAT(0, 0, 1.0, 0.01), "strength": FLOAT(1.0, 0.0, 10.0, 0.01)}, {},
        ["CONDITIONING"], {}),
    "ConditioningSetAreaStrength": ("ConditioningSetAreaStrength", "conditioning", {
        "conditioning": ["CONDITIONING"], "strength": FLOAT(1.0, 0.0, 10.0, 0.01)}, {}, ["CONDITIONING"], {}),
    "ConditioningSetMask": ("Conditioning (Set Mask)", "conditioning", {
        "conditioning": ["CONDITIONING"], "mask": ["MASK"], "strength": FLOAT(1.0, 0.0, 10.0, 0.01),
        "set_cond_area": [["default", "mask bounds"]]}, {}, ["CONDITIONING"], {}),
    "ConditioningZeroOut": ("ConditioningZeroOut", "advanced/conditioning", {"conditioning": ["CONDITIONING"]}, {},
                            ["CONDITIONING"], {}),
    "ConditioningSetTimestepRange": ("ConditioningSetTimestepRange", "advanced/conditioning", {
        "conditioning": ["CONDITIONING"], "start": FLOAT(0.0, 0.0, 1.0, 0.001), "end": FLOAT(1.0, 0.0, 1.0, 0.001)},
        {}, ["CONDITIONING"], {}),
    "EmptyLatentImage": ("Empty Latent Image", "latent", {
        "width": INT(512, 16, R, 8), "height": INT(512, 16, R, 8), "batch_size": INT(1, 1, 4096)}, {}, ["LATENT"], {}),
    "LatentUpscale": ("Upscale Latent", "latent", {
        "samples": ["LATENT"], "upscale_method": METHODS, "width": INT(512, 0, R, 8), "height": INT(512, 0, R, 8),
        "crop": [["disabled", "center"]]}, {}, ["LATENT"], {}),
    "LatentUpscaleBy": ("Upscale Latent By", "latent", {
        "samples": ["LATENT"], "upscale_method": METHODS, "scale_by": FLOAT(1.5, 0.01, 8.0, 0.01)}, {}, ["LATENT"], {}),
    "LatentComposite": ("Latent Composite", "latent", {
        "samples_to": ["LATENT"], "samples_from": ["LATENT"], "x": INT(0, 0, R, 8), "y": INT(0, 0, R, 8),
        "feather": INT(0, 0, R, 8)}, {}, ["LATENT"], {}),
    "LatentBlend": ("Latent Blend", "_for_testing", {
        "samples1": ["LATENT"], "samples2": ["LATENT"], "blend_factor": FLOAT(0.5, 0, 1, 0.01)}, {}, ["LATENT"], {}),
    "LatentFromBatch": ("Latent From Batch", "latent/batch", {
        "samples": ["LATENT"], "batch_index": INT(0, 0, 63), "length": INT(1, 1, 64)}, {}, ["LATENT"], {}),
    "RepeatLatentBatch": ("Repeat Latent Batch", "latent/batch", {"samples": ["LATENT"], "amount": INT(1, 1, 64)},
                          {}, ["LATENT"], {}),
    "SetLatentNoiseMask": ("Set Latent Noise Mask", "latent/inpaint", {"samples": ["LATENT"], "mask": ["MASK"]}, {},
                           ["LATENT"], {}),
    "VAEDecode": ("VAE Decode", "latent", {"samples": ["LATENT"], "vae": ["VAE"]}, {}, ["IMAGE"], {}),
    "VAEEncode": ("VAE Encode", "latent", {"pixels": ["IMAGE"], "vae": ["VAE"]}, {}, ["LATENT"], {}),
    "VAEEncodeForInpaint": ("VAE Encode (for Inpainting)", "latent/inpaint", {
        "pixels": ["IMAGE"], "vae": ["VAE"], "mask": ["MASK"], "grow_mask_by": INT(6, 0, 64, 1)}, {}, ["LATENT"], {}),
    "VAEDecodeTiled": ("VAE Decode (Tiled)", "_for_testing", {
        "samples": ["LATENT"], "vae": ["VAE"], **TILED, "tile_size": INT(512, 64, 4096, 32)}, {}, ["IMAGE"], {}),
    "VAEEncodeTiled": ("VAE Encode (Tiled)", "_for_testing", {
        "pixels": ["IMAGE"], "vae": ["VAE"], **TILED, "tile_size": INT(512, 64, 4096, 64)}, {}, ["LATENT"], {}),
}
ORDER = {  # the tiled nodes' TILED merge above keeps tile_size first; spelled out to make that visible
    "VAEDecodeTiled": ["samples", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"],
    "VAEEncodeTiled": ["pixels", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"],
}


@pytest.fixture(scope="module")
def object_info(tmp_path_factory) -> dict:
    from model_management.folders import Folders
    from nodes.runtime import NodeServices
    registry = NodeRegistry(NodeServices(Folders.create(tmp_path_factory.mktemp("schemas"))))
    registry.load_builtins(("nodes.loaders", "nodes.conditioning", "nodes.latent"))
    return json.loads(json.dumps(registry.object_info()))


def test_every_node_is_registered(object_info):
    assert set(object_info) == set(SPEC)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_object_info_matches_spec(name, object_info):
    display, category, required, optional, outputs, flags = SPEC[name]
    info = object_info[name]
    assert (info["display_name"], info["category"]) == (display, category)
    assert info["input"].get("required", {}) == required
    assert info["input"].get("optional", {}) == optional
    assert info["input_order"]["required"] == ORDER.get(name, list(required))
    assert "hidden" not in info["input"]  # the runtime parameter is never shown
    assert (info["output"], info["output_name"], info["output_is_list"]) == (outputs, outputs, [False] * len(outputs))
    assert info["output_node"] is False and info["python_module"] == "nodes"
    assert {k: info[k] for k in ("deprecated", "experimental", "api_node") if k in info} == flags


def test_file_lists_come_from_the_model_folders(services, write_checkpoint):
    name, folder = write_checkpoint("sd15"), write_checkpoint("sd15", fmt="diffusers")
    registry = NodeRegistry(services)
    registry.load_builtins(("nodes.loaders",))
    info = registry.object_info()
    assert name in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert folder in info["DiffusersLoader"]["input"]["required"]["model_path"][0]
