"""DDPM schedule, σ ↔ timestep, prediction types and the 9 schedulers against the spec's golden
values (sd_formats §0, §7.1–7.3) and the σ grids of the sampler_trajectories vectors."""

from tests.paths import SHARED
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion.schedules import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SCHEDULER_NAMES, DiscreteSchedule, basic_scheduler_sigmas,
    calculate_sigmas, exponential_sigmas, karras_sigmas, ksampler_sigmas, laplace_sigmas,
    linear_quadratic_sigmas, polyexponential_sigmas, sd_turbo_sigmas, split_steps, vp_sigmas,
)

VECTORS = SHARED / "reference/vectors"
MS = DiscreteSchedule()

# sd_formats §7.2, 10 steps (5 decimals).
GOLDEN_10 = {
    "normal": [14.61464, 7.83988, 4.60917, 2.91831, 1.95016, 1.34493, 0.93236, 0.62498, 0.36866, 0.02917, 0],
    "karras": [14.61464, 9.10293, 5.47839, 3.16860, 1.74942, 0.91407, 0.44692, 0.20140, 0.08191, 0.02917, 0],
    "exponential": [14.61464, 7.32487, 3.67123, 1.84002, 0.92222, 0.46222, 0.23166, 0.11611, 0.05819, 0.02917, 0],
    "simple": [14.61464, 8.30280, 5.08776, 3.32108, 2.27646, 1.61289, 1.16058, 0.82986, 0.56928, 0.34167, 0],
    "sgm_uniform": [14.61464, 8.30717, 5.09241, 3.32507, 2.27973, 1.61558, 1.16286, 0.83188, 0.57119, 0.34370, 0],
    "ddim_uniform": [8.39069, 5.13443, 3.34776, 2.29285, 1.62369, 1.16822, 0.83565, 0.57405, 0.34619, 0.04131, 0],
    "beta": [14.61464, 11.54277, 7.37184, 4.37280, 2.61524, 1.61828, 1.02733, 0.65489, 0.39551, 0.19906, 0],
    "kl_optimal": [14.61463, 4.23235, 2.39372, 1.59707, 1.13300, 0.81524, 0.57291, 0.37248, 0.19529, 0.02917, 0],
}


def _vectors():
    if not (VECTORS / "sampler_trajectories.safetensors").exists():
        pytest.skip("reference vectors not available")
    return (load_file(VECTORS / "sampler_trajectories.safetensors"),
            json.loads((VECTORS / "sampler_trajectories.json").read_text()))


