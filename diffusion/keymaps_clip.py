"""Key conversions for CLIP text encoders (spec §1.6, §2.4).

Three layouts reach the loader, all without their checkpoint prefix:

- HF / diffusers (`text_model.*`, `text_projection.weight`): SD1 and SDXL clip_l in single files,
  every diffusers `text_encoder*/` folder. Very old SD1 files lack the `text_model.` level.
- open_clip (`token_embedding.weight`, `positional_embedding`, `transformer.resblocks.N.*`,
  `ln_final.*`, `text_projection`, `logit_scale`): SD2 ViT-H and SDXL bigG in single files.
- Sumi's module (`transformer.*`, `text_projection.weight`): `ClipTextEncoder`'s own state dict,
  i.e. the HF names with `text_model.` replaced by `transformer.`.

open_clip keeps q, k, v in one `in_proj` tensor (rows in that order) and applies its projection as
`x @ P`; HF splits q/k/v and uses a Linear, whose weight is Pᵀ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# Keys that carry nothing the text encoder needs: the fixed position-id arange buffer and the
# CLIP contrastive temperature.
IGNORED_SUFFIXES = ("position_ids", "logit_scale")

_OPEN_CLIP_RENAMES = (  # open_clip name → HF name (under text_model.), whole dotted parts
    ("token_embedding", "embeddings.token_embedding"),
    ("transformer.resblocks", "encoder.layers"),
    ("ln_final", "final_layer_norm"),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
    ("attn.out_proj", "self_attn.out_proj"),
)


def is_open_clip(sd: Mapping[str, torch.Tensor]) -> bool:
    return "positional_embedding" in sd or "token_embedding.weight" in sd


def _swap_parts(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for src, dst in pairs:
        key = re.sub(rf"(?<![^.]){re.escape(src)}(?=\.)", dst, key)  # only whole dotted parts
    return key


def open_clip_to_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip text tower → HF on-disk layout (`text_model.*`, `text_projection.weight`)."""
    out = {}
    for key, value in sd.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key):
            layer, kind = m.groups()
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"text_model.encoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = part
        else:
            out["text_model." + _swap_parts(key, _OPEN_CLIP_RENAMES)] = value
    return out


def hf_to_open_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF on-disk layout → open_clip names (what SD2 / SDXL single files store); q, k, v concatenated."""
    back = tuple((hf, oc) for oc, hf in _OPEN_CLIP_RENAMES)
    out = {}
    for key, value in sd.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            layer, name, kind = m.groups()
            if name == "q":
                parts = [sd[f"text_model.encoder.layers.{layer}.self_attn.{n}_proj.{kind}"] for n in "qkv"]
                out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        else:
            out[_swap_parts(key.removeprefix("text_model."), back)] = value
    return out


def to_module_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any accepted layout → `ClipTextEncoder` state-dict names; ignorable keys are dropped and
    anything unrecognised is passed through so that a strict load reports it."""
    hf = open_clip_to_hf(sd) if is_open_clip(sd) else sd
    out = {}
    for key, value in hf.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key.startswith(("embeddings.", "encoder.", "final_layer_norm.")):  # old SD1 files: no text_model.
            key = "text_model." + key
        out[re.sub(r"^text_model\.", "transformer.", key)] = value
    return out


def module_to_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`ClipTextEncoder` state dict → HF on-disk names (for saving or for transformers itself)."""
    return {re.sub(r"^transformer\.", "text_model.", k): v for k, v in sd.items()}
