"""List semantics: OUTPUT_IS_LIST makers and INPUT_IS_LIST consumers."""
from __future__ import annotations

import torch


class TestMakeListNode:
    """The given values (value1..value5, in order) as one list output."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}, "optional": {f"value{i}": ("*",) for i in range(1, 6)}}

    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "Testing/Lists"

    def make(self, **values: object) -> tuple[list]:
        return ([values[name] for name in sorted(values)],)


class TestListToAccumulation:
    """INPUT_IS_LIST: receives the whole list in one call and wraps it."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"list": ("*",)}}

    RETURN_TYPES = ("ACCUMULATION",)
    INPUT_IS_LIST = True
    FUNCTION = "wrap"
    CATEGORY = "Testing/Lists"

    def wrap(self, list: list) -> tuple[dict]:  # noqa: A002 - input name
        return ({"accum": [*list]},)


class TestAccumulationToList:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"accumulation": ("ACCUMULATION",)}}

    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "unwrap"
    CATEGORY = "Testing/Lists"

    def unwrap(self, accumulation: dict) -> tuple[list]:
        return (accumulation["accum"],)


class TestImageListToBatch:
    """INPUT_IS_LIST: concatenates a list of image batches into one batch."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    INPUT_IS_LIST = True
    FUNCTION = "batch"
    CATEGORY = "Testing/Lists"

    def batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor]:
        return (torch.cat(images, dim=0),)


NODE_CLASS_MAPPINGS = {
    "TestMakeListNode": TestMakeListNode,
    "TestListToAccumulation": TestListToAccumulation,
    "TestAccumulationToList": TestAccumulationToList,
    "TestImageListToBatch": TestImageListToBatch,
}
