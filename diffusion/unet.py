"""The latent-diffusion UNet family: SD1.x, SD2.x, SDXL base / refiner and smaller configs of the same shape.

Parameter names are the ldm single-file names (``model.diffusion_model.*`` with the prefix stripped), so an
ldm checkpoint loads with ``strict=True``. Other layouts (diffusers folders) are renamed by
``diffusion.keymaps_unet`` before loading; the config is derived from shapes by ``diffusion.unet_config``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

GROUPS = 32  # GroupNorm groups everywhere in this family


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters. Defaults are SD1.5.

    Transformer depths are listed per block (not per level) because that is what a state dict shows:
    ``transformer_depth`` has one entry per input ResBlock, ``transformer_depth_output`` one per output
    block, 0 meaning "no SpatialTransformer". Both run from the highest resolution down, as ComfyUI's
    detected configs do, so entry k of the output list belongs to ``output_blocks[-1 - k]``.
    Exactly one of ``num_heads`` (fixed head count, SD1) and ``num_head_channels`` (fixed head width,
    SD2/SDXL) is set.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_output: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0)
    transformer_depth_middle: int = 1  # 0: the middle block is two ResBlocks without attention
    context_dim: int | None = 768
    use_linear_in_transformer: bool = False  # SD2/SDXL: Linear proj_in/out on tokens; SD1: 1x1 convs
    num_heads: int | None = 8
    num_head_channels: int | None = None
    adm_in_channels: int | None = None  # SDXL vector conditioning y, fed through label_emb
    upcast_attention: bool = False  # SD2.x overflows in fp16 attention; compute it in fp32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if len(self.num_res_blocks) != levels:
            raise ValueError("num_res_blocks needs one entry per level of channel_mult")
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise ValueError("transformer_depth needs one entry per input ResBlock")
        if len(self.transformer_depth_output) != sum(n + 1 for n in self.num_res_blocks):
            raise ValueError("transformer_depth_output needs one entry per output block")
        if (self.num_heads is None) == (self.num_head_channels is None):
            raise ValueError("set exactly one of num_heads and num_head_channels")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, head_dim) of a SpatialTransformer with ``channels`` channels."""
        if self.num_heads is not None:
            return self.num_heads, channels // self.num_heads
        return channels // self.num_head_channels, self.num_head_channels


@dataclass
class ControlResiduals:
    """Additive residuals from side networks, already scaled by their strength.

    Both lists are indexed by input block (``input_blocks[i]``); missing or ``None`` entries add nothing.
    ControlNet fills ``skip`` (added to the skip tensor input block i saved, when an output block
    consumes it) and ``middle``; T2I-Adapter fills ``input`` (added to the hidden state right after input
    block i, so it also flows down the encoder).
    """

    skip: Sequence[Tensor | None] = ()
    middle: Tensor | None = None
    input: Sequence[Tensor | None] = ()

    @staticmethod
    def _add(h: Tensor, residuals: Sequence[Tensor | None], i: int) -> Tensor:
        if i < len(residuals) and residuals[i] is not None:
            return h + residuals[i].to(h.dtype)
        return h

    def after_input_block(self, i: int, h: Tensor) -> Tensor:
        return self._add(h, self.input, i)

    def after_middle_block(self, h: Tensor) -> Tensor:
        return h if self.middle is None else h + self.middle.to(h.dtype)

    def on_skip(self, i: int, skip: Tensor) -> Tensor:
        return self._add(skip, self.skip, i)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, computed in fp32.

    Also used for SDXL's size/crop conditioning (dim 256), so it is public.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, out_ch), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class Attention(nn.Module):
    """Multi-head attention; cross-attention when ``context`` is given."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, upcast: bool,
                 dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        kv_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.upcast = upcast
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        kv = x if context is None else context
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.heads)
            for t in (self.to_q(x), self.to_k(kv), self.to_v(kv))
        )
        if self.upcast:
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v).to(x.dtype)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class GEGLU(nn.Module):
    """Linear to 2x width, then value * GELU(gate)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention on the text context, GEGLU MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, upcast: bool,
                 dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, None, upcast, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim, upcast, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Runs transformer blocks over the HxW tokens of a feature map, as a residual."""

    def __init__(self, channels: int, depth: int, config: UNetConfig) -> None:
        super().__init__()
        heads, head_dim = config.heads(channels)
        if heads < 1 or heads * head_dim != channels:
            raise ValueError(f"{channels} channels do not split into heads of {config.heads(channels)}; "
                             "set num_heads / num_head_channels")
        self.linear = config.use_linear_in_transformer
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if self.linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, head_dim, config.context_dim, config.upcast_attention,
                                  config.dropout)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(channels, channels) if self.linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        height, width = x.shape[-2:]
        h = self.norm(x)
        # SD1 projects with 1x1 convs on the map, SD2/SDXL with Linear layers on the tokens.
        if not self.linear:
            h = self.proj_in(h)
        h = rearrange(h, "b c h w -> b (h w) c")
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = rearrange(h, "b (h w) c -> b c h w", h=height, w=width)
        if not self.linear:
            h = self.proj_out(h)
        return x + h


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest upsampling to the size of the skip it will meet (handles odd sizes), then a conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class Stage(nn.ModuleList):
    """One numbered entry of input_blocks / output_blocks / the middle block: layers applied in order,
    each given the inputs it needs."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None,
                out_size: Sequence[int] | None = None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, Upsample):
                h = layer(h, out_size)
            else:
                h = layer(h)
        return h


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-SiLU-Linear used for the time embedding and the vector conditioning (label_emb)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


