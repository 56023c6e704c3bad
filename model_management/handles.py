"""MODEL, CLIP and VAE values: thin handles over shared weights.

A node that changes a model (CLIPSetLastLayer, LoRA, model-sampling overrides, …) calls ``clone()``
and changes the clone: the weights stay shared, only the handle's settings are copied, so branching
a workflow costs no memory. Weights are never modified through a handle; ``patches`` records weight
patches (LoRA, merges: `model_management.patcher`) that the memory manager applies when it loads the
handle and removes when it unloads it (`model_management.manager`).

Every handle has
  ``load_device`` / ``offload_device``  where the weights run / rest (from `devices.DevicePolicy`),
  ``patches``  tensor name → list of `patcher.Patch` (names: see ``prefixed_modules()``),
  ``options``  free-form per-clone settings (copied by ``clone()``, nested dicts copied too),
  ``manager``  the app's `ModelManager` (set by the loaders; shared by clones) or None,
  ``clone()``, ``to_device(device=None)`` (default: load_device, through the manager with the patches
  applied), ``run(fn, working_memory)`` (fn() with the weights loaded, retried in a lower-memory mode on
  out-of-memory), ``offload()``, ``get_ram_usage()``, ``prefixed_modules()`` (tensor-name prefix → module).

`ModelHandle` (MODEL)
  ``base``: the `diffusion.model.Denoiser`, shared by clones.
  ``denoiser``: the effective denoiser, i.e. ``base`` with a ``set_schedule()`` override applied.
  ``to_device()`` moves the UNet and returns ``denoiser``, ready for ``make_cond`` / ``apply``.
  ``latent_format``, ``family``, ``is_clone(other)``.

`ClipHandle` (CLIP)
  ``slots``: the text encoders in concatenation order (SDXL: clip_l, clip_g), shared by clones.
  ``set_layer(n)`` (CLIPSetLastLayer; None = the family default), ``widths`` (key → width).
  ``tokenize(text, embedding_lookup)`` → {key: 77-token chunks};
  ``encode_tokens(tokens)`` → (cond [1, 77·k, ΣD], pooled [1, P]); ``encode(text, lookup)`` does both.
  Outputs are float32 on the CPU, like every CONDITIONING tensor.

`VaeHandle` (VAE)
  ``encode(pixels)`` IMAGE [B, H, W, C] → raw latent [B, C, H/f, W/f] (centre-cropped to multiples of f);
  ``decode(latent)`` → IMAGE [B, H, W, 3]; ``encode_tiled`` / ``decode_tiled`` take pixel tile sizes.
  ``downscale_factor``, ``latent_channels``. Results are float32 on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from diffusion.latent_formats import LatentFormat
from diffusion.model import Denoiser
from diffusion.prompt import EmbeddingLookup, WeightedToken, tokenize_prompt
from diffusion.schedules import DiscreteSchedule
from diffusion.text_encoders import ClipTextEncoder, ClipUsage, encode_chunks
from diffusion.tokenizer import ClipTokenizer
from diffusion.vae import AutoencoderKL, crop_to_multiple, tiled_decode, tiled_encode
from model_management.devices import DevicePolicy
from model_management.manager import clip_working_memory, unet_working_memory, vae_working_memory

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at run time

log = logging.getLogger(__name__)

Tokens = dict[str, list[list[WeightedToken]]]
# Pixels per VAE call; larger batches are split so activations stay bounded.
VAE_PIXELS_PER_CALL = 1024 * 1024


def _copy_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Copy nested dicts so a clone can change them; leaf values (tensors, callables) stay shared."""
    return {k: _copy_options(v) if isinstance(v, dict) else v for k, v in options.items()}


