"""/object_info shapes of the built-in model-free nodes, compared with ComfyUI's (spec §1.6, §9.5, §9.9)."""
from __future__ import annotations

import json

import pytest

from nodes.primitives import StringConcatenate, PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString, \
    PrimitiveStringMultiline
from nodes.registry import NodeRegistry


@pytest.fixture
def registry(services) -> NodeRegistry:
    registry = NodeRegistry(services)
    registry.load_builtins(("nodes.primitives", "nodes.image", "nodes.mask"))
    return registry


def info(registry: NodeRegistry, name: str) -> dict:
    return json.loads(json.dumps(registry.get(name).object_info()))


def test_save_image_matches_captured_object_info(registry):
    assert info(registry, "SaveImage") == {
        "input": {"required": {"images": ["IMAGE", {"tooltip": "The images to save."}],
                               "filename_prefix": ["STRING", {
                                   "default": "ComfyUI",
                                   "tooltip": "The prefix for the file to save. This may include formatting "
                                              "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                              "to include values from nodes."}]},
                  "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
        "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
        "output": [], "output_is_list": [], "output_name": [],
        "name": "SaveImage", "display_name": "Save Image",
        "description": "Saves the input images to your ComfyUI output directory.",
        "python_module": "nodes", "category": "image", "output_node": True}


def test_empty_image_inputs(registry):
    data = info(registry, "EmptyImage")
    assert data["input"] == {"required": {
        "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
        "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
        "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}]}}
    assert (data["output"], data["category"], data["display_name"]) == (["IMAGE"], "image", "EmptyImage")


def test_image_scale_inputs(registry):
    assert info(registry, "ImageScale")["input"] == {"required": {
        "image": ["IMAGE"],
        "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
        "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
        "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
        "crop": [["disabled", "center"]]}}


def test_pad_for_outpaint_and_composite_inputs(registry):
    pad = info(registry, "ImagePadForOutpaint")
    assert pad["input_order"]["required"] == ["image", "left", "top", "right", "bottom", "feathering"]
    assert pad["input"]["required"]["top"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert pad["input"]["required"]["feathering"] == ["INT", {"default": 40, "min": 0, "max": 16384, "step": 1}]
    assert pad["output"] == ["IMAGE", "MASK"]
    composite = info(registry, "ImageCompositeMasked")
    assert composite["input"]["optional"] == {"mask": ["MASK"]}
    assert composite["input"]["required"]["resize_source"] == ["BOOLEAN", {"default": False}]


def test_load_image_lists_input_images_with_upload_flag(registry, services, write_image):
    write_image(services.folders.input / "b.png", [[0]])
    write_image(services.folders.input / "sub" / "a.jpg", [[[0, 0, 0]]])
    (services.folders.input / "notes.txt").write_text("x")
    data = info(registry, "LoadImage")
    assert data["input"] == {"required": {"image": [["b.png", "sub/a.jpg"], {"image_upload": True}]}}
    assert "hidden" not in data["input"]  # the runtime parameter is never shown to clients
    assert (data["output"], data["display_name"]) == (["IMAGE", "MASK"], "Load Image")


def test_mask_node_inputs(registry):
    grow = info(registry, "GrowMask")
    assert grow["input"]["required"] == {
        "mask": ["MASK"],
        "expand": ["INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}],
        "tapered_corners": ["BOOLEAN", {"default": True}]}
    assert grow["display_name"] == "Grow Mask" and grow["category"] == "mask"
    assert info(registry, "ImageToMask")["input"]["required"]["channel"] == \
        ["COMBO", {"multiselect": False, "options": ["red", "green", "blue", "alpha"]}]
    assert info(registry, "LoadImageMask")["input"]["required"]["channel"] == [["alpha", "red", "green", "blue"]]
    assert info(registry, "ThresholdMask")["input"]["required"]["value"] == \
        ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}]


def test_primitive_inputs(registry):
    assert info(registry, "PrimitiveInt")["input"]["required"]["value"] == \
        ["INT", {"min": -9223372036854775807, "max": 9223372036854775807, "control_after_generate": True}]
    assert info(registry, "PrimitiveStringMultiline")["input"]["required"]["value"] == \
        ["STRING", {"multiline": True}]
    assert info(registry, "StringConcatenate")["input_order"]["required"] == ["string_a", "string_b", "delimiter"]
    names = {n: info(registry, n)["display_name"] for n in
             ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean")}
    assert names == {"PrimitiveInt": "Int", "PrimitiveFloat": "Float", "PrimitiveString": "String",
                     "PrimitiveStringMultiline": "String (Multiline)", "PrimitiveBoolean": "Boolean"}


def test_flags(registry):
    assert info(registry, "ImageBatch").get("deprecated") is True
    assert info(registry, "PreviewImage")["output_node"] is True
    assert "deprecated" not in info(registry, "ImageScale")


def test_all_nodes_registered(registry):
    assert set(registry.schemas) == {
        "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
        "StringConcatenate", "LoadImage", "SaveImage", "PreviewImage", "EmptyImage", "ImageInvert", "ImageScale",
        "ImageScaleBy", "ImagePadForOutpaint", "ImageCrop", "ImageBatch", "RepeatImageBatch", "ImageFromBatch",
        "ImageCompositeMasked", "JoinImageWithAlpha", "LoadImageMask", "SolidMask", "InvertMask", "GrowMask",
        "ThresholdMask", "FeatherMask", "MaskToImage", "ImageToMask"}


def test_primitives_pass_values_through():
    assert PrimitiveInt().execute(-(2 ** 62)) == (-(2 ** 62),)
    assert PrimitiveFloat().execute(1.5) == (1.5,)
    assert PrimitiveString().execute("a") == ("a",)
    assert PrimitiveStringMultiline().execute("a\nb") == ("a\nb",)
    assert PrimitiveBoolean().execute(False) == (False,)
    assert StringConcatenate().execute("a", "b", ", ") == ("a, b",)
    assert StringConcatenate().execute("a", "b") == ("ab",)
