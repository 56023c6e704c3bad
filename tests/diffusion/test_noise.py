"""Initial and per-step noise drawn exactly as ComfyUI draws it: torch_cpu_rng (bit-exact), the
reference runs' initial noise, and every noise draw recorded in sampler_trajectories_trace."""

from tests.paths import SHARED
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion.noise import (
    BrownianTreeNoiseSampler, brownian_noise_sampler, cpu_generator, default_noise_sampler, prepare_noise,
)

VECTORS = SHARED / "reference/vectors"
# torchsde warns on queries at the rounded tree ends; noise.py filters it, but pytest resets filters.
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")
BROWNIAN_SAMPLERS = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")


def _load(name):
    if not (VECTORS / f"{name}.safetensors").exists():
        pytest.skip("reference vectors not available")
    meta_path = VECTORS / f"{name}.json"
    return load_file(VECTORS / f"{name}.safetensors"), json.loads(meta_path.read_text())


@pytest.fixture(scope="module")
def rng():
    return _load("torch_cpu_rng")


@pytest.fixture(scope="module")
def trajectories():
    tensors, meta = _load("sampler_trajectories")
    trace, _ = _load("sampler_trajectories_trace")
    return tensors, meta, trace


def test_prepare_noise_bit_exact(rng):
    tensors, meta = rng
    cases = {k: v for k, v in meta["cases"].items() if "sequence" not in k}
    assert len(cases) == 20  # 4 seeds × 5 shapes, both torch code paths (< 16 and ≥ 16 elements)
    for case, spec in cases.items():
        noise = prepare_noise(torch.zeros(spec["shape"]), spec["seed"])
        assert noise.dtype == torch.float32
        assert torch.equal(noise, tensors[f"out.{case}"]), case


def test_ancestral_noise_sequence_bit_exact(rng):
    tensors, _ = rng
    # ComfyUI's ancestral noise for seed 1234: a CPU generator seeded 1235, one randn per call
    sampler = default_noise_sampler(torch.zeros(1, 4, 8, 8), seed=1234)
    draws = torch.stack([sampler(torch.tensor(1.0), torch.tensor(0.5)) for _ in range(3)])
    assert torch.equal(draws, tensors["out.seed1235.sequence3x1x4x8x8"])


def test_spec_golden_values():
    noise = prepare_noise(torch.zeros(1, 4, 64, 64), 0)
    assert noise.flatten()[:4].tolist() == pytest.approx([-1.1258398, -1.1523602, -0.2505786, -0.4338788], abs=1e-7)
    ancestral = default_noise_sampler(torch.zeros(1, 4, 64, 64), seed=0)(torch.tensor(1.0), torch.tensor(0.0))
    assert ancestral.flatten()[:4].tolist() == pytest.approx([-1.5256, -0.7502, -0.6540, -1.6095], abs=1e-4)


def test_seeds_wrap_like_torch():
    assert torch.equal(prepare_noise(torch.zeros(16), 2 ** 32 + 5), prepare_noise(torch.zeros(16), 5))
    # the largest ComfyUI seed: seed + 1 wraps to 0 instead of overflowing torch.manual_seed
    x = torch.zeros(16)
    wrapped = default_noise_sampler(x, seed=2 ** 64 - 1)(torch.tensor(1.0), torch.tensor(0.0))
    assert torch.equal(wrapped, torch.randn(16, generator=torch.Generator().manual_seed(0)))
    assert cpu_generator(2 ** 64 + 3).initial_seed() == 3


def test_batch_index_noise():
    latent = torch.zeros(3, 4, 4, 4)
    generator = torch.Generator().manual_seed(7)
    items = [torch.randn(1, 4, 4, 4, generator=generator) for _ in range(4)]
    picked = prepare_noise(latent, 7, batch_index=[3, 0, 3])
    assert torch.equal(picked, torch.cat([items[3], items[0], items[3]]))
    # without batch_index it is one draw for the whole batch
    assert torch.equal(prepare_noise(latent, 7), torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(7)))


