"""Write random-weight Stable Diffusion checkpoints in the real file layouts (for tests and benchmarks).

    python tools/make_random_checkpoint.py sdxl out.safetensors [--tiny] [--dtype fp16] [--seed 0]
    python tools/make_random_checkpoint.py sd15 out.ckpt --tiny
    python tools/make_random_checkpoint.py sd21-v out_folder --tiny --diffusers

Families: sd15, sd15-inpaint, sd21 (eps), sd21-v, sdxl, sdxl-refiner. Full size gives the real
architectures (an fp16 SDXL file is ~7 GB); ``--tiny`` keeps every structural trait of the family
(key prefixes, conv vs linear projections, text-encoder layouts, vector-conditioning layout, where the
attention is) at widths small enough for unit tests: UNet 64 channels, VAE 32–64 channels with the
usual 8× downscale, text towers 32 / 48 / 64 wide with the full 49408-token vocabulary.

Single files use the ldm prefixes (``model.diffusion_model.``, ``first_stage_model.``, SD1
``cond_stage_model.transformer.`` HF layout, SD2 ``cond_stage_model.model.`` open_clip layout, SDXL
``conditioner.embedders.{0,1}.``); ``.safetensors`` or a ``.ckpt`` / ``.pt`` pickle of
``{"state_dict": ...}``. ``--diffusers`` converts the same weights into a pipeline folder (SD2's text
encoder loses its last layer there, as in the published diffusers repositories).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion.checkpoint_keys import sd2_prediction_from_weights, split_checkpoint  # noqa: E402
from diffusion.keymaps_clip import hf_to_open_clip, module_to_hf, to_module_keys  # noqa: E402
from diffusion.keymaps_unet import ldm_to_diffusers as unet_to_diffusers  # noqa: E402
from diffusion.keymaps_vae import ldm_to_diffusers as vae_to_diffusers  # noqa: E402
from diffusion.text_encoders import ClipTextConfig, ClipTextEncoder  # noqa: E402
from diffusion.unet import UNetConfig, UNetModel  # noqa: E402
from diffusion.unet_config import unet_config_from_state_dict  # noqa: E402
from diffusion.vae import AutoencoderKL  # noqa: E402
from diffusion.vae_config import VAEConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SD_PREFIX = {"clip_l": "cond_stage_model.transformer.", "clip_h": "cond_stage_model.model."}
SDXL_PREFIX = {"clip_l": "conditioner.embedders.0.transformer.", "clip_g": "conditioner.embedders.1.model."}
REFINER_PREFIX = {"clip_g": "conditioner.embedders.0.model."}
OPEN_CLIP = {"clip_h", "clip_g"}  # stored in open_clip layout in single files


@dataclass(frozen=True)
class Recipe:
    unet: UNetConfig
    text: dict[str, ClipTextConfig]  # role -> tower, in conditioning order
    prefixes: dict[str, str]
    v_prediction: bool = False


def _clip(width: int, layers: int, mlp: int, activation: str, projection: bool) -> ClipTextConfig:
    return ClipTextConfig(width=width, layers=layers, heads=max(width // 64, 1), mlp_width=mlp,
                          activation=activation, projection_dim=width if projection else None)


CLIP_L = _clip(768, 12, 3072, "quick_gelu", False)
CLIP_H = _clip(1024, 24, 4096, "gelu", True)
CLIP_G = _clip(1280, 32, 5120, "gelu", True)
TINY_L, TINY_H, TINY_G = _clip(32, 3, 64, "gelu", False), _clip(48, 3, 64, "gelu", True), _clip(64, 3, 64, "gelu", True)

SD2_UNET = UNetConfig(context_dim=1024, use_linear_in_transformer=True, num_heads=None, num_head_channels=64,
                      upcast_attention=True)
SDXL_UNET = UNetConfig(channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2), transformer_depth=(0, 0, 2, 2, 10, 10),
                       transformer_depth_output=(0, 0, 0, 2, 2, 2, 10, 10, 10), transformer_depth_middle=10,
                       context_dim=2048, use_linear_in_transformer=True, num_heads=None, num_head_channels=64,
                       adm_in_channels=2816)
REFINER_UNET = UNetConfig(model_channels=384, transformer_depth=(0, 0, 4, 4, 4, 4, 0, 0),
                          transformer_depth_output=(0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0), transformer_depth_middle=4,
                          context_dim=1280, use_linear_in_transformer=True, num_heads=None, num_head_channels=64,
                          adm_in_channels=2560)
# Tiny UNets: 64 channels (one 64-wide head), one ResBlock per level, attention where the family has it.
TINY = dict(model_channels=64, num_heads=None, num_head_channels=64)
TINY_SD1_UNET = UNetConfig(**TINY, channel_mult=(1, 1), num_res_blocks=(1, 1), transformer_depth=(1, 0),
                           transformer_depth_output=(1, 1, 0, 0), context_dim=32)
TINY_SD2_UNET = UNetConfig(**TINY, channel_mult=(1, 1), num_res_blocks=(1, 1), transformer_depth=(1, 0),
                           transformer_depth_output=(1, 1, 0, 0), context_dim=48, use_linear_in_transformer=True)
TINY_SDXL_UNET = UNetConfig(**TINY, channel_mult=(1, 1), num_res_blocks=(1, 1), transformer_depth=(0, 2),
                            transformer_depth_output=(0, 0, 2, 2), transformer_depth_middle=2, context_dim=96,
                            use_linear_in_transformer=True, adm_in_channels=64 + 6 * 256)
TINY_REFINER_UNET = UNetConfig(**TINY, channel_mult=(1, 1, 1), num_res_blocks=(1, 1, 1), transformer_depth=(0, 2, 0),
                               transformer_depth_output=(0, 0, 2, 2, 0, 0), transformer_depth_middle=2,
                               context_dim=64, use_linear_in_transformer=True, adm_in_channels=64 + 5 * 256)
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)


RECIPES = {
    ("sd15", False): Recipe(UNetConfig(), {"clip_l": CLIP_L}, SD_PREFIX),
    ("sd15-inpaint", False): Recipe(UNetConfig(in_channels=9), {"clip_l": CLIP_L}, SD_PREFIX),
    ("sd21", False): Recipe(SD2_UNET, {"clip_h": CLIP_H}, SD_PREFIX),
    ("sd21-v", False): Recipe(SD2_UNET, {"clip_h": CLIP_H}, SD_PREFIX, v_prediction=True),
    ("sdxl", False): Recipe(SDXL_UNET, {"clip_l": CLIP_L, "clip_g": CLIP_G}, SDXL_PREFIX),
    ("sdxl-refiner", False): Recipe(REFINER_UNET, {"clip_g": CLIP_G}, REFINER_PREFIX),
    ("sd15", True): Recipe(TINY_SD1_UNET, {"clip_l": TINY_L}, SD_PREFIX),
    ("sd15-inpaint", True): Recipe(replace(TINY_SD1_UNET, in_channels=9), {"clip_l": TINY_L}, SD_PREFIX),
    ("sd21", True): Recipe(TINY_SD2_UNET, {"clip_h": TINY_H}, SD_PREFIX),
    ("sd21-v", True): Recipe(TINY_SD2_UNET, {"clip_h": TINY_H}, SD_PREFIX, v_prediction=True),
    ("sdxl", True): Recipe(TINY_SDXL_UNET, {"clip_l": TINY_L, "clip_g": TINY_G}, SDXL_PREFIX),
    ("sdxl-refiner", True): Recipe(TINY_REFINER_UNET, {"clip_g": TINY_G}, REFINER_PREFIX),
}
FAMILIES = sorted({name for name, _ in RECIPES})


def _shapes(module_factory) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in module_factory().state_dict().items()}


def _random(key: str, shape: torch.Size, generator: torch.Generator) -> Tensor:
    """Weights that keep activations in a sane range: fan-in scaled matrices, norm scales near 1."""
    noise = torch.randn(shape, generator=generator)
    if len(shape) == 1 and key.endswith("weight"):  # GroupNorm / LayerNorm scale
        return 1.0 + 0.1 * noise
    if len(shape) <= 1:
        return 0.02 * noise
    if "embedding" in key:
        return 0.02 * noise
    return noise / math.sqrt(math.prod(shape[1:]))


def make_checkpoint(family: str, tiny: bool = False, dtype: torch.dtype = torch.float32,
                    seed: int = 0) -> dict[str, Tensor]:
    """A random single-file checkpoint of `family` in the ldm layout."""
    recipe = RECIPES[(family, tiny)]
    generator = torch.Generator().manual_seed(seed)
    unet = {key: _random(key, shape, generator) for key, shape in _shapes(lambda: UNetModel(recipe.unet)).items()}
    if family.startswith("sd21"):
        # ComfyUI's SD2 v-prediction rule reads the spread of this bias (checkpoint_keys).
        last = sum(n + 1 for n in recipe.unet.num_res_blocks) - 1
        key = f"output_blocks.{last}.1.transformer_blocks.0.norm1.bias"
        unet[key] = (0.5 if recipe.v_prediction else 0.02) * torch.randn(unet[key].shape, generator=generator)
    vae_config = TINY_VAE if tiny else VAEConfig()
    vae = {key: _random(key, shape, generator) for key, shape in _shapes(lambda: AutoencoderKL(vae_config)).items()}
    text = {role: {k: _random(k, s, generator) for k, s in _shapes(lambda: ClipTextEncoder(config)).items()}
            for role, config in recipe.text.items()}
    return ldm_checkpoint(unet, vae, text, recipe.prefixes, dtype)


def ldm_checkpoint(unet: dict[str, Tensor], vae: dict[str, Tensor], text: dict[str, dict[str, Tensor]],
                   prefixes: dict[str, str], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Module state dicts (`UNetModel`, `AutoencoderKL`, role -> `ClipTextEncoder`) as one single-file
    checkpoint: ldm prefixes, HF or open_clip text layout by role, floating tensors cast to `dtype`."""
    out = {"model.diffusion_model." + k: v for k, v in unet.items()}
    out.update({"first_stage_model." + k: v for k, v in vae.items()})
    for role, module in text.items():
        hf = module_to_hf(module)
        if role in OPEN_CLIP:
            weights = hf_to_open_clip(hf)
            weights["logit_scale"] = torch.tensor(4.6052)
        else:
            positions = hf["text_model.embeddings.position_embedding.weight"].shape[0]
            weights = {**hf, "text_model.embeddings.position_ids": torch.arange(positions)[None]}
        out.update({prefixes[role] + k: v for k, v in weights.items()})
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}


