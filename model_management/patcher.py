"""Weight patches on MODEL / CLIP / VAE handles: recorded on clones, applied by the memory manager.

A handle's ``patches`` maps a tensor name to a list of `Patch` in the order they were added (LoRA
files, merges, …). Names are the handle's own: UNet and VAE state-dict keys (ldm names), and for a
CLIP ``<role>.<encoder key>`` (e.g. ``clip_l.transformer.encoder.layers.0.mlp.fc1.weight``), see
`tensor_slots`. Nothing here changes a module: `patched` computes the new value of one tensor from
its original, in float32, and casts it back; the manager swaps it in when it loads the handle and
swaps the untouched original back when it unloads it, so the weights after an unpatch are the very
same tensors (bit-identical).

Every patch is ComfyUI's (strength_patch, value, strength_model) triple: W ← W·strength_model, then
W ← value.apply(W, strength_patch). LoRA-family values come from `diffusion.adapters`; a merge's
value is `ModelWeight`, another model's weight (with that model's own patches): W + s·W₂.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from diffusion.adapters import Adapter, apply_chain, build_adapters, group_tensors
from diffusion.keymaps_lora import Target, clip_lora_keys, resolve, unet_lora_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    value: Adapter
    strength: float = 1.0
    strength_model: float = 1.0


@dataclass(frozen=True)
class ModelWeight:
    """Another model's weight (its original plus its own patches): W + s·W₂. A shape mismatch leaves W."""

    original: Tensor
    patches: tuple[Patch, ...] = ()

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        if self.original.shape != weight.shape:
            log.warning("merge: shapes %s and %s differ; weight left as is", tuple(weight.shape),
                        tuple(self.original.shape))
            return weight
        other = patched(self.original.to(weight.device), self.patches, torch.float32)
        return weight + strength * other


def patched(original: Tensor, patches: Sequence[Patch], dtype: torch.dtype | None = None) -> Tensor:
    """`original` with `patches` applied in order, computed in float32, returned in `dtype` (default:
    the original's)."""
    def chain() -> Iterator[tuple[Adapter, float]]:
        for patch in patches:
            if patch.strength_model != 1.0:
                yield _Scale(), patch.strength_model
            yield patch.value, patch.strength
    return apply_chain(original, chain()).to(dtype or original.dtype)


class _Scale:
    """W·s (the strength_model factor of a patch)."""

    @staticmethod
    def apply(weight: Tensor, strength: float) -> Tensor:
        return weight * strength


# -- where a handle's tensors live -----------------------------------------------------------------


@dataclass(frozen=True)
class TensorSlot:
    """A tensor attribute of a module: a parameter or a buffer (``persistent`` ones are saved)."""

    owner: nn.Module
    attr: str
    is_param: bool
    persistent: bool = True

    def get(self) -> Tensor:
        return (self.owner._parameters if self.is_param else self.owner._buffers)[self.attr]

    def set(self, value: Tensor) -> None:
        """Swap in another tensor (any device, meta included) without touching the old one."""
        if self.is_param:
            param = value if isinstance(value, nn.Parameter) else nn.Parameter(value, requires_grad=False)
            self.owner._parameters[self.attr] = param
        else:
            self.owner._buffers[self.attr] = value


def tensor_slots(prefixed: Mapping[str, nn.Module]) -> dict[str, TensorSlot]:
    """Every parameter and buffer of {name prefix: module} by its full (prefixed) name."""
    out: dict[str, TensorSlot] = {}
    for prefix, root in prefixed.items():
        for path, module in root.named_modules():
            base = f"{prefix}{path}." if path else prefix
            for attr, value in module._parameters.items():
                if value is not None:
                    out[base + attr] = TensorSlot(module, attr, True)
            for attr, value in module._buffers.items():
                if value is not None:
                    out[base + attr] = TensorSlot(module, attr, False,
                                                  attr not in module._non_persistent_buffers_set)
    return out


def nbytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# handle.options key: ((module name, forward pre-hook), …) installed while the handle is loaded; a hook
# may return new positional inputs (hypernetworks rewrite the context of attention keys / values).
INPUT_HOOKS = "input_hooks"


def signature(handle: Any) -> tuple:
    """Identity of what a handle changes about its shared modules: equal for clones that share their
    patch and hook objects."""
    patches = tuple(sorted((k, tuple(map(id, v))) for k, v in handle.patches.items() if v))
    return patches, id(handle.options.get(INPUT_HOOKS, ()))


