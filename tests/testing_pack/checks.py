"""Custom validation: multi-type inputs, VALIDATE_INPUTS in its three signatures, a str-subclass type."""
from __future__ import annotations

import torch

from .stubs import constant_image

MULTI = "IMAGE,FLOAT"


class VariantSupport(str):
    """A legacy type trick: "A|B" matches A or B through a custom __ne__ (ComfyUI compares with !=)."""

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, str):
            return True
        return not set(self.split("|")) & set(other.split("|"))

    __hash__ = str.__hash__


def as_image(value: torch.Tensor | float) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else constant_image(value)


class _AverageImagesOrFloats:
    """Shared execution of the validation nodes: the average of two images or constant values."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mix"
    CATEGORY = "Testing/Validation"

    def mix(self, input1: torch.Tensor | float, input2: torch.Tensor | float) -> tuple[torch.Tensor]:
        return ((as_image(input1) + as_image(input2)) / 2,)


class TestCustomValidation1(_AverageImagesOrFloats):
    """Multi-type inputs; named VALIDATE_INPUTS rejects constants that are not floats."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": (MULTI,), "input2": (MULTI,)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input1: object = None, input2: object = None) -> bool | str:
        for value in (input1, input2):
            if value is not None and not isinstance(value, float):
                return f"Invalid type of input: {type(value).__name__}"
        return True


class TestCustomValidation2(_AverageImagesOrFloats):
    """Asks for input_types, which switches off the link type check; rejects linked INTs itself."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": (MULTI,), "input2": (MULTI,)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input1: object, input2: object, input_types: dict) -> bool | str:
        for name, received in input_types.items():
            if received not in ("IMAGE", "FLOAT"):
                return f"{name} must be IMAGE or FLOAT, got {received}"
        return True


class TestCustomValidation3(_AverageImagesOrFloats):
    """Type declared with a str subclass whose __ne__ accepts IMAGE or FLOAT."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        variant = VariantSupport("IMAGE|FLOAT")
        return {"required": {"input1": (variant,), "input2": (variant,)}}


class TestCustomValidation4(_AverageImagesOrFloats):
    """Plain FLOAT inputs; VALIDATE_INPUTS names input1 only, so only input2 keeps its min/max check."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        bounds = {"default": 0.5, "min": 0.0, "max": 1.0}
        return {"required": {"input1": ("FLOAT", bounds), "input2": ("FLOAT", bounds)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input1: float | None) -> bool | str:
        if input1 is not None and input1 < 0:
            return "input1 must not be negative"
        return True


class TestCustomValidation5(_AverageImagesOrFloats):
    """VALIDATE_INPUTS(**kwargs): no min/max checks at all; 7.0 is rejected by the node itself."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        bounds = {"default": 0.5, "min": 0.0, "max": 1.0}
        return {"required": {"input1": ("FLOAT", bounds), "input2": ("FLOAT", bounds)}}

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs: object) -> bool | str:
        if 7.0 in kwargs.values():
            return "the value 7 is forbidden"
        return True


class TestLongCombo:
    """A combo with more options than ComfyUI prints in a validation error."""

    CHOICES = [f"option_{i:02d}" for i in range(25)]

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"choice": (cls.CHOICES,)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "pick"
    CATEGORY = "Testing/Validation"

    def pick(self, choice: str) -> tuple[str]:
        return (choice,)


NODE_CLASS_MAPPINGS = {
    "TestCustomValidation1": TestCustomValidation1,
    "TestCustomValidation2": TestCustomValidation2,
    "TestCustomValidation3": TestCustomValidation3,
    "TestCustomValidation4": TestCustomValidation4,
    "TestCustomValidation5": TestCustomValidation5,
    "TestLongCombo": TestLongCombo,
}