def make_input_blocks(config: UNetConfig) -> tuple[nn.ModuleList, list[int]]:
    """The encoder half, plus the channel count of every skip it saves (shared with ControlNet)."""
    mc, emb_dim = config.model_channels, config.time_embed_dim
    blocks = nn.ModuleList([Stage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])])
    skip_channels = [mc]
    ch, depths = mc, iter(config.transformer_depth)
    last = len(config.channel_mult) - 1
    for level, (mult, n_res) in enumerate(zip(config.channel_mult, config.num_res_blocks)):
        for _ in range(n_res):
            layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb_dim, config.dropout)]
            ch = mult * mc
            depth = next(depths)
            if depth > 0:
                layers.append(SpatialTransformer(ch, depth, config))
            blocks.append(Stage(layers))
            skip_channels.append(ch)
        if level != last:
            blocks.append(Stage([Downsample(ch)]))
            skip_channels.append(ch)
    return blocks, skip_channels


def make_middle_block(config: UNetConfig, channels: int) -> Stage:
    emb_dim, depth = config.time_embed_dim, config.transformer_depth_middle
    layers: list[nn.Module] = [ResBlock(channels, channels, emb_dim, config.dropout)]
    if depth > 0:
        layers.append(SpatialTransformer(channels, depth, config))
    layers.append(ResBlock(channels, channels, emb_dim, config.dropout))
    return Stage(layers)


def make_output_blocks(config: UNetConfig, skip_channels: list[int]) -> nn.ModuleList:
    """The decoder half; consumes ``skip_channels`` from the end, lowest resolution first."""
    mc, emb_dim = config.model_channels, config.time_embed_dim
    skips, depths = list(skip_channels), reversed(config.transformer_depth_output)
    ch = skip_channels[-1]
    blocks = nn.ModuleList()
    for level in reversed(range(len(config.channel_mult))):
        out_ch = config.channel_mult[level] * mc
        n_blocks = config.num_res_blocks[level] + 1
        for i in range(n_blocks):
            layers: list[nn.Module] = [ResBlock(ch + skips.pop(), out_ch, emb_dim, config.dropout)]
            ch = out_ch
            depth = next(depths)
            if depth > 0:
                layers.append(SpatialTransformer(ch, depth, config))
            if level > 0 and i == n_blocks - 1:
                layers.append(Upsample(ch))
            blocks.append(Stage(layers))
    return blocks


class UNetModel(nn.Module):
    """The LDM UNet, ``forward(x, timesteps, context, y, control) -> eps / v prediction``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.time_embed = embedding_mlp(config.model_channels, config.time_embed_dim)
        if config.adm_in_channels is not None:
            # Nested Sequential only so the ldm names come out as label_emb.0.0 / label_emb.0.2.
            self.label_emb = nn.Sequential(embedding_mlp(config.adm_in_channels, config.time_embed_dim))
        self.input_blocks, skip_channels = make_input_blocks(config)
        self.middle_block = make_middle_block(config, skip_channels[-1])
        self.output_blocks = make_output_blocks(config, skip_channels)
        ch = config.model_channels * config.channel_mult[0]
        self.out = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor | None = None, y: Tensor | None = None,
                control: ControlResiduals | None = None) -> Tensor:
        """x [B, in_ch, H, W] (concat conditions already appended); timesteps float [B] or scalar (may be
        fractional); context [B, T, context_dim]; y [B, adm_in_channels] when the model has label_emb."""
        dtype = self.time_embed[0].weight.dtype
        x = x.to(dtype)
        context = None if context is None else context.to(dtype)
        control = control or ControlResiduals()

        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.config.adm_in_channels is not None:
            if y is None:
                raise ValueError("this UNet needs the vector conditioning y")
            emb = emb + self.label_emb(y.to(dtype))

        h, skips = x, []
        for i, block in enumerate(self.input_blocks):
            h = control.after_input_block(i, block(h, emb, context))
            skips.append(h)

        h = control.after_middle_block(self.middle_block(h, emb, context))

        for block in self.output_blocks:
            skip = control.on_skip(len(skips) - 1, skips.pop())
            next_size = skips[-1].shape[-2:] if skips else None
            h = block(torch.cat([h, skip], dim=1), emb, context, next_size)

        return self.out(h)