def test_scheduler_names_in_comfyui_order():
    assert SCHEDULER_NAMES == ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                               "normal", "linear_quadratic", "kl_optimal")
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS == {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


def test_sd15_table_bit_exact():
    tensors, _ = _vectors()
    assert torch.equal(MS.sigmas, tensors["out.sd15_sigmas_table"])
    # log σ is taken in float64 before the cast, which differs from log of the float32 σ
    assert torch.equal(MS.log_sigmas, tensors["out.sd15_log_sigmas_table"])


def test_quick_facts():
    assert float(MS.sigma_min) == pytest.approx(0.0291672, abs=1e-7)
    assert float(MS.sigma_max) == pytest.approx(14.614641, abs=1e-6)
    for t, sigma in [(1, 0.041314), (500, 1.61828), (901, 8.39069), (951, 11.02833), (981, 13.12041)]:
        assert float(MS.sigmas[t]) == pytest.approx(sigma, abs=6e-6)
    alphas_cumprod = 1 / (MS.sigmas.double() ** 2 + 1)
    assert float(alphas_cumprod[0]) == pytest.approx(0.99915, abs=5e-6)
    assert float(alphas_cumprod[-1]) == pytest.approx(0.0046601, abs=5e-8)


@pytest.mark.parametrize("name", sorted(GOLDEN_10))
def test_golden_10_step_grids(name):
    sigmas = calculate_sigmas(MS, name, 10)
    assert sigmas.dtype == torch.float32
    assert sigmas.tolist() == pytest.approx(GOLDEN_10[name], abs=6e-6)


def test_timesteps_the_unet_sees():
    assert MS.timestep(calculate_sigmas(MS, "normal", 10)[:-1]).tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert MS.timestep(calculate_sigmas(MS, "karras", 10)[:-1]).tolist() == [999, 916, 815, 687, 523, 327, 146, 41, 7, 0]


def test_ksampler_grids_match_reference():
    tensors, meta = _vectors()
    for case, spec in meta["cases"].items():
        sigmas = ksampler_sigmas(MS, spec["scheduler"], meta["steps"], spec["denoise"], spec["sampler"])
        ref = tensors[f"out.{case}.sigmas"]
        assert sigmas.shape == ref.shape == (spec["n_sigmas"],), case
        # exact, except one kl_optimal value where torch builds' float32 tan differ by an ulp
        tol = 1.2e-7 if spec["scheduler"] == "kl_optimal" else 0.0
        torch.testing.assert_close(sigmas, ref, rtol=tol, atol=0.0, msg=case)


def test_linear_quadratic_shape():
    sigmas = linear_quadratic_sigmas(MS, 10)
    s = 1 - sigmas / MS.sigma_max  # the schedule lives on s = 1 − σ/σ_max
    assert s[:5].tolist() == pytest.approx([0, 0.005, 0.010, 0.015, 0.020], abs=1e-6)  # linear to 0.025
    slopes = s[1:] - s[:-1]
    assert torch.all(slopes[5:] > slopes[4:-1])  # then convex (quadratic) up to s = 1
    assert float(s[-1]) == pytest.approx(1.0)
    assert linear_quadratic_sigmas(MS, 1).tolist() == pytest.approx([float(MS.sigma_max), 0.0])


def test_denoise_truncation_and_quirks():
    # 20 steps at denoise 0.5 are the tail of the 40-step schedule (sd_formats §7.3)
    sigmas = ksampler_sigmas(MS, "normal", 20, denoise=0.5)
    assert len(sigmas) == 21
    assert sigmas[:2].tolist() == pytest.approx([1.54816, 1.42253], abs=6e-6)
    assert torch.equal(sigmas, calculate_sigmas(MS, "normal", 40)[-21:])
    assert len(ksampler_sigmas(MS, "normal", 20, denoise=0.0)) == 0
    # ddim_uniform gives more steps than asked when 1000 % steps != 0, and KSampler keeps them all
    assert len(ksampler_sigmas(MS, "ddim_uniform", 30)) == 32
    assert len(basic_scheduler_sigmas(MS, "ddim_uniform", 30)) == 31
    # KSampler treats denoise > 0.9999 as full; BasicScheduler truncates anything below 1
    assert torch.equal(ksampler_sigmas(MS, "karras", 8, denoise=0.99995), calculate_sigmas(MS, "karras", 8))
    assert torch.equal(basic_scheduler_sigmas(MS, "karras", 8, denoise=0.99995), calculate_sigmas(MS, "karras", 8))
    assert torch.equal(basic_scheduler_sigmas(MS, "karras", 8, denoise=0.5), calculate_sigmas(MS, "karras", 16)[-9:])


def test_discard_penultimate_sigma():
    full = calculate_sigmas(MS, "karras", 7)
    for sampler in ("dpm_2", "uni_pc"):
        assert torch.equal(ksampler_sigmas(MS, "karras", 6, sampler=sampler), torch.cat([full[:-2], full[-1:]]))
    assert torch.equal(ksampler_sigmas(MS, "karras", 6, sampler="euler"), calculate_sigmas(MS, "karras", 6))


def test_percent_to_sigma():
    assert MS.percent_to_sigma(0.5) == pytest.approx(1.61558, abs=6e-6)
    assert MS.percent_to_sigma(0.001) == pytest.approx(14.52636, abs=6e-5)
    assert MS.percent_to_sigma(0.0) == 999999999.9
    assert MS.percent_to_sigma(1.0) == 0.0


def test_sigma_timestep_round_trip():
    t = torch.tensor([0.0, 12.25, 500.5, 998.75, 999.0])
    torch.testing.assert_close(MS.timestep_continuous(MS.sigma(t)), t, rtol=0, atol=2e-3)
    # integer timesteps give the table (through exp(log σ), so to an ulp); the discrete map rounds to
    # the nearest entry in log σ
    torch.testing.assert_close(MS.sigma(torch.arange(1000)), MS.sigmas, rtol=2.4e-7, atol=0)
    assert MS.timestep(MS.sigma(torch.tensor([10.4, 10.6]))).tolist() == [10, 11]
    assert MS.timestep(torch.tensor(100.0)).item() == 999 and MS.timestep(torch.tensor(1e-4)).item() == 0


def test_zero_terminal_snr():
    zsnr = DiscreteSchedule(zsnr=True)
    assert float(zsnr.sigma_max) == pytest.approx(4518.76, rel=1e-5)
    assert float(zsnr.sigma_min) == pytest.approx(float(MS.sigma_min), rel=1e-3)


def test_prediction_types_recover_x0():
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.5, 2.0, 14.0])
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * eps
    vp_alpha, vp_std = 1 / (s ** 2 + 1) ** 0.5, s / (s ** 2 + 1) ** 0.5
    outputs = {"eps": eps, "v_prediction": vp_alpha * eps - vp_std * x0, "x0": x0}
    for prediction, out in outputs.items():
        ms = DiscreteSchedule(prediction)
        torch.testing.assert_close(ms.calculate_denoised(sigma, out, x), x0, rtol=0, atol=1e-5)
        torch.testing.assert_close(ms.calculate_input(sigma, x), x * vp_alpha)
    with pytest.raises(ValueError):
        DiscreteSchedule("flow")


