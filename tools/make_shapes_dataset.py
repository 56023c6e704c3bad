"""Procedural captioned images of one coloured shape on a plain background (training data of the tiny model).

    python tools/make_shapes_dataset.py out.npz [--count 20000] [--seed 0] [--grid grid.png]

Every image is 64×64 RGB: a circle, square or triangle in one of six named colours, centred at a named
position (left / right / top / bottom / center, a few pixels of jitter) on a named background colour,
with the caption "a red circle on the left, blue background". The same seed gives the same images.
Shapes are drawn 4× larger and box-filtered down, so edges are anti-aliased like real photos' edges.

The palette, positions and `shape_mask` are shared with the evaluator (tools/eval_tiny.py), which
classifies generated images against exactly these definitions.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (240, 220, 50), "green": (40, 170, 70),
    "blue": (40, 80, 220), "purple": (140, 60, 190), "white": (245, 245, 245), "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
BACKGROUNDS = ("black", "white", "gray", "blue", "green", "red")
# Shape centre (x, y) in pixels, and how each position reads in a caption.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "center": (32, 32),
}
PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
           "center": "in the center"}
HALF_SIZE = (9.0, 12.0)  # half the side of the shape's bounding box, pixels (uniform)
JITTER = 3.0  # centre offset, pixels (uniform in ±JITTER on each axis)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    position: str
    background: str

    @property
    def caption(self) -> str:
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.shape} {PHRASES[self.position]}, {self.background} background"


def all_scenes() -> list[Scene]:
    """Every combination whose shape colour differs from its background, in a fixed order."""
    return [Scene(*combo) for combo in itertools.product(SHAPES, SHAPE_COLOURS, POSITIONS, BACKGROUNDS)
            if combo[1] != combo[3]]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill: object) -> None:
    """Draw `shape` filling `box` (x0, y0, x1, y1); the triangle points up."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Coverage in [0, 1] of `shape` filling a width×height box exactly, drawn as `render` draws it."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (width * s, height * s), 0)
    _draw(ImageDraw.Draw(canvas), shape, (0, 0, width * s, height * s), 255)
    return np.asarray(canvas.resize((width, height), Image.BOX), dtype=np.float32) / 255.0


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """One 64×64×3 uint8 image of `scene`, with size and position jitter drawn from `rng`."""
    half = rng.uniform(*HALF_SIZE)
    cx, cy = np.asarray(POSITIONS[scene.position]) + rng.uniform(-JITTER, JITTER, size=2)
    s = SUPERSAMPLE
    canvas = Image.new("RGB", (SIZE * s, SIZE * s), PALETTE[scene.background])
    box = (s * (cx - half), s * (cy - half), s * (cx + half), s * (cy + half))
    _draw(ImageDraw.Draw(canvas), scene.shape, box, PALETTE[scene.colour])
    return np.asarray(canvas.resize((SIZE, SIZE), Image.BOX))


def make_dataset(count: int, seed: int = 0) -> tuple[np.ndarray, list[Scene]]:
    """`count` images [N, 64, 64, 3] uint8 and their scenes: every scene in turn (so all appear equally
    often), shuffled, each with its own jitter."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    chosen = [scenes[i % len(scenes)] for i in rng.permutation(count)]
    return np.stack([render(scene, rng) for scene in chosen]), chosen


def grid(images: np.ndarray, columns: int = 8) -> Image.Image:
    """Images side by side, `columns` per row (for a quick look at the data)."""
    rows = -(-len(images) // columns)
    out = np.zeros((rows * SIZE, columns * SIZE, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] = image
    return Image.fromarray(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help=".npz with images [N, 64, 64, 3] uint8 and captions [N]")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, help="also write the first 64 images as a PNG grid")
    args = parser.parse_args(argv)
    images, scenes = make_dataset(args.count, args.seed)
    np.savez_compressed(args.output, images=images, captions=np.array([s.caption for s in scenes]))
    if args.grid:
        grid(images[:64]).save(args.grid)
    print(f"wrote {args.output}: {len(images)} images of {len(all_scenes())} scenes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
