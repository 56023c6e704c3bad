"""Model merging (spec comfy_api.md §9.7): merges are weight patches on a clone of the first model,
so nothing is computed until the merged model is loaded and the inputs' weights stay shared.

Each node adds, for every tensor name the two models share, model2's weight (with model2's own
patches) as a `patcher.ModelWeight` patch with (strength_patch, strength_model):

=====================  ==========================  ====================================
node                   per tensor                  result
=====================  ==========================  ====================================
…MergeSimple           (1 − ratio, ratio)          ratio·W1 + (1 − ratio)·W2
ModelMergeBlocks/SDXL  ratio by name prefix        as Simple, the block's ratio
…MergeAdd              (1, 1)                      W1 + W2
…MergeSubtract         (−m, m)                     m·(W1 − W2)
=====================  ==========================  ====================================

Block ratios go by the longest input name the tensor name starts with (``input`` covers
``input_blocks.*``, ``out`` covers ``output_blocks.*`` and ``out.*``); in ModelMergeBlocks names no input
covers (time / label embeddings) take the ``input`` ratio. CLIP merges skip ``position_ids`` and
``logit_scale``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_management.handles import ClipHandle, ModelHandle
from model_management.patcher import ModelWeight, add_patches, key_patches, originals_of
from nodes.schema import Float, In, Node, Out, Socket

CATEGORY = "advanced/model_merging"
CLIP_SKIPPED = (".position_ids", ".logit_scale")
SDXL_BLOCKS = (("time_embed.", "label_emb.") + tuple(f"input_blocks.{i}" for i in range(9))
               + tuple(f"middle_block.{i}" for i in range(3)) + tuple(f"output_blocks.{i}" for i in range(9))
               + ("out.",))


def _other_weights(handle: Any, skip: tuple[str, ...] = ()) -> dict[str, ModelWeight]:
    return key_patches(handle, originals_of(handle), skip)


def merged(first: Any, second: Any, strength_patch: float, strength_model: float,
           skip: tuple[str, ...] = ()) -> Any:
    """A clone of `first` with every shared tensor of `second` added at (strength_patch, strength_model)."""
    out = first.clone()
    add_patches(out, _other_weights(second, skip), strength_patch, strength_model)
    return out


def _ratio_for(key: str, ratios: Mapping[str, float], default: float) -> float:
    """The ratio of the longest prefix `key` starts with."""
    prefix = max((p for p in ratios if key.startswith(p)), key=len, default=None)
    return default if prefix is None else ratios[prefix]


def merged_by_blocks(model1: ModelHandle, model2: ModelHandle, ratios: Mapping[str, float],
                     default: float) -> ModelHandle:
    """ModelMergeSimple per block: each tensor at the ratio of its name prefix (`default` elsewhere)."""
    groups: dict[float, dict[str, ModelWeight]] = {}
    for key, weight in _other_weights(model2).items():
        groups.setdefault(_ratio_for(key, ratios, default), {})[key] = weight
    out = model1.clone()
    for ratio, weights in groups.items():
        add_patches(out, weights, 1.0 - ratio, ratio)
    return out


def _ratio(name: str) -> In:
    return Float(name, 1.0, min=0.0, max=1.0, step=0.01)


def _multiplier() -> In:
    return Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01)


MODELS = (Socket("MODEL", "model1"), Socket("MODEL", "model2"))
CLIPS = (Socket("CLIP", "clip1"), Socket("CLIP", "clip2"))


class ModelMergeSimple(Node):
    CATEGORY = CATEGORY
    INPUTS = MODELS + (_ratio("ratio"),)
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, ratio: float) -> tuple[ModelHandle]:
        return (merged(model1, model2, 1.0 - ratio, ratio),)


class ModelMergeBlocks(Node):
    CATEGORY = CATEGORY
    INPUTS = MODELS + (_ratio("input"), _ratio("middle"), _ratio("out"))
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, input: float, middle: float,  # noqa: A002
                out: float) -> tuple[ModelHandle]:
        return (merged_by_blocks(model1, model2, {"input": input, "middle": middle, "out": out}, input),)


class ModelMergeSDXL(Node):
    """ModelMergeBlocks over SDXL's blocks: time / label embeddings, input blocks 0–8, middle 0–2,
    output blocks 0–8 and the final layers."""

    CATEGORY = CATEGORY + "/model_specific"
    INPUTS = MODELS + tuple(_ratio(name) for name in SDXL_BLOCKS)
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, **ratios: float) -> tuple[ModelHandle]:
        # "input_blocks.1" must not catch input_blocks.10…: every block name ends at a dot.
        blocks = {name if name.endswith(".") else name + ".": value for name, value in ratios.items()}
        return (merged_by_blocks(model1, model2, blocks, 1.0),)


class ModelMergeSubtract(Node):
    CATEGORY = CATEGORY
    INPUTS = MODELS + (_multiplier(),)
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, multiplier: float) -> tuple[ModelHandle]:
        return (merged(model1, model2, -multiplier, multiplier),)


class ModelMergeAdd(Node):
    CATEGORY = CATEGORY
    INPUTS = MODELS
    OUTPUTS = (Out("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle) -> tuple[ModelHandle]:
        return (merged(model1, model2, 1.0, 1.0),)


class CLIPMergeSimple(Node):
    CATEGORY = CATEGORY
    INPUTS = CLIPS + (_ratio("ratio"),)
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip1: ClipHandle, clip2: ClipHandle, ratio: float) -> tuple[ClipHandle]:
        return (merged(clip1, clip2, 1.0 - ratio, ratio, CLIP_SKIPPED),)


class CLIPMergeSubtract(Node):
    CATEGORY = CATEGORY
    INPUTS = CLIPS + (_multiplier(),)
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip1: ClipHandle, clip2: ClipHandle, multiplier: float) -> tuple[ClipHandle]:
        return (merged(clip1, clip2, -multiplier, multiplier, CLIP_SKIPPED),)


class CLIPMergeAdd(Node):
    CATEGORY = CATEGORY
    INPUTS = CLIPS
    OUTPUTS = (Out("CLIP"),)

    def execute(self, clip1: ClipHandle, clip2: ClipHandle) -> tuple[ClipHandle]:
        return (merged(clip1, clip2, 1.0, 1.0, CLIP_SKIPPED),)


NODE_CLASS_MAPPINGS = {
    "ModelMergeSimple": ModelMergeSimple,
    "ModelMergeBlocks": ModelMergeBlocks,
    "ModelMergeSubtract": ModelMergeSubtract,
    "ModelMergeAdd": ModelMergeAdd,
    "ModelMergeSDXL": ModelMergeSDXL,
    "CLIPMergeSimple": CLIPMergeSimple,
    "CLIPMergeSubtract": CLIPMergeSubtract,
    "CLIPMergeAdd": CLIPMergeAdd,
}
