"""Output cache conformance (spec comfy_api.md §4.9, Appendix B.8-B.10): keys, policies, eviction."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import pytest
import torch

from execution.cache import CachePolicy, OutputCache, canonical, estimate_bytes
from nodes.registry import NodeRegistry

if TYPE_CHECKING:
    from conftest import Runner

IMAGE_BYTES = 8 * 8 * 3 * 4  # one 8x8 RGB float32 stub image


def stub(content: str = "WHITE") -> dict:
    return {"class_type": "StubImage", "inputs": {"content": content, "height": 8, "width": 8, "batch_size": 1}}


def scaled_chain(value: float = 0.5, content: str = "WHITE") -> dict:
    """src -> scale(value) -> save."""
    return {"src": stub(content),
            "scale": {"class_type": "TestIsChangedWithConstants", "inputs": {"image": ["src", 0], "value": value}},
            "save": {"class_type": "TestSaveImage", "inputs": {"images": ["scale", 0]}}}


def renamed(prompt: dict, suffix: str) -> dict:
    """The same graph with every node id changed."""
    def rename(value: object) -> object:
        return [value[0] + suffix, value[1]] if isinstance(value, list) else value
    return {nid + suffix: {"class_type": n["class_type"], "inputs": {k: rename(v) for k, v in n["inputs"].items()}}
            for nid, n in prompt.items()}


def register_identity_nodes(registry: NodeRegistry) -> None:
    """Two ways to put the node id into the cache key: NOT_IDEMPOTENT and a hidden UNIQUE_ID."""
    class NotIdempotent:
        NOT_IDEMPOTENT = True
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}}

        def run(self, value: int) -> tuple[int]:
            return (value,)

    class WantsId(NotIdempotent):
        NOT_IDEMPOTENT = False

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}, "hidden": {"uid": "UNIQUE_ID"}}

        def run(self, value: int, uid: str) -> tuple[int]:
            return (value,)

    registry.register("XNotIdempotent", NotIdempotent)
    registry.register("XWantsId", WantsId)


# ------------------------------------------------------------------ keys

def test_keys_are_structural_not_by_id(runner: Runner) -> None:
    prompt = scaled_chain()
    runner.run(prompt)
    again = runner.run(renamed(prompt, "-copy"))
    assert again.ran == []
    assert sorted(again.cached) == ["save-copy", "scale-copy", "src-copy"]
    assert again.outcome.outputs == {"save-copy": {"values": [127]}}


def test_input_order_does_not_matter(runner: Runner) -> None:
    prompt = scaled_chain()
    runner.run(prompt)
    prompt["src"]["inputs"] = dict(reversed(list(prompt["src"]["inputs"].items())))
    assert runner.run(prompt).ran == []


def test_identical_nodes_share_one_entry(cache_runner: Runner) -> None:
    prompt = {"a": stub(), "b": stub(),
              "save_a": {"class_type": "TestSaveImage", "inputs": {"images": ["a", 0]}},
              "rec_b": {"class_type": "TestRecord", "inputs": {"value": ["b", 0]}}}
    result = cache_runner.run(prompt)
    stubs_run = [nid for nid in result.ran if nid in ("a", "b")]
    assert stubs_run == (["a", "b"] if cache_runner.executor.policy.kind == "none" else ["a"])
    assert result.values("rec_b", "value") == [[255]]


def test_output_slot_is_part_of_the_key(runner: Runner) -> None:
    prompt = {"m": {"class_type": "TestIntMath", "inputs": {"a": 2, "b": 2, "operation": "add"}},
              "r0": {"class_type": "TestRecord", "inputs": {"value": ["m", 0]}},
              "r1": {"class_type": "TestRecord", "inputs": {"value": ["m", 1]}}}
    result = runner.run(prompt)
    assert (result.values("r0", "value"), result.values("r1", "value")) == ([4], [True])


@pytest.mark.parametrize("class_type", ["XNotIdempotent", "XWantsId"])
def test_node_id_in_the_key(runner: Runner, registry: NodeRegistry, class_type: str) -> None:
    register_identity_nodes(registry)
    prompt = {"a": {"class_type": class_type, "inputs": {"value": 1}},
              "b": {"class_type": class_type, "inputs": {"value": 1}},
              "ra": {"class_type": "TestRecord", "inputs": {"value": ["a", 0]}},
              "rb": {"class_type": "TestRecord", "inputs": {"value": ["b", 0]}}}
    first = runner.run(prompt)
    assert {"a", "b"} <= set(first.ran)  # identical, yet not de-duplicated
    assert runner.run(prompt).ran == []  # same ids: cached
    assert set(runner.run(renamed(prompt, "2")).ran) == {"a2", "b2", "ra2", "rb2"}


def test_canonical_values() -> None:
    assert canonical({"b": 1, "a": [1, 2.0]}) == canonical({"a": [1, 2.0], "b": 1})
    assert canonical(1) != canonical(1.0) != canonical(True)
    assert canonical(math.nan) != canonical(math.nan)
    assert canonical(object()) != canonical(object())
    assert canonical({1: "x", "a": "y"}) != canonical({1: "x", "a": "y"})  # unsortable keys: never equal


# ------------------------------------------------------------------ policies across prompts

def test_classic_keeps_only_what_the_current_prompt_can_reuse(runner: Runner) -> None:
    white, black = scaled_chain(content="WHITE"), scaled_chain(content="BLACK")
    runner.run(white)
    runner.run(black)
    assert len(runner.executor.cache) == 3
    assert runner.run(white).ran == ["src", "scale", "save"]  # alternating workflows recompute


@pytest.mark.parametrize(("size", "rerun"), [(6, []), (4, ["src", "scale"])])
def test_lru_keeps_older_prompts_up_to_its_size(runner_for: Callable[[str], Runner], size: int, rerun: list[str]) -> None:
    runner = runner_for(f"lru:{size}")
    white, black = scaled_chain(content="WHITE"), scaled_chain(content="BLACK")
    runner.run(white)
    runner.run(black)
    assert len(runner.executor.cache) == min(size, 6)
    # lru:4 evicted white's src and scale (oldest generation first) but kept its output; as in
    # ComfyUI, a cached output's uncached ancestors are still scheduled and run
    second = runner.run(white)
    assert second.ran == rerun
    assert second.events("executed") == [{"node": "save", "display_node": "save", "output": {"values": [127]},
                                          "prompt_id": second.prompt_id}]


def test_lru_never_evicts_the_current_generation(runner_for: Callable[[str], Runner]) -> None:
    runner = runner_for("lru:1")
    prompt = scaled_chain()
    runner.run(prompt)
    assert len(runner.executor.cache) == 3
    assert runner.run(prompt).ran == []


def test_ram_budget_evicts_least_recently_used(runner_for: Callable[[str], Runner]) -> None:
    runner = runner_for(f"ram:{IMAGE_BYTES + IMAGE_BYTES // 2}")
    runner.run(scaled_chain(0.5))
    assert runner.executor.cache.total_bytes <= IMAGE_BYTES + IMAGE_BYTES // 2
    # the source image was evicted to make room for the scaled one, so a new scale needs it again
    assert runner.run(scaled_chain(0.25)).ran == ["src", "scale", "save"]


def test_completed_nodes_stay_cached_after_a_failure(runner: Runner) -> None:
    prompt = {"src": stub(), "bad": {"class_type": "TestSyncError", "inputs": {"value": ["src", 0]}},
              "out": {"class_type": "TestRecord", "inputs": {"value": ["bad", 0]}}}
    assert runner.run(prompt).status == "error"
    prompt["out"]["inputs"]["value"] = ["src", 0]
    del prompt["bad"]
    assert runner.run(prompt).ran == ["out"]


def test_reset_forgets_everything(runner: Runner) -> None:
    prompt = scaled_chain()
    runner.run(prompt)
    runner.executor.reset()
    assert runner.run(prompt).ran == ["src", "scale", "save"]


# ------------------------------------------------------------------ the cache object itself

def test_output_cache_lru_generations() -> None:
    policy = CachePolicy.parse("lru:2")
    cache = OutputCache(policy)

    def prompt(*keys: bytes, touch: tuple[bytes, ...] = ()) -> None:
        cache.begin_prompt(set(), policy)
        for key in touch:
            assert cache.get(key) is not None
        for key in keys:
            cache.set(key, [[key]], None, False)
        cache.end_prompt(policy)

    prompt(b"k1", b"k2")
    prompt(b"k3")
    assert list(cache.entries) == [b"k2", b"k3"]
    prompt(b"k4", touch=(b"k2",))
    assert list(cache.entries) == [b"k2", b"k4"]
    prompt(b"k5", b"k6", b"k7")
    assert list(cache.entries) == [b"k5", b"k6", b"k7"]


def test_output_cache_ram_trim_and_estimates() -> None:
    class Sized:
        def get_ram_usage(self) -> int:
            return 1000

    assert estimate_bytes([[torch.zeros(10)], {"x": Sized()}]) == 40 + 1000
    policy = CachePolicy.parse("ram:2500")
    cache = OutputCache(policy)
    for key in (b"a", b"b", b"c"):
        cache.set(key, [[Sized()]], None, True)
    cache.get(b"a")
    cache.trim_ram(policy)
    assert list(cache.entries) == [b"c", b"a"] and cache.total_bytes == 2000


@pytest.mark.parametrize(("text", "kind", "size"), [("classic", "classic", 0), ("none", "none", 0),
                                                    ("lru:5", "lru", 5), ("ram:1e9", "ram", 10 ** 9)])
def test_cache_policy_parse(text: str, kind: str, size: int) -> None:
    policy = CachePolicy.parse(text)
    assert (policy.kind, policy.size) == (kind, size)
    assert CachePolicy.parse(policy.describe()) == policy


@pytest.mark.parametrize("text", ["lru", "lru:0", "ram:-1", "fifo:3", "lru:x"])
def test_cache_policy_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        CachePolicy.parse(text)
