"""Executor conformance (spec comfy_api.md §4, §5.5, §10.3, §10.4, §10.7), without HTTP.

Every test drives Executor.run through the conftest Runner, which validates first exactly as
POST /prompt does, then records every emitted message.  "Ran" means an `executing` message.
"""
from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execution.context import Config, build_context
from execution.events import Message
from execution.submit import submit
from nodes.graph_builder import GraphBuilder
from nodes.registry import NodeRegistry

if TYPE_CHECKING:
    from conftest import Result, Runner


def image(g: GraphBuilder, content: str = "WHITE", **kw: object):
    return g.node("StubImage", content=content, height=8, width=8, batch_size=1, **kw)


def constant(g: GraphBuilder, value: float):
    return g.node("StubConstantImage", value=value, height=8, width=8, batch_size=1)


def mask(g: GraphBuilder, value: float):
    return g.node("StubMask", value=value, height=8, width=8, batch_size=1)


def save(g: GraphBuilder, source: list, **kw: object):
    return g.node("TestSaveImage", images=source, **kw)


def lazy_mix_graph(g: GraphBuilder, mask_value: float) -> dict[str, str]:
    black, white = image(g, "BLACK"), image(g, "WHITE")
    m = mask(g, mask_value)
    mix = g.node("TestLazyMixImages", image1=black.out(0), image2=white.out(0), mask=m.out(0))
    out = save(g, mix.out(0))
    return {"black": black.id, "white": white.id, "mask": m.id, "mix": mix.id, "out": out.id}


def merged_states(result: Result) -> dict[str, dict]:
    """Latest progress_state entry per node (Sumi sends only the changed node, ComfyUI all of them)."""
    states: dict[str, dict] = {}
    for data in result.events("progress_state"):
        states.update(data["nodes"])
    return states


def node_states(result: Result) -> list[tuple[str, str]]:
    """(node, state) changes in order, from the progress_state messages."""
    seen: dict[str, str] = {}
    changes = []
    for data in result.events("progress_state"):
        for nid, entry in data["nodes"].items():
            if seen.get(nid) != entry["state"]:
                seen[nid] = entry["state"]
                changes.append((nid, entry["state"]))
    return changes


# ------------------------------------------------------------------ message sequences

