"""Samplers: ComfyUI parity on every sampler_trajectories case (reference README §3.1), analytic
checks for all 44 samplers, the KSampler entry point and CFG guidance."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion.guidance import CFGDenoiser, CondEntry, cfg_combine, predict_conds
from diffusion.noise import brownian_noise_sampler, default_noise_sampler, prepare_noise
from diffusion.samplers import SAMPLER_NAMES, SAMPLERS, sa_solver_tau_interval, sample, schedule_defaults
from diffusion.schedules import DiscreteSchedule, karras_sigmas, ksampler_sigmas
from tests.paths import SHARED

VECTORS = SHARED / "reference/vectors"
# torchsde warns on queries at the rounded tree ends; noise.py filters it, but pytest resets filters.
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")
MS = DiscreteSchedule()

SPEC_SAMPLER_NAMES = (  # comfy_api.md §9.0, in order
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
STOCHASTIC = {
    "euler_ancestral", "euler_ancestral_cfg_pp", "exp_heun_2_x0_sde", "dpm_2_ancestral", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
}
DETERMINISTIC = [name for name in SPEC_SAMPLER_NAMES if name not in STOCHASTIC]
BROWNIAN = {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"}


# ---------------------------------------------------------------------------------------------
# ComfyUI parity: sampler_trajectories
# ---------------------------------------------------------------------------------------------

def _reference_cases() -> dict[str, dict]:
    path = VECTORS / "sampler_trajectories.json"
    return json.loads(path.read_text())["cases"] if path.exists() else {}


CASES = _reference_cases()
TOLERANCE = 1e-5  # max |Δ| / max |ref| on latent_out, the vectors' stated bound
# The JSON allows multistep samplers 1e-5..1e-4 of drift from summation order. linear_quadratic
# (three 0.12-wide steps, then 1.7 and 4.7) is where it shows: the LMS weights reach 1.1e4, so the
# 1e-7 float32 differences of d come back ×1e4 (exact or scipy-quad weights alike).
CASE_TOLERANCE = {"lms.linear_quadratic": 3e-4, "deis.linear_quadratic": 5e-5, "dpmpp_3m_sde.linear_quadratic": 3e-5}


@pytest.fixture(scope="module")
def ref():
    if not CASES:
        pytest.skip("reference vectors not available")
    return (load_file(VECTORS / "sampler_trajectories.safetensors"),
            json.loads((VECTORS / "sampler_trajectories.json").read_text()),
            load_file(VECTORS / "sampler_trajectories_trace.safetensors"))


class AnalyticModel:
    """The README's analytic ε model behind ComfyUI's model wrapper, guided by CFGDenoiser:
    ε = M·x_in + (1 − t/1000)·c, x_in = x/√(σ²+1), t the discrete timestep, D = x − σ·ε.

    Timestep ties: a grid σ can sit exactly half-way (in log σ) between two table entries (e.g.
    normal with 7 steps hits t = 166.5), and then one ulp of a sub-step σ, which depends on the
    torch build's log/exp, picks the entry. Only there we take the entry the reference run used,
    so the test measures the sampler maths rather than libm rounding."""

    def __init__(self, tensors, meta, ref_call_sigmas):
        self.m = tensors["in.model_M"]
        self.ref_call_sigmas = ref_call_sigmas
        self.calls: list[tuple[torch.Tensor, float]] = []
        self.ties = 0
        self.cfg = CFGDenoiser(self.predict, [CondEntry(tensors["in.cond_positive"])],
                               [CondEntry(tensors["in.cond_negative"])], meta["cfg"])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        ours = MS.timestep(sigma)
        nearest = (MS.log_sigmas - sigma[:1].log()).abs().topk(2, largest=False).values
        k = len(self.calls) - 1
        if nearest[1] - nearest[0] < 1e-6 and k < len(self.ref_call_sigmas):
            theirs = MS.timestep(self.ref_call_sigmas[k])
            self.ties += int(theirs != ours[0])
            return theirs.expand(sigma.shape)
        return ours

    def predict(self, x, sigma, cond):
        t = self.timestep(sigma).float().view(-1, 1, 1, 1)
        eps = torch.einsum("ij,bjhw->bihw", self.m, MS.calculate_input(sigma, x)) + (1 - t / 1000) * cond[:, 0, :, None, None]
        return MS.calculate_denoised(sigma, eps, x)

    def __call__(self, x, sigma, **extra_args):
        self.calls.append((x.clone(), float(sigma[0])))
        return self.cfg(x, sigma)


class SD15Latent:
    def process_in(self, latent):
        return latent * 0.18215

    def process_out(self, latent):
        return latent / 0.18215


def _run_reference_case(case, tensors, meta, trace, record_noise=False):
    spec = meta["cases"][case]
    latent = tensors["in.init_latent_img2img"] if spec["latent"] == "init" else torch.zeros(spec["batch"], 4, 8, 8)
    noise = prepare_noise(latent, meta["seed"])
    sigmas = ksampler_sigmas(MS, spec["scheduler"], meta["steps"], spec["denoise"], spec["sampler"])
    model = AnalyticModel(tensors, meta, trace[f"{case}.call_sigma"])
    options, pairs = {}, []
    if record_noise:
        shaped = torch.zeros_like(noise)
        inner = (brownian_noise_sampler(shaped, sigmas, meta["seed"]) if spec["sampler"] in BROWNIAN
                 else default_noise_sampler(shaped, meta["seed"]))

        def recorder(sigma, sigma_next):
            pairs.append((float(sigma), float(sigma_next)))
            return inner(sigma, sigma_next)
        options["noise_sampler"] = recorder
    out = sample(model, MS, noise, latent, sigmas, spec["sampler"], seed=meta["seed"], latent_format=SD15Latent(),
                 sampler_options=options)
    return out, model, pairs


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_reference_trajectory(case, ref):
    tensors, meta, trace = ref
    spec = meta["cases"][case]
    out, model, _ = _run_reference_case(case, tensors, meta, trace)

    call_x, call_sigma = trace[f"{case}.call_x"], trace[f"{case}.call_sigma"]
    assert len(model.calls) == spec["n_model_calls"] == len(call_sigma)
    sigmas = torch.tensor([s for _, s in model.calls])
    # sub-step σ's may differ in the last bits; the ancestral σ_down = √(σ'² − σ_up²) of a final
    # step cancels (σ_down ≈ σ'²/σ) and turns that into up to 1.3e-5
    torch.testing.assert_close(sigmas, call_sigma, rtol=2e-5, atol=0)
    for k, (x, _) in enumerate(model.calls):
        # intermediate states: a loose bound, since Brownian noise is not smooth in σ (an ulp of a
        # sub-step σ moves a draw by ~1e-3) and later steps contract such differences again
        assert _rel(x, call_x[k]) < 1e-3, (case, k)
    assert _rel(out, tensors[f"out.{case}.latent_out"]) <= CASE_TOLERANCE.get(case, TOLERANCE)


@pytest.mark.parametrize("case", [case for case, spec in CASES.items() if spec["n_noise_draws"]])
def test_reference_noise_calls(case, ref):
    """The sampler asks its noise source for the same (σ, σ') pairs, in the same order, as
    ComfyUI; and its own default noise source is the one we record with."""
    tensors, meta, trace = ref
    recorded, _, pairs = _run_reference_case(case, tensors, meta, trace, record_noise=True)
    plain, _, _ = _run_reference_case(case, tensors, meta, trace)
    assert torch.equal(recorded, plain)
    torch.testing.assert_close(torch.tensor(pairs), trace[f"{case}.noise_sigma_pair"], rtol=2e-5, atol=0)


def test_reference_ties_are_rare(ref):
    tensors, meta, trace = ref
    tied = [case for case in CASES if _run_reference_case(case, tensors, meta, trace)[1].ties]
    assert set(tied) == {"dpm_2_ancestral.normal", "dpmpp_2s_ancestral.sgm_uniform"}, tied


# ---------------------------------------------------------------------------------------------
# Analytic checks for all 44 samplers
# ---------------------------------------------------------------------------------------------

MU, S = 0.3, 0.5  # data ~ N(μ, s²) per element: the exact denoiser is the posterior mean


def gaussian_denoiser(x, sigma, **extra_args):
    s2 = sigma.view(-1, *[1] * (x.ndim - 1)) ** 2
    return (S ** 2 * x + s2 * MU) / (S ** 2 + s2)


def exact_flow(x_start, sigma_start, sigma):
    """Probability-flow ODE solution for Gaussian data: x − μ scales with √(s² + σ²)."""
    return MU + (x_start - MU) * math.sqrt(S ** 2 + sigma ** 2) / math.sqrt(S ** 2 + sigma_start ** 2)


def _run(name, x, sigmas, model=gaussian_denoiser, seed=5, **options):
    options = {**schedule_defaults(name, MS), **options}
    return SAMPLERS[name](model, x.clone(), sigmas, extra_args={"seed": seed}, **options)


def _start(shape=(2, 4, 8, 8), sigma=14.614642, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * math.sqrt(1 + sigma ** 2)


def test_sampler_names_in_comfyui_order():
    assert SAMPLER_NAMES == SPEC_SAMPLER_NAMES and len(SAMPLER_NAMES) == 44


@pytest.mark.parametrize("name", SPEC_SAMPLER_NAMES)
def test_every_sampler_runs(name):
    sigmas = karras_sigmas(8, 0.0291675, 14.614642)
    x = _start((2, 4, 4, 4))
    seen = []
    out = _run(name, x, sigmas, callback=lambda info: seen.append(info))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, _run(name, x, sigmas))  # reproducible for a seed
    assert seen and [info["i"] for info in seen] == list(range(len(seen)))
    assert set(seen[0]) >= {"x", "i", "sigma", "sigma_hat", "denoised"}
    if name not in ("dpm_fast", "dpm_adaptive"):
        assert len(seen) == len(sigmas) - 1
    if name in STOCHASTIC:
        assert not torch.equal(out, _run(name, x, sigmas, seed=6))
    # the output is the data estimate, not the starting noise (which has std ≈ 14.6)
    assert float(out.std()) < 1.5


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_ode_samplers_exact_for_a_point_mass(name):
    """With D ≡ μ the flow is x(σ) = μ + (x_T − μ)·σ/σ_T, which every consistent solver integrates
    exactly (d and D are constant along it): each reported state lies on that line."""
    sigmas = karras_sigmas(10, 0.0291675, 14.614642)
    x = _start((1, 4, 4, 4))
    states = []
    out = _run(name, x, sigmas, model=lambda x, sigma, **_: torch.full_like(x, MU),
               callback=lambda info: states.append((float(info["sigma"]), info["x"])))
    tol = 2e-3 if name == "deis" else 2e-5  # DEIS integrates its weights with a 10⁴-point rectangle rule
    for sigma, state in states:
        expected = MU + (x - MU) * sigma / float(sigmas[0])
        assert _rel(state, expected) < tol, (name, sigma)
    # DPM-Solver stops at σ_min, UniPC at σ = 0.001
    end = {"dpm_fast": float(sigmas[-2]), "dpm_adaptive": float(sigmas[-2]), "uni_pc": 0.001, "uni_pc_bh2": 0.001}
    expected = MU + (x - MU) * end.get(name, 0.0) / float(sigmas[0])
    torch.testing.assert_close(out, expected, rtol=0, atol=tol * float(x.abs().max()))


# Error ratio when doubling 15 → 30 karras steps from σ_max to σ_min (≈ 2^−order). The grids stop at
# σ_min: a final step to 0 is the same for every step count and would hide the order. Measured:
# Euler-type 0.50, gradient estimation 0.61 (Euler plus a correction that an exact denoiser does not
# need), Heun / 2M / RES / exp-Heun / dpm_2 / iPNDM ≈ 0.23, LMS / DEIS / DPM-fast / UniPC ≤ 0.14.
FIRST_ORDER = {"euler", "euler_cfg_pp", "ddim", "heunpp2", "gradient_estimation", "gradient_estimation_cfg_pp"}
HIGHER_ORDER = {"lms", "ipndm_v", "deis", "dpm_fast", "uni_pc", "uni_pc_bh2"}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_ode_samplers_converge_to_the_exact_flow(name):
    x = _start()
    errors = []
    for steps in (15, 30):
        sigmas = karras_sigmas(steps, 0.0291675, 14.614642)[:-1]
        errors.append(float((_run(name, x, sigmas) - exact_flow(x, float(sigmas[0]), float(sigmas[-1]))).abs().max()))
    assert errors[0] < (0.3 if name in FIRST_ORDER else 0.1), errors  # |x_T| ≈ 50
    if name == "dpm_adaptive":
        return  # it picks its own steps (rtol 0.05); the grid only gives the end points
    ratio = 0.65 if name in FIRST_ORDER else 0.2 if name in HIGHER_ORDER else 0.3
    assert errors[1] < ratio * errors[0], errors


@pytest.mark.parametrize("name", sorted(STOCHASTIC - {"lcm"}))
def test_sde_samplers_sample_the_data_distribution(name):
    """Started from N(0, 1+σ_max²) the SDE samplers must end at data ~ N(μ, s²): too much or too
    little injected noise shows up in the spread."""
    sigmas = karras_sigmas(50, 0.0291675, 14.614642)
    out = _run(name, _start((2, 4, 32, 32)), sigmas, seed=7)
    assert abs(float(out.mean()) - MU) < 0.03
    assert abs(float(out.std()) - S) < 0.045


def _ddpm_std(sigma, sigma_next):
    ac, ac_next = 1 / (1 + sigma ** 2), 1 / (1 + sigma_next ** 2)
    alpha = ac / ac_next
    return math.sqrt((1 - alpha) * (1 - ac_next) / (1 - ac)) * math.sqrt(1 + sigma_next ** 2)


def _er_sde_std(sigma, sigma_next):
    f = lambda v: v * (math.exp(v ** 0.3) + 10)  # noqa: E731
    return math.sqrt(sigma_next ** 2 - sigma ** 2 * (f(sigma_next) / f(sigma)) ** 2)


# η = 1 posterior std of one step σ → σ': σ'·√(1 − σ'²/σ²) = σ'·√(1 − e^{−2h}) for all of these
ONE_STEP_STD = {name: None for name in STOCHASTIC - {"sa_solver", "sa_solver_pece"}}
ONE_STEP_STD.update(ddpm=_ddpm_std, er_sde=_er_sde_std, lcm=lambda sigma, sigma_next: sigma_next)


@pytest.mark.parametrize("name", sorted(ONE_STEP_STD))
def test_sde_step_injects_the_exact_noise_variance(name):
    """With D ≡ μ and x = μ the deterministic part of a step stays at μ, so what comes out is the
    injected noise alone. Multi-stage samplers (dpmpp_sde, SEEDS) must compose their sub-step
    noises into exactly the one-step variance."""
    sigma, sigma_next = 6.0, 2.0
    x = torch.full((1, 4, 256, 256), MU)  # 262k draws: the std estimate is good to 0.14 %
    out = _run(name, x, torch.tensor([sigma, sigma_next]), model=lambda x, s, **_: torch.full_like(x, MU), seed=3)
    expected = (ONE_STEP_STD[name] or (lambda a, b: b * math.sqrt(1 - b ** 2 / a ** 2)))(sigma, sigma_next)
    assert float((out - MU).std()) == pytest.approx(expected, rel=0.005)
    assert abs(float((out - MU).mean())) < 0.01 * expected


@pytest.mark.parametrize("name, fractions", [("seeds_2", (0.5, 1.0)), ("seeds_3", (1 / 3, 2 / 3, 1.0)),
                                             ("exp_heun_2_x0_sde", (1.0, 1.0))])
def test_seeds_stage_noises_lie_on_one_brownian_path(name, fractions):
    """Each stage continues the previous stage's noise: decayed by e^{−Δλ}, plus fresh noise for
    the new segment. With constant draws z_k = k the final noise is known in closed form."""
    sigma, sigma_next = 6.0, 2.0
    h = math.log(sigma / sigma_next)
    calls = []

    def counting_noise(s, s_next):
        calls.append((float(s), float(s_next)))
        return torch.full((1, 1, 1, 1), float(len(calls)))
    out = _run(name, torch.full((1, 1, 1, 1), MU), torch.tensor([sigma, sigma_next]),
               model=lambda x, s, **_: torch.full_like(x, MU), noise_sampler=counting_noise)
    path, start = 0.0, 0.0
    for k, r in enumerate(fractions, start=1):
        length = (r - start) * h
        path = path * math.exp(-length) + math.sqrt(-math.expm1(-2 * length)) * k
        start = r
    assert len(calls) == len(fractions)
    assert calls[0][0] == sigma and calls[-1][1] == pytest.approx(sigma_next)
    assert float(out - MU) == pytest.approx(sigma_next * path, rel=1e-5)


def test_stochastic_variants_without_noise_are_their_ode_solvers():
    sigmas = karras_sigmas(12, 0.0291675, 14.614642)
    x = _start()
    # sa_solver with τ = 0 is deterministic Adams and converges like the ODE samplers
    torch.testing.assert_close(_run("sa_solver", x, sigmas, tau_func=lambda s: 0.0, seed=1),
                               _run("sa_solver", x, sigmas, tau_func=lambda s: 0.0, seed=2))
    ode = _run("sa_solver", x, karras_sigmas(40, 0.0291675, 14.614642), tau_func=lambda s: 0.0)
    assert float((ode - exact_flow(x, 14.614642, 0.0)).abs().max()) < 0.02
    # ER-SDE with f(λ) = λ has no noise term: the ODE
    er_ode = _run("er_sde", x, karras_sigmas(40, 0.0291675, 14.614642), noise_scaler=lambda v: v)
    assert float((er_ode - exact_flow(x, 14.614642, 0.0)).abs().max()) < 0.02
    # η = 0 / s_noise = 0 turn the ancestral and SDE samplers into their deterministic counterparts
    torch.testing.assert_close(_run("euler_ancestral", x, sigmas, eta=0.0), _run("euler", x, sigmas))
    torch.testing.assert_close(_run("exp_heun_2_x0_sde", x, sigmas, eta=0.0), _run("exp_heun_2_x0", x, sigmas))
    torch.testing.assert_close(_run("dpmpp_2m_sde", x, sigmas, eta=0.0), _run("dpmpp_2m", x, sigmas), rtol=1e-4, atol=1e-4)


CFG_PP_PAIRS = [("euler_cfg_pp", "euler"), ("euler_ancestral_cfg_pp", "euler_ancestral"),
                ("dpmpp_2s_ancestral_cfg_pp", "dpmpp_2s_ancestral"), ("dpmpp_2m_cfg_pp", "dpmpp_2m"),
                ("res_multistep_cfg_pp", "res_multistep"), ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
                ("gradient_estimation_cfg_pp", "gradient_estimation")]


@pytest.mark.parametrize("cfg_pp, base", CFG_PP_PAIRS)
def test_cfg_pp_without_guidance_is_the_base_sampler(cfg_pp, base):
    sigmas = karras_sigmas(10, 0.0291675, 14.614642)
    x = _start()
    torch.testing.assert_close(_run(cfg_pp, x, sigmas), _run(base, x, sigmas), rtol=1e-5, atol=1e-4)


def _two_prompt_denoiser(cfg, calls=None):
    def predict(x, sigma, cond):
        if calls is not None:
            calls.append(cond)
        return gaussian_denoiser(x, sigma) + cond
    return CFGDenoiser(predict, [CondEntry(0.5)], [CondEntry(-0.25)], cfg)


def test_cfg_pp_renoises_with_the_unconditional_prediction():
    sigmas = torch.tensor([10.0, 4.0])
    x = _start(sigma=10.0)
    model = _two_prompt_denoiser(2.0)
    sigma_b = sigmas[0].expand(x.shape[0])
    guided, uncond = model.with_uncond(x, sigma_b)
    torch.testing.assert_close(guided, gaussian_denoiser(x, sigma_b) - 0.25 + 2.0 * 0.75)
    expected = guided + (x - uncond) / sigmas[0] * sigmas[1]
    torch.testing.assert_close(_run("euler_cfg_pp", x, sigmas, model=model), expected)
    # cfg++ evaluates both branches even at cfg 1
    calls = []
    _run("euler_cfg_pp", x, sigmas, model=_two_prompt_denoiser(1.0, calls))
    assert sorted(calls) == [-0.25, 0.5]


def test_variant_names():
    sigmas = karras_sigmas(6, 0.0291675, 14.614642)
    x = _start()
    for gpu, cpu in [("dpmpp_sde_gpu", "dpmpp_sde"), ("dpmpp_2m_sde_gpu", "dpmpp_2m_sde"),
                     ("dpmpp_2m_sde_heun_gpu", "dpmpp_2m_sde_heun"), ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde")]:
        assert torch.equal(_run(gpu, x, sigmas), _run(cpu, x, sigmas))  # same tree when x is on the CPU
    assert torch.equal(_run("ddim", x, sigmas), _run("euler", x, sigmas))
    assert not torch.equal(_run("dpmpp_2m_sde_heun", x, sigmas), _run("dpmpp_2m_sde", x, sigmas))
    # a single step is too short for UniPC's order min(3, len−2) = 0: it falls back to first order
    one_step = _run("uni_pc", x, sigmas[:2])
    assert torch.isfinite(one_step).all() and float(one_step.std()) < float(x.std())


def test_model_call_budgets():
    sigmas = karras_sigmas(9, 0.0291675, 14.614642)
    x = _start((1, 4, 4, 4))

    def count(name, **options):
        calls = []
        _run(name, x, sigmas, model=lambda x, s, **_: calls.append(1) or gaussian_denoiser(x, s), **options)
        return len(calls)
    assert count("dpm_fast") == 9  # DPM-Solver-fast spends exactly len(sigmas) − 1 calls
    assert count("heun") == count("dpm_2") == count("exp_heun_2_x0") == 17  # 2 per step, 1 for the last
    assert count("seeds_3") == 25 and count("sa_solver") == 9 and count("sa_solver_pece") == 17
    assert count("uni_pc") == 9  # the corrector reuses the next step's model call


def test_sa_solver_sde_window():
    tau = schedule_defaults("sa_solver", MS)["tau_func"]
    hi, lo = MS.percent_to_sigma(0.2), MS.percent_to_sigma(0.8)
    assert tau(torch.tensor(hi * 1.01)) == 0.0 and tau(torch.tensor(lo * 0.99)) == 0.0
    assert tau(torch.tensor((hi + lo) / 2)) == 1.0
    assert sa_solver_tau_interval(10.0, 1.0, eta=0.0)(torch.tensor(5.0)) == 0.0
    assert schedule_defaults("euler", MS) == {}


# ---------------------------------------------------------------------------------------------
# The KSampler entry point
# ---------------------------------------------------------------------------------------------

def test_sample_empty_grid_returns_the_latent():
    latent = torch.ones(1, 4, 4, 4)
    assert sample(gaussian_denoiser, MS, torch.zeros_like(latent), latent, torch.zeros(0), "euler", seed=0) is latent
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(gaussian_denoiser, MS, latent, latent, torch.ones(2), "nope", seed=0)


def test_sample_start_and_latent_format():
    sigmas = ksampler_sigmas(MS, "karras", 3)
    noise = prepare_noise(torch.zeros(1, 4, 4, 4), 3)
    starts = []

    def model(x, sigma, **extra_args):
        starts.append(x.clone())
        assert extra_args["seed"] == 3
        return torch.zeros_like(x)
    sample(model, MS, noise, torch.zeros(1, 4, 4, 4), sigmas, "euler", seed=3, latent_format=SD15Latent())
    torch.testing.assert_close(starts[0], noise * math.sqrt(1 + float(sigmas[0]) ** 2))  # max_denoise scaling
    starts.clear()
    latent = torch.ones(1, 4, 4, 4)
    partial = ksampler_sigmas(MS, "karras", 3, denoise=0.5)
    out = sample(model, MS, noise, latent, partial, "euler", seed=3, latent_format=SD15Latent())
    torch.testing.assert_close(starts[0], noise * partial[0] + 0.18215)  # img2img: σ₀·noise + scaled latent
    torch.testing.assert_close(out, torch.zeros_like(out))  # the model's x0 = 0, scaled back


def test_sample_callback_and_interrupt():
    sigmas = ksampler_sigmas(MS, "normal", 5)
    noise = prepare_noise(torch.zeros(1, 4, 4, 4), 1)
    seen = []
    sample(gaussian_denoiser, MS, noise, torch.zeros_like(noise), sigmas, "dpmpp_2m", seed=1,
           callback=lambda step, denoised, x, total: seen.append((step, total, denoised.shape, x.shape)))
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] and all(s[1] == 5 for s in seen)

    class Interrupted(Exception):
        pass

    def stop(step, denoised, x, total):
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        sample(gaussian_denoiser, MS, noise, torch.zeros_like(noise), sigmas, "euler_ancestral", seed=1, callback=stop)


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "dpmpp_2m_sde", "euler_cfg_pp", "ddim"])
def test_sample_inpaint_keeps_the_unmasked_latent(name):
    sigmas = ksampler_sigmas(MS, "karras", 6)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    noise = prepare_noise(latent, 9)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1  # regenerate the left half
    inputs = []

    def model(x, sigma, **extra_args):
        inputs.append(x.clone())
        return gaussian_denoiser(x, sigma)
    out = sample(model, MS, noise, latent, sigmas, name, seed=9, denoise_mask=mask)
    torch.testing.assert_close(out[..., 4:], latent[..., 4:], rtol=0, atol=1e-6)
    assert not torch.allclose(out[..., :4], latent[..., :4])
    # the kept half enters each call as the latent noised to σ; "ddim" noises it with seed+1
    kept_noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(10)) if name == "ddim" else noise
    torch.testing.assert_close(inputs[0][..., 4:], (latent + kept_noise * sigmas[0])[..., 4:])


# ---------------------------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------------------------

def test_cfg_skips_the_negative_prompt_at_cfg_1():
    x, sigma = torch.ones(2, 4, 2, 2), torch.full((2,), 3.0)
    calls = []
    out = _two_prompt_denoiser(1.0, calls)(x, sigma)
    assert calls == [0.5]
    torch.testing.assert_close(out, gaussian_denoiser(x, sigma) + 0.5)
    calls.clear()
    out = _two_prompt_denoiser(7.5, calls)(x, sigma)
    assert sorted(calls) == [-0.25, 0.5]
    torch.testing.assert_close(out, gaussian_denoiser(x, sigma) - 0.25 + 7.5 * 0.75)
    assert torch.equal(cfg_combine(torch.tensor(2.0), torch.tensor(1.0), 3.0), torch.tensor(4.0))


def test_masked_conditionings_are_averaged():
    x, sigma = torch.zeros(1, 1, 2, 2), torch.ones(1)
    left = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])

    def predict(x, sigma, cond):
        return torch.full_like(x, cond)
    entries = [CondEntry(1.0, mask=left), CondEntry(5.0, mask=1 - left, strength=0.5), CondEntry(3.0, mask=left)]
    out = predict_conds(predict, x, sigma, entries)
    torch.testing.assert_close(out, torch.tensor([[[[2.0, 5.0], [2.0, 5.0]]]]))  # (1+3)/2 left, 5 right
    # regions no entry covers come out as 0, not NaN
    assert torch.equal(predict_conds(predict, x, sigma, [CondEntry(1.0, mask=left)]), left)
    assert torch.equal(predict_conds(predict, x, sigma, [CondEntry(4.0)]), torch.full_like(x, 4.0))
