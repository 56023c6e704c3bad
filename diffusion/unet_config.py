"""Derive a ``UNetConfig`` from what a file actually contains.

``unet_config_from_state_dict`` reads only tensor shapes and key names of an ldm-layout UNet (no table of
known models), so fine-tunes, inpainting / pix2pix inputs and small distilled variants come out right.
Two things are invisible in the weights and use documented family defaults, overridable by keyword:

* **heads**: SD1 (1x1-conv projections on a 768-wide CLIP-L context) uses 8 heads per block; every later
  family (SD2, SDXL, refiner, unCLIP) uses 64-channel heads. Head count and width only split the same
  matrices differently, so no shape reveals them.
* **upcast_attention**: SD2.x (1024-wide OpenCLIP-H context) overflows in fp16 attention, so it is
  computed in fp32, as ComfyUI does for that family.

``unet_config_from_diffusers`` does the same from a diffusers ``unet/config.json``; ``load_unet`` puts
derivation, renaming and loading together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .keymaps_unet import diffusers_to_ldm
from .unet import UNetConfig, UNetModel

SD1_NUM_HEADS = 8
DEFAULT_HEAD_CHANNELS = 64


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(state_dict[key].shape)


def _block_count(keys: list[str], name: str) -> int:
    indices = [int(m.group(1)) for k in keys if (m := re.match(rf"{name}\.(\d+)\.", k))]
    return max(indices) + 1 if indices else 0


def _transformer_depth(keys: list[str], prefix: str) -> int:
    """Number of transformer_blocks.K under a SpatialTransformer prefix (0 when there is none)."""
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    return len({m.group(1) for k in keys if (m := pattern.match(k))})


def family_defaults(context_dim: int | None, use_linear: bool) -> dict[str, Any]:
    """Head layout and attention precision that shapes cannot tell (see the module docstring)."""
    if context_dim == 768 and not use_linear:
        heads: dict[str, Any] = {"num_heads": SD1_NUM_HEADS, "num_head_channels": None}
    else:
        heads = {"num_heads": None, "num_head_channels": DEFAULT_HEAD_CHANNELS}
    return {**heads, "upcast_attention": context_dim == 1024}


def unet_config_from_state_dict(state_dict: Mapping[str, Any], prefix: str = "", **overrides: Any) -> UNetConfig:
    """Read the architecture of an ldm UNet from key names and shapes.

    ``state_dict`` may hold tensors of any device (meta included) or anything with ``.shape``; keys are
    read under ``prefix`` (e.g. ``"model.diffusion_model."``). An encoder-only dict (a ControlNet's
    ``control_model.`` keys) is accepted: its output side is mirrored from the input side. ``overrides``
    replace any derived field, typically ``num_heads`` / ``num_head_channels`` for non-standard models.
    """
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    keys = list(sd)
    if "input_blocks.0.0.weight" not in sd:
        raise ValueError(f"no ldm UNet under prefix {prefix!r} (input_blocks.0.0.weight missing)")

    model_channels, in_channels = _shape(sd, "input_blocks.0.0.weight")[:2]
    out_channels = _shape(sd, "out.2.weight")[0] if "out.2.weight" in sd else 4
    adm_in_channels = _shape(sd, "label_emb.0.0.weight")[1] if "label_emb.0.0.weight" in sd else None

    # Walk the encoder: ResBlocks accumulate in the current level until a downsampler closes it.
    num_res_blocks: list[int] = []
    channel_mult: list[int] = []
    transformer_depth: list[int] = []
    context_dim, use_linear = None, False
    n_res, mult = 0, 1
    for i in range(1, _block_count(keys, "input_blocks")):
        block = f"input_blocks.{i}."
        if block + "0.op.weight" in sd:
            num_res_blocks.append(n_res)
            channel_mult.append(mult)
            n_res = 0
            continue
        n_res += 1
        mult = _shape(sd, block + "0.out_layers.3.weight")[0] // model_channels
        depth = _transformer_depth(keys, block + "1.")
        transformer_depth.append(depth)
        if depth and context_dim is None:
            context_dim = _shape(sd, block + "1.transformer_blocks.0.attn2.to_k.weight")[1]
            use_linear = len(_shape(sd, block + "1.proj_in.weight")) == 2
    num_res_blocks.append(n_res)
    channel_mult.append(mult)

    if "middle_block.1.proj_in.weight" in sd:
        depth_middle = _transformer_depth(keys, "middle_block.1.")
        if context_dim is None:
            context_dim = _shape(sd, "middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1]
            use_linear = len(_shape(sd, "middle_block.1.proj_in.weight")) == 2
    elif "middle_block.1.in_layers.0.weight" in sd:
        depth_middle = 0
    else:
        raise ValueError("unsupported middle block: expected [Res, Transformer, Res] or [Res, Res]")

    n_out = _block_count(keys, "output_blocks")
    if n_out:
        # Listed from the highest resolution down, i.e. output_blocks in reverse order.
        depth_output = [_transformer_depth(keys, f"output_blocks.{j}.1.") for j in reversed(range(n_out))]
    else:
        starts = [sum(num_res_blocks[:level]) for level in range(len(num_res_blocks))]
        depth_output = [transformer_depth[s] if n else 0 for s, n in zip(starts, num_res_blocks)
                        for _ in range(n + 1)]

    fields: dict[str, Any] = dict(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(num_res_blocks),
        transformer_depth=tuple(transformer_depth),
        transformer_depth_output=tuple(depth_output),
        transformer_depth_middle=depth_middle,
        context_dim=context_dim,
        use_linear_in_transformer=use_linear,
        adm_in_channels=adm_in_channels,
        **family_defaults(context_dim, use_linear),
    )
    fields.update(overrides)
    return UNetConfig(**fields)


def _per_level(value: int | list[int], levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def unet_config_from_diffusers(config: Mapping[str, Any]) -> UNetConfig:
    """Translate a diffusers ``UNet2DConditionModel`` config.json into a ``UNetConfig``.

    Patched models may differ from their config.json (Paints-Undo widens conv_in after loading); when the
    weights are at hand, re-derive the shape facts with ``unet_config_from_state_dict`` after renaming.
    """
    channels = list(config["block_out_channels"])
    levels = len(channels)
    mc = channels[0]
    n_res = _per_level(config.get("layers_per_block", 2), levels)
    layers = _per_level(config.get("transformer_layers_per_block", 1), levels)
    layers_up = config.get("reverse_transformer_layers_per_block") or list(reversed(layers))
    layers_up = [d[0] if isinstance(d, (list, tuple)) else d for d in layers_up]
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]  # lowest resolution first
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"unsupported mid_block_type {config['mid_block_type']!r}")

    depth = [layers[lv] if down_attn[lv] else 0 for lv in range(levels) for _ in range(n_res[lv])]
    depth_output_low_first = [layers_up[x] if up_attn[x] else 0
                              for x in range(levels) for _ in range(n_res[levels - 1 - x] + 1)]

    # diffusers' "attention_head_dim" holds the head count for SD models (newer configs may carry
    # num_attention_heads instead). One number means a fixed count (SD1); a per-level list is expressed
    # as a fixed head width where it is one (SD2/SDXL), else as a fixed count.
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    if isinstance(heads, int):
        head_fields: dict[str, Any] = {"num_heads": heads, "num_head_channels": None}
    else:
        attn_levels = [lv for lv in range(levels) if down_attn[lv]] or list(range(levels))
        widths = {channels[lv] // heads[lv] for lv in attn_levels}
        counts = {heads[lv] for lv in attn_levels}
        if len(widths) == 1:
            head_fields = {"num_heads": None, "num_head_channels": widths.pop()}
        elif len(counts) == 1:
            head_fields = {"num_heads": counts.pop(), "num_head_channels": None}
        else:
            raise ValueError(f"head layout {heads} fits neither a fixed head count nor a fixed head width")

    adm = None
    if config.get("addition_embed_type") == "text_time" or config.get("class_embed_type") == "projection":
        adm = config["projection_class_embeddings_input_dim"]

    return UNetConfig(
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4),
        model_channels=mc,
        channel_mult=tuple(c // mc for c in channels),
        num_res_blocks=tuple(n_res),
        transformer_depth=tuple(depth),
        transformer_depth_output=tuple(reversed(depth_output_low_first)),
        transformer_depth_middle=layers[-1],
        context_dim=config.get("cross_attention_dim", 768),
        use_linear_in_transformer=bool(config.get("use_linear_projection", False)),
        adm_in_channels=adm,
        upcast_attention=bool(config.get("upcast_attention", False)),
        **head_fields,
    )


def load_unet(state_dict: Mapping[str, torch.Tensor], diffusers_config: Mapping[str, Any] | None = None,
              **overrides: Any) -> UNetModel:
    """Build a UNet that fits ``state_dict`` and load it strictly, keeping the tensors' dtype and device.

    ``state_dict`` is ldm layout with the prefix stripped, or diffusers layout when its
    ``diffusers_config`` (unet/config.json) is given; the config.json then also supplies the head layout.
    """
    if diffusers_config is not None:
        from_json = unet_config_from_diffusers(diffusers_config)
        state_dict = diffusers_to_ldm(state_dict, from_json)
        overrides = {"num_heads": from_json.num_heads, "num_head_channels": from_json.num_head_channels,
                     "upcast_attention": from_json.upcast_attention, **overrides}
    config = unet_config_from_state_dict(state_dict, **overrides)
    with torch.device("meta"):
        model = UNetModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model