def test_first_run_message_sequence(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    out1, out2 = save(g, src.out(0)), g.node("TestRecord", value=src.out(0))
    result = runner.run(g)
    pid = result.prompt_id

    assert result.status == "success"
    skeleton = [(e, d.get("node")) for e, d in result.sequence if e != "progress_state"]
    assert skeleton == [("execution_start", None), ("execution_cached", None),
                        ("executing", src.id), ("executing", out1.id), ("executed", out1.id),
                        ("executing", out2.id), ("executed", out2.id), ("execution_success", None)]
    cached = result.events("execution_cached")[0]
    assert (cached["nodes"], cached["prompt_id"], type(cached["timestamp"])) == ([], pid, int)
    # progress_state(running) immediately precedes each executing message
    for index, (event, data) in enumerate(result.sequence):
        if event == "executing":
            before, state = result.sequence[index - 1]
            assert before == "progress_state" and state["nodes"][data["node"]]["state"] == "running"
    assert result.events("executing")[0] == {"node": src.id, "display_node": src.id, "prompt_id": pid}
    assert result.events("executed")[0] == {"node": out1.id, "display_node": out1.id, "output": {"values": [255]},
                                            "prompt_id": pid}
    # every node goes running -> finished; entries carry the identity fields
    assert node_states(result) == [(src.id, "running"), (src.id, "finished"), (out1.id, "running"),
                                   (out1.id, "finished"), (out2.id, "running"), (out2.id, "finished")]
    assert merged_states(result)[src.id] == {
        "value": 1.0, "max": 1.0, "state": "finished", "node_id": src.id, "prompt_id": pid,
        "display_node_id": src.id, "parent_node_id": None, "real_node_id": src.id}
    # the executor never emits the terminal message itself; the worker sends it after writing history
    assert all(event != "execution_success" for event, _ in result.emitted)
    assert result.outcome.terminal[0] == "execution_success"
    assert set(result.outcome.terminal[1]) == {"prompt_id", "timestamp"}


def test_history_fields_of_run_outcome(runner: Runner, g: GraphBuilder) -> None:
    src = constant(g, 0.5)
    out = save(g, src.out(0))
    result = runner.run(g)
    outcome = result.outcome
    assert [event for event, _ in outcome.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert all(isinstance(data["timestamp"], int) for _, data in outcome.messages)
    assert outcome.outputs == {out.id: {"values": [127]}}
    assert outcome.meta == {out.id: {"node_id": out.id, "display_node": out.id, "parent_node": None,
                                     "real_node_id": out.id}}
    assert outcome.executed == [src.id, out.id]
    assert json.loads(json.dumps(outcome.outputs)) == outcome.outputs


def test_outputs_and_async_nodes_are_picked_first(runner: Runner, g: GraphBuilder) -> None:
    """Spec §4.3: ready output nodes run before other ready nodes; outputs in the order given."""
    src = image(g)
    save_a, save_b = save(g, src.out(0)), g.node("TestRecord", value=src.out(0))
    result = runner.run(g, outputs=[save_b.id, save_a.id])
    assert result.ran == [src.id, save_b.id, save_a.id]


def test_output_reuse(runner: Runner, g: GraphBuilder) -> None:
    """One source, two identical output nodes: both report their image (the second from the cache)."""
    src = image(g)
    first, second = save(g, src.out(0)), save(g, src.out(0))
    result = runner.run(g)
    assert result.outcome.outputs == {first.id: {"values": [255]}, second.id: {"values": [255]}}
    assert result.ran == [src.id, first.id]


def test_invalid_output_does_not_stop_the_valid_one(runner: Runner, g: GraphBuilder) -> None:
    good = save(g, image(g).out(0))
    bad = save(g, ["missing-node", 0])
    result = runner.run(g)
    assert list(result.validation.node_errors) == [bad.id]
    assert result.status == "success" and list(result.outcome.outputs) == [good.id]


def test_output_node_with_socket_output(runner: Runner, g: GraphBuilder) -> None:
    both = g.node("TestOutputNodeWithSocketOutput", image=image(g).out(0), value=0.5)
    out = save(g, both.out(0))
    result = runner.run(g)
    assert result.ui(both.id) == {"text": ["scaled by 0.5"]}
    assert result.values(out.id) == [127]
    assert result.validation.outputs == [both.id, out.id]


# ------------------------------------------------------------------ caching across prompts

def test_identical_resubmission(cache_runner: Runner, g: GraphBuilder) -> None:
    nodes = lazy_mix_graph(g, 0.0)
    first = cache_runner.run(g)
    second = cache_runner.run(g)
    caching = cache_runner.executor.policy.kind != "none"
    assert first.values(nodes["out"]) == second.values(nodes["out"]) == [0]
    if not caching:
        assert second.ran == first.ran and second.cached == []
        return
    assert second.ran == []
    # everything that ran is cached; the unneeded lazy source never ran, so it is not
    assert set(second.cached) == {nodes["black"], nodes["mask"], nodes["mix"], nodes["out"]}
    assert second.events("executed") == [{"node": nodes["out"], "display_node": nodes["out"],
                                          "output": {"values": [0]}, "prompt_id": second.prompt_id}]
    assert node_states(second) == [(nodes["out"], "finished")]
    assert second.events("progress_state")[0]["nodes"][nodes["out"]]["value"] == 1
    assert second.outcome.outputs == first.outcome.outputs


def test_partial_cache_reruns_exactly_the_downstream_cone(cache_runner: Runner, g: GraphBuilder) -> None:
    nodes = lazy_mix_graph(g, 0.0)
    cache_runner.run(g)
    g.lookup_node(nodes["mask"].removeprefix("t.")).set_input("value", 1.0)
    second = cache_runner.run(g)
    assert second.values(nodes["out"]) == [255]
    if cache_runner.executor.policy.kind == "none":
        assert set(second.ran) == {nodes["mask"], nodes["mix"], nodes["white"], nodes["out"]}
        return
    # black is cached, white was never needed before, the mask and its cone re-run
    assert second.ran == [nodes["mask"], nodes["mix"], nodes["white"], nodes["mix"], nodes["out"]]
    assert nodes["black"] in second.cached


def test_force_rerun_runs_everything_and_refreshes_the_cache(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    out = save(g, src.out(0))
    runner.run(g)
    forced = runner.run(g, extra={"force_rerun": True})
    assert forced.ran == [src.id, out.id]
    assert forced.cached == []
    assert runner.run(g).ran == []


def test_per_request_cache_policy(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    out = save(g, src.out(0))
    assert runner.run(g, extra={"cache_policy": "none"}).ran == [src.id, out.id]
    # nothing survived the "none" request, so the default (classic) run executes again ...
    assert runner.run(g).ran == [src.id, out.id]
    # ... and an LRU request reuses what classic kept
    assert runner.run(g, extra={"cache_policy": "lru:10"}).ran == []


def test_nan_is_changed_reruns_every_time(cache_runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    always = g.node("TestCustomIsChanged", image=src.out(0), should_change=True)
    never = g.node("TestCustomIsChanged", image=src.out(0), should_change=False)
    out_always, out_never = save(g, always.out(0)), save(g, never.out(0))
    cache_runner.run(g)
    for _ in range(2):
        again = cache_runner.run(g)
        if cache_runner.executor.policy.kind == "none":
            assert set(again.ran) == {src.id, always.id, never.id, out_always.id, out_never.id}
        else:
            assert again.ran == [always.id, out_always.id]
            assert set(again.cached) == {src.id, never.id, out_never.id}


def test_is_changed_sees_linked_inputs_as_none(runner: Runner, g: GraphBuilder) -> None:
    node = g.node("TestIsChangedWithConstants", image=image(g).out(0), value=0.5)
    out = save(g, node.out(0))
    assert runner.run(g).values(out.id) == [127]
    assert runner.run(g).ran == []  # IS_CHANGED returned the constant, not NaN
    g.lookup_node(node.id.removeprefix("t.")).set_input("value", 0.25)
    assert runner.run(g).ran == [node.id, out.id]


def test_failing_is_changed_means_always_rerun(runner: Runner, registry: NodeRegistry, g: GraphBuilder) -> None:
    class BrokenIsChanged:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}}

        @classmethod
        def IS_CHANGED(cls, unexpected_argument: int) -> int:
            return unexpected_argument

        def run(self, value: int) -> tuple[int]:
            return (value,)

    registry.register("XBrokenIsChanged", BrokenIsChanged)
    node = g.node("XBrokenIsChanged", value=3)
    out = g.node("TestRecord", value=node.out(0))
    assert runner.run(g).values(out.id, "value") == [3]
    assert runner.run(g).ran == [node.id, out.id]


def test_async_is_changed(runner: Runner, registry: NodeRegistry, g: GraphBuilder) -> None:
    class AsyncFingerprint:
        RETURN_TYPES = ("FLOAT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("FLOAT",)}}

        @classmethod
        async def IS_CHANGED(cls, value: float) -> float:
            await asyncio.sleep(0)
            return value

        def run(self, value: float) -> tuple[float]:
            return (value,)

    registry.register("XAsyncFingerprint", AsyncFingerprint)
    node = g.node("XAsyncFingerprint", value=1.0)
    out = g.node("TestRecord", value=node.out(0))
    assert runner.run(g).values(out.id, "value") == [1.0]
    assert runner.run(g).ran == []
    g.lookup_node(node.id.removeprefix("t.")).set_input("value", math.nan)
    assert runner.run(g).ran == [node.id, out.id]
    assert runner.run(g).ran == [node.id, out.id]


def test_every_is_changed_in_the_prompt_is_evaluated(runner: Runner, registry: NodeRegistry,
                                                     g: GraphBuilder) -> None:
    """Spec Appendix B.11: even nodes that no selected output needs."""
    calls: list[int] = []

    class Counting:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}}

        @classmethod
        def IS_CHANGED(cls, value: int) -> int:
            calls.append(value)
            return value

        def run(self, value: int) -> tuple[int]:
            return (value,)

    registry.register("XCountingIsChanged", Counting)
    g.node("XCountingIsChanged", value=7)
    out = g.node("TestRecord", value=1)
    result = runner.run(g)
    assert result.ran == [out.id]
    assert calls == [7]


# ------------------------------------------------------------------ lazy inputs

@pytest.mark.parametrize(("mask_value", "needed", "pixels"), [(0.0, "black", 0), (1.0, "white", 255),
                                                              (0.5, "both", 127)])
def test_lazy_mix_evaluates_only_what_the_mask_needs(runner: Runner, g: GraphBuilder, mask_value: float,
                                                      needed: str, pixels: int) -> None:
    nodes = lazy_mix_graph(g, mask_value)
    result = runner.run(g)
    sources = [nodes["black"], nodes["white"]] if needed == "both" else [nodes[needed]]
    assert result.ran == [nodes["mask"], nodes["mix"], *sources, nodes["mix"], nodes["out"]]
    assert result.values(nodes["out"]) == [pixels]


def test_lazy_round_trips_produce_one_executing_per_round(runner: Runner, g: GraphBuilder) -> None:
    nodes = lazy_mix_graph(g, 0.0)
    result = runner.run(g)
    assert result.ran.count(nodes["mix"]) == 2
    assert nodes["white"] not in result.outcome.executed


def test_mixed_lazy_results_per_list_item(runner: Runner, g: GraphBuilder) -> None:
    masks = g.node("TestMakeListNode", value1=0.0, value2=0.5, value3=1.0)
    m = g.node("StubMask", value=masks.out(0), height=8, width=8, batch_size=1)
    mix = g.node("TestLazyMixImages", image1=image(g, "BLACK").out(0), image2=image(g, "WHITE").out(0),
                 mask=m.out(0))
    batch = g.node("TestImageListToBatch", images=mix.out(0))
    out = save(g, batch.out(0))
    assert runner.run(g).values(out.id) == [0, 127, 255]


def test_lazy_input_without_check_lazy_status_is_none(runner: Runner, registry: NodeRegistry,
                                                      g: GraphBuilder) -> None:
    class NeverAsks:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT", {"lazy": True})}}

        def run(self, value: int | None) -> tuple[str]:
            return (repr(value),)

    registry.register("XNeverAsks", NeverAsks)
    src = g.node("StubInt", value=5)
    node = g.node("XNeverAsks", value=src.out(0))
    out = g.node("TestRecord", value=node.out(0))
    result = runner.run(g)
    assert result.values(out.id, "value") == ["None"]
    assert src.id not in result.ran


def test_check_lazy_status_names_are_filtered_to_missing_inputs(runner: Runner, registry: NodeRegistry,
                                                                g: GraphBuilder) -> None:
    """A constant is evaluated data, so asking for it is ignored; asking for an absent input fails."""

    class AsksTooMuch:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT", {"lazy": True})}, "optional": {"extra": ("INT", {"lazy": True})}}

        def check_lazy_status(self, value: int | None = None, extra: int | None = None) -> list[str]:
            return ["value", "extra"] if value == 13 else ["value"]

        def run(self, value: int, extra: int | None = None) -> tuple[int]:
            return (value,)

    registry.register("XAsksTooMuch", AsksTooMuch)
    node = g.node("XAsksTooMuch", value=5)
    out = g.node("TestRecord", value=node.out(0))
    assert runner.run(g).values(out.id, "value") == [5]
    g.lookup_node(node.id.removeprefix("t.")).set_input("value", 13)
    result = runner.run(g)
    error = result.outcome.terminal[1]
    assert result.status == "error" and error["node_id"] == node.id
    assert error["exception_message"] == \
        f"Node {node.id} says it needs input extra, but there is no input to that node at all\n"


# ------------------------------------------------------------------ inputs and lists

def test_undeclared_linked_inputs_reach_kwargs(runner: Runner, g: GraphBuilder) -> None:
    avg = g.node("TestVariadicAverage", input1=image(g, "WHITE").out(0), input2=image(g, "BLACK").out(0),
                 input3=image(g, "BLACK").out(0), input4=image(g, "BLACK").out(0), input5="dropped constant")
    out = save(g, avg.out(0))
    assert runner.run(g).values(out.id) == [255 // 4]


def test_short_lists_repeat_their_last_element(runner: Runner, g: GraphBuilder) -> None:
    a = g.node("TestMakeListNode", value1=1, value2=2, value3=3)
    b = g.node("TestMakeListNode", value1=10, value2=20)
    total = g.node("TestIntMath", a=a.out(0), b=b.out(0), operation="add")
    out = g.node("TestRecord", value=total.out(0))
    result = runner.run(g)
    assert result.values(out.id, "value") == [11, 22, 23]  # ui of three calls, concatenated


def test_all_empty_lists_mean_one_call_without_arguments(runner: Runner, g: GraphBuilder) -> None:
    empty = g.node("TestMakeListNode")
    out = g.node("TestRecord", value=empty.out(0))
    assert runner.run(g).values(out.id, "value") == ["<none>"]


def test_output_is_list_results_are_concatenated(runner: Runner, g: GraphBuilder) -> None:
    inner = g.node("TestMakeListNode", value1=1, value2=2)
    outer = g.node("TestMakeListNode", value1=inner.out(0), value2=9)
    out = g.node("TestRecord", value=outer.out(0))
    assert runner.run(g).values(out.id, "value") == [1, 9, 2, 9]


def test_input_is_list_gets_the_whole_list_once(runner: Runner, g: GraphBuilder) -> None:
    items = g.node("TestMakeListNode", value1=1, value2=2, value3=3)
    accumulated = g.node("TestListToAccumulation", list=items.out(0))
    back = g.node("TestAccumulationToList", accumulation=accumulated.out(0))
    seen_acc = g.node("TestRecord", value=accumulated.out(0))
    seen_list = g.node("TestRecord", value=back.out(0))
    result = runner.run(g)
    assert result.values(seen_acc.id, "value") == [{"accum": [1, 2, 3]}]
    assert result.values(seen_list.id, "value") == [1, 2, 3]


def test_a_list_of_images_is_not_a_batch(runner: Runner, g: GraphBuilder) -> None:
    images = g.node("TestMakeListNode", value1=constant(g, 0.0).out(0), value2=constant(g, 1.0).out(0))
    out = save(g, images.out(0))
    assert runner.run(g).values(out.id) == [0, 255]


def test_too_short_result_means_a_missing_input(runner: Runner, registry: NodeRegistry, g: GraphBuilder) -> None:
    """Spec §1.5: return tuples are not checked; a slot that was never returned reaches consumers as None."""

    class ShortResult:
        RETURN_TYPES = ("INT", "INT")
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"count": ("INT",)}}

        def run(self, count: int) -> tuple:
            return (1, 2)[:count]

    registry.register("XShortResult", ShortResult)
    for count, expected in ((1, [None]), (0, [None])):
        short = g.node("XShortResult", count=count)
        out = g.node("TestRecord", value=short.out(1))
        assert runner.run(g).values(out.id, "value") == expected
    listed = g.node("TestMakeListNode", value1=1, value2=1)
    short = g.node("XShortResult", count=listed.out(0))
    out = g.node("TestRecord", value=short.out(1))
    assert runner.run(g).values(out.id, "value") == [None]


def test_hidden_inputs(runner: Runner, registry: NodeRegistry, g: GraphBuilder) -> None:
    class Hidden:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {}, "hidden": {"prompt": "PROMPT", "info": "EXTRA_PNGINFO", "uid": "UNIQUE_ID",
                                               "dyn": "DYNPROMPT"}}

        def run(self, prompt: dict, info: dict, uid: str, dyn: object) -> dict:
            return {"ui": {"seen": [sorted(prompt), info, uid, dyn.get_node(uid)["class_type"]]}}

    registry.register("XHidden", Hidden)
    node = g.node("XHidden")
    result = runner.run(g, extra={"extra_pnginfo": {"workflow": {"id": "w"}}})
    assert result.ui(node.id) == {"seen": [[node.id], {"workflow": {"id": "w"}}, node.id, "XHidden"]}


