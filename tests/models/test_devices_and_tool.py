"""Device / dtype policy from flags, and the random-checkpoint tool: full-size recipes match the real
parameter counts (spec §3, on the meta device), the CLI writes loadable files."""
from __future__ import annotations

import pytest
import torch

from diffusion.checkpoint import load_checkpoint, read_state_dict
from diffusion.text_encoders import ClipTextEncoder
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL
from diffusion.vae_config import VAEConfig
from model_management.devices import DevicePolicy
from tools.make_random_checkpoint import RECIPES, main


def test_cpu_defaults_and_native_bf16():
    plain = DevicePolicy.from_flags(cuda_available=False, cpu_bf16=False)
    assert plain == DevicePolicy.cpu()
    bf16 = DevicePolicy.from_flags(cuda_available=False, cpu_bf16=True)
    assert bf16.unet_dtype == torch.bfloat16 and bf16.vae_dtype == torch.float32
    assert DevicePolicy.from_flags(cuda_available=False, cpu_bf16=True, force_fp32=True).unet_dtype == torch.float32
    assert DevicePolicy.from_flags(cuda_available=False, cpu_bf16=True, fp32_unet=True).unet_dtype == torch.float32


def test_cuda_defaults_and_overrides():
    cuda = DevicePolicy.from_flags(cuda_available=True)
    assert cuda.load_device.type == "cuda" and cuda.offload_device.type == "cpu"
    assert cuda.unet_dtype == torch.float16 and cuda.text_encoder_dtype == torch.float16
    assert cuda.vae_dtype in (torch.bfloat16, torch.float32) and cuda.vae_device.type == "cuda"
    assert DevicePolicy.from_flags(cuda_available=True, cpu=True, cpu_bf16=False) == DevicePolicy.cpu()
    flags = DevicePolicy.from_flags(cuda_available=True, bf16_unet=True, fp32_vae=True, cpu_vae=True,
                                    fp32_text_enc=True)
    assert (flags.unet_dtype, flags.vae_dtype, flags.vae_device.type, flags.text_encoder_dtype) == \
        (torch.bfloat16, torch.float32, "cpu", torch.float32)
    assert DevicePolicy.from_flags(cuda_available=True, force_fp32=True).unet_dtype == torch.float32
    assert cuda.for_device("cpu") == DevicePolicy.cpu() and cuda.for_device("default") is cuda


# spec §3: exact parameter counts of the real architectures
UNET_PARAMS = {"sd15": 859_520_964, "sd15-inpaint": 859_535_364, "sd21-v": 865_910_724, "sdxl": 2_567_463_684,
               "sdxl-refiner": 2_259_526_660}
TEXT_PARAMS = {"clip_l": 123_060_480, "clip_h": 352_984_064 + 1_048_576, "clip_g": 693_021_440 + 1_638_400}


def _params(factory) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in factory().parameters())


@pytest.mark.parametrize("family", sorted(UNET_PARAMS))
def test_full_size_recipes_have_the_real_parameter_counts(family):
    recipe = RECIPES[(family, False)]
    assert _params(lambda: UNetModel(recipe.unet)) == UNET_PARAMS[family]
    for role, config in recipe.text.items():
        assert _params(lambda: ClipTextEncoder(config)) == TEXT_PARAMS[role]
    assert _params(lambda: AutoencoderKL(VAEConfig())) == 83_653_863


def test_cli_writes_loadable_files(tmp_path, capsys):
    assert main(["sd15", str(tmp_path / "a.ckpt"), "--tiny", "--dtype", "bf16", "--seed", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    sd = read_state_dict(tmp_path / "a.ckpt")
    assert sd["model.diffusion_model.out.2.weight"].dtype == torch.bfloat16
    assert sd["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    assert load_checkpoint("a.ckpt", sd).family == "sd1"
    assert main(["sdxl-refiner", str(tmp_path / "folder"), "--tiny", "--diffusers"]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == \
        ["model_index.json", "scheduler", "text_encoder_2", "unet", "vae"]
