"""Loader nodes: checkpoints, diffusers folders, diffusion models, text encoders and VAEs as MODEL /
CLIP / VAE handles (model_management.handles), plus CLIPSetLastLayer.

Names, inputs and categories follow ComfyUI (spec comfy_api.md §9.1, §9.2). Files are found through
rt.folders (contained paths) and read straight onto the offload device in the compute dtype that
rt.services.devices says; the handles carry the memory manager (rt.services.models), which moves them to
the load device when a node uses them. A file that is unreadable or does not fit raises
diffusion.checkpoint.CheckpointError naming the file and the missing / unexpected keys.
Components a checkpoint lacks come out as None, as in ComfyUI.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from diffusion.checkpoint import (Components, Placement, load_checkpoint, load_diffusers,
                                  load_text_encoder_files, load_unet_file, load_vae_file)
from model_management.devices import DevicePolicy
from model_management.files import diffusers_path, list_diffusers, load_state_dict
from model_management.handles import (ClipHandle, ModelHandle, VaeHandle, clip_handle, model_handle,
                                      vae_handle)
from nodes.runtime import NodeRuntime, NodeServices
from nodes.schema import Combo, Int, Node, Out, Socket

CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
                   "kandinsky5", "kandinsky5_image", "ltxv", "newbie")
# UNETLoader weight_dtype: fp8 storage is emulated by rounding the weights through it.
WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}
Handles = tuple[ModelHandle | None, ClipHandle | None, VaeHandle | None]


def _files(key: str) -> Callable[[NodeServices | None], list[str]]:
    return lambda services: services.folders.list_models(key) if services else []


def _placements(policy: DevicePolicy) -> dict[str, Placement]:
    """Weights rest on the offload device; the manager brings them to the load device when used."""
    return {"unet": Placement(policy.offload_device, policy.unet_dtype),
            "vae": Placement(policy.offload_device, policy.vae_dtype),
            "text": Placement(policy.offload_device, policy.text_encoder_dtype)}


def _handles(components: Components, policy: DevicePolicy, rt: NodeRuntime, name: str) -> Handles:
    manager = rt.services.models
    model = None if components.denoiser is None else \
        model_handle(components.denoiser, policy, manager, f"{name} (MODEL)")
    clip = None if not components.text_encoders else \
        clip_handle(components.text_encoders, components.family, policy, manager, f"{name} (CLIP)")
    vae = None if components.vae is None else vae_handle(components.vae, policy, manager, f"{name} (VAE)")
    return model, clip, vae


def load_checkpoint_file(rt: NodeRuntime, ckpt_name: str) -> Handles:
    path = rt.folders.model_path("checkpoints", ckpt_name)
    policy = rt.services.devices
    return _handles(load_checkpoint(path, load_state_dict(path), **_placements(policy)), policy, rt, ckpt_name)


class CheckpointLoaderSimple(Node):
    """MODEL, CLIP and VAE from a single-file checkpoint; the architecture comes from its tensor shapes."""

    CATEGORY = "loaders"
    INPUTS = (Combo("ckpt_name", _files("checkpoints")),)
    OUTPUTS = (Out("MODEL"), Out("CLIP"), Out("VAE"))

    def execute(self, ckpt_name: str, rt: NodeRuntime) -> Handles:
        return load_checkpoint_file(rt, ckpt_name)


class CheckpointLoader(Node):
    """CheckpointLoaderSimple with an LDM .yaml that must exist but is not needed: shapes say it all."""

    CATEGORY = "advanced/loaders"
    DEPRECATED = True
    INPUTS = (Combo("config_name", _files("configs")), Combo("ckpt_name", _files("checkpoints")))
    OUTPUTS = (Out("MODEL"), Out("CLIP"), Out("VAE"))

    def execute(self, config_name: str, ckpt_name: str, rt: NodeRuntime) -> Handles:
        rt.folders.model_path("configs", config_name)
        return load_checkpoint_file(rt, ckpt_name)


class DiffusersLoader(Node):
    """MODEL, CLIP and VAE from a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder*/)."""

    CATEGORY = "advanced/loaders/deprecated"
    INPUTS = (Combo("model_path", lambda services: list_diffusers(services.folders) if services else []),)
    OUTPUTS = (Out("MODEL"), Out("CLIP"), Out("VAE"))

    def execute(self, model_path: str, rt: NodeRuntime) -> Handles:
        policy = rt.services.devices
        components = load_diffusers(diffusers_path(rt.folders, model_path), **_placements(policy))
        return _handles(components, policy, rt, model_path)


class UNETLoader(Node):
    """A MODEL from a UNet-only file (ldm keys, or diffusers keys with config.json beside the file)."""

    CATEGORY = "advanced/loaders"
    INPUTS = (Combo("unet_name", _files("diffusion_models")), Combo("weight_dtype", tuple(WEIGHT_DTYPES)))
    OUTPUTS = (Out("MODEL"),)

    def execute(self, unet_name: str, weight_dtype: str, rt: NodeRuntime) -> tuple[ModelHandle]:
        path = rt.folders.model_path("diffusion_models", unet_name)
        policy = rt.services.devices
        config_file = path.parent / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        placement = Placement(policy.offload_device, policy.unet_dtype, WEIGHT_DTYPES[weight_dtype])
        _, denoiser = load_unet_file(path, load_state_dict(path), placement, config)
        return (model_handle(denoiser, policy, rt.services.models, f"{unet_name} (MODEL)"),)


def _load_clip(rt: NodeRuntime, names: list[str], kind: str, device: str) -> tuple[ClipHandle]:
    policy = rt.services.devices.for_device(device)
    paths = [rt.folders.model_path("text_encoders", name) for name in names]
    files: list[tuple[str | Path, dict]] = [(path, load_state_dict(path)) for path in paths]
    family, encoders = load_text_encoder_files(files, kind, _placements(policy)["text"])
    return (clip_handle(encoders, family, policy, rt.services.models, f"{' + '.join(names)} (CLIP)"),)


def _unsupported(kind: str, node: str) -> ValueError:
    return ValueError(f"{node}: type {kind!r} is not supported yet (stable_diffusion / sdxl models only)")


class CLIPLoader(Node):
    """A CLIP from one text-encoder file; "stable_diffusion" takes CLIP-L (SD1), ViT-H (SD2) or bigG."""

    CATEGORY = "advanced/loaders"
    INPUTS = (
        Combo("clip_name", _files("text_encoders")),
        Combo("type", CLIP_TYPES),
        Combo("device", ("default", "cpu"), optional=True, advanced=True),
    )
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip_name: str, type: str, rt: NodeRuntime, device: str = "default") -> tuple[ClipHandle]:  # noqa: A002
        if type != "stable_diffusion":
            raise _unsupported(type, "CLIPLoader")
        return _load_clip(rt, [clip_name], type, device)


class DualCLIPLoader(Node):
    """SDXL's CLIP from its two text-encoder files (CLIP-L and bigG, in either order)."""

    CATEGORY = "advanced/loaders"
    INPUTS = (
        Combo("clip_name1", _files("text_encoders")),
        Combo("clip_name2", _files("text_encoders")),
        Combo("type", DUAL_CLIP_TYPES),
        Combo("device", ("default", "cpu"), optional=True, advanced=True),
    )
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip_name1: str, clip_name2: str, type: str, rt: NodeRuntime,  # noqa: A002
                device: str = "default") -> tuple[ClipHandle]:
        if type != "sdxl":
            raise _unsupported(type, "DualCLIPLoader")
        return _load_clip(rt, [clip_name1, clip_name2], type, device)


