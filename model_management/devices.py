"""Where models run and in which precision, decided once from ComfyUI-compatible flags.

Defaults (no flags):

* CUDA present (and no ``--cpu``): everything runs on ``cuda``; idle weights go back to the CPU.
  UNet fp16, text encoders fp16, VAE bf16 where the GPU supports it, else fp32 (the SDXL VAE makes
  NaNs in fp16, spec §1.5).
* Else an Intel XPU or Apple MPS device, the same way (VAE fp32).
* CPU: fp32 throughout (CPU fp16 kernels are slow), except a bf16 UNet (bf16 weights, not autocast) on
  CPUs with native bf16 dot products (AVX512-BF16 or AMX): oneDNN's bf16 convs and matmuls then beat
  fp32 (SD1.5 at 256² on a 2-core AVX512-BF16 EPYC: ~1.7x) and the weights take half the memory.
  ``--force-fp32`` (or ``--fp32-unet``) keeps it fp32, for outputs matching the fp32 reference.
* ``--gpu-only``: idle weights stay on the GPU too (the offload device is the load device).

Flags override per component: ``--force-fp32`` / ``--force-fp16``, ``--fp32-unet`` / ``--bf16-unet`` /
``--fp16-unet``, ``--fp32-vae`` / ``--fp16-vae`` / ``--bf16-vae`` / ``--cpu-vae``, ``--fp32-text-enc`` /
``--fp16-text-enc``. ``DevicePolicy.from_flags(**{name: getattr(args, name) for name in FLAGS})``
builds it from parsed arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

FLAGS = ("cpu", "gpu_only", "force_fp32", "force_fp16", "fp32_unet", "bf16_unet", "fp16_unet", "fp32_vae",
         "fp16_vae", "bf16_vae", "cpu_vae", "fp32_text_enc", "fp16_text_enc")

CPU = torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively: AMX tiles (torch's capability string) or the
    AVX512-BF16 / AMX-BF16 flags in /proc/cpuinfo. Without them bf16 is emulated and slower than fp32."""
    if "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper():
        return True
    try:
        return not {"avx512_bf16", "amx_bf16"}.isdisjoint(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False


def accelerator() -> torch.device | None:
    """The first accelerator torch can use here: CUDA, then Intel XPU, then Apple MPS."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return torch.device("xpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return None


@dataclass(frozen=True)
class DevicePolicy:
    """Per-component devices and compute dtypes. ``offload_device`` holds weights that are not in use."""

    load_device: torch.device = CPU
    offload_device: torch.device = CPU
    unet_dtype: torch.dtype = torch.float32
    text_encoder_dtype: torch.dtype = torch.float32
    vae_dtype: torch.dtype = torch.float32
    vae_device: torch.device = CPU

    @classmethod
    def cpu(cls) -> DevicePolicy:
        """Everything on the CPU in fp32: the reproducible reference, used by tests."""
        return cls()

    @classmethod
    def from_flags(cls, *, cpu: bool = False, gpu_only: bool = False, force_fp32: bool = False,
                   force_fp16: bool = False, fp32_unet: bool = False, bf16_unet: bool = False, fp16_unet: bool = False,
                   fp32_vae: bool = False, fp16_vae: bool = False, bf16_vae: bool = False, cpu_vae: bool = False,
                   fp32_text_enc: bool = False, fp16_text_enc: bool = False, cuda_available: bool | None = None,
                   cpu_bf16: bool | None = None) -> DevicePolicy:
        """The policy for these flags on this machine (`cuda_available` / `cpu_bf16` override detection)."""
        found = accelerator() if cuda_available is None else torch.device("cuda") if cuda_available else None
        device = CPU if cpu or found is None else found
        if device != CPU:
            unet, text = torch.float16, torch.float16
            bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            vae = torch.bfloat16 if bf16 else torch.float32
        else:
            unet = torch.bfloat16 if (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) else torch.float32
            text = vae = torch.float32
        unet = _choose(unet, fp32=force_fp32 or fp32_unet, fp16=force_fp16 or fp16_unet, bf16=bf16_unet)
        text = _choose(text, fp32=force_fp32 or fp32_text_enc, fp16=fp16_text_enc)
        vae = _choose(vae, fp32=force_fp32 or fp32_vae, fp16=fp16_vae, bf16=bf16_vae)
        return cls(load_device=device, offload_device=device if gpu_only else CPU, unet_dtype=unet,
                   text_encoder_dtype=text, vae_dtype=vae, vae_device=CPU if cpu_vae else device)

    def for_device(self, device: str) -> DevicePolicy:
        """A loader's ``device`` option: "cpu" pins the component to the CPU in fp32, "default" keeps this."""
        if device != "cpu":
            return self
        return DevicePolicy(CPU, CPU, torch.float32, torch.float32, torch.float32, CPU)


def _choose(default: torch.dtype, *, fp32: bool = False, fp16: bool = False, bf16: bool = False) -> torch.dtype:
    """An explicit flag wins over the default; fp32 wins over the half-precision flags."""
    if fp32:
        return torch.float32
    if bf16:
        return torch.bfloat16
    if fp16:
        return torch.float16
    return default
