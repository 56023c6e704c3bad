"""ldm <-> diffusers (``UNet2DConditionModel``) key names for the UNet, both directions.

The two layouts hold the same tensors; only block paths differ. The correspondence is a table of block
prefixes built from a ``UNetConfig`` (levels, ResBlocks per level, where the transformers are). Inside a
ResBlock six sub-names differ; inside a SpatialTransformer the names are identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from .unet import UNetConfig

V = TypeVar("V")

# ResBlock sub-modules: (ldm, diffusers)
RESNET_NAMES = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
)

# diffusers names the vector-conditioning MLP add_embedding (SDXL "text_time", Paints-Undo) or
# class_embedding (class_embed_type "projection", unCLIP); both are label_emb.0 in ldm.
ADM_PREFIXES = ("add_embedding.", "class_embedding.")


@dataclass(frozen=True)
class BlockPair:
    ldm: str
    diffusers: str
    resnet: bool = False


def block_pairs(config: UNetConfig, adm_prefix: str = "add_embedding.") -> list[BlockPair]:
    """Every block prefix of the UNet in both layouts.

    The vector-conditioning MLP is always listed: some diffusers models gain it after config.json was
    written (Paints-Undo), and a pair whose keys are absent is simply unused.
    """
    pairs = [
        BlockPair("time_embed.0.", "time_embedding.linear_1."),
        BlockPair("time_embed.2.", "time_embedding.linear_2."),
        BlockPair("label_emb.0.0.", adm_prefix + "linear_1."),
        BlockPair("label_emb.0.2.", adm_prefix + "linear_2."),
        BlockPair("input_blocks.0.0.", "conv_in."),
        BlockPair("out.0.", "conv_norm_out."),
        BlockPair("out.2.", "conv_out."),
    ]

    levels = len(config.channel_mult)
    n, depths = 1, iter(config.transformer_depth)
    for level in range(levels):
        for i in range(config.num_res_blocks[level]):
            pairs.append(BlockPair(f"input_blocks.{n}.0.", f"down_blocks.{level}.resnets.{i}.", resnet=True))
            if next(depths):
                pairs.append(BlockPair(f"input_blocks.{n}.1.", f"down_blocks.{level}.attentions.{i}."))
            n += 1
        if level < levels - 1:
            pairs.append(BlockPair(f"input_blocks.{n}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
            n += 1

    pairs.append(BlockPair("middle_block.0.", "mid_block.resnets.0.", resnet=True))
    if config.transformer_depth_middle > 0:
        pairs.append(BlockPair("middle_block.1.", "mid_block.attentions.0."))
        pairs.append(BlockPair("middle_block.2.", "mid_block.resnets.1.", resnet=True))
    else:
        pairs.append(BlockPair("middle_block.1.", "mid_block.resnets.1.", resnet=True))

    # Both layouts list the decoder from the lowest resolution up; depths are stored highest first.
    n, depths = 0, reversed(config.transformer_depth_output)
    for up, level in enumerate(reversed(range(levels))):
        n_blocks = config.num_res_blocks[level] + 1
        for i in range(n_blocks):
            pairs.append(BlockPair(f"output_blocks.{n}.0.", f"up_blocks.{up}.resnets.{i}.", resnet=True))
            has_attention = next(depths) > 0
            if has_attention:
                pairs.append(BlockPair(f"output_blocks.{n}.1.", f"up_blocks.{up}.attentions.{i}."))
            if level > 0 and i == n_blocks - 1:
                slot = 2 if has_attention else 1
                pairs.append(BlockPair(f"output_blocks.{n}.{slot}.conv.", f"up_blocks.{up}.upsamplers.0.conv."))
            n += 1
    return pairs


def _rename_key(key: str, pairs: list[tuple[str, str, bool]], sub_names: dict[str, str]) -> str | None:
    for src, dst, resnet in pairs:
        if key.startswith(src):
            rest = key[len(src):]
            if not resnet:
                return dst + rest
            for old, new in sub_names.items():
                if rest.startswith(old):
                    return dst + new + rest[len(old):]
            return None
    return None


def _rename(state_dict: Mapping[str, V], pairs: list[tuple[str, str, bool]],
            sub_names: dict[str, str]) -> dict[str, V]:
    out: dict[str, V] = {}
    unmapped = []
    for key, value in state_dict.items():
        new_key = _rename_key(key, pairs, sub_names)
        if new_key is None:
            unmapped.append(key)
        else:
            out[new_key] = value
    if unmapped:
        raise KeyError(f"{len(unmapped)} keys fit no UNet block of this config, e.g. {unmapped[:5]}")
    return out


def ldm_to_diffusers(state_dict: Mapping[str, V], config: UNetConfig,
                     adm_prefix: str = "add_embedding.") -> dict[str, V]:
    """Rename ldm UNet keys (prefix already stripped) to diffusers names. Values are passed through."""
    pairs = [(p.ldm, p.diffusers, p.resnet) for p in block_pairs(config, adm_prefix)]
    return _rename(state_dict, pairs, dict(RESNET_NAMES))


def diffusers_to_ldm(state_dict: Mapping[str, V], config: UNetConfig) -> dict[str, V]:
    """Rename diffusers UNet keys to ldm names; accepts either name of the vector-conditioning MLP.

    proj_in / proj_out weights are reshaped to what ``config`` builds (1x1 conv or Linear), since some
    exports store the other form.
    """
    pairs = [(p.diffusers, p.ldm, p.resnet) for p in block_pairs(config, ADM_PREFIXES[0])]
    pairs += [(p.diffusers, p.ldm, p.resnet) for alias in ADM_PREFIXES[1:] for p in block_pairs(config, alias)
              if p.ldm.startswith("label_emb.")]
    out = _rename(state_dict, pairs, {d: l for l, d in RESNET_NAMES})
    for key, value in out.items():
        if key.endswith(("proj_in.weight", "proj_out.weight")):
            if config.use_linear_in_transformer and value.ndim == 4:
                out[key] = value[:, :, 0, 0]
            elif not config.use_linear_in_transformer and value.ndim == 2:
                out[key] = value[:, :, None, None]
    return out