def test_node_instances_persist_per_id_and_class(runner: Runner, registry: NodeRegistry) -> None:
    instances: list[object] = []

    class Stateful:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}}

        def __init__(self) -> None:
            instances.append(self)

        def run(self, value: int) -> dict:
            return {"ui": {"instance": [instances.index(self)]}}

    registry.register("XStateful", Stateful)
    prompt = {"a": {"class_type": "XStateful", "inputs": {"value": 1}}}
    assert runner.run(prompt).values("a", "instance") == [0]
    assert runner.run(prompt, extra={"force_rerun": True}).values("a", "instance") == [0]
    assert runner.run({"b": prompt["a"]}, extra={"force_rerun": True}).values("b", "instance") == [1]
    # "a" left the prompt in between, so its instance was dropped
    assert runner.run(prompt, extra={"force_rerun": True}).values("a", "instance") == [2]


# ------------------------------------------------------------------ ExecutionBlocker

def test_blocker_with_message_reports_an_error_and_still_succeeds(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    gate = g.node("TestExecutionBlocker", input=src.out(0), block=True, verbose=True)
    out = save(g, gate.out(0))
    result = runner.run(g)
    assert result.status == "success" and result.outcome.terminal[0] == "execution_success"
    errors = result.events("execution_error")
    assert errors == [{"prompt_id": result.prompt_id, "node_id": out.id, "node_type": "TestSaveImage",
                       "executed": [src.id, gate.id], "exception_message":
                       "Execution Blocked: Blocked by TestExecutionBlocker", "exception_type": "ExecutionBlocked",
                       "traceback": [], "current_inputs": [], "current_outputs": []}]
    assert out.id not in result.outcome.outputs
    assert "execution_error" not in [event for event, _ in result.outcome.messages]


def test_silent_blocker_and_unblocked_gate(runner: Runner, g: GraphBuilder) -> None:
    gate = g.node("TestExecutionBlocker", input=image(g).out(0), block=True, verbose=False)
    blocked = save(g, gate.out(0))
    open_gate = g.node("TestExecutionBlocker", input=image(g, "BLACK").out(0), block=False)
    passed = save(g, open_gate.out(0))
    result = runner.run(g)
    assert result.status == "success" and result.events("execution_error") == []
    assert blocked.id not in result.outcome.outputs
    assert result.values(passed.id) == [0]


def test_blocked_list_items_are_dropped(runner: Runner, g: GraphBuilder) -> None:
    images = g.node("TestMakeListNode", value1=image(g, "BLACK").out(0), value2=image(g, "WHITE").out(0),
                    value3=image(g, "BLACK").out(0))
    numbers = g.node("TestMakeListNode", value1=1, value2=2, value3=3)
    equal = g.node("TestIntMath", a=numbers.out(0), b=2, operation="add")
    gate = g.node("TestExecutionBlocker", input=images.out(0), block=equal.out(1))
    out = save(g, gate.out(0))
    assert runner.run(g).values(out.id) == [0, 0]


def test_one_blocked_item_blocks_an_input_is_list_call(runner: Runner, g: GraphBuilder) -> None:
    images = g.node("TestMakeListNode", value1=image(g, "BLACK").out(0), value2=image(g, "WHITE").out(0))
    flags = g.node("TestMakeListNode", value1=False, value2=True)
    gate = g.node("TestExecutionBlocker", input=images.out(0), block=flags.out(0))
    batch = g.node("TestImageListToBatch", images=gate.out(0))
    blocked = save(g, batch.out(0))
    per_item = save(g, gate.out(0))
    result = runner.run(g)
    assert blocked.id not in result.outcome.outputs
    assert result.values(per_item.id) == [0]


def test_blocker_from_async_source(runner: Runner, g: GraphBuilder) -> None:
    slow = g.node("TestSleep", value=image(g).out(0), seconds=0.05)
    gate = g.node("TestExecutionBlocker", input=slow.out(0), block=True, verbose=True)
    save(g, gate.out(0))
    result = runner.run(g)
    assert result.status == "success"
    assert [e["exception_type"] for e in result.events("execution_error")] == ["ExecutionBlocked"]


# ------------------------------------------------------------------ expansion

def for_loop(g: GraphBuilder, iterations: int) -> dict[str, str]:
    """open -> changed (NaN IS_CHANGED) -> avg(with black) -> close; each iteration halves the value."""
    start = g.node("StubImage", id="white", content="WHITE", height=8, width=8, batch_size=1)
    black = g.node("StubImage", id="black", content="BLACK", height=8, width=8, batch_size=1)
    loop_open = g.node("TestForLoopOpen", id="open", remaining=iterations, initial_value=start.out(0))
    changed = g.node("TestCustomIsChanged", id="changed", image=loop_open.out(2), should_change=True)
    avg = g.node("TestVariadicAverage", id="avg", input1=changed.out(0), input2=black.out(0))
    close = g.node("TestForLoopClose", id="close", flow_control=loop_open.out(0), remaining=loop_open.out(1),
                   value=avg.out(0))
    out = g.node("TestSaveImage", id="out", images=close.out(0))
    return {"open": loop_open.id, "changed": changed.id, "avg": avg.id, "close": close.id, "out": out.id}


@pytest.mark.parametrize("iterations", [1, 2, 3, 4])
def test_for_loop_by_recursive_expansion(runner: Runner, iterations: int) -> None:
    g = GraphBuilder()
    for_loop(g, iterations)
    result = runner.run(g)
    assert result.values("out") == [255 // 2 ** iterations]
    ran = result.ran
    assert len(ran) == len(set(ran)) and ran[-1] == "out"
    assert sum(1 for e in result.events("executing") if e["display_node"] == "changed") == iterations
    # iteration k (k >= 2) runs under "close" + ".0.0.Recurse" * (k - 2) + ".0.0.<local id>"
    parent = "close"
    for _ in range(iterations - 1):
        copies = [f"{parent}.0.0.{local}" for local in ("open", "changed", "avg", "Recurse")]
        assert set(copies) <= set(ran) and ran.index(parent) < min(ran.index(c) for c in copies)
        parent = copies[-1]
    displays = {e["node"]: e["display_node"] for e in result.events("executing")}
    assert {displays[n] for n in ran if n.endswith(".Recurse")} <= {"close"}
    assert {displays[n] for n in ran if n.endswith(".avg")} <= {"avg"}
    # the NaN IS_CHANGED node in the body runs again on an identical resubmission
    again = runner.run(g)
    assert sum(1 for e in again.events("executing") if e["display_node"] == "changed") == iterations
    assert again.values("out") == [255 // 2 ** iterations]


def test_expanded_node_identity_fields(runner: Runner) -> None:
    g = GraphBuilder()
    for_loop(g, 2)
    states = merged_states(runner.run(g))
    entry = states["close.0.0.avg"]
    assert (entry["display_node_id"], entry["parent_node_id"], entry["real_node_id"]) == ("avg", "close", "close")
    recurse = states["close.0.0.Recurse"]
    assert (recurse["display_node_id"], recurse["parent_node_id"], recurse["real_node_id"]) == \
        ("close", "close", "close")


def test_mixed_expansion_returns(runner: Runner, g: GraphBuilder) -> None:
    values = g.node("TestMakeListNode", value1=0.1, value2=0.2, value3=0.3)
    mixed = g.node("TestMixedExpansionReturns", input1=values.out(0))
    first, second = save(g, mixed.out(0)), save(g, mixed.out(1))
    result = runner.run(g)
    assert result.values(first.id) == [25, 51, 76]
    assert result.values(second.id) == [255, 255, 255]
    expanded = [e for e in result.events("executing") if e["node"].startswith(f"{mixed.id}.")]
    # only the third call (index 2) expanded; GraphBuilder ids are "<parent>.<call>.<graph>.<local>"
    assert sorted(e["node"] for e in expanded) == [f"{mixed.id}.2.0.1", f"{mixed.id}.2.0.2"]
    assert {e["display_node"] for e in expanded} == {mixed.id}


def test_expansion_result_linking_a_list_is_spliced(runner: Runner, registry: NodeRegistry,
                                                   g: GraphBuilder) -> None:
    """Spec Appendix B.17: a plain (non-list) output that links to a 3-item list becomes 3 items."""

    class ExpandsToList:
        RETURN_TYPES = ("INT", "STRING")
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {}}

        def run(self) -> dict:
            graph = GraphBuilder()
            items = graph.node("TestMakeListNode", value1=1, value2=2, value3=3)
            return {"result": (items.out(0), "plain"), "expand": graph.finalize()}

    registry.register("XExpandsToList", ExpandsToList)
    node = g.node("XExpandsToList")
    spliced = g.node("TestRecord", value=node.out(0))
    plain = g.node("TestRecord", value=node.out(1))
    result = runner.run(g)
    assert result.values(spliced.id, "value") == [1, 2, 3]
    assert result.values(plain.id, "value") == ["plain"]
    assert f"{node.id}.0.0.1" in result.ran


def test_parallel_sleep_expansion_and_its_ui(runner: Runner, g: GraphBuilder) -> None:
    node = g.node("TestParallelSleep", image1=image(g, "WHITE").out(0), image2=image(g, "BLACK").out(0),
                  image3=image(g, "WHITE").out(0), sleep1=0.3, sleep2=0.3, sleep3=0.3)
    out = save(g, node.out(0))
    started = time.perf_counter()
    result = runner.run(g)
    assert time.perf_counter() - started < 0.8
    assert result.values(out.id) == [170]
    # ui returned together with "expand" is published on the first pass only
    assert result.ui(node.id) == {"sleeps": [0.3, 0.3, 0.3]}
    assert [e["node"] for e in result.events("executed")] == [node.id, out.id]
    assert result.outcome.meta[node.id]["display_node"] == node.id


def test_dynamic_cycle_names_the_expanding_node(runner: Runner, g: GraphBuilder) -> None:
    cycle = g.node("TestDynamicDependencyCycle", input1=image(g).out(0), input2=image(g, "BLACK").out(0))
    save(g, cycle.out(0))
    result = runner.run(g)
    event, error = result.outcome.terminal
    assert result.status == "error" and event == "execution_error"
    assert error["node_id"] == cycle.id
    assert error["exception_message"] == "Dependency cycle detected"
    assert error["exception_type"] == "graph.DependencyCycleError"
    assert error["traceback"] == [] and error["current_inputs"] == []


# ------------------------------------------------------------------ errors and interrupts

def test_runtime_error_payload(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    fine = save(g, src.out(0))
    broken = g.node("TestSyncError", value=src.out(0))
    save(g, broken.out(0))
    never = save(g, g.node("TestCustomIsChanged", image=image(g, "BLACK").out(0)).out(0))  # scheduled later
    result = runner.run(g)
    event, error = result.outcome.terminal
    assert result.status == "error" and event == "execution_error"
    assert set(error) == {"prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                          "traceback", "current_inputs", "current_outputs", "timestamp"}
    assert error["prompt_id"] == result.prompt_id
    assert (error["node_id"], error["node_type"]) == (broken.id, "TestSyncError")
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"] == "sync failure requested by TestSyncError\n"
    assert isinstance(error["traceback"], list) and any("fail" in line for line in error["traceback"])
    assert list(error["current_inputs"]) == ["value"] and isinstance(error["current_inputs"]["value"][0], str)
    assert error["executed"] == result.outcome.executed and error["executed"][:2] == [src.id, fine.id]
    assert set(error["current_outputs"]) == set(g.finalize())
    # the whole prompt stops, ui of what completed is kept, and the error is in the history messages
    assert never.id not in result.ran
    assert result.outcome.outputs == {fine.id: {"values": [255]}}
    assert [event for event, _ in result.outcome.messages][-1] == "execution_error"
    # the executor keeps working afterwards
    assert runner.run({"ok": {"class_type": "TestRecord", "inputs": {"value": 1}}}).status == "success"


def test_exception_type_is_module_qualified(runner: Runner, registry: NodeRegistry, g: GraphBuilder) -> None:
    class Decoder:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"text": ("STRING",)}}

        def run(self, text: str) -> tuple[str]:
            return (json.loads(text),)

    registry.register("XDecoder", Decoder)
    node = g.node("XDecoder", text="{not json")
    g.node("TestRecord", value=node.out(0))
    error = runner.run(g).outcome.terminal[1]
    assert error["exception_type"] == "json.decoder.JSONDecodeError"
    assert error["current_inputs"] == {"text": ["{not json"]}


def test_interrupt_before_the_next_node(runner: Runner, g: GraphBuilder) -> None:
    src = image(g)
    slow = g.node("TestSlow", value=src.out(0), seconds=0.3)
    after = g.node("TestCustomIsChanged", image=slow.out(0))
    save(g, after.out(0))
    timer = threading.Timer(0.1, runner.executor.interrupt.request)
    timer.start()
    result = runner.run(g)
    timer.join()
    event, data = result.outcome.terminal
    assert result.status == "interrupted" and event == "execution_interrupted"
    assert data == {"prompt_id": result.prompt_id, "node_id": after.id, "node_type": "TestCustomIsChanged",
                    "executed": [src.id, slow.id], "timestamp": data["timestamp"]}
    assert result.ran[-1] == after.id  # its `executing` was sent; the check precedes the call
    assert [event for event, _ in result.outcome.messages][-1] == "execution_interrupted"


def test_interrupt_from_a_node_stops_before_its_next_mapped_call(runner: Runner, registry: NodeRegistry,
                                                                 g: GraphBuilder) -> None:
    calls: list[int] = []

    class InterruptsOnce:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}}

        def run(self, value: int) -> tuple[int]:
            calls.append(value)
            runner.executor.interrupt.request()
            return (value,)

    registry.register("XInterruptsOnce", InterruptsOnce)
    items = g.node("TestMakeListNode", value1=1, value2=2, value3=3)
    node = g.node("XInterruptsOnce", value=items.out(0))
    g.node("TestRecord", value=node.out(0))
    result = runner.run(g)
    assert result.status == "interrupted" and calls == [1]
    assert result.outcome.terminal[1]["node_id"] == node.id
    assert result.outcome.terminal[1]["executed"] == [items.id]


