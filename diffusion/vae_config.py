"""AutoencoderKL ("kl-f8") configuration, derived from the shapes of an ldm-layout state dict.

Real files never ship the ldm `ddconfig`, so everything the module needs is read back from
tensor shapes. Keys are the bare ldm names (no `first_stage_model.` prefix); convert a diffusers
VAE with `keymaps_vae.diffusers_to_ldm` first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the ldm AutoencoderKL; the defaults are the SD1/SD2/SDXL VAE."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32

    @property
    def downscale_factor(self) -> int:
        """Pixels per latent cell along each axis (one stride-2 downsample per level but the last)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.embed_dim

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> VAEConfig:
        """Read the config from ldm key shapes (works on meta tensors, so no weights are needed)."""
        ch, in_channels = sd["encoder.conv_in.weight"].shape[:2]
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
        num_res_blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
        return cls(
            in_channels=in_channels,
            out_channels=sd["decoder.conv_out.weight"].shape[0],
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            z_channels=sd["decoder.conv_in.weight"].shape[1],
            embed_dim=sd["post_quant_conv.weight"].shape[0],
        )