@dataclass(kw_only=True)
class Handle:
    """What every handle has (see the module docstring)."""

    load_device: torch.device
    offload_device: torch.device
    patches: dict[str, list[Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    manager: Any = None

    def modules(self) -> Iterator[nn.Module]:
        raise NotImplementedError

    def prefixed_modules(self) -> dict[str, nn.Module]:
        """The modules by the prefix their tensor names carry in ``patches`` (none for one module)."""
        return {"": module for module in self.modules()}

    def default_working_memory(self) -> int:
        """Working memory reserved when a caller gives no estimate."""
        return 0

    def clone(self) -> Self:
        return replace(self, patches={k: list(v) for k, v in self.patches.items()},
                       options=_copy_options(self.options))

    def _move(self, device: torch.device) -> None:
        for module in self.modules():
            module.to(device)

    def offload(self) -> None:
        if self.manager is not None:
            self.manager.unload([self])
        else:
            self._move(self.offload_device)

    def _load(self, device: torch.device | None, working_memory: int | None) -> None:
        """Weights on `device` (default: load_device): through the manager, which applies the patches;
        without one (or for another device) the modules are moved as they are."""
        if self.manager is not None and device in (None, self.load_device):
            self.manager.load([self], self.default_working_memory() if working_memory is None else working_memory)
            return
        if any(self.patches.values()):
            log.warning("%s: weight patches (LoRA, merges) are applied by the model manager, and this handle "
                        "has none (NodeServices.models); they are ignored", type(self).__name__)
        self._move(device or self.load_device)

    def run(self, fn: Callable[[], Any], working_memory: int | None = None) -> Any:
        """`fn()` with the weights loaded; out-of-memory errors are retried in lower-memory modes."""
        if self.manager is None:
            self._load(None, working_memory)
            return fn()
        memory = self.default_working_memory() if working_memory is None else working_memory
        return self.manager.run([self], memory, fn)

    def get_ram_usage(self) -> int:
        """Bytes of weights (clones report the shared weights too: an over-estimate is the safe side)."""
        return sum(t.numel() * t.element_size() for m in self.modules() for t in m.state_dict().values())


@dataclass(kw_only=True)
class ModelHandle(Handle):
    base: Denoiser
    SCHEDULE_OPTION = "model_sampling"

    def modules(self) -> Iterator[nn.Module]:
        yield self.base.unet

    @property
    def denoiser(self) -> Denoiser:
        schedule = self.options.get(self.SCHEDULE_OPTION)
        return self.base if schedule is None else self.base.with_schedule(schedule)

    def set_schedule(self, schedule: DiscreteSchedule) -> None:
        """Override the σ schedule / prediction type (ModelSamplingDiscrete); call on a clone."""
        self.options[self.SCHEDULE_OPTION] = schedule

    @property
    def latent_format(self) -> LatentFormat:
        return self.base.latent_format

    @property
    def family(self) -> str:
        return self.base.family

    def is_clone(self, other: ModelHandle) -> bool:
        return self.base.unet is other.base.unet

    def default_working_memory(self) -> int:
        """One CFG batch (2 latents) at the family's usual size: 128² latents for SDXL, else 64²."""
        size = 128 if self.family.startswith("sdxl") else 64
        config = self.base.unet.config
        return unet_working_memory(config, (2, config.in_channels, size, size), self._dtype())

    def working_memory(self, shape: Sequence[int]) -> int:
        """Estimated peak activations of one UNet call on a latent batch of `shape` (B, C, H, W)."""
        return unet_working_memory(self.base.unet.config, shape, self._dtype())

    def _dtype(self) -> torch.dtype:
        return self.base.unet.time_embed[0].weight.dtype

    def to_device(self, device: torch.device | None = None, working_memory: int | None = None) -> Denoiser:
        """The denoiser with its weights on `device` (default: load_device; partially when the manager
        must stream them, so put inputs on ``load_device``, not on a parameter's device)."""
        self._load(device, working_memory)
        return self.denoiser


@dataclass(frozen=True)
class TextEncoderSlot:
    encoder: ClipTextEncoder
    usage: ClipUsage
    tokenizer: ClipTokenizer

    @property
    def key(self) -> str:
        return self.usage.key

    @property
    def width(self) -> int:
        return self.encoder.config.width


@dataclass(kw_only=True)
class ClipHandle(Handle):
    slots: tuple[TextEncoderSlot, ...]
    family: str
    layer: int | None = None  # CLIPSetLastLayer value; None = the family default

    def modules(self) -> Iterator[nn.Module]:
        return (slot.encoder for slot in self.slots)

    def prefixed_modules(self) -> dict[str, nn.Module]:
        return {f"{slot.key}.": slot.encoder for slot in self.slots}

    def default_working_memory(self) -> int:
        return sum(clip_working_memory(slot.width, slot.encoder.config.mlp_width, 3) for slot in self.slots)

    def set_layer(self, layer: int | None) -> None:
        self.layer = layer

    @property
    def widths(self) -> dict[str, int]:
        return {slot.key: slot.width for slot in self.slots}

    def to_device(self, device: torch.device | None = None) -> ClipHandle:
        self._load(device, None)
        return self

    def tokenize(self, text: str, embedding_lookup: EmbeddingLookup | None = None) -> Tokens:
        """Each encoder's 77-token chunks of `text`, keyed clip_l / clip_h / clip_g."""
        return {slot.key: tokenize_prompt(text, slot.tokenizer, embedding_lookup, slot.key, slot.width)
                for slot in self.slots}

    @torch.no_grad()
    def encode_tokens(self, tokens: Mapping[str, Sequence[list[WeightedToken]]]) -> tuple[Tensor, Tensor]:
        """(cond [1, 77·k, ΣD], pooled [1, P]): each encoder on its own chunks, cut to the shortest and
        concatenated on the feature axis; the pooled output is the last encoder's (spec §1.6)."""
        chunks = max(len(tokens[slot.key]) for slot in self.slots)
        memory = sum(clip_working_memory(slot.width, slot.encoder.config.mlp_width, chunks) for slot in self.slots)

        def encode() -> tuple[list[Tensor], Tensor | None]:
            conds, pooled = [], None
            for slot in self.slots:
                cond, pooled = encode_chunks(slot.encoder, slot.usage, list(tokens[slot.key]), self.layer)
                conds.append(cond)
            return conds, pooled

        conds, pooled = self.run(encode, memory)
        length = min(c.shape[1] for c in conds)
        cond = torch.cat([c[:, :length] for c in conds], dim=-1)
        return cond.float().cpu(), pooled.float().cpu()

    def encode(self, text: str, embedding_lookup: EmbeddingLookup | None = None) -> tuple[Tensor, Tensor]:
        return self.encode_tokens(self.tokenize(text, embedding_lookup))


@dataclass(kw_only=True)
class VaeHandle(Handle):
    vae: AutoencoderKL
    dtype: torch.dtype

    def modules(self) -> Iterator[nn.Module]:
        yield self.vae

    @property
    def downscale_factor(self) -> int:
        return self.vae.downscale_factor

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    def to_device(self, device: torch.device | None = None) -> AutoencoderKL:
        self._load(device, None)
        return self.vae

    def default_working_memory(self) -> int:
        return vae_working_memory(self.vae.config.ch * self.vae.config.ch_mult[0], VAE_PIXELS_PER_CALL, 1, self.dtype)

    def _batched(self, fn: Any, x: Tensor, pixels_per_item: int) -> Tensor:
        step = max(1, VAE_PIXELS_PER_CALL // max(pixels_per_item, 1))
        pixels = pixels_per_item or VAE_PIXELS_PER_CALL  # tiled calls: one tile-sized working set
        memory = vae_working_memory(self.vae.config.ch * self.vae.config.ch_mult[0], pixels,
                                    min(step, x.shape[0]), self.dtype)

        def call() -> Tensor:
            with torch.no_grad():
                return torch.cat([fn(x[i:i + step].to(device=self.load_device, dtype=self.dtype)).float().cpu()
                                  for i in range(0, x.shape[0], step)])
        return self.run(call, memory)

    def _prepare(self, pixels: Tensor) -> Tensor:
        """IMAGE [B, H, W, C] → RGB [B, 3, H', W'] cropped to multiples of the downscale factor."""
        return crop_to_multiple(pixels[..., :3].movedim(-1, 1), self.downscale_factor)

    def encode(self, pixels: Tensor) -> Tensor:
        x = self._prepare(pixels)
        return self._batched(self.vae.encode, x, x.shape[-2] * x.shape[-1])

    def decode(self, latent: Tensor) -> Tensor:
        f = self.downscale_factor
        return self._batched(self.vae.decode, latent, latent.shape[-2] * latent.shape[-1] * f * f).movedim(1, -1)

    def encode_tiled(self, pixels: Tensor, tile_size: int = 512, overlap: int = 64) -> Tensor:
        return self._batched(lambda x: tiled_encode(self.vae, x, tile_size, overlap), self._prepare(pixels), 0)

    def decode_tiled(self, latent: Tensor, tile_size: int = 512, overlap: int = 64) -> Tensor:
        return self._batched(lambda z: tiled_decode(self.vae, z, tile_size, overlap), latent, 0).movedim(1, -1)


# -- building handles for freshly loaded components ----------------------------------------------


H = TypeVar("H", bound=Handle)


def _registered(handle: H, manager: Any, label: str | None) -> H:
    """The new handle, accounted by the manager (RAM budget) under `label` in its events."""
    if manager is not None:
        manager.register(handle, label)
    return handle


def model_handle(denoiser: Denoiser, policy: DevicePolicy, manager: Any = None,
                 label: str | None = None) -> ModelHandle:
    return _registered(ModelHandle(base=denoiser, load_device=policy.load_device,
                                   offload_device=policy.offload_device, manager=manager), manager, label)


def clip_handle(encoders: Sequence[tuple[ClipTextEncoder, ClipUsage]], family: str, policy: DevicePolicy,
                manager: Any = None, label: str | None = None) -> ClipHandle:
    tokenizers = {usage.pad_token: ClipTokenizer(usage.pad_token) for _, usage in encoders}
    slots = tuple(TextEncoderSlot(encoder, usage, tokenizers[usage.pad_token]) for encoder, usage in encoders)
    return _registered(ClipHandle(slots=slots, family=family, load_device=policy.load_device,
                                  offload_device=policy.offload_device, manager=manager), manager, label)


def vae_handle(vae: AutoencoderKL, policy: DevicePolicy, manager: Any = None, label: str | None = None) -> VaeHandle:
    return _registered(VaeHandle(vae=vae, dtype=policy.vae_dtype, load_device=policy.vae_device,
                                 offload_device=policy.offload_device, manager=manager), manager, label)
