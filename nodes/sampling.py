"""Sampling nodes: KSampler and KSamplerAdvanced, the custom-sampling family that takes a run apart into
SAMPLER, SIGMAS, NOISE and GUIDER values, and ModelSamplingDiscrete.

Every sampler node ends in `_sample`: the NOISE value makes the seed's CPU noise (batch_index aware),
model_management.sampling runs the sampler on the MODEL's device, and each step reports progress through
rt.progress — the interrupt checkpoint — with a latent2rgb preview when this prompt asked for previews.
Outputs are copies of the input LATENT dict with new samples. Names, inputs, defaults and categories follow
ComfyUI (spec comfy_api §9.0, §9.3, §9.6, §9.9); the semantics follow spec sd_formats §7.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from diffusion.preview import latent_preview, wants_preview
from diffusion.samplers import SAMPLER_NAMES
from diffusion.schedules import (SCHEDULER_NAMES, DiscreteSchedule, basic_scheduler_sigmas, exponential_sigmas,
                                 karras_sigmas, ksampler_sigmas, sd_turbo_sigmas, split_steps)
from model_management.handles import ModelHandle
from model_management.sampling import Guider, NoiseSource, SamplerChoice, run_sampler
from nodes.runtime import NodeRuntime
from nodes.schema import Boolean, Combo, Float, Int, Node, Out, Socket

Latent = dict
Conditioning = list[list[Any]]
SEED_MAX = 0xFFFFFFFFFFFFFFFF
SD_SIGMA_MAX, SD_SIGMA_MIN = 14.614642, 0.0291675  # the SD schedule's ends: custom schedulers' defaults
# ModelSamplingDiscrete choices this engine implements (lcm and img_to_img need distilled schedules).
SUPPORTED_SAMPLING = ("eps", "v_prediction", "x0")


def _seed(name: str) -> Any:
    return Int(name, 0, min=0, max=SEED_MAX, step=None, control_after_generate=True)


def _steps(default: int = 20, maximum: int = 10000) -> Any:
    return Int("steps", default, min=1, max=maximum, step=None)


def _cfg() -> Any:
    return Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01)


def _sigma_range() -> tuple:
    return (Float("sigma_max", SD_SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", SD_SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False))


def _v3_combo(name: str, options: tuple[str, ...]) -> Any:
    return Socket("COMBO", name, multiselect=False, options=list(options))


def _sample(rt: NodeRuntime, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor, latent: Latent,
            noise: NoiseSource) -> tuple[Latent, Latent]:
    """(output, denoised output) LATENTs of one sampling run; the latter is the last step's x0 estimate."""
    previews = wants_preview(rt.preview_method)
    latent_format = guider.model.latent_format

    def on_step(step: int, total: int, denoised: torch.Tensor) -> None:
        pixels = latent_preview(denoised, latent_format) if previews else None
        preview = None if pixels is None else ("JPEG", Image.fromarray(pixels), rt.services.preview_size)
        rt.progress(step + 1, total, preview)

    result = run_sampler(guider, sampler, sigmas, latent, noise.generate(latent), noise.seed, on_step)
    denoised = result.samples if result.denoised is None else result.denoised
    return {**latent, "samples": result.samples}, {**latent, "samples": denoised}


class KSampler(Node):
    """Denoise a latent from the seed's noise along a scheduler's σ grid; denoise < 1 runs the last
    `steps` steps of a longer grid (img2img strength)."""

    CATEGORY = "sampling"
    INPUTS = (
        Socket("MODEL", "model"),
        _seed("seed"),
        _steps(),
        _cfg(),
        Combo("sampler_name", SAMPLER_NAMES),
        Combo("scheduler", SCHEDULER_NAMES),
        Socket("CONDITIONING", "positive"),
        Socket("CONDITIONING", "negative"),
        Socket("LATENT", "latent_image"),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: Conditioning, negative: Conditioning, latent_image: Latent, rt: NodeRuntime,
                denoise: float = 1.0) -> tuple[Latent]:
        sigmas = ksampler_sigmas(model.denoiser.schedule, scheduler, steps, denoise, sampler_name)
        guider = Guider(model, positive, negative, cfg)
        return (_sample(rt, guider, SamplerChoice(sampler_name), sigmas, latent_image, NoiseSource(seed))[0],)


