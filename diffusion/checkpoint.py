"""Files → model components: single-file checkpoints, diffusers folders and single-component files.

Reading (`read_state_dict`): ``.safetensors`` through safetensors, anything else (``.ckpt``, ``.pt``,
``.pth``, ``.bin``) through ``torch.load(weights_only=True)``, which refuses pickled code. A wrapping
``state_dict`` entry, or a dict whose only entry is a dict, is unwrapped (spec §1.1); non-tensor
entries are dropped.

Building: every architecture comes from tensor shapes (``unet_config``, ``vae_config``,
``text_encoders``); the family (`checkpoint_keys.detect_family`) picks the latent space, the text
encoder reading (`ClipUsage`) and the noise schedule:

======================  =====================  ==========================  ==================
family                  text encoders (order)  prediction                  latent scale
======================  =====================  ==========================  ==================
sd1                     clip_l                 eps                         0.18215
sd2                     clip_h                 v if the weight rule says   0.18215
sdxl                    clip_l, clip_g         eps, v with a v_pred key    0.13025
sdxl_refiner            clip_g                 eps                         0.13025
======================  =====================  ==========================  ==================

A diffusers folder's ``scheduler/scheduler_config.json`` ``prediction_type`` wins over the rules.
Every file problem is raised as `CheckpointError`, naming the file, the component and the missing /
unexpected keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from .checkpoint_keys import (MARKER_KEYS, TEXT_ENCODER_PREFIXES, VAE_PREFIX, CheckpointParts, detect_family,
                              detect_unet_layout, sd2_prediction_from_weights, split_checkpoint)
from .keymaps_clip import to_module_keys
from .keymaps_unet import diffusers_to_ldm as unet_diffusers_to_ldm
from .keymaps_vae import diffusers_to_ldm as vae_diffusers_to_ldm
from .keymaps_vae import is_diffusers_vae
from .latent_formats import FAMILY_FORMATS, fit_rgb_projection
from .model import Denoiser
from .schedules import DiscreteSchedule
from .text_encoders import (SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, ClipTextConfig, ClipTextEncoder,
                            ClipUsage, load_clip_text)
from .unet import UNetModel
from .unet_config import load_unet, unet_config_from_diffusers, unet_config_from_state_dict
from .vae import AutoencoderKL, load_vae
from .vae_config import VAEConfig

log = logging.getLogger(__name__)

FAMILY_TEXT_ENCODERS = {"sd1": ("clip_l",), "sd2": ("clip_h",), "sdxl": ("clip_l", "clip_g"),
                        "sdxl_refiner": ("clip_g",)}
USAGES = {("sd1", "clip_l"): SD1_CLIP_L, ("sd2", "clip_h"): SD2_CLIP_H, ("sdxl", "clip_l"): SDXL_CLIP_L,
          ("sdxl", "clip_g"): SDXL_CLIP_G, ("sdxl_refiner", "clip_g"): SDXL_CLIP_G}
PREDICTIONS = {"eps": "eps", "v": "v_prediction"}
# Widths of the real towers, which name a standalone text-encoder file's role.
ROLE_BY_WIDTH = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
# Diffusers file names, preferred first (spec §2.1).
DIFFUSERS_WEIGHTS = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
             "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"),
}
MAX_KEYS_SHOWN = 8


class CheckpointError(ValueError):
    """A file that cannot be read or does not hold what was asked; the message says which keys."""

    def __init__(self, path: str | Path, problem: str, missing: list[str] | None = None,
                 unexpected: list[str] | None = None) -> None:
        self.path, self.missing, self.unexpected = str(path), missing or [], unexpected or []
        message = f"{path}: {problem}"
        for label, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected)):
            if keys:
                more = f" and {len(keys) - MAX_KEYS_SHOWN} more" if len(keys) > MAX_KEYS_SHOWN else ""
                message += f"; {label}: {', '.join(keys[:MAX_KEYS_SHOWN])}{more}"
        super().__init__(message)


@dataclass(frozen=True)
class Placement:
    """Where one component goes: device and compute dtype (None keeps the file's dtype).

    ``round_to`` first rounds the weights through a storage dtype (UNETLoader's fp8 weight_dtype)."""

    device: torch.device | str = "cpu"
    dtype: torch.dtype | None = None
    round_to: torch.dtype | None = None

    def cast(self, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for key, value in weights.items():
            if value.is_floating_point():
                if self.round_to is not None:
                    value = value.to(self.round_to)
                value = value.to(device=self.device, dtype=self.dtype or value.dtype)
            out[key] = value
        return out


@dataclass
class Components:
    """What a file held, built and placed. Absent parts are None / empty."""

    family: str | None  # of the UNet, or of the text encoders when there is no UNet
    denoiser: Denoiser | None = None
    vae: AutoencoderKL | None = None
    text_encoders: list[tuple[ClipTextEncoder, ClipUsage]] = field(default_factory=list)


# -- reading files ------------------------------------------------------------------------------


def _unwrap(data: Any) -> dict[str, Tensor]:
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))
    if not isinstance(data, dict):
        raise TypeError(f"holds a {type(data).__name__}, not a dict of tensors")
    return {k: v for k, v in data.items() if isinstance(v, Tensor)}


def read_state_dict(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """All tensors of a weights file, on `device` (safetensors loads them there directly)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".safetensors", ".sft"):
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        return _unwrap(torch.load(path, map_location=device, weights_only=True))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader failure means the same thing to the user
        raise CheckpointError(path, f"cannot read it as a weights file ({type(exc).__name__}: {exc})") from exc


# safetensors header dtype names (the format is a little-endian u64 header length, a JSON header of
# {key: {dtype, shape, data_offsets}}, then the raw data).
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
                       "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class LazyWeights(Mapping[str, Tensor]):
    """A safetensors file whose tensors are read when asked for and not kept.

    A loader that converts each tensor as it reads it then holds one file tensor at a time, so peak
    memory is the converted model, not the file plus the converted model. Tensors are read with plain
    reads, not through a memory map: mapped file pages count in the process's RSS while it is open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        self._data_start = 8 + length
        self._entries = {key: (_SAFETENSORS_DTYPES[e["dtype"]], tuple(e["shape"]), *e["data_offsets"])
                         for key, e in sorted(header.items())}  # safe_open's key order
        if self._data_start + max((end for *_, end in self._entries.values()), default=0) > self.path.stat().st_size:
            raise ValueError("the file is shorter than its header says")

    def __getitem__(self, key: str) -> Tensor:
        dtype, shape, begin, end = self._entries[key]
        data = torch.empty(end - begin, dtype=torch.uint8, device="cpu")  # even inside a meta-device block
        view = memoryview(data.numpy())
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._data_start + begin)
            done = 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise CheckpointError(self.path, f"cannot read tensor {key}: the file is truncated")
                done += n
        return data.view(dtype).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def meta(self) -> dict[str, Tensor]:
        """Every tensor as a meta-device stand-in of its shape and dtype, from the header alone."""
        return {key: torch.empty(shape, dtype=dtype, device="meta")
                for key, (dtype, shape, _, _) in self._entries.items()}


class _Renamed(Mapping[str, Tensor]):
    """A lazy part of a file under new names (``{new name: file key}``), read on access."""

    def __init__(self, source: Mapping[str, Tensor], names: dict[str, str]) -> None:
        self.source, self.names = source, names

    def __getitem__(self, key: str) -> Tensor:
        return self.source[self.names[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def open_state_dict(path: str | Path) -> Mapping[str, Tensor]:
    """A weights file for loading: `LazyWeights` for safetensors, else (or when its header is one this
    reader does not know) `read_state_dict`'s tensors, with its errors."""
    if Path(path).suffix.lower() in (".safetensors", ".sft"):
        try:
            return LazyWeights(path)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return read_state_dict(path)


def split_weights(state_dict: Mapping[str, Tensor]) -> CheckpointParts[Tensor]:
    """`split_checkpoint`, without reading a `LazyWeights` file: its meta stand-ins are sorted (the family
    needs only shapes), then each part reads its tensors from the file when they are used."""
    if not isinstance(state_dict, LazyWeights):
        return split_checkpoint(state_dict)
    stand_ins = state_dict.meta()
    file_key = {id(tensor): key for key, tensor in stand_ins.items()}  # split_checkpoint keeps the objects

    def lazy(part: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        return _Renamed(state_dict, {name: file_key[id(tensor)] for name, tensor in part.items()})

    parts = split_checkpoint(stand_ins)
    parts.unet, parts.vae, parts.markers = lazy(parts.unet), lazy(parts.vae), lazy(parts.markers)
    parts.text_encoders = {name: replace(part, state_dict=lazy(part.state_dict))
                           for name, part in parts.text_encoders.items()}
    return parts


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors file ({} for other formats or none)."""
    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(path, f"cannot read its safetensors header ({exc})") from exc


# -- building components with errors that name the keys ------------------------------------------


def _build(path: str | Path, component: str, load: Callable[[], nn.Module],
           expected: Callable[[], nn.Module], given: Mapping[str, Any]) -> nn.Module:
    """Run `load`; on failure report the keys that differ from what `expected` (a meta module) has."""
    try:
        return load()
    except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as exc:
        try:
            with torch.device("meta"):
                want = set(expected().state_dict())
        except KeyError as missing:
            raise CheckpointError(path, f"the {component} is incomplete",
                                  missing=[str(missing.args[0])]) from exc
        except Exception:  # noqa: BLE001 - the architecture itself cannot be derived
            raise CheckpointError(path, f"the {component} weights fit no known architecture ({exc})") from exc
        have = set(given)
        missing, unexpected = sorted(want - have), sorted(have - want)
        problem = f"the {component} does not fit its architecture" if missing or unexpected else \
            f"the {component} weights have the wrong shapes ({str(exc)[:300]})"
        raise CheckpointError(path, problem, missing, unexpected) from exc


def build_unet(path: str | Path, weights: Mapping[str, Tensor], placement: Placement,
               diffusers_config: Mapping[str, Any] | None = None) -> UNetModel:
    weights = placement.cast(weights)
    if diffusers_config is not None:
        config = unet_config_from_diffusers(diffusers_config)
        expected_keys = lambda: UNetModel(config)  # noqa: E731
        try:
            given: Mapping[str, Any] = unet_diffusers_to_ldm(weights, config)
        except KeyError as exc:
            raise CheckpointError(path, f"the diffusers UNet does not fit its config.json ({exc.args[0]})") from exc
    else:
        expected_keys = lambda: UNetModel(unet_config_from_state_dict(weights))  # noqa: E731
        given = weights
    return _build(path, "UNet", lambda: load_unet(weights, diffusers_config), expected_keys, given)


def build_vae(path: str | Path, weights: Mapping[str, Tensor], placement: Placement) -> AutoencoderKL:
    ldm = vae_diffusers_to_ldm(weights) if is_diffusers_vae(weights) else weights
    return _build(path, "VAE", lambda: load_vae(weights, placement.device, placement.dtype),
                  lambda: AutoencoderKL(VAEConfig.from_state_dict(ldm)), ldm)


def build_text_encoder(path: str | Path, role: str, weights: Mapping[str, Tensor],
                       placement: Placement) -> ClipTextEncoder:
    module_keys = to_module_keys(weights)
    return _build(path, f"text encoder {role}", lambda: load_clip_text(weights, placement.device, placement.dtype),
                  lambda: ClipTextEncoder(ClipTextConfig.from_state_dict(module_keys)), module_keys)


def make_denoiser(path: str | Path, unet: UNetModel, markers: Mapping[str, Any] = (),
                  prediction: str | None = None) -> tuple[str, Denoiser]:
    """(family, denoiser) for a loaded UNet; `prediction` ("eps" / "v") overrides detection."""
    weights = unet.state_dict()
    family = detect_family(weights, markers)
    if family.name == "unknown":
        raise CheckpointError(path, "the UNet belongs to no supported family (SD1, SD2, SDXL, SDXL refiner)")
    prediction = prediction or family.prediction or sd2_prediction_from_weights(weights)
    if prediction not in PREDICTIONS:
        raise CheckpointError(path, f"{prediction} prediction models (EDM) are not supported yet")
    schedule = DiscreteSchedule(PREDICTIONS[prediction], zsnr=family.zero_terminal_snr)
    try:
        return family.name, Denoiser(unet, schedule, FAMILY_FORMATS[family.name], family.name)
    except ValueError as exc:  # e.g. an 8-channel InstructPix2Pix input
        raise CheckpointError(path, str(exc)) from exc


def with_preview_factors(denoiser: Denoiser, vae: AutoencoderKL) -> Denoiser:
    """The denoiser with latent2rgb factors fitted to the VAE that decodes its latents."""
    param = next(vae.parameters())
    fitted = fit_rgb_projection(lambda z: vae.decode(z.to(param)), denoiser.latent_format, vae.downscale_factor)
    return denoiser.with_latent_format(fitted)


def text_family(roles: set[str]) -> str | None:
    """The family that uses exactly these text encoders."""
    return next((f for f, keys in FAMILY_TEXT_ENCODERS.items() if set(keys) == roles), None)


def clip_usage(family: str, role: str, encoder: ClipTextEncoder, trimmed: bool = False) -> ClipUsage:
    """The family's reading of a tower, counting layers from what the file holds.

    ``trimmed``: diffusers ships SD2's text encoder without its last layer (spec §2.4), so layer
    indices count from one more than the file holds."""
    usage = USAGES[(family, role)]
    layers = encoder.config.layers
    return replace(usage, layers=layers + 1 if trimmed else layers)


def _text_encoders(path: str | Path, family: str, parts: Mapping[str, Mapping[str, Tensor]],
                   placement: Placement, trimmed: set[str] = frozenset()) -> list[tuple[ClipTextEncoder, ClipUsage]]:
    wanted = FAMILY_TEXT_ENCODERS[family]
    if set(parts) != set(wanted):
        raise CheckpointError(path, f"a {family} model needs text encoders {', '.join(wanted)}; "
                                    f"the file has {', '.join(sorted(parts)) or 'none'}")
    out = []
    for role in wanted:
        encoder = build_text_encoder(path, role, parts[role], placement)
        out.append((encoder, clip_usage(family, role, encoder, role in trimmed)))
    return out


# -- single-file checkpoints ---------------------------------------------------------------------


def load_checkpoint(path: str | Path, state_dict: Mapping[str, Tensor], *, unet: Placement = Placement(),
                    vae: Placement = Placement(), text: Placement = Placement()) -> Components:
    """Build every component a single-file checkpoint holds (`path` is only used in messages)."""
    parts = split_weights(state_dict)
    if not (parts.unet or parts.vae or parts.text_encoders):
        raise CheckpointError(path, "holds no UNet, VAE or text encoder of a Stable Diffusion checkpoint",
                              unexpected=sorted(parts.unknown))
    if parts.unknown:
        log.warning("%s: %d keys were not used, e.g. %s", path, len(parts.unknown), parts.unknown[:5])
    components = Components(family=None)
    if parts.unet:
        model = build_unet(path, parts.unet, unet)
        components.family, components.denoiser = make_denoiser(path, model, parts.markers)
    if parts.vae:
        components.vae = build_vae(path, parts.vae, vae)
    if parts.text_encoders:
        roles = {role: part.state_dict for role, part in parts.text_encoders.items()}
        family = components.family or text_family(set(roles))
        if family is None:
            raise CheckpointError(path, f"no supported model uses the text encoders {', '.join(sorted(roles))}")
        components.family = family
        components.text_encoders = _text_encoders(path, family, roles, text)
    if components.denoiser is not None and components.vae is not None:
        components.denoiser = with_preview_factors(components.denoiser, components.vae)
    return components


# -- diffusers folders ---------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, f"cannot read it as JSON ({exc})") from exc


def _weights_file(folder: Path, kind: str) -> Path | None:
    return next((folder / n for n in DIFFUSERS_WEIGHTS[kind] if (folder / n).is_file()), None)


def load_diffusers(folder: str | Path, *, unet: Placement = Placement(), vae: Placement = Placement(),
                   text: Placement = Placement()) -> Components:
    """Build the components of a diffusers pipeline folder (model_index.json + unet/, vae/,
    text_encoder/, text_encoder_2/; spec §2.1)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(folder, "is not a diffusers folder (no model_index.json)")
    unet_file = _weights_file(folder / "unet", "unet")
    if unet_file is None:
        raise CheckpointError(folder / "unet", f"no UNet weights ({' / '.join(DIFFUSERS_WEIGHTS['unet'])})")
    model = build_unet(unet_file, open_state_dict(unet_file), unet, _json(folder / "unet" / "config.json"))
    scheduler = folder / "scheduler" / "scheduler_config.json"
    prediction = {"epsilon": "eps", "v_prediction": "v"}.get(
        _json(scheduler).get("prediction_type", "")) if scheduler.is_file() else None
    family, denoiser = make_denoiser(unet_file, model, prediction=prediction)
    components = Components(family=family, denoiser=denoiser)

    vae_file = _weights_file(folder / "vae", "vae")
    if vae_file is not None:
        components.vae = build_vae(vae_file, open_state_dict(vae_file), vae)
        components.denoiser = with_preview_factors(denoiser, components.vae)

    roles = dict(zip(("text_encoder", "text_encoder_2"), FAMILY_TEXT_ENCODERS[family]))
    if family == "sdxl_refiner":
        roles = {"text_encoder_2": "clip_g"}
    parts = {}
    for sub, role in roles.items():
        te_file = _weights_file(folder / sub, "text_encoder")
        if te_file is not None:
            parts[role] = read_state_dict(te_file)
    if parts:
        trimmed = {"clip_h"} if family == "sd2" and _layer_count(parts.get("clip_h", {})) != SD2_CLIP_H.layers \
            else set()
        components.text_encoders = _text_encoders(folder, family, parts, text, trimmed)
    return components


def _layer_count(weights: Mapping[str, Tensor]) -> int:
    return len({k.split(".")[3] for k in weights if k.startswith("text_model.encoder.layers.")})


# -- single-component files (UNETLoader, VAELoader, CLIPLoader) ------------------------------------


def load_unet_file(path: str | Path, state_dict: Mapping[str, Tensor], placement: Placement,
                   diffusers_config: Mapping[str, Any] | None = None) -> tuple[str, Denoiser]:
    """(family, denoiser) from a UNet-only file: ldm keys (bare or under ``model.diffusion_model.``) or
    diffusers keys with the ``config.json`` that sits beside them."""
    layout = detect_unet_layout(state_dict)
    if layout is None:
        raise CheckpointError(path, "holds no UNet", missing=["input_blocks.0.0.weight"],
                              unexpected=sorted(state_dict)[:MAX_KEYS_SHOWN])
    kind, prefix = layout
    if kind == "diffusers" and diffusers_config is None:
        raise CheckpointError(path, "is a diffusers UNet; its config.json must sit beside it")
    markers = {k: v for k, v in state_dict.items() if k in MARKER_KEYS}
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix) and k not in MARKER_KEYS}
    model = build_unet(path, weights, placement, diffusers_config if kind == "diffusers" else None)
    return make_denoiser(path, model, markers)


def load_vae_file(path: str | Path, state_dict: Mapping[str, Tensor], placement: Placement) -> AutoencoderKL:
    """A VAE file: ldm or diffusers keys, bare or under ``first_stage_model.``."""
    if any(k.startswith(VAE_PREFIX) for k in state_dict):
        state_dict = {k[len(VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)}
    return build_vae(path, state_dict, placement)


def _bare_text_encoder(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip a checkpoint prefix from a text-encoder file when it has one."""
    for prefix, _, _ in TEXT_ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def text_encoder_width(weights: Mapping[str, Tensor]) -> int:
    module_keys = to_module_keys(weights)
    return module_keys["transformer.embeddings.token_embedding.weight"].shape[1]


def load_text_encoder_files(files: list[tuple[str | Path, Mapping[str, Tensor]]], kind: str,
                            placement: Placement) -> tuple[str, list[tuple[ClipTextEncoder, ClipUsage]]]:
    """(family, encoders) from standalone text-encoder files.

    ``kind`` "stable_diffusion" (one file): a real tower's width names it (768 CLIP-L → SD1, 1024
    ViT-H → SD2, 1280 bigG → SDXL refiner); other widths are SD2 in open_clip layout, else SD1.
    ``kind`` "sdxl" (two files): CLIP-L and bigG, told apart by width (the narrower is CLIP-L; equal
    widths keep the given order)."""
    bare = [(path, _bare_text_encoder(sd)) for path, sd in files]
    for path, sd in bare:
        try:
            text_encoder_width(sd)
        except KeyError as exc:
            raise CheckpointError(path, "holds no CLIP text encoder", missing=[str(exc.args[0])],
                                  unexpected=sorted(sd)[:MAX_KEYS_SHOWN]) from exc
    if kind == "stable_diffusion" and len(bare) == 1:
        path, sd = bare[0]
        open_clip = "token_embedding.weight" in sd or "positional_embedding" in sd
        role = ROLE_BY_WIDTH.get(text_encoder_width(sd), "clip_h" if open_clip else "clip_l")
        roles = [(role, path, sd)]
    elif kind == "sdxl" and len(bare) == 2:
        ordered = sorted(bare, key=lambda item: text_encoder_width(item[1]))
        roles = [("clip_l", *ordered[0]), ("clip_g", *ordered[1])]
    else:
        raise ValueError(f"text encoder type {kind!r} with {len(files)} file(s) is not supported")
    family = text_family({role for role, _, _ in roles})
    encoders = []
    for role, path, sd in roles:
        encoder = build_text_encoder(path, role, sd, placement)
        encoders.append((encoder, clip_usage(family, role, encoder)))
    return family, encoders