def test_interrupt_targets_only_the_running_prompt(runner: Runner, g: GraphBuilder) -> None:
    slow = g.node("TestSlow", value=1, seconds=0.2)
    g.node("TestRecord", value=slow.out(0))
    timer = threading.Timer(0.05, runner.executor.interrupt.request, args=("some-other-prompt",))
    timer.start()
    result = runner.run(g)
    timer.join()
    assert result.status == "success"


def test_interrupt_while_idle_is_forgotten(runner: Runner, g: GraphBuilder) -> None:
    g.node("TestRecord", value=1)
    runner.executor.interrupt.request()
    assert runner.run(g).status == "success"


# ------------------------------------------------------------------ async nodes

def test_async_sleeps_overlap(runner: Runner, g: GraphBuilder) -> None:
    sleeps = [g.node("TestSleep", value=image(g, content).out(0), seconds=0.3)
              for content in ("WHITE", "BLACK", "WHITE")]
    avg = g.node("TestVariadicAverage", input1=sleeps[0].out(0), input2=sleeps[1].out(0), input3=sleeps[2].out(0))
    out = save(g, avg.out(0))
    started = time.perf_counter()
    result = runner.run(g)
    assert time.perf_counter() - started < 0.8
    assert result.values(out.id) == [170]
    # async results are cached like any other
    started = time.perf_counter()
    assert runner.run(g).ran == []
    assert time.perf_counter() - started < 0.1