def test_noise_scaling_and_max_denoise():
    noise, latent = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    sigmas = calculate_sigmas(MS, "normal", 4)
    assert MS.is_max_denoise(sigmas) and not MS.is_max_denoise(sigmas[1:])
    top = MS.noise_scaling(sigmas[0], noise, latent, max_denoise=True)
    torch.testing.assert_close(top, torch.full_like(noise, math.sqrt(1 + float(sigmas[0]) ** 2) + 0.5))
    assert float(top[0, 0, 0, 0]) == pytest.approx(14.6488 + 0.5, abs=1e-4)  # not σ_max·noise
    mid = MS.noise_scaling(sigmas[1], noise, latent)
    torch.testing.assert_close(mid, torch.full_like(noise, float(sigmas[1]) + 0.5))
    assert MS.inverse_noise_scaling(sigmas[-1], mid) is mid


def test_split_steps_base_refiner_handoff():
    sigmas = calculate_sigmas(MS, "karras", 10)
    base = split_steps(sigmas, start_step=0, last_step=6, force_full_denoise=False)
    assert torch.equal(base, sigmas[:7])
    refiner = split_steps(sigmas, start_step=6, last_step=10000)
    assert torch.equal(refiner, sigmas[6:])
    forced = split_steps(sigmas, start_step=0, last_step=6, force_full_denoise=True)
    assert torch.equal(forced[:-1], sigmas[:6]) and forced[-1] == 0 and sigmas[6] != 0
    assert len(split_steps(sigmas, start_step=10)) == 0


def test_node_scheduler_helpers():
    karras = karras_sigmas(20, 0.0291675, 14.614642, rho=7.0)
    assert len(karras) == 21 and karras[-1] == 0
    assert float(karras[0]) == pytest.approx(14.614642) and float(karras[-2]) == pytest.approx(0.0291675)
    # uniform in σ^(1/ρ): ρ = 1 is linear in σ
    root = karras[:-1] ** (1 / 7.0)
    torch.testing.assert_close(root.diff(), root.diff()[:1].expand(19), rtol=1e-4, atol=0)
    linear = karras_sigmas(20, 0.0291675, 14.614642, rho=1.0)[:-1]
    torch.testing.assert_close(linear.diff(), torch.full((19,), (0.0291675 - 14.614642) / 19), rtol=1e-5, atol=0)
    exp = exponential_sigmas(20, 0.0291675, 14.614642)
    torch.testing.assert_close(polyexponential_sigmas(20, 0.0291675, 14.614642, rho=1.0), exp)
    torch.testing.assert_close(exp[:-1].log().diff(), torch.full((19,), float(exp[:-1].log().diff()[0])))
    vp = vp_sigmas(10)
    assert vp[-1] == 0 and torch.all(vp[:-1].diff() < 0)
    assert float(vp[0]) ** 2 == pytest.approx(math.expm1(19.9 / 2 + 0.1), rel=1e-5)
    laplace = laplace_sigmas(12, 0.0291675, 14.614642)
    assert laplace[-1] == 0 and torch.all(laplace[:-1].diff() <= 0)
    bounds = torch.tensor([0.0291675, 14.614642])
    assert laplace[:-1].max() <= bounds[1] and laplace[:-1].min() >= bounds[0]


def test_sd_turbo_timesteps():
    def at(*timesteps):
        return torch.cat([MS.sigma(torch.tensor(timesteps)), torch.zeros(1)])
    assert torch.equal(sd_turbo_sigmas(MS, 1), at(999))
    assert torch.equal(sd_turbo_sigmas(MS, 4), at(999, 899, 799, 699))
    assert torch.equal(sd_turbo_sigmas(MS, 2, denoise=0.5), at(499, 399))


def test_beta_scheduler_drops_repeated_timesteps():
    sigmas = calculate_sigmas(MS, "beta", 800)  # more steps than distinct rounded timesteps near the ends
    assert len(sigmas) < 801
    assert torch.all(sigmas[:-1].diff() < 0)


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="unknown scheduler"):
        calculate_sigmas(MS, "nope", 10)
