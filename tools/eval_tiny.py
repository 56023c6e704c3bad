"""Check what the tiny shapes model draws: generate through the node graph, classify with plain image analysis.

    python tools/eval_tiny.py [--checkpoint FILE] [--prompts 20] [--seeds 4] [--steps N --cfg X ...]

Each image's main blob is found against the background (the median colour of the border), then read
three ways, with no learned classifier:

* colour: the median colour of the blob's core, nearest named shape colour of the dataset's palette;
* position: the centre of the blob's bounding box, nearest named position;
* shape: the best intersection-over-union between the blob and an ideal circle, square and triangle
  drawn in its bounding box (the dataset's own drawing code).

Images are made the way a user makes them: workflows/default.json (CheckpointLoaderSimple, CLIPTextEncode
for the prompt and an empty negative, EmptyLatentImage, KSampler, VAEDecode, SaveImage) queued on a headless
app with the prompt and seed swapped in. The exit status is 0 when every rate meets THRESHOLDS. Tests use
`classify`, `Engine`, `evaluate` and `rates`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.context import Config, build_context  # noqa: E402
from execution.headless import format_errors, load_prompt, output_paths, run_prompt  # noqa: E402
from execution.validate import validate_prompt  # noqa: E402
from tools.make_shapes_dataset import PALETTE, POSITIONS, SHAPE_COLOURS, SHAPES, Scene, grid, shape_mask  # noqa: E402

BORDER = 3  # pixels of frame that define the background colour
MIN_CONTRAST = 0.2  # RGB distance (0–1 scale) below which a pixel is background
MIN_BLOB_PIXELS = 16
# Acceptance of issue #6 (fraction correct over PROMPTS × 4 seeds).
THRESHOLDS = {"colour": 0.90, "position": 0.80, "shape": 0.70}


@dataclass(frozen=True)
class Reading:
    """What an image shows; None fields when no blob stands out from the background."""

    colour: str | None
    position: str | None
    shape: str | None


def _nearest(value: np.ndarray, options: dict[str, np.ndarray]) -> str:
    return min(options, key=lambda name: float(np.sum((options[name] - value) ** 2)))


def _shape_of(mask: np.ndarray) -> str:
    """The ideal shape drawn in the mask's bounding box that overlaps it best (IoU)."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]

    def iou(shape: str) -> float:
        ideal = shape_mask(shape, crop.shape[1], crop.shape[0]) >= 0.5
        return float((ideal & crop).sum() / (ideal | crop).sum())
    return max(SHAPES, key=iou)