def test_async_error_names_the_node_and_the_executor_recovers(runner: Runner, g: GraphBuilder) -> None:
    failing = g.node("TestAsyncError", value=1, delay=0.05)
    g.node("TestRecord", value=failing.out(0))
    error = runner.run(g).outcome.terminal[1]
    assert (error["node_id"], error["exception_type"]) == (failing.id, "RuntimeError")
    assert "TestAsyncError" in error["exception_message"]
    assert runner.run({"ok": {"class_type": "TestRecord", "inputs": {"value": 1}}}).status == "success"


def test_async_timeout_is_reported(runner: Runner, g: GraphBuilder) -> None:
    node = g.node("TestAsyncTimeout", value=1, timeout=0.05, operation_time=1.0)
    g.node("TestRecord", value=node.out(0))
    result = runner.run(g)
    assert result.status == "error" and "timeout" in result.outcome.terminal[1]["exception_message"]


def test_sync_error_while_an_async_node_runs(runner: Runner, g: GraphBuilder) -> None:
    sleeper = g.node("TestSleep", value=1, seconds=1.0)
    g.node("TestRecord", value=sleeper.out(0))
    broken = g.node("TestSyncError", value=2)
    g.node("TestRecord", value=broken.out(0))
    started = time.perf_counter()
    result = runner.run(g)
    assert result.outcome.terminal[1]["node_id"] == broken.id
    assert time.perf_counter() - started < 0.5  # the sleeping node is abandoned, not awaited