class KSamplerAdvanced(Node):
    """KSampler over a window [start_at_step, end_at_step) of the full grid: a base model can stop early with
    its leftover noise and a refiner continue from there without adding noise."""

    CATEGORY = "sampling"
    INPUTS = (
        Socket("MODEL", "model"),
        Combo("add_noise", ("enable", "disable")),
        _seed("noise_seed"),
        _steps(),
        _cfg(),
        Combo("sampler_name", SAMPLER_NAMES),
        Combo("scheduler", SCHEDULER_NAMES),
        Socket("CONDITIONING", "positive"),
        Socket("CONDITIONING", "negative"),
        Socket("LATENT", "latent_image"),
        Int("start_at_step", 0, min=0, max=10000, step=None),
        Int("end_at_step", 10000, min=0, max=10000, step=None),
        Combo("return_with_leftover_noise", ("disable", "enable")),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, model: ModelHandle, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: Latent,
                start_at_step: int, end_at_step: int, return_with_leftover_noise: str,
                rt: NodeRuntime) -> tuple[Latent]:
        sigmas = ksampler_sigmas(model.denoiser.schedule, scheduler, steps, 1.0, sampler_name)
        sigmas = split_steps(sigmas, start_at_step, end_at_step,
                             force_full_denoise=return_with_leftover_noise != "enable")
        guider = Guider(model, positive, negative, cfg)
        noise = NoiseSource(noise_seed, enabled=add_noise != "disable")
        return (_sample(rt, guider, SamplerChoice(sampler_name), sigmas, latent_image, noise)[0],)


_CUSTOM_OUTPUTS = (Out("LATENT", "output"), Out("LATENT", "denoised_output"))


class SamplerCustom(Node):
    """KSampler with the sampler and the σ grid given as inputs (no denoise, no σ drop)."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = (
        Socket("MODEL", "model"),
        Boolean("add_noise", True),
        _seed("noise_seed"),
        _cfg(),
        Socket("CONDITIONING", "positive"),
        Socket("CONDITIONING", "negative"),
        Socket("SAMPLER", "sampler"),
        Socket("SIGMAS", "sigmas"),
        Socket("LATENT", "latent_image"),
    )
    OUTPUTS = _CUSTOM_OUTPUTS

    def execute(self, model: ModelHandle, add_noise: bool, noise_seed: int, cfg: float, positive: Conditioning,
                negative: Conditioning, sampler: SamplerChoice, sigmas: torch.Tensor, latent_image: Latent,
                rt: NodeRuntime) -> tuple[Latent, Latent]:
        guider = Guider(model, positive, negative, cfg)
        return _sample(rt, guider, sampler, sigmas, latent_image, NoiseSource(noise_seed, enabled=add_noise))


class SamplerCustomAdvanced(Node):
    """A run assembled from NOISE, GUIDER, SAMPLER and SIGMAS values."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = (
        Socket("NOISE", "noise"),
        Socket("GUIDER", "guider"),
        Socket("SAMPLER", "sampler"),
        Socket("SIGMAS", "sigmas"),
        Socket("LATENT", "latent_image"),
    )
    OUTPUTS = _CUSTOM_OUTPUTS

    def execute(self, noise: NoiseSource, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor,
                latent_image: Latent, rt: NodeRuntime) -> tuple[Latent, Latent]:
        return _sample(rt, guider, sampler, sigmas, latent_image, noise)


class KSamplerSelect(Node):
    CATEGORY = "sampling/custom_sampling/samplers"
    INPUTS = (_v3_combo("sampler_name", SAMPLER_NAMES),)
    OUTPUTS = (Out("SAMPLER"),)

    def execute(self, sampler_name: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(sampler_name),)