def write_checkpoint(state_dict: dict[str, Tensor], path: str | Path) -> Path:
    """`.safetensors`, or a torch pickle ``{"state_dict": ...}`` for any other suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save({"state_dict": state_dict, "global_step": 0}, path)
    return path


# -- diffusers export ------------------------------------------------------------------------------


def _unet_config_json(config: UNetConfig) -> dict:
    levels = len(config.channel_mult)
    starts = [sum(config.num_res_blocks[:lv]) for lv in range(levels)]
    depth = [config.transformer_depth[s] for s in starts]
    attention = [d > 0 for d in depth]
    channels = [config.model_channels * m for m in config.channel_mult]
    layers = [d or 1 for d in depth]
    layers[-1] = config.transformer_depth_middle or layers[-1]  # diffusers reads the middle depth here
    if config.num_heads is not None:
        heads: int | list[int] = config.num_heads
    else:
        heads = [c // config.num_head_channels for c in channels]
    out = {
        "_class_name": "UNet2DConditionModel",
        "in_channels": config.in_channels, "out_channels": config.out_channels,
        "block_out_channels": channels, "layers_per_block": config.num_res_blocks[0],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": config.context_dim, "attention_head_dim": heads,
        "transformer_layers_per_block": layers, "use_linear_projection": config.use_linear_in_transformer,
        "upcast_attention": config.upcast_attention, "act_fn": "silu", "norm_num_groups": 32,
        "flip_sin_to_cos": True, "freq_shift": 0,
    }
    if config.adm_in_channels is not None:
        out.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=config.adm_in_channels)
    return out


def _text_config_json(config: ClipTextConfig, layers: int) -> dict:
    hf = config.to_hf().to_dict()
    hf.update(num_hidden_layers=layers,
              architectures=["CLIPTextModelWithProjection" if config.projection_dim else "CLIPTextModel"])
    return {k: v for k, v in hf.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def _write_component(folder: Path, weights: dict[str, Tensor], config: dict, weights_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / weights_name))
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def write_diffusers(state_dict: dict[str, Tensor], folder: str | Path) -> Path:
    """Convert a single-file checkpoint (as `make_checkpoint` returns) into a diffusers pipeline folder."""
    folder = Path(folder)
    parts = split_checkpoint(state_dict)
    family = parts.family.name
    unet_config = unet_config_from_state_dict(parts.unet)
    unet_json = _unet_config_json(unet_config)
    _write_component(folder / "unet", unet_to_diffusers(parts.unet, unet_config), unet_json,
                     "diffusion_pytorch_model.safetensors")
    vae = VAEConfig.from_state_dict(parts.vae)
    vae_json = {"_class_name": "AutoencoderKL", "in_channels": vae.in_channels, "out_channels": vae.out_channels,
                "block_out_channels": [vae.ch * m for m in vae.ch_mult], "layers_per_block": vae.num_res_blocks,
                "latent_channels": vae.latent_channels, "norm_num_groups": vae.norm_groups,
                "scaling_factor": 0.13025 if family.startswith("sdxl") else 0.18215}
    _write_component(folder / "vae", vae_to_diffusers(parts.vae), vae_json, "diffusion_pytorch_model.safetensors")
    subfolders = {"sdxl_refiner": {"clip_g": "text_encoder_2"}}.get(
        family, dict(zip(parts.text_encoders, ("text_encoder", "text_encoder_2"))))
    for role, sub in subfolders.items():
        module = to_module_keys(parts.text_encoders[role].state_dict)
        config = ClipTextConfig.from_state_dict(module)
        hf = module_to_hf(module)
        layers = config.layers
        if family == "sd2":  # published SD2 diffusers text encoders stop one layer early
            layers -= 1
            hf = {k: v for k, v in hf.items() if not k.startswith(f"text_model.encoder.layers.{layers}.")}
        _write_component(folder / sub, hf, _text_config_json(config, layers), "model.safetensors")
    prediction = parts.family.prediction or sd2_prediction_from_weights(parts.unet)
    prediction = "v_prediction" if prediction == "v" else "epsilon"
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": prediction}))
    pipeline = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
                "sdxl": "StableDiffusionXLPipeline", "sdxl_refiner": "StableDiffusionXLImg2ImgPipeline"}[family]
    index = {"_class_name": pipeline, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    index.update({sub: ["transformers", "CLIPTextModel"] for sub in subfolders.values()})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("output", type=Path, help=".safetensors / .ckpt file, or a folder with --diffusers")
    parser.add_argument("--tiny", action="store_true", help="unit-test sizes (see the module docstring)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diffusers", action="store_true", help="write a diffusers pipeline folder")
    args = parser.parse_args(argv)
    state_dict = make_checkpoint(args.family, args.tiny, DTYPES[args.dtype], args.seed)
    written = write_diffusers(state_dict, args.output) if args.diffusers else write_checkpoint(state_dict, args.output)
    print(f"wrote {written} ({sum(v.numel() for v in state_dict.values()):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