def classify(image: np.ndarray) -> Reading:
    """Read the main blob of an RGB image [H, W, 3] with values in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)[..., :3]
    frame = np.concatenate([image[:BORDER].reshape(-1, 3), image[-BORDER:].reshape(-1, 3),
                            image[:, :BORDER].reshape(-1, 3), image[:, -BORDER:].reshape(-1, 3)])
    distance = np.linalg.norm(image - np.median(frame, axis=0), axis=-1)
    if distance.max() < MIN_CONTRAST:
        return Reading(None, None, None)
    # Half the strongest contrast splits anti-aliased (or blurred) edges where the drawing would.
    labels, count = ndimage.label(distance >= max(MIN_CONTRAST, 0.5 * distance.max()))
    sizes = ndimage.sum_labels(np.ones_like(distance), labels, range(1, count + 1))
    if sizes.max() < MIN_BLOB_PIXELS:
        return Reading(None, None, None)
    blob = labels == 1 + int(np.argmax(sizes))
    core = blob & (distance >= 0.75 * distance[blob].max())
    colours = {name: np.asarray(PALETTE[name], np.float32) / 255.0 for name in SHAPE_COLOURS}
    colour = _nearest(np.median(image[core], axis=0), colours)
    ys, xs = np.nonzero(blob)
    centre = np.array([(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2])
    scale = image.shape[1] / 64.0, image.shape[0] / 64.0
    positions = {name: np.asarray(xy, np.float32) * scale for name, xy in POSITIONS.items()}
    return Reading(colour, _nearest(centre, positions), _shape_of(blob))


# -- generating through the engine ----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = REPO / "workflows" / "default.json"
# 20 scenes: every shape six or seven times, every colour, position and background three or four times.
PROMPTS = tuple(Scene(*fields) for fields in (
    ("circle", "red", "left", "blue"), ("square", "green", "right", "white"), ("triangle", "blue", "top", "black"),
    ("circle", "yellow", "bottom", "gray"), ("square", "purple", "center", "green"),
    ("triangle", "orange", "left", "red"), ("circle", "green", "right", "black"), ("square", "blue", "top", "gray"),
    ("triangle", "red", "bottom", "white"), ("circle", "orange", "center", "blue"),
    ("square", "yellow", "left", "black"), ("triangle", "purple", "right", "gray"),
    ("circle", "purple", "top", "white"), ("square", "red", "bottom", "green"),
    ("triangle", "green", "center", "blue"), ("circle", "blue", "left", "red"),
    ("square", "orange", "right", "blue"), ("triangle", "yellow", "top", "green"),
    ("circle", "red", "center", "gray"), ("triangle", "blue", "bottom", "red"),
))
SEEDS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Sample:
    """One generated image, what it was asked to show and what it shows."""

    scene: Scene
    seed: int
    reading: Reading
    image: np.ndarray
    seconds: float  # wall time of the prompt's run

    def correct(self, attribute: str) -> bool:
        return getattr(self.reading, attribute) == getattr(self.scene, attribute)


class Engine:
    """A headless Sumi app (temporary folders) that runs the default workflow with a prompt and seed swapped in.

    `checkpoint` (a file path) is added as the first checkpoints folder; without it the workflow's own
    choice is used, i.e. the bundled model. `overrides` replace KSampler inputs (steps, cfg, ...);
    `device_flags` are main.py's precision flags ({"force_fp32": True}: the fp32 reference everywhere)."""

    def __init__(self, checkpoint: Path | None = None, overrides: dict[str, Any] | None = None,
                 device_flags: dict[str, bool] | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="sumi-eval-")
        config = Config(base_dir=Path(self._folder.name), persistent_queue=False, device_flags=device_flags or {})
        self.ctx = build_context(config, start_worker=False)
        self.prompt, _ = load_prompt(self.ctx, DEFAULT_WORKFLOW)
        sampler = [k for k, node in self.prompt.items() if node["class_type"] == "KSampler"]
        if len(sampler) != 1:
            raise ValueError(f"{DEFAULT_WORKFLOW} should have one KSampler, it has {len(sampler)}")
        self.sampler = sampler[0]
        self.positive = self.prompt[self.sampler]["inputs"]["positive"][0]
        self.prompt[self.sampler]["inputs"].update(overrides or {})
        if checkpoint is not None:
            self.ctx.folders.add_model_path("checkpoints", checkpoint.parent, first=True)
            loader = self.prompt[self.prompt[self.sampler]["inputs"]["model"][0]]
            loader["inputs"]["ckpt_name"] = checkpoint.name

    def close(self) -> None:
        self.ctx.close()
        self._folder.cleanup()

    def generate(self, text: str, seed: int) -> np.ndarray:
        """The saved image [H, W, 3] in [0, 1] of one run of the workflow."""
        prompt = copy.deepcopy(self.prompt)
        prompt[self.positive]["inputs"]["text"] = text
        prompt[self.sampler]["inputs"]["seed"] = seed
        result = validate_prompt(prompt, self.ctx.registry)
        if not result.ok:
            raise ValueError(format_errors(result.body()))
        outcome = run_prompt(self.ctx, prompt, {"client_id": "eval"}, result.outputs)
        if outcome.status != "success":
            raise RuntimeError(f"the workflow did not finish: {outcome.status}")
        (path,) = output_paths(self.ctx, outcome.outputs)
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def evaluate(engine: Engine, scenes: Sequence[Scene] = PROMPTS, seeds: Sequence[int] = SEEDS) -> list[Sample]:
    """Every scene's caption with every seed, classified."""
    samples = []
    for scene in scenes:
        for seed in seeds:
            start = time.perf_counter()
            image = engine.generate(scene.caption, seed)
            samples.append(Sample(scene, seed, classify(image), image, time.perf_counter() - start))
    return samples


def rates(samples: Sequence[Sample]) -> dict[str, float]:
    """Fraction correct per attribute (the keys of THRESHOLDS)."""
    return {attribute: sum(s.correct(attribute) for s in samples) / len(samples) for attribute in THRESHOLDS}


def table(samples: Sequence[Sample]) -> str:
    """One row per prompt (hits out of its seeds), then the totals against the thresholds."""
    rows = [f"{'prompt':<50} {'colour':>6} {'pos':>6} {'shape':>6}"]
    for scene in dict.fromkeys(s.scene for s in samples):
        mine = [s for s in samples if s.scene == scene]
        hits = [f"{sum(s.correct(a) for s in mine)}/{len(mine)}" for a in THRESHOLDS]
        rows.append(f"{scene.caption:<50} {hits[0]:>6} {hits[1]:>6} {hits[2]:>6}")
    for label, values in ((f"total ({len(samples)} images)", rates(samples)), ("required", THRESHOLDS)):
        rows.append(f"{label:<50} " + " ".join(f"{values[a]:>6.0%}" for a in THRESHOLDS))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the workflow's, the bundled one)")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N of the 20 prompts")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--sampler", dest="sampler_name")
    parser.add_argument("--scheduler")
    parser.add_argument("--force-fp32", action="store_true", help="fp32 everywhere (default: main.py's choice)")
    parser.add_argument("--grid", type=Path, help="write the generated images as a PNG grid, one row per prompt")
    args = parser.parse_args(argv)
    overrides = {k: v for k in ("steps", "cfg", "sampler_name", "scheduler") if (v := getattr(args, k)) is not None}
    engine = Engine(args.checkpoint, overrides, {"force_fp32": args.force_fp32})
    try:
        samples = evaluate(engine, PROMPTS[:args.prompts], range(args.seeds))
    finally:
        engine.close()
    print(table(samples))
    times = sorted(s.seconds for s in samples[1:])
    print(f"first image (loads the model): {samples[0].seconds:.2f} s; "
          f"later images: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s" if times else "")
    if args.grid:
        grid(np.stack([(s.image * 255).round().astype(np.uint8) for s in samples]), columns=args.seeds).save(args.grid)
    total = rates(samples)
    return 0 if all(total[a] >= THRESHOLDS[a] for a in THRESHOLDS) else 1


if __name__ == "__main__":
    sys.exit(main())
