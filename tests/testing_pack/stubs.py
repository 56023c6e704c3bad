"""Deterministic sources, small image/scalar operations and output nodes that report what they saw.

Images are ComfyUI-shaped float tensors [B,H,W,C] in 0..1; masks are [B,H,W].  Output nodes put
`int(mean * 255)` of every image into their ui, so tests can assert pixel values without files.
"""
from __future__ import annotations

import time

import torch

SIZE = {"default": 8, "min": 1, "max": 4096}
BATCH = {"default": 1, "min": 1, "max": 64}
UNIT = {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}


def constant_image(value: float, height: int = 8, width: int = 8, batch_size: int = 1) -> torch.Tensor:
    return torch.full((batch_size, height, width, 3), float(value), dtype=torch.float32)


def pixel_values(images: torch.Tensor) -> list[int]:
    """One 0..255 value per batch item; float64 so that exact fractions like 1/16 floor predictably."""
    return [int(float(img.double().mean()) * 255) for img in images]


class StubImage:
    """WHITE, BLACK or seeded NOISE."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"content": (["WHITE", "BLACK", "NOISE"],), "height": ("INT", SIZE),
                             "width": ("INT", SIZE), "batch_size": ("INT", BATCH)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, content: str, height: int, width: int, batch_size: int) -> tuple[torch.Tensor]:
        if content == "NOISE":
            generator = torch.Generator().manual_seed(0)
            return (torch.rand((batch_size, height, width, 3), generator=generator),)
        return (constant_image(1.0 if content == "WHITE" else 0.0, height, width, batch_size),)


class StubConstantImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", UNIT), "height": ("INT", SIZE), "width": ("INT", SIZE),
                             "batch_size": ("INT", BATCH)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: float, height: int, width: int, batch_size: int) -> tuple[torch.Tensor]:
        return (constant_image(value, height, width, batch_size),)


class StubMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", UNIT), "height": ("INT", SIZE), "width": ("INT", SIZE),
                             "batch_size": ("INT", BATCH)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: float, height: int, width: int, batch_size: int) -> tuple[torch.Tensor]:
        return (torch.full((batch_size, height, width), float(value), dtype=torch.float32),)


class StubInt:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"default": 0, "min": -10_000, "max": 10_000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: int) -> tuple[int]:
        return (value,)


class StubFloat:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", {"default": 0.0, "min": -10_000.0, "max": 10_000.0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: float) -> tuple[float]:
        return (value,)


class TestIntMath:
    """(a <op> b, a == b); with list inputs it shows the list-mapping rules."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0}),
                             "operation": (["add", "multiply"],)}}

    RETURN_TYPES = ("INT", "BOOLEAN")
    RETURN_NAMES = ("result", "equal")
    FUNCTION = "compute"
    CATEGORY = "Testing/Logic"

    def compute(self, a: int, b: int, operation: str) -> tuple[int, bool]:
        return (a + b if operation == "add" else a * b, a == b)


class TestSaveImage:
    """An output node that reports pixel values instead of writing files."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Outputs"

    def save(self, images: torch.Tensor) -> dict:
        return {"ui": {"values": pixel_values(images)}}


class TestRecord:
    """An output node that records each call's value (or "<none>" when called with no arguments)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}, "optional": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Outputs"

    def record(self, **kwargs: object) -> dict:
        if "value" not in kwargs:
            return {"ui": {"value": ["<none>"]}}
        value = kwargs["value"]
        if isinstance(value, torch.Tensor):
            value = pixel_values(value)
        return {"ui": {"value": [value]}}


class TestOutputNodeWithSocketOutput:
    """OUTPUT_NODE that also feeds downstream nodes: ui and result together."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",), "value": ("FLOAT", UNIT)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "process"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Outputs"

    def process(self, image: torch.Tensor, value: float) -> dict:
        result = image * value
        return {"ui": {"text": [f"scaled by {value}"]}, "result": (result,)}


class TestSlow:
    """Sleeps `seconds` in small steps, then passes its input through (for kill/interrupt tests)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "wait"
    CATEGORY = "Testing/Timing"

    def wait(self, value: object, seconds: float) -> tuple[object]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.02, left))
        return (value,)


class TestSyncError:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Errors"

    def fail(self, value: object) -> tuple[object]:
        raise ValueError("sync failure requested by TestSyncError")


NODE_CLASS_MAPPINGS = {
    "StubImage": StubImage,
    "StubConstantImage": StubConstantImage,
    "StubMask": StubMask,
    "StubInt": StubInt,
    "StubFloat": StubFloat,
    "TestIntMath": TestIntMath,
    "TestSaveImage": TestSaveImage,
    "TestRecord": TestRecord,
    "TestOutputNodeWithSocketOutput": TestOutputNodeWithSocketOutput,
    "TestSlow": TestSlow,
    "TestSyncError": TestSyncError,
}
