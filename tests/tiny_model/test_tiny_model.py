"""The bundled tiny shapes model (issue #6): its file, its data, and what it draws through the real engine.

The generation tests run the shipped default workflow (CheckpointLoaderSimple, CLIPTextEncode,
EmptyLatentImage, KSampler, VAEDecode, SaveImage) through the queue and executor, and read each image with
the evaluator's plain image analysis, so a regression in the sampler, the CLIP path or the VAE shows up as
wrong colours, positions or shapes. The full 20 prompts × 4 seeds evaluation is `python tools/eval_tiny.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from diffusion.checkpoint import read_state_dict
from diffusion.checkpoint_keys import split_checkpoint
from model_management.folders import Folders
from tools.eval_tiny import DEFAULT_WORKFLOW, PROMPTS, Engine, classify, evaluate, rates
from tools.make_shapes_dataset import all_scenes, make_dataset

CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "checkpoints" / "sumi-tiny-shapes.safetensors"
# Prompts 0, 3, 6, ...: every shape, colour and position at least once.
SLICE = PROMPTS[::4] + PROMPTS[1:2]
# A bit below the full evaluation's acceptance (90 / 80 / 70 %), since one image per prompt is noisier.
SLICE_THRESHOLDS = {"colour": 5 / 6, "position": 4 / 6, "shape": 3 / 6}


@pytest.fixture(scope="module", params=["auto", "fp32"])
def engine(request):
    """The precision main.py picks on this machine (a bf16 UNet on CPUs with native bf16), and fp32."""
    engine = Engine(device_flags={"force_fp32": request.param == "fp32"})
    yield engine
    engine.close()


def test_checkpoint_is_a_small_sd1_file_in_the_ldm_layout() -> None:
    assert CHECKPOINT.stat().st_size <= 20 * 2 ** 20
    state_dict = read_state_dict(CHECKPOINT)
    prefixes = {key.split(".")[0] for key in state_dict}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    parts = split_checkpoint(state_dict)
    assert parts.family.name == "sd1" and set(parts.text_encoders) == {"clip_l"} and not parts.unknown
    assert state_dict["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape[0] == 49408


def test_bundled_checkpoint_is_listed_for_a_fresh_base(tmp_path: Path) -> None:
    assert "sumi-tiny-shapes.safetensors" in Folders.create(tmp_path).list_models("checkpoints")


def test_dataset_is_seeded_captioned_and_readable_by_the_evaluator() -> None:
    images, scenes = make_dataset(60, seed=7)
    again, _ = make_dataset(60, seed=7)
    assert images.shape == (60, 64, 64, 3) and images.dtype == np.uint8 and np.array_equal(images, again)
    assert not np.array_equal(images, make_dataset(60, seed=8)[0])
    assert len(all_scenes()) == 3 * 6 * 5 * 6 - 3 * 5 * 3  # shape colour never equals the background
    assert {s.caption for s in all_scenes()} >= {"a red circle on the left, blue background",
                                              "an orange triangle at the top, white background"}
    for image, scene in zip(images, scenes):
        reading = classify(image / 255.0)
        assert (reading.colour, reading.position, reading.shape) == (scene.colour, scene.position, scene.shape)


def test_blank_image_has_no_blob() -> None:
    reading = classify(np.full((64, 64, 3), 0.5))
    assert reading.colour is None and reading.shape is None


def test_generated_images_follow_the_prompt(engine: Engine) -> None:
    samples = evaluate(engine, SLICE, seeds=(0,))
    got = rates(samples)
    assert all(got[a] >= SLICE_THRESHOLDS[a] for a in SLICE_THRESHOLDS), (got, [s.reading for s in samples])
    assert samples[0].image.shape == (64, 64, 3)


def test_main_run_default_workflow_headless(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main.main(["run", str(DEFAULT_WORKFLOW), "--base-directory", str(tmp_path), "--seed", "0"]) == 0
    (path,) = (tmp_path / "output").glob("Sumi_*.png")
    assert str(path) in capsys.readouterr().out
    reading = classify(np.asarray(Image.open(path).convert("RGB")) / 255.0)
    assert (reading.colour, reading.position) == ("red", "left")
