"""Executor overhead per node: deep chains, wide graphs, cached re-runs.

    python bench/executor.py [--sizes 1000 10000 100000]

Prints a table and one JSON line (prefix "RESULT ").  Nodes are trivial integer adds, so the
numbers are pure engine overhead: validation, signatures, scheduling, events, cache writes.
Events go through a real EventHub with one listener (like a connected client) so their cost counts.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.cache import CachePolicy  # noqa: E402
from execution.events import EventHub  # noqa: E402
from execution.executor import Executor  # noqa: E402
from execution.validate import validate_prompt  # noqa: E402
from model_management.folders import Folders  # noqa: E402
from nodes.registry import NodeRegistry  # noqa: E402
from nodes.runtime import NodeServices  # noqa: E402
from nodes.schema import Int, Node, Out, Socket  # noqa: E402


class BenchConst(Node):
    INPUTS = (Int("value", 0),)
    OUTPUTS = (Out("INT"),)

    def execute(self, value: int) -> tuple:
        return (value,)


class BenchAdd(Node):
    INPUTS = (Socket("INT", "a"), Int("b", 1))
    OUTPUTS = (Out("INT"),)

    def execute(self, a: int, b: int) -> tuple:
        return (a + b,)


class BenchSink(Node):
    OUTPUT_NODE = True
    INPUTS = (Socket("INT", "a"),)

    def execute(self, a: int) -> dict:
        return {"ui": {"value": [a]}}


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "BenchConst", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "BenchAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt[str(n - 1)] = {"class_type": "BenchSink", "inputs": {"a": [str(n - 2), 0]}}
    return prompt


def wide(n: int) -> dict:
    """One source, n/2 adds in parallel, each with its own output node."""
    prompt = {"src": {"class_type": "BenchConst", "inputs": {"value": 1}}}
    for i in range((n - 1) // 2):
        prompt[f"a{i}"] = {"class_type": "BenchAdd", "inputs": {"a": ["src", 0], "b": i}}
        prompt[f"o{i}"] = {"class_type": "BenchSink", "inputs": {"a": [f"a{i}", 0]}}
    return prompt


def measure(executor: Executor, registry: NodeRegistry, hub: EventHub, make, n: int,
            loop: asyncio.AbstractEventLoop) -> dict:
    prompt = make(n)
    nodes = len(prompt)
    t0 = time.perf_counter()
    result = validate_prompt(prompt, registry)
    t1 = time.perf_counter()
    emit = hub.emitter("bench-client")
    cold = loop.run_until_complete(executor.run("cold", prompt, {}, result.outputs, emit))
    t2 = time.perf_counter()
    warm = loop.run_until_complete(executor.run("warm", make(n), {}, result.outputs, emit))
    t3 = time.perf_counter()
    assert cold.status == "success" and warm.status == "success", (cold.terminal, warm.terminal)
    assert len(cold.executed) == nodes and len(warm.executed) == 0
    executor.reset()
    return {"nodes": nodes, "validate_us": (t1 - t0) / nodes * 1e6, "execute_us": (t2 - t1) / nodes * 1e6,
            "total_us": (t2 - t0) / nodes * 1e6, "cached_rerun_us": (t3 - t2) / nodes * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    folders = Folders.create(tempfile.mkdtemp(prefix="sumi-bench-"))
    registry = NodeRegistry(NodeServices(folders))
    for cls in (BenchConst, BenchAdd, BenchSink):
        registry.register(cls.__name__, cls)
    hub = EventHub()
    received = [0]
    hub.subscribe(lambda message: received.__setitem__(0, received[0] + 1))
    executor = Executor(registry, registry.services, CachePolicy("classic"))
    sys.setrecursionlimit(1000)  # proves nothing recurses on graph depth
    gc.freeze()  # as main.py does after start-up
    loop = asyncio.new_event_loop()  # one loop reused across prompts, as the worker thread does
    measure(executor, registry, hub, chain, 100, loop)  # one-time warm-up (a serving process is warm)
    rows = []
    for shape, make in (("chain", chain), ("wide", wide)):
        for n in args.sizes:
            row = {"shape": shape, **measure(executor, registry, hub, make, n, loop)}
            rows.append(row)
    print(f"{'shape':<6} {'nodes':>7} {'validate':>10} {'execute':>10} {'total':>10} {'cached':>10}  (us/node)")
    for r in rows:
        print(f"{r['shape']:<6} {r['nodes']:>7} {r['validate_us']:>10.2f} {r['execute_us']:>10.2f} "
              f"{r['total_us']:>10.2f} {r['cached_rerun_us']:>10.2f}")
    chains = {r["nodes"]: r["total_us"] for r in rows if r["shape"] == "chain"}
    sizes = sorted(chains)
    growth = chains[sizes[-1]] / chains[sizes[0]] if len(sizes) > 1 else 1.0
    print(f"per-node cost growth {sizes[0]} -> {sizes[-1]} nodes: x{growth:.2f} (1.0 = perfectly linear)")
    print("RESULT " + json.dumps({"bench": "executor", "rows": rows, "per_node_growth": growth,
                                  "events_received": received[0]}))


if __name__ == "__main__":
    main()
