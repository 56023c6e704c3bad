"""Sampling node declarations (captured /object_info and spec comfy_api §9.3, §9.6, §9.9) and the values of
the scheduler, noise and model-sampling nodes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.samplers import SAMPLER_NAMES
from diffusion.schedules import SCHEDULER_NAMES
from nodes.registry import NodeRegistry
from nodes.sampling import (BasicScheduler, DisableNoise, ExponentialScheduler, KarrasScheduler,
                            ModelSamplingDiscrete, RandomNoise, SDTurboScheduler)

CAPTURED = Path(__file__).resolve().parents[1] / "execution" / "fixtures" / "object_info_core.json"
# Spec §7.2, 10 steps.
KARRAS_10 = [14.61464, 9.10293, 5.47839, 3.16860, 1.74942, 0.91407, 0.44692, 0.20140, 0.08191, 0.02917, 0]
EXPONENTIAL_10 = [14.61464, 7.32487, 3.67123, 1.84002, 0.92222, 0.46222, 0.23166, 0.11611, 0.05819, 0.02917, 0]
NORMAL_10 = [14.61464, 7.83988, 4.60917, 2.91831, 1.95016, 1.34493, 0.93236, 0.62498, 0.36866, 0.02917, 0]
SEED = ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}]
STEPS = ["INT", {"default": 20, "min": 1, "max": 10000}]
CFG = ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]


@pytest.fixture(scope="module")
def registry(app) -> NodeRegistry:
    return app.ctx.registry


def _info(registry: NodeRegistry, name: str) -> dict:
    return json.loads(json.dumps(registry.get(name).object_info()))


def _normalized(info: dict) -> dict:
    """ComfyUI writes sockets as [TYPE, {}] and names the defining module; we write [TYPE] and "nodes"."""
    info = {k: v for k, v in info.items() if k != "python_module"}
    info["input"] = {section: {name: spec[:1] if spec[1:] == [{}] else spec for name, spec in inputs.items()}
                     for section, inputs in info["input"].items()}
    return info


@pytest.mark.parametrize("name", ["KSampler", "KSamplerAdvanced", "SamplerCustom", "KSamplerSelect",
                                  "SDTurboScheduler", "ModelSamplingDiscrete"])
def test_matches_captured_object_info(name, registry):
    assert _normalized(_info(registry, name)) == _normalized(json.loads(CAPTURED.read_text())[name])


def test_custom_sampling_family_per_spec(registry):
    expected = {
        "SamplerCustomAdvanced": ("sampling/custom_sampling", {
            "noise": ["NOISE"], "guider": ["GUIDER"], "sampler": ["SAMPLER"], "sigmas": ["SIGMAS"],
            "latent_image": ["LATENT"]}, ["LATENT", "LATENT"], ["output", "denoised_output"]),
        "BasicScheduler": ("sampling/custom_sampling/schedulers", {
            "model": ["MODEL"], "scheduler": ["COMBO", {"multiselect": False, "options": list(SCHEDULER_NAMES)}],
            "steps": STEPS, "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
            ["SIGMAS"], ["SIGMAS"]),
        "KarrasScheduler": ("sampling/custom_sampling/schedulers", {
            "steps": STEPS,
            "sigma_max": ["FLOAT", {"default": 14.614642, "min": 0.0, "max": 5000.0, "step": 0.01, "round": False}],
            "sigma_min": ["FLOAT", {"default": 0.0291675, "min": 0.0, "max": 5000.0, "step": 0.01, "round": False}],
            "rho": ["FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": False}]},
            ["SIGMAS"], ["SIGMAS"]),
        "ExponentialScheduler": ("sampling/custom_sampling/schedulers", {
            "steps": STEPS,
            "sigma_max": ["FLOAT", {"default": 14.614642, "min": 0.0, "max": 5000.0, "step": 0.01, "round": False}],
            "sigma_min": ["FLOAT", {"default": 0.0291675, "min": 0.0, "max": 5000.0, "step": 0.01, "round": False}]},
            ["SIGMAS"], ["SIGMAS"]),
        "RandomNoise": ("sampling/custom_sampling/noise", {"noise_seed": SEED}, ["NOISE"], ["NOISE"]),
        "DisableNoise": ("sampling/custom_sampling/noise", {}, ["NOISE"], ["NOISE"]),
        "CFGGuider": ("sampling/custom_sampling/guiders", {
            "model": ["MODEL"], "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "cfg": CFG},
            ["GUIDER"], ["GUIDER"]),
        "BasicGuider": ("sampling/custom_sampling/guiders", {"model": ["MODEL"], "conditioning": ["CONDITIONING"]},
                        ["GUIDER"], ["GUIDER"]),
    }
    for name, (category, inputs, outputs, names) in expected.items():
        info = _info(registry, name)
        assert (info["category"], info["display_name"], info["output"], info["output_name"]) == \
            (category, name, outputs, names), name
        assert info["input"].get("required", {}) == inputs, name
        assert info["input_order"].get("required", []) == list(inputs), name
    assert _info(registry, "KSampler")["input"]["required"]["sampler_name"][0] == list(SAMPLER_NAMES)


def test_karras_and_exponential_schedulers():
    torch.testing.assert_close(KarrasScheduler().execute(10, 14.614642, 0.0291675, 7.0)[0],
                               torch.tensor(KARRAS_10), atol=2e-5, rtol=0)
    torch.testing.assert_close(ExponentialScheduler().execute(10, 14.614642, 0.0291675)[0],
                               torch.tensor(EXPONENTIAL_10), atol=2e-5, rtol=0)


def test_basic_scheduler(analytic_model):
    model = analytic_model()
    torch.testing.assert_close(BasicScheduler().execute(model, "normal", 10, 1.0)[0], torch.tensor(NORMAL_10),
                               atol=2e-5, rtol=0)
    full = BasicScheduler().execute(model, "normal", 40, 1.0)[0]
    half = BasicScheduler().execute(model, "normal", 20, 0.5)[0]
    assert torch.equal(half, full[-21:])  # spec §7.3: the 40-step grid's tail
    assert float(half[0]) == pytest.approx(1.54816, abs=1e-5)
    assert len(BasicScheduler().execute(model, "karras", 6, 0.0)[0]) == 0


def test_sd_turbo_scheduler(analytic_model):
    model = analytic_model()
    schedule = model.denoiser.schedule
    one = SDTurboScheduler().execute(model, 1, 1.0)[0]
    torch.testing.assert_close(one, torch.stack([schedule.sigmas[999], torch.tensor(0.0)]))
    two = SDTurboScheduler().execute(model, 2, 0.5)[0]
    torch.testing.assert_close(two, torch.stack([schedule.sigmas[499], schedule.sigmas[399], torch.tensor(0.0)]))


def test_noise_nodes():
    latent = {"samples": torch.zeros(2, 4, 3, 3), "batch_index": [5, 2]}
    noise = RandomNoise().execute(77)[0]
    drawn = noise.generate(latent)
    generator = torch.Generator().manual_seed(77)
    items = [torch.randn((1, 4, 3, 3), generator=generator) for _ in range(6)]  # one item at a time (spec §7.4)
    assert torch.equal(drawn, torch.cat([items[5], items[2]]))
    assert torch.equal(DisableNoise().execute()[0].generate(latent), torch.zeros(2, 4, 3, 3))


def test_model_sampling_discrete(analytic_model):
    model = analytic_model()
    v_model = ModelSamplingDiscrete().execute(model, "v_prediction", False)[0]
    assert v_model.denoiser.schedule.prediction == "v_prediction"
    assert model.denoiser.schedule.prediction == "eps" and v_model.is_clone(model)
    zsnr = ModelSamplingDiscrete().execute(model, "eps", True)[0]
    assert float(zsnr.denoiser.schedule.sigma_max) == pytest.approx(4518.76, rel=1e-4)  # spec §7.1
    x, sigma = torch.ones(1, 4, 2, 2), torch.tensor([2.0])
    cond = model.denoiser.make_cond(torch.zeros(1, 1, 4), {}, x)
    assert not torch.allclose(v_model.denoiser.apply(x, sigma, cond), model.denoiser.apply(x, sigma, cond))
    with pytest.raises(ValueError, match="lcm"):
        ModelSamplingDiscrete().execute(model, "lcm", False)
