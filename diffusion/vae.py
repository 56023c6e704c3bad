"""AutoencoderKL (the "kl-f8" VAE of SD1.x / SD2.x / SDXL) with ldm key names, plus tiled encode/decode.

Every image autoencoder in Sumi exposes the same small interface (`ImageAutoencoder`): pixels are
[B, C, H, W] in [0, 1], latents are raw (the latent-format scale is applied by the sampler, spec §7.8),
and `downscale_factor` / `latent_channels` describe the latent grid. The tiled helpers only use that
interface, so a factor-4 VAE such as Stable Cascade stage A can be tiled the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .keymaps_vae import diffusers_to_ldm, is_diffusers_vae
from .vae_config import VAEConfig

# Latent scale factors (spec §7.8); applied by the latent format, never inside the VAE.
SD1_SCALE_FACTOR = 0.18215
SDXL_SCALE_FACTOR = 0.13025


class ImageAutoencoder(Protocol):
    downscale_factor: int
    latent_channels: int

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # The ldm VAE uses eps 1e-6 everywhere (not torch's default 1e-5).
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions, with 1×1-conv projections (ldm layout)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (rearrange(p(n), "b c h w -> b 1 (h w) c") for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Asymmetric zero pad (right/bottom only) then an unpadded stride-2 conv, as in ldm.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: `block.{j}` resnets, then an optional down- or upsampler (ldm naming)."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, groups: int, down: bool = False, up: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch, groups) for j in range(n_blocks))
        self.downsample = Downsample(out_ch) if down else None
        self.upsample = Upsample(out_ch) if up else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(zip([cfg.ch, *widths[:-1]], widths)):
            self.down.append(Level(w_in, w_out, cfg.num_res_blocks, cfg.norm_groups, down=i < len(widths) - 1))
        self.mid = MidBlock(widths[-1], cfg.norm_groups)
        self.norm_out = _norm(widths[-1], cfg.norm_groups)
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], cfg.norm_groups)
        # ldm stores the levels low-to-high resolution index-wise (up.0 is full resolution) but runs them in reverse.
        w_ins = [*widths[1:], widths[-1]]
        self.up = nn.ModuleList(
            Level(w_in, w_out, cfg.num_res_blocks + 1, cfg.norm_groups, up=i > 0)
            for i, (w_in, w_out) in enumerate(zip(w_ins, widths))
        )
        self.norm_out = _norm(widths[0], cfg.norm_groups)
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The SD VAE. `encode`/`decode` follow ComfyUI: [0,1] pixels in, the posterior mean out, clamped [0,1] back."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.downscale_factor = cfg.downscale_factor
        self.latent_channels = cfg.latent_channels
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior parameters for an image in [-1, 1]: channels [mean ‖ logvar]."""
        return self.quant_conv(self.encoder(x))

    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent of [0,1] pixels. ComfyUI uses the posterior mode (mean); passing a generator samples
        instead, as CompVis `get_first_stage_encoding` does."""
        mean, logvar = self.encode_moments(2.0 * pixels - 1.0).chunk(2, dim=1)
        if generator is None:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Decoder output in the model's own [-1, 1] range, unclamped."""
        return self.decoder(self.post_quant_conv(latent))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.decode_raw(latent) + 1.0) / 2.0).clamp(0.0, 1.0)


def load_vae(
    sd: Mapping[str, torch.Tensor], device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> AutoencoderKL:
    """Build an AutoencoderKL from an ldm- or diffusers-layout VAE state dict (no prefix).

    The module is created on the meta device and the tensors are assigned, so no memory is spent on
    a throw-away random init. Raises on missing or unexpected keys.
    """
    if is_diffusers_vae(sd):
        sd = diffusers_to_ldm(sd)
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig.from_state_dict(sd))
    weights = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in sd.items()}
    vae.load_state_dict(weights, strict=True, assign=True)
    return vae.eval()


def crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop [B, C, H, W] pixels to multiples of the downscale factor, as ComfyUI does before encoding."""
    h, w = pixels.shape[-2:]
    nh, nw = h // multiple * multiple, w // multiple * multiple
    top, left = (h - nh) // 2, (w - nw) // 2
    return pixels[..., top : top + nh, left : left + nw]


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, length); the last tile is pulled back to end exactly at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(size: int, feather: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blend weight: linear ramps over `feather` cells on sides shared with a neighbour tile."""
    w = torch.ones(size)
    if feather > 0:
        rise = torch.arange(1, feather + 1, dtype=torch.float32) / (feather + 1)
        n = min(feather, size)
        if ramp_start:
            w[:n] = torch.minimum(w[:n], rise[:n])
        if ramp_end:
            w[size - n :] = torch.minimum(w[size - n :], rise[:n].flip(0))
    return w


def _tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grid_hw: tuple[int, int],
    in_scale: int,
    out_scale: int,
    tile: int,
    overlap: int,
) -> torch.Tensor:
    """Run `fn` on overlapping tiles and blend. Tiles are laid out on the latent grid (`grid_hw`);
    input and output are that grid scaled by `in_scale` / `out_scale`."""
    gh, gw = grid_hw
    th, tw = min(tile, gh), min(tile, gw)
    out = weight = None
    for y in _tile_starts(gh, tile, overlap):
        for x0 in _tile_starts(gw, tile, overlap):
            piece = x[..., y * in_scale : (y + th) * in_scale, x0 * in_scale : (x0 + tw) * in_scale]
            res = fn(piece)
            if out is None:
                dtype = res.dtype
                out = torch.zeros(*res.shape[:2], gh * out_scale, gw * out_scale, device=res.device)
                weight = torch.zeros(gh * out_scale, gw * out_scale, device=res.device)
            wy = _ramp(th * out_scale, overlap * out_scale, y > 0, y + th < gh)
            wx = _ramp(tw * out_scale, overlap * out_scale, x0 > 0, x0 + tw < gw)
            mask = (wy[:, None] * wx[None, :]).to(res.device)
            oy, ox = y * out_scale, x0 * out_scale
            out[..., oy : oy + th * out_scale, ox : ox + tw * out_scale] += res.float() * mask
            weight[oy : oy + th * out_scale, ox : ox + tw * out_scale] += mask
    return (out / weight).to(dtype)


def _tile_params(tile_size: int, overlap: int, factor: int) -> tuple[int, int]:
    # ComfyUI's tiled nodes take sizes in pixels and shrink an overlap above a quarter of the tile.
    if tile_size < 4 * overlap:
        overlap = tile_size // 4
    return max(tile_size // factor, 1), overlap // factor


@torch.no_grad()
def tiled_decode(vae: ImageAutoencoder, latent: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """Decode in overlapping tiles (VAEDecodeTiled); `tile_size`/`overlap` are in pixels."""
    f = vae.downscale_factor
    tile, ov = _tile_params(tile_size, overlap, f)
    return _tiled(vae.decode, latent, tuple(latent.shape[-2:]), 1, f, tile, ov)


@torch.no_grad()
def tiled_encode(vae: ImageAutoencoder, pixels: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """Encode in overlapping tiles (VAEEncodeTiled); `tile_size`/`overlap` are in pixels.

    Pixels must already be a multiple of the downscale factor (see `crop_to_multiple`)."""
    f = vae.downscale_factor
    tile, ov = _tile_params(tile_size, overlap, f)
    grid = (pixels.shape[-2] // f, pixels.shape[-1] // f)
    return _tiled(vae.encode, pixels, grid, f, 1, tile, ov)
