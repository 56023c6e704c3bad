"""Primitive nodes: one constant widget (int, float, string, boolean) as an output, plus string joining.

Their ranges are ComfyUI's (±sys.maxsize), so workflows that feed seeds or sizes through them
validate the same way here.
"""
from __future__ import annotations

import sys

from nodes.schema import Node, Out, Socket


class PrimitiveInt(Node):
    CATEGORY = "utils/primitive"
    INPUTS = (Socket("INT", "value", min=-sys.maxsize, max=sys.maxsize, control_after_generate=True),)
    OUTPUTS = (Out("INT"),)

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    CATEGORY = "utils/primitive"
    INPUTS = (Socket("FLOAT", "value", min=-sys.maxsize, max=sys.maxsize, step=0.1),)
    OUTPUTS = (Out("FLOAT"),)

    def execute(self, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    CATEGORY = "utils/primitive"
    INPUTS = (Socket("STRING", "value", multiline=False),)
    OUTPUTS = (Out("STRING"),)

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(PrimitiveString):
    INPUTS = (Socket("STRING", "value", multiline=True),)


class PrimitiveBoolean(Node):
    CATEGORY = "utils/primitive"
    INPUTS = (Socket("BOOLEAN", "value"),)
    OUTPUTS = (Out("BOOLEAN"),)

    def execute(self, value: bool) -> tuple[bool]:
        return (value,)


class StringConcatenate(Node):
    """string_a + delimiter + string_b."""

    CATEGORY = "utils/string"
    INPUTS = (
        Socket("STRING", "string_a", multiline=True),
        Socket("STRING", "string_b", multiline=True),
        Socket("STRING", "delimiter", default="", multiline=False),
    )
    OUTPUTS = (Out("STRING"),)

    def execute(self, string_a: str, string_b: str, delimiter: str = "") -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


NODE_CLASS_MAPPINGS = {
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
    "PrimitiveString": PrimitiveString,
    "PrimitiveStringMultiline": PrimitiveStringMultiline,
    "PrimitiveBoolean": PrimitiveBoolean,
    "StringConcatenate": StringConcatenate,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)",
    "PrimitiveBoolean": "Boolean",
    "StringConcatenate": "Concatenate",
}