@pytest.mark.parametrize("condition", [True, False])
def test_async_lazy_check_skips_the_unneeded_branch(runner: Runner, g: GraphBuilder, condition: bool) -> None:
    fast = g.node("TestSleep", value="fast", seconds=0.0)
    slow = g.node("TestSleep", value="slow", seconds=2.0)
    pick = g.node("TestAsyncLazyCheck", input1=fast.out(0), input2=slow.out(0), condition=condition)
    out = g.node("TestRecord", value=pick.out(0))
    if not condition:
        g.lookup_node(slow.id.removeprefix("t.")).set_input("seconds", 0.0)
    started = time.perf_counter()
    result = runner.run(g)
    assert time.perf_counter() - started < 0.5
    assert result.values(out.id, "value") == ["fast" if condition else "slow"]
    assert (slow.id in result.ran) is not condition
    assert result.ran.count(pick.id) == 2


def test_async_expansion_ids_name_their_own_call(runner: Runner, g: GraphBuilder) -> None:
    """Each call's graph gets "<node>.<call>.0." even when built after an await (other nodes ran meanwhile)."""
    values = g.node("TestMakeListNode", value1=0.1, value2=0.5)
    first = g.node("TestAsyncExpansion", value=values.out(0), delay=0.02)
    other = g.node("TestAsyncExpansion", value=1.0, delay=0.01)
    out_first, out_other = save(g, first.out(0)), save(g, other.out(0))
    result = runner.run(g)
    assert result.values(out_first.id) == [25, 127]
    assert result.values(out_other.id) == [255]
    expanded = {e["node"] for e in result.events("executing")} - set(g.finalize())
    assert expanded == {f"{first.id}.0.0.1", f"{first.id}.1.0.1", f"{other.id}.0.0.1"}