def test_default_sampler_without_seed_uses_global_rng():
    torch.manual_seed(3)
    expected = torch.randn(2, 8)
    torch.manual_seed(3)
    assert torch.equal(default_noise_sampler(torch.zeros(2, 8))(torch.tensor(1.0), torch.tensor(0.5)), expected)


def test_reference_initial_noise(trajectories):
    tensors, meta, _ = trajectories
    stored = [k[len("out."):-len(".initial_noise")] for k in tensors if k.endswith(".initial_noise")]
    assert "euler.normal" in stored and len(stored) >= 12
    for case in stored:
        spec = meta["cases"][case]
        shape = (spec["batch"], 4, 8, 8)
        assert torch.equal(prepare_noise(torch.zeros(shape), meta["seed"]), tensors[f"out.{case}.initial_noise"]), case


def test_reference_noise_draws(trajectories):
    """Replay every noise-sampler call of the reference runs with the recorded (σ, σ') pairs."""
    tensors, meta, trace = trajectories
    checked = 0
    for case, spec in meta["cases"].items():
        if spec["n_noise_draws"] == 0:
            continue
        draws, pairs = trace[f"{case}.noise_draw"], trace[f"{case}.noise_sigma_pair"]
        assert len(draws) == len(pairs) == spec["n_noise_draws"], case
        x = torch.zeros(draws.shape[1:])
        if spec["sampler"] in BROWNIAN_SAMPLERS:
            sampler = brownian_noise_sampler(x, tensors[f"out.{case}.sigmas"], seed=meta["seed"])
            tol = 1e-6  # torchsde in float32; the last bit of the bridge arithmetic differs across torch builds
        else:
            sampler = default_noise_sampler(x, seed=meta["seed"])
            tol = 0.0
        for pair, draw in zip(pairs, draws):
            torch.testing.assert_close(sampler(pair[0], pair[1]), draw, rtol=0, atol=tol, msg=case)
        checked += 1
    assert checked == 79  # every case with ancestral, lcm, ddpm or SDE noise


def _brownian(seed=11, shape=(2, 3)):
    return BrownianTreeNoiseSampler(torch.zeros(shape), 0.03, 14.6, seed=seed)


def test_brownian_noise_is_one_path():
    sampler = _brownian()
    a, b, c = torch.tensor(8.0), torch.tensor(3.0), torch.tensor(0.5)
    whole = sampler(a, c) * math.sqrt(float(a - c))
    parts = sampler(a, b) * math.sqrt(float(a - b)) + sampler(b, c) * math.sqrt(float(b - c))
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-5)  # increments add up
    torch.testing.assert_close(sampler(c, a), -sampler(a, c))  # and change sign with direction
    torch.testing.assert_close(_brownian()(a, b), _brownian()(a, b), rtol=0, atol=0)  # seeded
    assert not torch.equal(_brownian(seed=12)(a, b), _brownian()(a, b))


def test_brownian_noise_is_standard_normal():
    sampler = BrownianTreeNoiseSampler(torch.zeros(64, 64), 0.03, 14.6, seed=1)
    draws = torch.stack([sampler(torch.tensor(s0), torch.tensor(s1)) for s0, s1 in [(14.0, 9.0), (9.0, 1.0), (1.0, 0.1)]])
    assert abs(float(draws.mean())) < 0.03 and abs(float(draws.std()) - 1) < 0.03
    # successive increments of a Brownian path are independent
    assert abs(float((draws[0] * draws[1]).mean())) < 0.03


def test_brownian_device_tree_matches_cpu_tree_on_cpu():
    x = torch.zeros(1, 4, 4, 4)
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    cpu = brownian_noise_sampler(x, sigmas, seed=5, cpu=True)
    dev = brownian_noise_sampler(x, sigmas, seed=5, cpu=False)
    assert torch.equal(cpu(sigmas[0], sigmas[1]), dev(sigmas[0], sigmas[1]))