class VAELoader(Node):
    """A VAE file (ldm or diffusers keys, optionally under first_stage_model.)."""

    CATEGORY = "loaders"
    INPUTS = (Combo("vae_name", _files("vae")),)
    OUTPUTS = (Out("VAE"),)

    def execute(self, vae_name: str, rt: NodeRuntime) -> tuple[VaeHandle]:
        path = rt.folders.model_path("vae", vae_name)
        policy = rt.services.devices
        vae = load_vae_file(path, load_state_dict(path), _placements(policy)["vae"])
        return (vae_handle(vae, policy, rt.services.models, f"{vae_name} (VAE)"),)


class CLIPSetLastLayer(Node):
    """Encode with an earlier layer's output (−1 = last, −2 = penultimate, i.e. A1111 "clip skip 2")."""

    CATEGORY = "conditioning"
    INPUTS = (Socket("CLIP", "clip"), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1))
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip: ClipHandle, stop_at_clip_layer: int) -> tuple[ClipHandle]:
        clip = clip.clone()
        clip.set_layer(stop_at_clip_layer)
        return (clip,)


NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "CheckpointLoader": CheckpointLoader,
    "DiffusersLoader": DiffusersLoader,
    "UNETLoader": UNETLoader,
    "CLIPLoader": CLIPLoader,
    "DualCLIPLoader": DualCLIPLoader,
    "VAELoader": VAELoader,
    "CLIPSetLastLayer": CLIPSetLastLayer,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CheckpointLoader": "Load Checkpoint With Config (DEPRECATED)",
    "DiffusersLoader": "DiffusersLoader",
    "UNETLoader": "Load Diffusion Model",
    "CLIPLoader": "Load CLIP",
    "DualCLIPLoader": "DualCLIPLoader",
    "VAELoader": "Load VAE",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
}
