"""Lazy inputs, undeclared inputs, IS_CHANGED, node expansion (loops, cycles, mixed returns) and blockers."""
from __future__ import annotations

from collections import deque
from typing import Any

import torch

from nodes.graph_builder import ExecutionBlocker, GraphBuilder, is_link

from .stubs import UNIT, constant_image


class TestLazyMixImages:
    """image1 where mask is 0, image2 where it is 1; only the images the mask needs are evaluated."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image1": ("IMAGE", {"lazy": True}), "image2": ("IMAGE", {"lazy": True}),
                             "mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mix"
    CATEGORY = "Testing/Lazy"

    def check_lazy_status(self, mask: torch.Tensor, image1: torch.Tensor | None = None,
                          image2: torch.Tensor | None = None) -> list[str]:
        needed = []
        if image1 is None and float(mask.min()) < 1.0:
            needed.append("image1")
        if image2 is None and float(mask.max()) > 0.0:
            needed.append("image2")
        return needed

    def mix(self, mask: torch.Tensor, image1: torch.Tensor | None = None,
            image2: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        if float(mask.max()) == 0.0:
            return (image1,)
        if float(mask.min()) == 1.0:
            return (image2,)
        weight = (mask if mask.dim() == 3 else mask.unsqueeze(0)).unsqueeze(-1)
        return (image1 * (1.0 - weight) + image2 * weight,)


class TestVariadicAverage:
    """Averages input1 with every undeclared linked `inputN` it receives through **kwargs."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "average"
    CATEGORY = "Testing/Variadic"

    def average(self, input1: torch.Tensor, **kwargs: torch.Tensor) -> tuple[torch.Tensor]:
        images = [input1, *kwargs.values()]
        return (sum(images) / len(images),)


class TestCustomIsChanged:
    """IS_CHANGED is NaN ("always re-run") when should_change is set, else a constant."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",)}, "optional": {"should_change": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "passthrough"
    CATEGORY = "Testing/IsChanged"

    @classmethod
    def IS_CHANGED(cls, should_change: bool = False, **kwargs: object) -> float | bool:
        return float("nan") if should_change else False

    def passthrough(self, image: torch.Tensor, should_change: bool = False) -> tuple[torch.Tensor]:
        return (image,)


class TestIsChangedWithConstants:
    """IS_CHANGED returns `value` only if it sees its linked `image` as None (as ComfyUI passes it)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",), "value": ("FLOAT", UNIT)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"
    CATEGORY = "Testing/IsChanged"

    @classmethod
    def IS_CHANGED(cls, image: object, value: float) -> float:
        return value if image is None else float("nan")

    def scale(self, image: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return (image * value,)


class TestExecutionBlocker:
    """Passes `input` through, or blocks everything downstream (with a message when verbose)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input": ("*",), "block": ("BOOLEAN",)},
                "optional": {"verbose": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "gate"
    CATEGORY = "Testing/Flow"

    def gate(self, input: object, block: bool, verbose: bool = False) -> tuple[object]:  # noqa: A002 - protocol name
        if not block:
            return (input,)
        return (ExecutionBlocker("Blocked by TestExecutionBlocker" if verbose else None),)


def link_sources(node: dict) -> list[str]:
    return [value[0] for value in node["inputs"].values() if is_link(value)]


def loop_body(dynprompt: Any, open_id: str, close_id: str) -> list[str]:
    """Nodes upstream of the close node that depend on the open node (iterative, in discovery order)."""
    upstream: list[str] = []
    seen = {close_id, open_id}
    queue = deque(link_sources(dynprompt.get_node(close_id)))
    while queue:
        nid = queue.popleft()
        if nid in seen:
            continue
        seen.add(nid)
        upstream.append(nid)
        queue.extend(link_sources(dynprompt.get_node(nid)))
    consumers: dict[str, list[str]] = {}
    for nid in upstream:
        for src in link_sources(dynprompt.get_node(nid)):
            consumers.setdefault(src, []).append(nid)
    body: set[str] = set()
    queue = deque([open_id])
    while queue:
        for nid in consumers.get(queue.popleft(), []):
            if nid not in body:
                body.add(nid)
                queue.append(nid)
    return [nid for nid in upstream if nid in body]


class TestForLoopOpen:
    """Start of a loop body; `remaining` counts the iterations still to run (this one included)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"remaining": ("INT", {"default": 1, "min": 1, "max": 100})},
                "optional": {"initial_value": ("*",)}}

    RETURN_TYPES = ("FLOW_CONTROL", "INT", "*")
    RETURN_NAMES = ("flow_control", "remaining", "value")
    FUNCTION = "open"
    CATEGORY = "Testing/Flow"

    def open(self, remaining: int, initial_value: object = None) -> tuple[str, int, object]:
        return ("for-loop", remaining, initial_value)


