"""ldm ↔ diffusers key names for the AutoencoderKL (spec §2.3).

Sumi's VAE module uses the ldm names; diffusers folders (`vae/diffusion_pytorch_model.safetensors`)
are renamed on load. diffusers numbers the decoder levels from the lowest resolution, ldm from the
highest, so the up index is reversed, and diffusers stores the mid-attention projections as Linear
[C, C] where ldm has 1×1 convs [C, C, 1, 1].
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# Sub-module renames that hold anywhere in the tree, as (ldm, diffusers) pairs of dotted name parts.
_PART_RENAMES = (
    ("nin_shortcut", "conv_shortcut"),
    ("norm_out", "conv_norm_out"),
    ("mid.block_1", "mid_block.resnets.0"),
    ("mid.block_2", "mid_block.resnets.1"),
    ("mid.attn_1.norm", "mid_block.attentions.0.group_norm"),
    ("mid.attn_1.q", "mid_block.attentions.0.to_q"),
    ("mid.attn_1.k", "mid_block.attentions.0.to_k"),
    ("mid.attn_1.v", "mid_block.attentions.0.to_v"),
    ("mid.attn_1.proj_out", "mid_block.attentions.0.to_out.0"),
)
# Names written by diffusers versions before the attention processor refactor.
_LEGACY_DIFFUSERS = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ATTN_PROJ = re.compile(r"mid(_block\.attentions\.0|\.attn_1)\.(to_[qkv]|to_out\.0|q|k|v|proj_out)\.weight$")


def is_diffusers_vae(sd: Mapping[str, torch.Tensor]) -> bool:
    return "decoder.up_blocks.0.resnets.0.norm1.weight" in sd


def _rename(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for src, dst in pairs:
        key = re.sub(rf"(?<![^.]){re.escape(src)}(?=\.)", dst, key)  # only whole dotted parts
    return key


def _num_levels(keys: list[str], pattern: str) -> int:
    return 1 + max(int(m.group(1)) for k in keys if (m := re.match(pattern, k)))


def diffusers_to_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to ldm keys (reshaping attention Linear → 1×1 conv)."""
    n = _num_levels(list(sd), r"decoder\.up_blocks\.(\d+)\.")
    out = {}
    for key, value in sd.items():
        # Some exports nest post_quant_conv under the decoder; ComfyUI moves it to the top level.
        key = key.removeprefix("decoder.") if key.startswith("decoder.post_quant_conv.") else key
        key = re.sub(r"\.(query|key|value|proj_attn)\.", lambda m: f".{_LEGACY_DIFFUSERS[m.group(1)]}.", key)
        key = _rename(key, tuple((d, l) for l, d in _PART_RENAMES))
        key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
        key = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.block.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.upsample.", key)
        if _ATTN_PROJ.search(key) and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[key] = value
    return out


def ldm_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ldm AutoencoderKL state dict to current diffusers keys (attention 1×1 conv → Linear)."""
    n = _num_levels(list(sd), r"decoder\.up\.(\d+)\.")
    out = {}
    for key, value in sd.items():
        if _ATTN_PROJ.search(key) and value.ndim == 4:
            value = value.reshape(value.shape[:2])
        key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
        key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
        key = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{n - 1 - int(m.group(1))}.resnets.", key)
        key = re.sub(r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{n - 1 - int(m.group(1))}.upsamplers.0.", key)
        out[_rename(key, _PART_RENAMES)] = value
    return out