class BasicScheduler(Node):
    """The model's σ grid for a named scheduler; denoise < 1 keeps the tail of a longer grid."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = (
        Socket("MODEL", "model"),
        _v3_combo("scheduler", SCHEDULER_NAMES),
        _steps(),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Out("SIGMAS"),)

    def execute(self, model: ModelHandle, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (basic_scheduler_sigmas(model.denoiser.schedule, scheduler, steps, denoise),)


class KarrasScheduler(Node):
    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = (_steps(), *_sigma_range(), Float("rho", 7.0, min=0.0, max=100.0, step=0.01, round=False))
    OUTPUTS = (Out("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = (_steps(), *_sigma_range())
    OUTPUTS = (Out("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        return (exponential_sigmas(steps, sigma_min, sigma_max),)


class SDTurboScheduler(Node):
    """SD-Turbo's few-step grid on its distillation timesteps 999, 899, …"""

    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = (Socket("MODEL", "model"), _steps(1, 10), Float("denoise", 1.0, min=0, max=1.0, step=0.01))
    OUTPUTS = (Out("SIGMAS"),)

    def execute(self, model: ModelHandle, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sd_turbo_sigmas(model.denoiser.schedule, steps, denoise),)


class RandomNoise(Node):
    CATEGORY = "sampling/custom_sampling/noise"
    INPUTS = (_seed("noise_seed"),)
    OUTPUTS = (Out("NOISE"),)

    def execute(self, noise_seed: int) -> tuple[NoiseSource]:
        return (NoiseSource(noise_seed),)


class DisableNoise(Node):
    """No starting noise: the sampler starts from the latent as it is (e.g. one with leftover noise)."""

    CATEGORY = "sampling/custom_sampling/noise"
    OUTPUTS = (Out("NOISE"),)

    def execute(self) -> tuple[NoiseSource]:
        return (NoiseSource(enabled=False),)


class CFGGuider(Node):
    CATEGORY = "sampling/custom_sampling/guiders"
    INPUTS = (Socket("MODEL", "model"), Socket("CONDITIONING", "positive"), Socket("CONDITIONING", "negative"),
              _cfg())
    OUTPUTS = (Out("GUIDER"),)

    def execute(self, model: ModelHandle, positive: Conditioning, negative: Conditioning,
                cfg: float) -> tuple[Guider]:
        return (Guider(model, positive, negative, cfg),)


class BasicGuider(Node):
    """One prompt, no classifier-free guidance (cfg 1)."""

    CATEGORY = "sampling/custom_sampling/guiders"
    INPUTS = (Socket("MODEL", "model"), Socket("CONDITIONING", "conditioning"))
    OUTPUTS = (Out("GUIDER"),)

    def execute(self, model: ModelHandle, conditioning: Conditioning) -> tuple[Guider]:
        return (Guider(model, conditioning),)


class ModelSamplingDiscrete(Node):
    """Override the prediction type (e.g. a v-prediction SD1 finetune) and zero-terminal-SNR of a model."""

    CATEGORY = "advanced/model"
    INPUTS = (Socket("MODEL", "model"), Combo("sampling", ("eps", "v_prediction", "lcm", "x0", "img_to_img")),
              Boolean("zsnr", False))
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model: ModelHandle, sampling: str, zsnr: bool) -> tuple[ModelHandle]:
        if sampling not in SUPPORTED_SAMPLING:
            raise ValueError(f"ModelSamplingDiscrete: sampling {sampling!r} is not supported yet "
                             f"(supported: {', '.join(SUPPORTED_SAMPLING)})")
        model = model.clone()
        model.set_schedule(DiscreteSchedule(sampling, zsnr=zsnr))
        return (model,)


NODE_CLASS_MAPPINGS = {
    "KSampler": KSampler,
    "KSamplerAdvanced": KSamplerAdvanced,
    "SamplerCustom": SamplerCustom,
    "SamplerCustomAdvanced": SamplerCustomAdvanced,
    "KSamplerSelect": KSamplerSelect,
    "BasicScheduler": BasicScheduler,
    "KarrasScheduler": KarrasScheduler,
    "ExponentialScheduler": ExponentialScheduler,
    "SDTurboScheduler": SDTurboScheduler,
    "RandomNoise": RandomNoise,
    "DisableNoise": DisableNoise,
    "CFGGuider": CFGGuider,
    "BasicGuider": BasicGuider,
    "ModelSamplingDiscrete": ModelSamplingDiscrete,
}

# The others show their class names (spec §9.3, §9.6, §9.9).
NODE_DISPLAY_NAME_MAPPINGS = {"KSamplerAdvanced": "KSampler (Advanced)"}
