"""Progress per step, latent2rgb previews when the prompt or the server asks for them, and interrupts that
stop sampling within one step — on the node with a recording runtime and through the real executor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion.latent_formats import SD15
from diffusion.preview import latent_preview
from nodes.runtime import InterruptedError_
from nodes.sampling import KSampler

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")  # torchsde tree-end warnings

FACTORS = torch.tensor([[0.3, 0.2, 0.2], [0.1, 0.3, 0.1], [-0.2, 0.1, 0.3], [-0.1, -0.2, -0.4]])
BIAS = torch.tensor([0.1, -0.1, 0.05])
COND = [[torch.tensor([[[0.2, -0.1, 0.3, 0.0]]]), {}]]
UNCOND = [[torch.zeros(1, 1, 4), {}]]


def _ksampler(model, rt, sampler="euler", steps=5, height=6, width=10):
    latent = {"samples": torch.zeros(1, 4, height, width)}
    return KSampler().execute(model, 3, steps, 5.0, sampler, "karras", COND, UNCOND, latent, rt)[0]["samples"]


def test_latent_preview_is_the_rgb_projection_of_the_first_item():
    fmt = SD15.with_rgb(FACTORS, BIAS)
    z = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    pixels = latent_preview(fmt.process_in(z), fmt)
    expected = ((torch.einsum("chw,cr->hwr", z[0], FACTORS) + BIAS + 1) / 2).clamp(0, 1) * 255
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 5, 3)
    assert np.abs(pixels.astype(float) - expected.numpy()).max() <= 0.5 + 1e-4
    assert latent_preview(z, SD15) is None  # a format without factors has no latent2rgb preview


@pytest.mark.parametrize("method", ["latent2rgb", "auto", "taesd"])
def test_previews_each_step(method, analytic_model, runtime):
    fmt = SD15.with_rgb(FACTORS, BIAS)
    rt, recorder = runtime(method)
    out = _ksampler(analytic_model(latent_format=fmt), rt)
    assert [(value, total) for value, total, _ in recorder.progress] == [(k, 5) for k in range(1, 6)]
    for _, _, (kind, image, max_size) in recorder.progress:
        assert (kind, image.size, image.mode, max_size) == ("JPEG", (10, 6), "RGB", 256)
    # euler's last step lands on its x0 estimate: the last preview shows the result
    assert np.array_equal(np.asarray(recorder.progress[-1][2][1]), latent_preview(fmt.process_in(out), fmt))


def test_no_previews_when_off_or_without_factors(analytic_model, runtime):
    rt, recorder = runtime("none")
    _ksampler(analytic_model(latent_format=SD15.with_rgb(FACTORS, BIAS)), rt)
    rt2, recorder2 = runtime("latent2rgb")
    _ksampler(analytic_model(), rt2)
    assert len(recorder.progress) == len(recorder2.progress) == 5
    assert all(preview is None for _, _, preview in recorder.progress + recorder2.progress)


@pytest.mark.parametrize("sampler,calls_per_step", [("euler", 1), ("heun", 2), ("dpmpp_sde", 2)])
@pytest.mark.parametrize("at_call", [1, 4])
def test_interrupt_stops_within_one_step(sampler, calls_per_step, at_call, analytic_model, runtime):
    rt, recorder = runtime()
    model = analytic_model()
    unet = model.base.unet

    def interrupt(count: int) -> None:
        if count == at_call:
            recorder.interrupted = True
    unet.on_call = interrupt
    with pytest.raises(InterruptedError_):
        _ksampler(model, rt, sampler=sampler, steps=8)
    # the step in which the flag was set is the last one that calls the model
    assert at_call <= len(unet.calls) <= at_call + calls_per_step - 1
    assert len(recorder.progress) <= -(-at_call // calls_per_step)


def _txt2img(checkpoint: str, steps: int = 3) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house by a lake", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": steps, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


@pytest.mark.parametrize("server,requested,expected", [
    ("none", None, 0), ("none", "latent2rgb", 3), ("auto", "none", 0), ("auto", "default", 3), ("latent2rgb", "", 3),
])
def test_executor_sends_previews_as_asked(server, requested, expected, app, tiny_models, monkeypatch):
    monkeypatch.setattr(app.ctx.services, "preview_method", server)
    extra = {"force_rerun": True} if requested is None else {"force_rerun": True, "preview_method": requested}
    run = app.run(_txt2img(tiny_models.checkpoint("sd15")), extra)
    assert run.outcome.status == "success"
    sampler_progress = [p for p in run.events("progress") if p["node"] == "5"]
    assert [(p["value"], p["max"]) for p in sampler_progress] == [(1, 3), (2, 3), (3, 3)]
    previews = run.events("preview")
    assert len(previews) == expected
    for data in previews:
        kind, image, max_size = data["preview"]
        assert (data["node_id"], kind, image.size, max_size) == ("5", "JPEG", (8, 6), app.ctx.services.preview_size)


def test_executor_interrupt_during_sampling(app, tiny_models, monkeypatch):
    """POST /interrupt while the UNet runs: the prompt ends interrupted at the next step boundary."""
    from diffusion.unet import UNetModel

    calls = []
    forward = UNetModel.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            app.ctx.interrupt.request()
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(UNetModel, "forward", counting)
    run = app.run(_txt2img(tiny_models.checkpoint("sd15"), steps=20), {"force_rerun": True})
    assert run.outcome.status == "interrupted"
    assert run.outcome.terminal[1]["node_id"] == "5"
    assert len(calls) == 2  # cond and uncond share one call per step: it stopped in step 2 of 20
