"""LoRA base names → Sumi parameter names (spec sd_formats.md §4.1).

Adapter files name the module they patch in several spellings; each map below lists every spelling
for every weight of a model, so resolving a file is one dict lookup per base name:

UNet (targets are ldm keys, e.g. ``input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight``):
  * kohya ``lora_unet_`` + the diffusers module path with '.'→'_' (SD1 trainers) or + the ldm path
    (SDXL trainers), e.g. ``lora_unet_down_blocks_0_resnets_0_conv1`` → ``input_blocks.1.0.in_layers.2``;
  * ``lycoris_`` + the diffusers path with '_';
  * diffusers / PEFT: ``unet.`` + diffusers path, with or without the ``unet.`` prefix, and the old
    attention-processor spelling ``…attn1.processor.to_q`` (``to_out.0`` written ``processor.to_out``);
  * generic: ``diffusion_model.`` + ldm path, and the bare ldm path.

Text encoders (targets are (role, module key), e.g. ("clip_l", ``transformer.encoder.layers.0.mlp.fc1.weight``)):
  * kohya ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` + the HF path with '_' (te1 = CLIP-L, te2 = bigG,
    te = the first encoder, bigG on the refiner);
  * diffusers ``text_encoder.`` / ``text_encoder_2.`` + HF path; ComfyUI's ``text_encoders.<role>.transformer.``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .keymaps_unet import ldm_to_diffusers
from .unet import UNetConfig

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
BUNDLED_EMBEDDING_PREFIX = "bundle_emb."


@dataclass(frozen=True)
class Target:
    """One parameter of a loaded component: "unet", or a text-encoder role (clip_l / clip_h / clip_g)."""

    component: str
    key: str  # ending in ".weight"; the bias of the same module is key[:-6] + "bias"

    @property
    def bias_key(self) -> str:
        return self.key[: -len("weight")] + "bias"


def _underscored(path: str) -> str:
    return path.replace(".", "_")


def _processor_spelling(path: str) -> str | None:
    """``…attn1.to_q`` → ``…attn1.processor.to_q``; ``…to_out.0`` → ``…processor.to_out``."""
    for name in ATTENTION_PROJECTIONS:
        head, dot, tail = path.rpartition("." + name)
        if dot and not tail and head.rsplit(".", 1)[-1] in ("attn1", "attn2"):
            return f"{head}.processor.{name.removesuffix('.0')}"
    return None


def unet_lora_keys(config: UNetConfig, keys: Iterable[str]) -> dict[str, Target]:
    """Every LoRA spelling of every ``.weight`` of an ldm UNet with this config."""
    keys = list(keys)
    diffusers_of = {ldm: diffusers for diffusers, ldm in ldm_to_diffusers({k: k for k in keys}, config).items()}
    out: dict[str, Target] = {}
    for key in keys:
        if not key.endswith(".weight"):
            continue
        target = Target("unet", key)
        ldm = key[: -len(".weight")]
        names = [f"lora_unet_{_underscored(ldm)}", f"diffusion_model.{ldm}", ldm]
        if key in diffusers_of:
            diffusers = diffusers_of[key][: -len(".weight")]
            names += [f"lora_unet_{_underscored(diffusers)}", f"lycoris_{_underscored(diffusers)}",
                      f"unet.{diffusers}", diffusers]
            processor = _processor_spelling(diffusers)
            if processor is not None:
                names += [f"unet.{processor}", processor]
        for name in names:
            out.setdefault(name, target)
    return out


def _text_prefixes(roles: Sequence[str]) -> list[tuple[str, str]]:
    """(name prefix, role) pairs for a CLIP with these encoders in conditioning order."""
    if tuple(roles) == ("clip_l", "clip_g"):
        pairs = [("lora_te1_", "clip_l"), ("lora_te2_", "clip_g"), ("lora_te_", "clip_l"),
                 ("text_encoder.", "clip_l"), ("text_encoder_2.", "clip_g")]
    elif tuple(roles) == ("clip_g",):  # SDXL refiner: its only encoder is diffusers' text_encoder_2
        pairs = [("lora_te_", "clip_g"), ("lora_te2_", "clip_g"), ("text_encoder_2.", "clip_g")]
    else:
        pairs = [("lora_te_", roles[0]), ("text_encoder.", roles[0])]
    return pairs + [(f"text_encoders.{role}.transformer.", role) for role in roles]


def clip_lora_keys(encoders: Mapping[str, Iterable[str]]) -> dict[str, Target]:
    """Every LoRA spelling of every ``.weight`` of the text encoders {role: module keys} (in order)."""
    out: dict[str, Target] = {}
    for prefix, role in _text_prefixes(list(encoders)):
        for key in encoders[role]:
            if not key.endswith(".weight"):
                continue
            hf = "text_model." + key.removeprefix("transformer.") if key.startswith("transformer.") else key
            hf = hf[: -len(".weight")]
            name = prefix + (_underscored(hf) if prefix.endswith("_") else hf)
            out.setdefault(name, Target(role, key))
    return out


def resolve(base_names: Iterable[str], key_map: Mapping[str, Target]) -> tuple[dict[str, Target], list[str]]:
    """(base name → target, base names that match no weight). Bundled embeddings are neither."""
    matched: dict[str, Target] = {}
    unmatched = []
    for name in base_names:
        if name in key_map:
            matched[name] = key_map[name]
        elif not name.startswith(BUNDLED_EMBEDDING_PREFIX):
            unmatched.append(name)
    return matched, unmatched
