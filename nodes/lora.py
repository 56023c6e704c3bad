"""LoRA-family and hypernetwork loaders: clones of MODEL / CLIP carrying weight patches or input hooks
that the memory manager applies while the model is loaded (model_management.patcher / manager).

LoraLoader and LoraLoaderModelOnly follow ComfyUI (spec comfy_api.md §9.1): every format of spec
sd_formats.md §4 (kohya LoRA / LoCon, diffusers / PEFT, LyCORIS LoHa / LoKr / full diff, GLoRA, OFT,
DoRA), UNet keys at ``strength_model``, text-encoder keys at ``strength_clip``; base names that patch
nothing are reported in the log. Like ComfyUI's instance cache, each node keeps the file it read last.

LoraTagLoader takes an A1111 prompt: ``<lora:NAME:MULT>``, ``<lora:NAME:TE:UNET>`` (text-encoder
strength first, as A1111 reads it), the named forms ``te=`` / ``unet=``, the legacy ``<lyco:…>`` and
``<hypernet:NAME:MULT>``; NAME is a file in models/loras (models/hypernetworks) with or without its
extension or folder. It applies them in prompt order and returns the prompt without the tags, for a
CLIPTextEncode whose text is turned into an input.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffusion.hypernetwork import ContextHook, load_hypernetwork
from model_management.files import load_state_dict
from model_management.handles import ClipHandle, ModelHandle
from model_management.patcher import add_input_hooks, resolve_adapters, with_adapters
from nodes.runtime import NodeRuntime, NodeServices
from nodes.schema import Combo, Float, In, Node, Out, Socket, String

log = logging.getLogger(__name__)
MAX_NAMES_LOGGED = 10
TAG = re.compile(r"<(lora|lyco|hypernet):([^<>]+)>", re.IGNORECASE)


def _files(key: str) -> Callable[[NodeServices | None], list[str]]:
    return lambda services: services.folders.list_models(key) if services else []


@dataclass
class _Cached:
    """The last file a node read, kept while it is unchanged on disk."""

    path: Path | None = None
    stamp: tuple[int, int] | None = None
    content: Any = None

    def get(self, path: Path, read: Callable[[Path], Any]) -> Any:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if path != self.path or stamp != self.stamp:
            self.path, self.stamp, self.content = path, stamp, read(path)
        return self.content


def apply_lora(model: ModelHandle | None, clip: ClipHandle | None, weights: dict[str, Tensor], name: str,
               strength_model: float, strength_clip: float) -> tuple[ModelHandle | None, ClipHandle | None]:
    """Clones of model / clip patched by the LoRA-family file `weights`; reports what matched nothing."""
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    adapters = resolve_adapters(weights, model, clip)
    if adapters.unmatched:
        shown = ", ".join(adapters.unmatched[:MAX_NAMES_LOGGED])
        more = len(adapters.unmatched) - MAX_NAMES_LOGGED
        log.warning("%s: %d lora key(s) not loaded: %s%s", name, len(adapters.unmatched), shown,
                    f" and {more} more" if more > 0 else "")
    return with_adapters(model, clip, adapters, strength_model, strength_clip)


def apply_hypernetwork(model: ModelHandle, data: dict, strength: float) -> ModelHandle:
    """A clone of `model` whose attention keys and values see c + s·mlp(c) where the file has a width."""
    if strength == 0:
        return model
    mlps = load_hypernetwork(data)
    hooks = []
    for name, module in model.base.unet.named_modules():
        if name.endswith((".attn1", ".attn2")) and module.to_k.in_features in mlps:
            k, v = mlps[module.to_k.in_features]
            hooks += [(f"{name}.to_k", ContextHook(k, strength)), (f"{name}.to_v", ContextHook(v, strength))]
    model = model.clone()
    add_input_hooks(model, hooks)
    return model


def _read_hypernetwork(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _strength(name: str) -> In:
    return Float(name, 1.0, min=-100.0, max=100.0, step=0.01)


class LoraLoader(Node):
    """MODEL and CLIP with a LoRA-family file applied at separate strengths (UNet / text encoders)."""

    CATEGORY = "loaders"
    DESCRIPTION = "LoRAs modify the diffusion and CLIP models, altering the way latents are denoised."
    INPUTS = (
        Socket("MODEL", "model"),
        Socket("CLIP", "clip"),
        Combo("lora_name", _files("loras")),
        _strength("strength_model"),
        _strength("strength_clip"),
    )
    OUTPUTS = (Out("MODEL"), Out("CLIP"))

    def __init__(self) -> None:
        self.cached = _Cached()

    def execute(self, model: ModelHandle, clip: ClipHandle | None, lora_name: str, strength_model: float,
                strength_clip: float, rt: NodeRuntime) -> tuple[ModelHandle, ClipHandle | None]:
        path = rt.folders.model_path("loras", lora_name)
        weights = self.cached.get(path, load_state_dict)
        return apply_lora(model, clip, weights, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly(LoraLoader):
    """LoraLoader for the MODEL alone (UNet keys of the file)."""

    INPUTS = (Socket("MODEL", "model"), Combo("lora_name", _files("loras")), _strength("strength_model"))
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model: ModelHandle, lora_name: str, strength_model: float,  # type: ignore[override]
                rt: NodeRuntime) -> tuple[ModelHandle]:
        return (super().execute(model, None, lora_name, strength_model, 0.0, rt)[0],)


class HypernetworkLoader(Node):
    """A MODEL whose attention layers see their context through an A1111 hypernetwork."""

    CATEGORY = "loaders"
    INPUTS = (
        Socket("MODEL", "model"),
        Combo("hypernetwork_name", _files("hypernetworks")),
        Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Out("MODEL"),)

    def __init__(self) -> None:
        self.cached = _Cached()

    def execute(self, model: ModelHandle, hypernetwork_name: str, strength: float,
                rt: NodeRuntime) -> tuple[ModelHandle]:
        path = rt.folders.model_path("hypernetworks", hypernetwork_name)
        return (apply_hypernetwork(model, self.cached.get(path, _read_hypernetwork), strength),)


@dataclass(frozen=True)
class PromptTag:
    kind: str  # "lora" (also <lyco:…>) or "hypernet"
    name: str
    unet: float
    te: float


def parse_tags(text: str) -> tuple[str, list[PromptTag]]:
    """(text without the tags, the tags in order). A1111 reading: positional TE then UNET multiplier
    (UNET defaults to TE, TE to 1), or named te= / unet=; a dyn= rank limit is ignored."""
    tags = []
    for match in TAG.finditer(text):
        kind = "hypernet" if match.group(1).lower() == "hypernet" else "lora"
        name, *params = [p.strip() for p in match.group(2).split(":")]
        positional = [p for p in params if "=" not in p]
        named = dict(p.split("=", 1) for p in params if "=" in p)
        try:
            te = float(named.get("te", positional[0] if positional else 1.0))
            unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
        except ValueError as exc:
            raise ValueError(f"{match.group(0)}: a multiplier is not a number ({exc})") from None
        tags.append(PromptTag(kind, name, unet, te))
    return TAG.sub("", text).strip(), tags


def find_model_file(names: list[str], wanted: str) -> str | None:
    """The listed file called `wanted`: its exact relative name, that name without the extension, or
    the bare file stem (A1111 refers to files by stem)."""
    wanted = wanted.replace("\\", "/")
    for match in (lambda n: n == wanted, lambda n: n.rsplit(".", 1)[0] == wanted,
                  lambda n: n.rsplit("/", 1)[-1].rsplit(".", 1)[0] == wanted):
        found = [n for n in names if match(n)]
        if found:
            return found[0]
    return None


class LoraTagLoader(Node):
    """Applies the <lora:…> / <lyco:…> / <hypernet:…> tags of an A1111 prompt; outputs the clean prompt."""

    CATEGORY = "loaders"
    DESCRIPTION = ("Reads A1111 <lora:name:weight> / <lora:name:te_weight:unet_weight> tags from the text, "
                   "applies them to MODEL and CLIP and returns the text without them.")
    INPUTS = (Socket("MODEL", "model"), Socket("CLIP", "clip"),
              String("text", "", multiline=True, dynamicPrompts=True))
    OUTPUTS = (Out("MODEL"), Out("CLIP"), Out("STRING", "text"))

    def __init__(self) -> None:
        self.cached: dict[str, _Cached] = {}

    def _read(self, key: str, path: Path, read: Callable[[Path], Any]) -> Any:
        return self.cached.setdefault(key, _Cached()).get(path, read)

    def execute(self, model: ModelHandle, clip: ClipHandle | None, text: str,
                rt: NodeRuntime) -> tuple[ModelHandle, ClipHandle | None, str]:
        clean, tags = parse_tags(text)
        used = set()
        for tag in tags:
            folder = "hypernetworks" if tag.kind == "hypernet" else "loras"
            name = find_model_file(rt.folders.list_models(folder), tag.name)
            if name is None:
                log.warning("LoraTagLoader: no file called %r in %s; tag skipped", tag.name, folder)
                rt.send_text(f"{tag.kind} {tag.name!r} not found in models/{folder}")
                continue
            key = f"{folder}/{name}"
            used.add(key)
            path = rt.folders.model_path(folder, name)
            if tag.kind == "hypernet":
                model = apply_hypernetwork(model, self._read(key, path, _read_hypernetwork), tag.unet)
            else:
                model, clip = apply_lora(model, clip, self._read(key, path, load_state_dict), name, tag.unet, tag.te)
        self.cached = {k: v for k, v in self.cached.items() if k in used}
        return model, clip, clean


NODE_CLASS_MAPPINGS = {
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "HypernetworkLoader": HypernetworkLoader,
    "LoraTagLoader": LoraTagLoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoraLoader": "Load LoRA",
    "LoraTagLoader": "Load LoRAs from Prompt Tags (A1111)",
}
