"""Split a single-file SD checkpoint into its parts and recognise the model family.

A single-file SD1.x / SD2.x / SDXL checkpoint is one flat dict; the component is told by key prefix:

=========================================  ==========  ============================================
prefix                                     part        layout
=========================================  ==========  ============================================
``model.diffusion_model.``                 unet        ldm
``first_stage_model.``                     vae         ldm
``cond_stage_model.transformer.``          clip_l      HF CLIPTextModel (SD1)
``cond_stage_model.model.``                clip_h      open_clip (SD2)
``conditioner.embedders.0.transformer.``   clip_l      HF (SDXL base)
``conditioner.embedders.1.model.``         clip_g      open_clip (SDXL base, bigG)
``conditioner.embedders.0.model.``         clip_g/h    open_clip: bigG (SDXL refiner) or ViT-H (SD2
                                                       saved in SGM format), told apart by width
=========================================  ==========  ============================================

The family is read from the UNet (context width, vector-conditioning width), not from the text
encoders, so UNet-only files and odd exports are recognised too.

Prediction type (eps vs v) is mostly **not** in the keys:

* SD1: ComfyUI always assumes eps.
* SD2 with a 4-channel input: no key says it. ComfyUI uses a weight statistic: v-prediction if the
  population std of ``output_blocks.11.1.transformer_blocks.0.norm1.bias`` exceeds 0.09 (768-v models
  pass, 512-base models fail); ``sd2_prediction_from_weights`` reproduces it. diffusers instead reads
  ``global_step == 875000`` (eps) from ``.ckpt`` files, A1111 runs a probe forward or reads a .yaml next
  to the file. 9-channel SD2 inpainting is eps.
* SDXL-derived files may carry marker keys: ``edm_mean`` + ``edm_std`` (Playground 2.5, EDM),
  ``edm_vpred.sigma_max`` (v-prediction EDM), ``v_pred`` (v-prediction, plus ``ztsnr`` for a
  zero-terminal-SNR schedule). Otherwise eps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .unet_config import unet_config_from_state_dict

V = TypeVar("V")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# (prefix, part name, layout); "clip_g/h" is resolved by width. Longest-first matching is not needed:
# no prefix here is a prefix of another.
TEXT_ENCODER_PREFIXES = (
    ("cond_stage_model.transformer.", "clip_l", "hf"),
    ("cond_stage_model.model.", "clip_h", "open_clip"),
    ("conditioner.embedders.0.transformer.", "clip_l", "hf"),
    ("conditioner.embedders.1.model.", "clip_g", "open_clip"),
    ("conditioner.embedders.0.model.", "clip_g/h", "open_clip"),
)

# Training-time buffers of CompVis/Stability LatentDiffusion: the DDPM schedule is recomputed by the
# sampler, so these are never needed.
DDPM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
})
IGNORED_KEYS = DDPM_BUFFERS | {"logvar"}
# model_ema.*: EMA copies (names with the dots removed) in non-"emaonly" files; denoiser.*: a stored
# sigma table in some SDXL derivatives, recomputed by the sampler.
IGNORED_PREFIXES = ("model_ema.", "denoiser.")
# position_ids is a fixed arange buffer (stored as float and slightly off in some old files).
IGNORED_SUFFIXES = ("position_ids",)

# Top-level keys that carry meaning for sampling rather than weights.
MARKER_KEYS = frozenset({"v_pred", "ztsnr", "edm_mean", "edm_std", "edm_vpred.sigma_max", "edm_vpred.sigma_min"})


def is_ignorable(key: str) -> bool:
    """True for auxiliary keys a loader may drop without losing anything."""
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


@dataclass(frozen=True)
class ModelFamily:
    """What the keys say about a UNet. ``prediction`` is None where keys cannot tell (SD2)."""

    name: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner" | "unknown"
    in_channels: int
    prediction: str | None  # "eps" | "v" | "edm" | "v_edm" | None
    zero_terminal_snr: bool = False

    @property
    def inpaint(self) -> bool:
        """9-channel input: [noisy latent 4, mask 1, masked-image latent 4]. 8 channels is InstructPix2Pix."""
        return self.in_channels == 9


@dataclass(frozen=True)
class TextEncoderPart(Generic[V]):
    layout: str  # "hf" (keys text_model.* [+ text_projection.weight]) or "open_clip"
    state_dict: dict[str, V]


@dataclass
class CheckpointParts(Generic[V]):
    """The components of a single-file checkpoint, each with its prefix stripped."""

    family: ModelFamily | None
    unet: dict[str, V] = field(default_factory=dict)
    vae: dict[str, V] = field(default_factory=dict)
    text_encoders: dict[str, TextEncoderPart[V]] = field(default_factory=dict)
    markers: dict[str, V] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


# SDXL's vector conditioning is the pooled text plus this many 256-wide size/crop/score embeddings.
SDXL_ADM_EMBEDDINGS, REFINER_ADM_EMBEDDINGS, ADM_EMBED_DIM = 6, 5, 256


def _family_name(config: Any) -> str:
    """The family from the UNet's structure; the real models' widths decide first, so odd exports
    (e.g. SD2 with conv projections) keep their family, and smaller models of the same structure
    (reduced widths, as in tests) are recognised by structure alone:

    * no vector conditioning: SD1 (conv projections) or SD2 (linear projections);
    * vector conditioning, linear projections and no attention at full resolution (SDXL's layout):
      the refiner when y = pooled ‖ 5 embeddings with the pooled width equal to the context width
      (bigG only), SDXL base when y = pooled ‖ 6 embeddings.
    """
    adm, context = config.adm_in_channels, config.context_dim
    if adm is None:
        known = {768: "sd1", 1024: "sd2"}.get(context)
        return known or ("sd2" if config.use_linear_in_transformer else "sd1")
    if (adm, context) == (2816, 2048):
        return "sdxl"
    if (adm, context) == (2560, 1280):
        return "sdxl_refiner"
    sdxl_layout = config.use_linear_in_transformer and config.transformer_depth[0] == 0
    if sdxl_layout and adm == context + REFINER_ADM_EMBEDDINGS * ADM_EMBED_DIM:
        return "sdxl_refiner"
    if sdxl_layout and adm > SDXL_ADM_EMBEDDINGS * ADM_EMBED_DIM:
        return "sdxl"
    return "unknown"


def detect_family(unet: Mapping[str, Any], marker_keys: Iterable[str] = ()) -> ModelFamily:
    """Recognise the family from an ldm UNet state dict (prefix stripped) and top-level marker keys."""
    config = unet_config_from_state_dict(unet)
    markers = set(marker_keys)
    name = _family_name(config)
    if name == "sd1":
        return ModelFamily("sd1", config.in_channels, "eps")
    if name == "sd2":
        return ModelFamily("sd2", config.in_channels, None if config.in_channels == 4 else "eps")
    if name == "unknown":
        return ModelFamily("unknown", config.in_channels, None)
    if {"edm_mean", "edm_std"} <= markers:
        prediction = "edm"
    elif "edm_vpred.sigma_max" in markers:
        prediction = "v_edm"
    elif "v_pred" in markers:
        prediction = "v"
    else:
        prediction = "eps"
    return ModelFamily(name, config.in_channels, prediction, zero_terminal_snr="ztsnr" in markers)


def sd2_prediction_from_weights(unet: Mapping[str, Any]) -> str:
    """ComfyUI's SD2 rule: 'v' if std(output_blocks.11.1.transformer_blocks.0.norm1.bias) > 0.09, else 'eps'.

    Block 11 is the last output block of SD2; smaller models of the same structure use their last one.
    Needs real weight values; an empirical statistic, not a guarantee.
    """
    last = max(int(m.group(1)) for k in unet if (m := re.match(r"output_blocks\.(\d+)\.", k)))
    bias = unet[f"output_blocks.{last}.1.transformer_blocks.0.norm1.bias"]
    return "v" if bias.float().std(unbiased=False).item() > 0.09 else "eps"


def _text_encoder_key(layout: str, key: str) -> str:
    # Very old SD1 files omit the text_model. level of the HF layout.
    if layout == "hf" and not key.startswith(("text_model.", "text_projection.")):
        return "text_model." + key
    return key


def split_checkpoint(state_dict: Mapping[str, V]) -> CheckpointParts[V]:
    """Sort every key of a single-file checkpoint into a part, the ignorable list or the unknown list."""
    parts: CheckpointParts[V] = CheckpointParts(family=None)
    encoders: dict[str, tuple[str, dict[str, V]]] = {}
    for key, value in state_dict.items():
        if is_ignorable(key):
            parts.ignored.append(key)
        elif key.startswith(UNET_PREFIX):
            parts.unet[key[len(UNET_PREFIX):]] = value
        elif key.startswith(VAE_PREFIX):
            parts.vae[key[len(VAE_PREFIX):]] = value
        elif key in MARKER_KEYS:
            parts.markers[key] = value
        else:
            match = next((p for p in TEXT_ENCODER_PREFIXES if key.startswith(p[0])), None)
            if match is None:
                parts.unknown.append(key)
                continue
            prefix, name, layout = match
            encoders.setdefault(name, (layout, {}))[1][_text_encoder_key(layout, key[len(prefix):])] = value

    for name, (layout, sd) in encoders.items():
        if name == "clip_g/h":
            # bigG of the refiner (whose UNet takes the vector conditioning) or ViT-H of SD2.
            is_g = sd["token_embedding.weight"].shape[1] == 1280 or "label_emb.0.0.weight" in parts.unet
            name = "clip_g" if is_g else "clip_h"
        parts.text_encoders[name] = TextEncoderPart(layout, sd)
    if "input_blocks.0.0.weight" in parts.unet:
        parts.family = detect_family(parts.unet, parts.markers)
    return parts


def detect_unet_layout(keys: Iterable[str]) -> tuple[str, str] | None:
    """(layout, prefix) of a file that holds a UNet: ("ldm", "model.diffusion_model." or ""), or
    ("diffusers", "") for a diffusers ``unet/`` weights file. None if it holds no UNet."""
    keys = set(keys)
    for prefix in (UNET_PREFIX, ""):
        if prefix + "input_blocks.0.0.weight" in keys:
            return "ldm", prefix
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return "diffusers", ""
    return None
