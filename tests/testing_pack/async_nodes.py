"""Async FUNCTION, VALIDATE_INPUTS and check_lazy_status, and async failures."""
from __future__ import annotations

import asyncio

from nodes.graph_builder import GraphBuilder


class TestSleep:
    """Awaits `seconds`, then passes `value` through; several of them must overlap."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 60.0})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "Testing/Async"

    async def sleep(self, value: object, seconds: float) -> tuple[object]:
        await asyncio.sleep(seconds)
        return (value,)


class TestAsyncValidation:
    """Async VALIDATE_INPUTS: `value` must not exceed `threshold`."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", {"default": 0.5}), "threshold": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "passthrough"
    CATEGORY = "Testing/Async"

    @classmethod
    async def VALIDATE_INPUTS(cls, value: float, threshold: float) -> bool | str:
        await asyncio.sleep(0)
        return True if value <= threshold else f"value {value} exceeds threshold {threshold}"

    def passthrough(self, value: float, threshold: float) -> tuple[float]:
        return (value,)


class TestAsyncError:
    """Fails after awaiting `delay` seconds."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*",), "delay": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 60.0})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Async"

    async def fail(self, value: object, delay: float) -> tuple[object]:
        await asyncio.sleep(delay)
        raise RuntimeError("async failure requested by TestAsyncError")


class TestAsyncTimeout:
    """An operation of `operation_time` seconds under a `timeout`; a timeout is reported as an error."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        seconds = ("FLOAT", {"default": 0.1, "min": 0.0, "max": 60.0})
        return {"required": {"value": ("*",), "timeout": seconds, "operation_time": seconds}}

    RETURN_TYPES = ("*",)
    FUNCTION = "run"
    CATEGORY = "Testing/Async"

    async def run(self, value: object, timeout: float, operation_time: float) -> tuple[object]:
        try:
            await asyncio.wait_for(asyncio.sleep(operation_time), timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(f"operation hit its timeout of {timeout} s") from None
        return (value,)


class TestAsyncLazyCheck:
    """Async check_lazy_status: asks for input1 when condition holds, else for input2."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": ("*", {"lazy": True}), "input2": ("*", {"lazy": True}),
                             "condition": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "select"
    CATEGORY = "Testing/Async"

    async def check_lazy_status(self, condition: bool, input1: object = None, input2: object = None) -> list[str]:
        await asyncio.sleep(0)
        if condition:
            return ["input1"] if input1 is None else []
        return ["input2"] if input2 is None else []

    def select(self, condition: bool, input1: object = None, input2: object = None) -> tuple[object]:
        return (input1 if condition else input2,)


class TestAsyncExpansion:
    """Awaits first, then expands into a constant image: expansion ids must still name this call."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
                             "delay": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 60.0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"
    CATEGORY = "Testing/Async"

    async def expand(self, value: float, delay: float) -> dict:
        await asyncio.sleep(delay)
        graph = GraphBuilder()
        image = graph.node("StubConstantImage", value=value, height=8, width=8, batch_size=1)
        return {"result": (image.out(0),), "expand": graph.finalize()}


NODE_CLASS_MAPPINGS = {
    "TestSleep": TestSleep,
    "TestAsyncValidation": TestAsyncValidation,
    "TestAsyncError": TestAsyncError,
    "TestAsyncTimeout": TestAsyncTimeout,
    "TestAsyncLazyCheck": TestAsyncLazyCheck,
    "TestAsyncExpansion": TestAsyncExpansion,
}