def test_mixed_sync_and_async_graph(runner: Runner, g: GraphBuilder) -> None:
    white = g.node("TestSleep", value=image(g, "WHITE").out(0), seconds=0.05)
    half = g.node("TestIsChangedWithConstants", image=white.out(0), value=0.5)
    avg = g.node("TestVariadicAverage", input1=half.out(0), input2=image(g, "BLACK").out(0))
    out = save(g, avg.out(0))
    assert runner.run(g).values(out.id) == [63]  # 0.25 * 255 = 63.75


# ------------------------------------------------------------------ partial execution and scale

def test_partial_execution_targets(runner: Runner, g: GraphBuilder) -> None:
    upstream = g.node("TestOutputNodeWithSocketOutput", image=image(g).out(0), value=1.0)
    wanted = save(g, upstream.out(0))
    other = save(g, image(g, "BLACK").out(0))
    result = runner.run(g, partial=[wanted.id])
    assert result.validation.outputs == [wanted.id]
    assert set(result.outcome.outputs) == {upstream.id, wanted.id}  # the output dependency ran too
    assert other.id not in result.ran


def test_deep_chain_runs_without_recursion(runner: Runner) -> None:
    depth = 2000
    prompt: dict[str, dict] = {"0": {"class_type": "StubInt", "inputs": {"value": 0}}}
    for i in range(1, depth + 1):
        prompt[str(i)] = {"class_type": "TestIntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
    prompt["out"] = {"class_type": "TestRecord", "inputs": {"value": [str(depth), 0]}}
    result = runner.run(prompt)
    assert result.values("out", "value") == [depth]
    assert runner.run(prompt).ran == []


# ------------------------------------------------------------------ the pack as a user installs it

def test_pack_loads_through_extra_model_paths_and_runs_in_the_app(tmp_path: Path, pack_root: Path) -> None:
    """custom_nodes: in extra_model_paths.yaml -> registry -> POST /prompt semantics -> worker -> history."""
    (tmp_path / "extra.yaml").write_text(f"testing:\n  custom_nodes: {pack_root}\n")
    ctx = build_context(Config(base_dir=tmp_path / "app", extra_model_paths=[str(tmp_path / "extra.yaml")]),
                        start_worker=False)
    try:
        schema = ctx.registry.get("TestLazyMixImages")
        assert schema is not None and schema.python_module == "custom_nodes.testing_pack"
        assert schema.object_info()["display_name"] == "Testing: TestLazyMixImages"
        messages: list[Message] = []
        ctx.hub.subscribe(messages.append)
        prompt = {"1": {"class_type": "StubConstantImage", "inputs": {"value": 0.5, "height": 8, "width": 8,
                                                                       "batch_size": 1}},
                  "2": {"class_type": "TestSaveImage", "inputs": {"images": ["1", 0]}}}
        accepted = submit(ctx, {"prompt": prompt, "client_id": "client-1"})
        job = ctx.queue.get(timeout=1.0)
        assert job is not None and job.id == accepted["prompt_id"]
        ctx.worker.run_job(job)
        entry = ctx.queue.history_item(job.id)[job.id]
        assert entry["outputs"] == {"2": {"values": [127]}}
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        client = [(m.event, m.data) for m in messages if m.sid == "client-1" and not m.broadcast]
        assert [event for event, _ in client][-2:] == ["execution_success", "executing"]
        assert client[-1][1] == {"node": None, "prompt_id": job.id}
    finally:
        ctx.close()