def add_input_hooks(handle: Any, hooks: Iterable[tuple[str, Any]]) -> None:
    """Append forward pre-hooks (by module name) to a (cloned) handle."""
    handle.options[INPUT_HOOKS] = tuple(handle.options.get(INPUT_HOOKS, ())) + tuple(hooks)


# -- adding patches to (cloned) handles -------------------------------------------------------------


def add_patches(handle: Any, values: Mapping[str, Adapter], strength: float = 1.0,
                strength_model: float = 1.0) -> list[str]:
    """Append a patch per key the handle has; returns the keys that were added."""
    known = set(tensor_slots(handle.prefixed_modules()))
    added = []
    for key, value in values.items():
        if key in known:
            handle.patches.setdefault(key, []).append(Patch(value, strength, strength_model))
            added.append(key)
    return added


def key_patches(handle: Any, originals: Mapping[str, Tensor], skip_suffixes: tuple[str, ...] = ()) \
        -> dict[str, ModelWeight]:
    """Each persistent tensor of `handle` as a `ModelWeight` (what merges add to another model)."""
    slots = tensor_slots(handle.prefixed_modules())
    return {k: ModelWeight(originals[k], tuple(handle.patches.get(k, ()))) for k, slot in slots.items()
            if slot.persistent and not k.endswith(skip_suffixes)}


# -- LoRA-family files -------------------------------------------------------------------------------


@dataclass
class AdapterSet:
    """A LoRA-family file resolved against a model and a CLIP: tensor name → adapter per component."""

    model: dict[str, Adapter] = field(default_factory=dict)
    clip: dict[str, Adapter] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # base names (and stray keys) that patch nothing


def lora_key_map(model: Any | None, clip: Any | None) -> dict[str, Target]:
    """Every LoRA spelling for the UNet of `model` and the text encoders of `clip`."""
    key_map: dict[str, Target] = {}
    if model is not None:
        unet = model.base.unet
        key_map.update(unet_lora_keys(unet.config, unet.state_dict().keys()))
    if clip is not None:
        key_map.update(clip_lora_keys({slot.key: slot.encoder.state_dict().keys() for slot in clip.slots}))
    return key_map


def resolve_adapters(state_dict: Mapping[str, Tensor], model: Any | None, clip: Any | None) -> AdapterSet:
    """Group a file's tensors by base name, build each adapter and find the tensor it patches."""
    groups, stray = group_tensors(state_dict)
    matched, unmatched = resolve(groups, lora_key_map(model, clip))
    out = AdapterSet(unmatched=unmatched + [k for k in stray if not k.startswith("bundle_emb.")])
    for name, target in matched.items():
        weight, bias = build_adapters(groups[name])
        if weight is None and bias is None:
            out.unmatched.append(name)
            continue
        into = out.model if target.component == "unet" else out.clip
        prefix = "" if target.component == "unet" else target.component + "."
        if weight is not None:
            into[prefix + target.key] = weight
        if bias is not None:
            into[prefix + target.bias_key] = bias
    return out


def originals_of(handle: Any) -> dict[str, Tensor]:
    """A handle's unpatched tensors: from its manager (which may hold patched ones in the modules), or
    straight from the modules when there is none (nothing can have been patched then)."""
    if handle.manager is not None:
        return handle.manager.originals(handle)
    return {name: ts.get() for name, ts in tensor_slots(handle.prefixed_modules()).items()}


def with_adapters(model: Any | None, clip: Any | None, adapters: AdapterSet, strength_model: float,
                  strength_clip: float) -> tuple[Any | None, Any | None]:
    """Clones of `model` / `clip` carrying the adapters at their strengths (inputs returned as they are
    when a strength is 0 or the file patches nothing of them)."""
    if model is not None and adapters.model and strength_model != 0:
        model = model.clone()
        add_patches(model, adapters.model, strength_model)
    if clip is not None and adapters.clip and strength_clip != 0:
        clip = clip.clone()
        add_patches(clip, adapters.clip, strength_clip)
    return model, clip


def effective_state_dict(handle: Any) -> dict[str, Tensor]:
    """The handle's persistent tensors with its patches applied (what saving writes)."""
    if handle.manager is not None:
        return handle.manager.state_dict(handle)
    if any(handle.patches.values()):
        raise RuntimeError("weight patches (LoRA, merges) are applied by the model manager; this handle has none")
    return {name: ts.get() for name, ts in tensor_slots(handle.prefixed_modules()).items() if ts.persistent}
