"""Train the bundled tiny SD1-family model on procedural shapes, on the CPU, seeded.

    python tools/train_tiny.py assets/checkpoints/sumi-tiny-shapes.safetensors [--seed 0]

Three parts of the SD1.x family at toy widths, built from Sumi's own modules, so the file loads through
the ordinary CheckpointLoaderSimple path with every hyper-parameter read back from tensor shapes:

1. an AutoencoderKL (factor 8: 64×64 RGB ↔ 4×8×8) trained on the images, then rescaled so its latents
   times SD1's latent scale (0.18215) have zero mean and unit variance per channel, as the family expects;
2. a CLIP text encoder (the real 49408-token vocabulary and tokenizer, 64 wide) and
3. an LDM UNet, trained together with it from scratch on ε-prediction with SD1's noise schedule, loss
   weights that make high-noise (layout) errors count (`loss_weights`), 10 % empty captions (for
   classifier-free guidance) and an EMA of the weights.

The EMA weights are written in fp16 in the single-file ldm layout (tools/make_random_checkpoint.py's
writer). Data: tools/make_shapes_dataset.py. About 50 minutes with 2 threads (48 min measured).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":
    # Idle OpenMP threads must sleep, not spin: on a shared 2-core machine a spinning thread waits for a
    # sibling that is not scheduled, which made training steps several times slower. Read when torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion.latent_formats import SD15  # noqa: E402
from diffusion.prompt import tokenize_prompt  # noqa: E402
from diffusion.schedules import DiscreteSchedule  # noqa: E402
from diffusion.text_encoders import ClipTextConfig, ClipTextEncoder  # noqa: E402
from diffusion.tokenizer import EOS_TOKEN, ClipTokenizer  # noqa: E402
from diffusion.unet import UNetConfig, UNetModel  # noqa: E402
from diffusion.vae import AutoencoderKL  # noqa: E402
from diffusion.vae_config import VAEConfig  # noqa: E402
from tools.make_random_checkpoint import SD_PREFIX, ldm_checkpoint, write_checkpoint  # noqa: E402
from tools.make_shapes_dataset import make_dataset  # noqa: E402

# Widths the loader's shape rules read back unchanged: 64-wide CLIP → 1 head and GELU; context 64 → 64-wide
# UNet heads; GroupNorm's 32 groups set the smallest widths.
TEXT = ClipTextConfig(width=64, layers=2, heads=1, mlp_width=256, activation="gelu")
UNET = UNetConfig(model_channels=64, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                  transformer_depth_output=(1, 1, 1, 1), transformer_depth_middle=1, context_dim=TEXT.width,
                  num_heads=None, num_head_channels=64)
VAE = VAEConfig(ch=64, ch_mult=(1, 1, 1, 1), num_res_blocks=1)


@dataclass(frozen=True)
class Settings:
    """Everything that decides the result besides the code (the defaults made the shipped file)."""

    seed: int = 0
    images: int = 10000
    vae_steps: int = 1200
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_warmup: int = 50
    kl_weight: float = 1e-6
    shape_weight: float = 10.0
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    empty_caption: float = 0.1
    min_snr: float = 5.0
    ema: float = 0.999
    snapshot_every: int = 1000


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _optimizer(params: Iterable[nn.Parameter], lr: float, steps: int, warmup: int,
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)  # fused: 7× faster step on CPU
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, warmup))


def _pixels(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in the VAE's [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _shape_weight(x: Tensor, weight: float) -> Tensor:
    """Per-pixel loss weight [B, 1, H, W]: `weight` where a pixel differs from the image's corner colour
    (the shape, a tenth of the image), 1 elsewhere, so shapes count as much as the background."""
    corner = x[:, :, :1, :1]
    return 1.0 + (weight - 1.0) * ((x - corner).abs().amax(dim=1, keepdim=True) > 0.1).float()


def train_vae(images: np.ndarray, settings: Settings, generator: torch.Generator) -> AutoencoderKL:
    """Shape-weighted reconstruction (L1 + MSE) through sampled latents, with a light KL pull towards N(0, 1)."""
    vae = AutoencoderKL(VAE)
    optimizer, schedule = _optimizer(vae.parameters(), settings.vae_lr, settings.vae_steps, settings.vae_warmup)
    bar = tqdm(range(settings.vae_steps), desc="vae", unit="step")
    for _ in bar:
        x = _pixels(images[torch.randint(len(images), (settings.vae_batch,), generator=generator).numpy()])
        mean, logvar = vae.encode_moments(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        error = vae.decode_raw(z) - x
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).mean()
        loss = (_shape_weight(x, settings.shape_weight) * (error.abs() + error ** 2)).mean() + settings.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", kl=f"{kl.item():.2f}", refresh=False)
    return vae.eval()


@torch.no_grad()
def encode_all(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> Tensor:
    """Posterior means of every image (raw latents)."""
    return torch.cat([vae.encode_moments(_pixels(images[i:i + batch])).chunk(2, dim=1)[0]
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def normalise_latents(vae: AutoencoderKL, latents: Tensor) -> Tensor:
    """Fold a per-channel affine map into quant_conv / post_quant_conv so that raw latents × SD1's scale
    have zero mean and unit variance (the decoded images do not change); returns the new latents."""
    mean = latents.mean(dim=(0, 2, 3))
    scale = 1.0 / (SD15.scale_factor * latents.std(dim=(0, 2, 3)))  # new raw = (old − mean) · scale
    channels = mean.numel()
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:channels] *= scale.view(-1, 1, 1, 1)
    quant.bias[:channels] = (quant.bias[:channels] - mean) * scale
    quant.bias[channels:] += 2.0 * scale.log()  # the posterior's log-variance scales with it
    post.bias += post.weight[:, :, 0, 0] @ mean
    post.weight /= scale.view(1, -1, 1, 1)
    return (latents - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)


def caption_tokens(captions: list[str]) -> tuple[Tensor, list[str]]:
    """77-token ids of each distinct caption, as CLIPTextEncode tokenizes them (row 0: the empty prompt),
    and the captions in row order."""
    tokenizer = ClipTokenizer(EOS_TOKEN)
    distinct = ["", *sorted(set(captions) - {""})]
    rows = []
    for caption in distinct:
        chunks = tokenize_prompt(caption, tokenizer)
        if len(chunks) != 1:
            raise ValueError(f"caption longer than one 77-token chunk: {caption!r}")
        rows.append([token for token, _ in chunks[0]])
    return torch.tensor(rows), distinct


def encode_text(encoder: ClipTextEncoder, tokens: Tensor) -> Tensor:
    """Conditioning [B, 77, D] as SD1's CLIPTextEncode reads it: the last layer after the final LayerNorm."""
    eos_index = (tokens == EOS_TOKEN).int().argmax(dim=1)
    hidden, _ = encoder(encoder.embed(tokens.tolist()), eos_index, None, True)
    return hidden