class TestForLoopClose:
    """End of a loop body: returns `value`, or expands into one more copy of the body plus itself.

    The open node is found through the raw link, the body through DYNPROMPT and UNIQUE_ID.  Copies
    keep the original's display id as their local id, so the second iteration of `avg` under `close`
    is `close.0.0.avg` and the recursion is `close.0.0.Recurse`.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"flow_control": ("FLOW_CONTROL", {"rawLink": True}),
                             "remaining": ("INT", {"forceInput": True}), "value": ("*",)},
                "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("*",)
    FUNCTION = "close"
    CATEGORY = "Testing/Flow"

    def close(self, flow_control: list, remaining: int, value: object, dynprompt: Any,
              unique_id: str) -> dict | tuple:
        if remaining <= 1:
            return (value,)
        open_id = flow_control[0]
        graph = GraphBuilder()
        copies = {nid: graph.node(dynprompt.get_node(nid)["class_type"], dynprompt.get_display_node_id(nid))
                  for nid in (open_id, *loop_body(dynprompt, open_id, unique_id))}
        copies[unique_id] = graph.node(dynprompt.get_node(unique_id)["class_type"], "Recurse")
        for nid, copy in copies.items():
            copy.set_override_display_id(dynprompt.get_display_node_id(nid))
            for name, given in dynprompt.get_node(nid)["inputs"].items():
                copy.set_input(name, copies[given[0]].out(given[1]) if is_link(given) and given[0] in copies
                               else given)
        copies[open_id].set_input("remaining", remaining - 1)
        copies[open_id].set_input("initial_value", dynprompt.get_node(unique_id)["inputs"]["value"])
        return {"result": (copies[unique_id].out(0),), "expand": graph.finalize()}


class TestDynamicDependencyCycle:
    """Expands into two averages that wait for each other."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": ("IMAGE",), "input2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"
    CATEGORY = "Testing/Expansion"

    def expand(self, input1: torch.Tensor, input2: torch.Tensor) -> dict:
        graph = GraphBuilder()
        first = graph.node("TestVariadicAverage", input1=input1)
        second = graph.node("TestVariadicAverage", input1=first.out(0), input2=input2)
        first.set_input("input2", second.out(0))
        return {"result": (second.out(0),), "expand": graph.finalize()}


class TestMixedExpansionReturns:
    """Per call, by value: a plain tuple (<= 0.1), a {"result"} dict (<= 0.2), or an expansion."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input1": ("FLOAT", UNIT)}}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    FUNCTION = "make"
    CATEGORY = "Testing/Expansion"

    def make(self, input1: float) -> tuple | dict:
        if input1 <= 0.1:
            return (constant_image(input1), constant_image(1.0))
        if input1 <= 0.2:
            return {"result": (constant_image(input1), constant_image(1.0))}
        graph = GraphBuilder()
        value = graph.node("StubConstantImage", value=input1, height=8, width=8, batch_size=1)
        white = graph.node("StubImage", content="WHITE", height=8, width=8, batch_size=1)
        return {"result": (value.out(0), white.out(0)), "expand": graph.finalize()}


class TestParallelSleep:
    """OUTPUT_NODE that expands into three async sleeps feeding one average (they must overlap)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        seconds = ("FLOAT", {"default": 0.1, "min": 0.0, "max": 60.0})
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",), "image3": ("IMAGE",),
                             "sleep1": seconds, "sleep2": seconds, "sleep3": seconds}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Expansion"

    def expand(self, image1: torch.Tensor, image2: torch.Tensor, image3: torch.Tensor,
               sleep1: float, sleep2: float, sleep3: float) -> dict:
        graph = GraphBuilder()
        sleeps = [graph.node("TestSleep", value=image, seconds=seconds)
                  for image, seconds in ((image1, sleep1), (image2, sleep2), (image3, sleep3))]
        average = graph.node("TestVariadicAverage", input1=sleeps[0].out(0), input2=sleeps[1].out(0),
                             input3=sleeps[2].out(0))
        return {"ui": {"sleeps": [sleep1, sleep2, sleep3]}, "result": (average.out(0),),
                "expand": graph.finalize()}


NODE_CLASS_MAPPINGS = {
    "TestLazyMixImages": TestLazyMixImages,
    "TestVariadicAverage": TestVariadicAverage,
    "TestCustomIsChanged": TestCustomIsChanged,
    "TestIsChangedWithConstants": TestIsChangedWithConstants,
    "TestExecutionBlocker": TestExecutionBlocker,
    "TestForLoopOpen": TestForLoopOpen,
    "TestForLoopClose": TestForLoopClose,
    "TestDynamicDependencyCycle": TestDynamicDependencyCycle,
    "TestMixedExpansionReturns": TestMixedExpansionReturns,
    "TestParallelSleep": TestParallelSleep,
}
