"""ComfyUI seed parity through the NODE path: KSampler on a MODEL handle whose UNet is the reference's
analytic ε model reproduces every sampler_trajectories case (reference README §3.1), so noise from the
seed, σ grids, denoise truncation, first-noise scaling, CFG, latent scaling and the per-step noise of
ancestral / SDE samplers all match ComfyUI's KSampler node. The custom-sampling and advanced nodes are
checked against KSampler runs."""
from __future__ import annotations

from tests.paths import SHARED
import json
from pathlib import Path

import pytest
import torch

from diffusion.noise import prepare_noise
from nodes.sampling import (BasicGuider, BasicScheduler, CFGGuider, DisableNoise, KSampler, KSamplerAdvanced,
                            KSamplerSelect, RandomNoise, SamplerCustom, SamplerCustomAdvanced)

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")  # torchsde tree-end warnings

SEED, STEPS, CFG = 1234, 6, 4.0  # the reference grid's settings
# Runs whose σ grid lands exactly half-way between two training timesteps: which one ComfyUI took depends
# on the last ulp of libm's log (tests/diffusion/test_samplers.py pins them with the reference trace).
TIES = {"dpm_2_ancestral.normal", "dpmpp_2s_ancestral.sgm_uniform"}
# Multistep weights amplify float32 summation-order differences (see tests/diffusion/test_samplers.py).
CASE_TOLERANCE = {"lms.linear_quadratic": 3e-4, "deis.linear_quadratic": 5e-5, "dpmpp_3m_sde.linear_quadratic": 3e-5}
REFERENCE_JSON = SHARED / "reference/vectors/sampler_trajectories.json"
ALL_CASES = json.loads(REFERENCE_JSON.read_text())["cases"] if REFERENCE_JSON.exists() else {}
REQUIRED = {"euler.normal", "euler_ancestral.karras", "dpmpp_2m.normal", "dpmpp_sde.karras"}
# Every sampler (on karras), every scheduler (with euler), every img2img and batch case: the node wiring of
# each piece. tests/diffusion/test_samplers.py checks all 173 cases on the sampler functions themselves.
CASES = sorted(case for case, spec in ALL_CASES.items() if case not in TIES and (
    case in REQUIRED or spec["scheduler"] == "karras" or spec["sampler"] == "euler" or spec["latent"] == "init"
    or spec["batch"] > 1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _ksampler(model, reference, case, rt, **changes):
    spec = reference.cases[case]
    args = dict(model=model, seed=SEED, steps=STEPS, cfg=CFG, sampler_name=spec["sampler"],
                scheduler=spec["scheduler"], positive=reference.positive(), negative=reference.negative(),
                latent_image=reference.latent(case), rt=rt, denoise=spec["denoise"])
    return KSampler().execute(**{**args, **changes})[0]


def test_reference_cases_cover_the_required_set(reference):
    cases = set(CASES)
    assert REQUIRED <= cases
    assert {reference.cases[case]["sampler"] for case in cases} == {spec["sampler"] for spec in ALL_CASES.values()}
    assert {reference.cases[case]["scheduler"] for case in cases} == {spec["scheduler"] for spec in ALL_CASES.values()}
    assert {case for case in cases if case.startswith("img2img_d0.5.")} == {
        f"img2img_d0.5.{s}.{k}" for s in ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde")
        for k in ("normal", "karras")}


@pytest.mark.parametrize("case", CASES)
def test_ksampler_node_reproduces_reference(case, reference, analytic_model, runtime):
    model = analytic_model()
    rt, recorder = runtime()
    spec = reference.cases[case]
    latent = reference.latent(case)
    out = _ksampler(model, reference, case, rt)
    assert _rel(out["samples"], reference.tensors[f"out.{case}.latent_out"]) <= CASE_TOLERANCE.get(case, 1e-5)
    # cond and uncond share one UNet call per model evaluation (cfg 4 ≠ 1)
    calls = model.base.unet.calls
    assert len(calls) == spec["n_model_calls"]
    assert all(x.shape[0] == 2 * latent["samples"].shape[0] for x, _, _ in calls)
    # one progress report per sampler step
    assert [value for value, _, _ in recorder.progress] == list(range(1, spec["n_sigmas"]))
    assert out.keys() == latent.keys() and torch.equal(latent["samples"], reference.latent(case)["samples"])


def test_initial_noise_is_the_reference_noise(reference):
    for case in ("euler.normal", "img2img_d0.5.euler.karras", "batch2.dpmpp_sde.karras"):
        latent = reference.latent(case)["samples"]
        assert torch.equal(prepare_noise(latent, SEED), reference.tensors[f"out.{case}.initial_noise"])


def test_cfg_one_skips_the_negative_prompt(reference, analytic_model, runtime):
    model = analytic_model()
    rt, _ = runtime()
    out = _ksampler(model, reference, "euler.karras", rt, cfg=1.0)
    assert all(x.shape[0] == 1 for x, _, _ in model.base.unet.calls)
    other = _ksampler(analytic_model(), reference, "euler.karras", rt, cfg=1.0,
                      negative=[[torch.full((1, 1, 4), 9.0), {}]])
    assert torch.equal(out["samples"], other["samples"])
    assert not torch.equal(out["samples"], _ksampler(analytic_model(), reference, "euler.karras", rt)["samples"])


def test_batch_index_gives_each_item_its_noise_from_the_full_batch(reference, analytic_model, runtime):
    rt, _ = runtime()
    full = _ksampler(analytic_model(), reference, "euler.karras", rt, latent_image={"samples": torch.zeros(3, 4, 8, 8)})
    second = _ksampler(analytic_model(), reference, "euler.karras", rt,
                       latent_image={"samples": torch.zeros(1, 4, 8, 8), "batch_index": [1]})
    torch.testing.assert_close(second["samples"], full["samples"][1:2], rtol=1e-5, atol=1e-5)
    assert second["batch_index"] == [1]


def test_denoise_zero_returns_the_latent(reference, analytic_model, runtime):
    rt, recorder = runtime()
    latent = reference.latent("img2img_d0.5.euler.normal")
    out = _ksampler(analytic_model(), reference, "img2img_d0.5.euler.normal", rt, denoise=0.0)
    assert torch.equal(out["samples"], latent["samples"]) and recorder.progress == []


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_advanced_split_with_leftover_noise_continues_the_full_run(sampler, reference, analytic_model, runtime):
    """Base to refiner hand-off: steps 0–3 returning leftover noise, then 3–end without new noise, is the
    full run (one noise stream for euler; the ancestral noise restarts in the second half)."""
    rt, _ = runtime()
    common = dict(noise_seed=SEED, steps=STEPS, cfg=CFG, sampler_name=sampler, scheduler="karras",
                  positive=reference.positive(), negative=reference.negative(), rt=rt)
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    first = KSamplerAdvanced().execute(analytic_model(), "enable", latent_image=empty, start_at_step=0, end_at_step=3,
                                       return_with_leftover_noise="enable", **common)[0]
    second = KSamplerAdvanced().execute(analytic_model(), "disable", latent_image=first, start_at_step=3,
                                        end_at_step=10000, return_with_leftover_noise="disable", **common)[0]
    full = _ksampler(analytic_model(), reference, f"{sampler}.karras", rt)
    if sampler == "euler":
        assert _rel(second["samples"], full["samples"]) < 1e-5
    else:
        assert _rel(second["samples"], full["samples"]) > 1e-3
    # without leftover noise the window's last σ becomes 0 (spec §7.3): the first part ends fully denoised
    done = KSamplerAdvanced().execute(analytic_model(), "enable", latent_image=empty, start_at_step=0, end_at_step=3,
                                      return_with_leftover_noise="disable", **common)[0]
    model = analytic_model()
    sigmas = BasicScheduler().execute(model, "karras", STEPS, 1.0)[0][:4].clone()
    sigmas[-1] = 0
    manual, _ = SamplerCustom().execute(model, True, SEED, CFG, reference.positive(), reference.negative(),
                                        KSamplerSelect().execute(sampler)[0], sigmas, empty, rt)
    assert torch.equal(done["samples"], manual["samples"]) and not torch.equal(done["samples"], first["samples"])
    # a start past the end returns the input untouched
    same = KSamplerAdvanced().execute(analytic_model(), "enable", latent_image=first, start_at_step=6,
                                      end_at_step=10000, return_with_leftover_noise="disable", **common)[0]
    assert torch.equal(same["samples"], first["samples"])


def test_advanced_full_window_equals_ksampler(reference, analytic_model, runtime):
    rt, _ = runtime()
    out = KSamplerAdvanced().execute(analytic_model(), "enable", SEED, STEPS, CFG, "dpmpp_sde", "karras",
                                     reference.positive(), reference.negative(), reference.latent("dpmpp_sde.karras"),
                                     0, 10000, "disable", rt)[0]
    assert _rel(out["samples"], reference.tensors["out.dpmpp_sde.karras.latent_out"]) < 1e-5


@pytest.mark.parametrize("case", ["euler_ancestral.karras", "dpmpp_2m_sde.normal", "img2img_d0.5.dpmpp_2m.karras"])
def test_custom_sampling_nodes_match_ksampler(case, reference, analytic_model, runtime):
    rt, recorder = runtime()
    spec = reference.cases[case]
    model = analytic_model()
    sampler = KSamplerSelect().execute(spec["sampler"])[0]
    sigmas = BasicScheduler().execute(model, spec["scheduler"], STEPS, spec["denoise"])[0]
    expected = reference.tensors[f"out.{case}.latent_out"]
    latent = reference.latent(case)
    out, denoised = SamplerCustom().execute(model, True, SEED, CFG, reference.positive(), reference.negative(),
                                            sampler, sigmas, latent, rt)
    assert _rel(out["samples"], expected) < 1e-5
    # the last step's x0 estimate: euler-type last steps land on it exactly
    if spec["sampler"] != "dpmpp_2m_sde":
        assert _rel(denoised["samples"], expected) < 1e-5
    guider = CFGGuider().execute(model, reference.positive(), reference.negative(), CFG)[0]
    noise = RandomNoise().execute(SEED)[0]
    out2, _ = SamplerCustomAdvanced().execute(noise, guider, sampler, sigmas, latent, rt)
    assert torch.equal(out2["samples"], out["samples"])


def test_basic_guider_is_cfg_one_and_disable_noise_starts_from_the_latent(reference, analytic_model, runtime):
    rt, _ = runtime()
    model = analytic_model()
    sampler = KSamplerSelect().execute("euler")[0]
    sigmas = BasicScheduler().execute(model, "karras", STEPS, 1.0)[0]
    latent = reference.latent("img2img_d0.5.euler.karras")
    basic = BasicGuider().execute(model, reference.positive())[0]
    cfg1 = CFGGuider().execute(model, reference.positive(), reference.negative(), 1.0)[0]
    noise = RandomNoise().execute(7)[0]
    a, _ = SamplerCustomAdvanced().execute(noise, basic, sampler, sigmas, latent, rt)
    b, _ = SamplerCustomAdvanced().execute(noise, cfg1, sampler, sigmas, latent, rt)
    assert torch.equal(a["samples"], b["samples"])
    # DisableNoise: x starts at the (scaled) latent itself, as add_noise=False does in SamplerCustom
    quiet, _ = SamplerCustomAdvanced().execute(DisableNoise().execute()[0], basic, sampler, sigmas, latent, rt)
    same, _ = SamplerCustom().execute(model, False, 123, 1.0, reference.positive(), reference.negative(), sampler,
                                      sigmas, latent, rt)
    assert torch.equal(quiet["samples"], same["samples"])
    assert not torch.equal(quiet["samples"], a["samples"])