def loss_weights(schedule: DiscreteSchedule, gamma: float) -> Tensor:
    """ε-loss weight per timestep, min(SNR + 1, γ) / SNR, scaled to mean 1: an x0 error then counts
    min(SNR + 1, γ) times (min-SNR-γ in its v-prediction form). Plain ε-loss weights an x0 error by SNR,
    0.005 at σ_max, where the text alone decides the layout: trained that way the model read positions
    out of the noise and ignored "left" / "right"."""
    snr = schedule.sigmas.double() ** -2
    weights = (snr + 1).clamp(max=gamma) / snr
    return (weights / weights.mean()).float()


class EMA:
    """Exponential moving average of parameters, with the usual (1 + n) / (10 + n) warm-up of the decay."""

    def __init__(self, modules: list[nn.Module], decay: float) -> None:
        self.averaged = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self._averaged = [p for m in self.averaged for p in m.parameters()]
        self._live = [p for m in modules for p in m.parameters()]
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._averaged, self._live, 1.0 - decay)


Snapshot = Callable[[int, UNetModel, ClipTextEncoder], None]


def train_denoiser(latents: Tensor, token_rows: Tensor, caption_index: Tensor, settings: Settings,
                   generator: torch.Generator, snapshot: Snapshot | None = None,
                   ) -> tuple[UNetModel, ClipTextEncoder]:
    """UNet and text encoder together on ε-prediction; returns their EMA copies.

    `latents` are model-space (raw × scale); image i has caption row `caption_index[i]` of `token_rows`,
    whose row 0 is the empty prompt used for `settings.empty_caption` of the examples. `snapshot` gets
    the EMA copies every `settings.snapshot_every` steps (to watch a long run)."""
    unet, text = UNetModel(UNET), ClipTextEncoder(TEXT)
    schedule = DiscreteSchedule("eps")
    weights = loss_weights(schedule, settings.min_snr)
    ema = EMA([unet, text], settings.ema)
    params = [*unet.parameters(), *text.parameters()]
    optimizer, lr_schedule = _optimizer(params, settings.lr, settings.steps, settings.warmup)
    bar = tqdm(range(settings.steps), desc="unet+clip", unit="step")
    for step in bar:
        index = torch.randint(len(latents), (settings.batch,), generator=generator)
        rows = caption_index[index]
        rows[torch.rand(settings.batch, generator=generator) < settings.empty_caption] = 0
        timestep = torch.randint(len(schedule.sigmas), (settings.batch,), generator=generator)
        sigma = schedule.sigmas[timestep].view(-1, 1, 1, 1)
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=generator)
        x = schedule.calculate_input(sigma, x0 + sigma * noise)
        predicted = unet(x, timestep.float(), encode_text(text, token_rows[rows]))
        loss = (weights[timestep] * (predicted - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.update()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if snapshot is not None and (step + 1) % settings.snapshot_every == 0:
            snapshot(step + 1, *ema.averaged)
    return ema.averaged[0], ema.averaged[1]


def _checkpoint(unet: UNetModel, vae: AutoencoderKL, text: ClipTextEncoder) -> dict[str, Tensor]:
    """The fp16 single-file ldm state dict."""
    return ldm_checkpoint(unet.state_dict(), vae.state_dict(), {"clip_l": text.state_dict()}, SD_PREFIX,
                          torch.float16)


def train(settings: Settings, snapshots: Path | None = None) -> dict[str, Tensor]:
    """The whole recipe; returns the fp16 single-file state dict. With `snapshots`, the model so far is
    also written there as step<N>.safetensors every `settings.snapshot_every` denoiser steps."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images, scenes = make_dataset(settings.images, settings.seed)
    vae = train_vae(images, settings, generator)
    latents = normalise_latents(vae, encode_all(vae, images)) * SD15.scale_factor
    token_rows, distinct = caption_tokens([s.caption for s in scenes])
    row_of = {caption: i for i, caption in enumerate(distinct)}
    caption_index = torch.tensor([row_of[s.caption] for s in scenes])
    def snapshot(step: int, unet: UNetModel, text: ClipTextEncoder) -> None:
        write_checkpoint(_checkpoint(unet, vae, text), snapshots / f"step{step}.safetensors")

    unet, text = train_denoiser(latents, token_rows, caption_index, settings, generator,
                                snapshot if snapshots is not None else None)
    return _checkpoint(unet, vae, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--snapshots", type=Path, help="also write the model every 1000 steps into this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    state_dict = train(Settings(seed=args.seed), args.snapshots)
    write_checkpoint(state_dict, args.output)
    size = args.output.stat().st_size / 2 ** 20
    print(f"wrote {args.output} ({size:.1f} MiB) in {(time.monotonic() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
