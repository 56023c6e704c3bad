"""Runs one validated prompt: signatures, cache lookups, a ready-list scheduler, node calls.

Scheduling is Kahn's algorithm over a graph that may grow while it runs (lazy inputs and node
expansion add nodes and edges).  Everything is iterative; preparation is O(V+E).

Protocol details follow ComfyUI (spec/comfy_api.md §4): values travel as lists (one element per
call), constants are one-element lists, a short list repeats its last element, INPUT_IS_LIST
nodes get whole lists, OUTPUT_IS_LIST outputs are concatenated, ExecutionBlocker propagates.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from execution.cache import CachePolicy, OutputCache, canonical, never_equal, node_key
from execution.graph import DynamicPrompt, is_link
from nodes.graph_builder import ExpansionPrefix, current_call
from nodes.registry import NodeRegistry
from nodes.runtime import InterruptedError_, NodeRuntime, NodeServices
from nodes.schema import RUNTIME_KIND, ExecutionBlocker, InputSpec, NodeSchema

Emit = Callable[[str, dict], None]
SUCCESS, PENDING = "success", "pending"


def now_ms() -> int:
    return int(time.time() * 1000)


class InterruptFlag:
    """Set by POST /interrupt; checked between node calls and at every progress update."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.running_prompt: str | None = None

    def request(self, prompt_id: str | None = None) -> None:
        if prompt_id is None or prompt_id == self.running_prompt:
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()


class NodeError(Exception):
    """A failure attributed to one node, carrying what ComfyUI's execution_error reports."""

    def __init__(self, node_id: str, node_type: str, exc: BaseException, inputs: dict | None = None) -> None:
        super().__init__(str(exc))
        self.node_id = node_id
        self.node_type = node_type
        self.exc = exc
        self.inputs = inputs or {}


class DependencyCycleError(Exception):
    """Nothing is ready and nothing is running: the graph (usually an expansion) has a cycle."""

    # Clients match on ComfyUI's name for this error.
    comfy_type = "graph.DependencyCycleError"


class NodeInputError(Exception):
    pass


@dataclass
class RunOutcome:
    """What the worker writes to history before it sends the terminal message."""

    status: str  # "success" | "error" | "interrupted"
    messages: list[tuple[str, dict]]
    outputs: dict[str, dict]
    meta: dict[str, dict]
    terminal: tuple[str, dict]
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def format_inputs(inputs: dict) -> dict:
    def fmt(v: Any) -> Any:
        return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)
    return {k: [fmt(x) for x in vals] for k, vals in inputs.items() if isinstance(vals, list)}


class Executor:
    """Holds the caches between prompts; `run` executes one prompt."""

    def __init__(self, registry: NodeRegistry, services: NodeServices, policy: CachePolicy,
                 interrupt: InterruptFlag | None = None) -> None:
        self.registry = registry
        self.services = services
        self.policy = policy
        self.cache = OutputCache(policy)
        self.objects: dict[tuple[str, str], Any] = {}
        self.interrupt = interrupt or InterruptFlag()

    def reset(self) -> None:
        """Forget every cached output and node instance (POST /free with free_memory)."""
        self.cache.clear()
        self.objects.clear()

    async def run(self, prompt_id: str, prompt: dict, extra_data: dict, outputs: list[str],
                  emit: Emit) -> RunOutcome:
        run = _Run(self, prompt_id, prompt, extra_data or {}, outputs, emit)
        return await run.execute()


class _Run:
    """State of one prompt execution."""

    def __init__(self, ex: Executor, prompt_id: str, prompt: dict, extra_data: dict, outputs: list[str],
                 emit: Emit) -> None:
        self.ex = ex
        self.registry = ex.registry
        self.prompt_id = prompt_id
        self.dyn = DynamicPrompt(prompt)
        self.extra = extra_data
        self.output_ids = outputs
        self.emit = emit
        policy = CachePolicy.parse(extra_data.get("cache_policy")) or ex.policy
        self.policy = policy
        self.use_cache = policy.kind != "none"
        self.read_cache = self.use_cache and not extra_data.get("force_rerun")
        self.measure = policy.kind == "ram"
        self.preview_method = ex.services.preview_method_for(extra_data.get("preview_method"))
        self.messages: list[tuple[str, dict]] = []
        self.specs: dict[str, InputSpec] = {}
        self.keys: dict[str, bytes] = {}
        self.values: dict[str, list] = {}
        self.ui: dict[str, dict] = {}
        self.meta: dict[str, dict] = {}
        self.executed: list[str] = []
        # scheduler state
        self.pending: set[str] = set()
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, int]] = {}
        self.ready_first: deque[str] = deque()
        self.ready: deque[str] = deque()
        self.expansions: dict[str, list] = {}
        self.expansion_ui: dict[str, dict] = {}
        self.cached: list[str] = []
        self.async_calls: dict[str, tuple[list, list]] = {}
        self.async_done: asyncio.Queue[str] | None = None
        self.async_outstanding = 0
        self.blocker_reported: set[int] = set()

    # ---------------------------------------------------------------- messages
    def record(self, event: str, data: dict) -> None:
        """A status message: kept for history and sent to the prompt's client."""
        data["timestamp"] = now_ms()
        self.messages.append((event, data))
        self.emit(event, data)

    def node_state(self, node_id: str, state: str, value: float = 0.0, maximum: float = 1.0) -> None:
        """progress_state with just this node's entry (ComfyUI resends every node: quadratic on big graphs)."""
        if node_id in self.dyn.parents:
            display, parent, real = (self.dyn.get_display_node_id(node_id), self.dyn.get_parent_node_id(node_id),
                                     self.dyn.get_real_node_id(node_id))
        else:
            display, parent, real = node_id, None, node_id
        self.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": {node_id: {
            "value": value, "max": maximum, "state": state, "node_id": node_id, "prompt_id": self.prompt_id,
            "display_node_id": display, "parent_node_id": parent, "real_node_id": real}}})

    # ---------------------------------------------------------------- preparation
    def spec(self, schema: NodeSchema) -> InputSpec:
        spec = self.specs.get(schema.class_type)
        if spec is None:
            spec = self.specs[schema.class_type] = schema.input_spec()
        return spec

    def hidden_value(self, kind: str, node_id: str, for_validation: bool = False) -> Any:
        if kind == "PROMPT":
            return {} if for_validation else self.dyn.get_original_prompt()
        if kind == "DYNPROMPT":
            return self.dyn
        if kind == "EXTRA_PNGINFO":
            return self.extra.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "AUTH_TOKEN_COMFY_ORG":
            return self.extra.get("auth_token_comfy_org")
        if kind == "API_KEY_COMFY_ORG":
            return self.extra.get("api_key_comfy_org")
        if kind == RUNTIME_KIND:
            return self.runtime(node_id)
        return None

    def runtime(self, node_id: str) -> NodeRuntime:
        display = self.dyn.get_display_node_id(node_id)

        def progress(value: float, total: float, preview: Any) -> None:
            value = min(value, total)
            if preview is not None:
                self.emit("preview", {"prompt_id": self.prompt_id, "node_id": node_id, "display_node_id": display,
                                      "parent_node_id": self.dyn.get_parent_node_id(node_id),
                                      "real_node_id": self.dyn.get_real_node_id(node_id), "preview": preview})
            self.emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})
            self.node_state(node_id, "running", float(value), float(total))

        def send_text(text: str) -> None:
            self.emit("progress_text", {"node_id": node_id, "text": text, "prompt_id": self.prompt_id})

        return NodeRuntime(self.ex.services, self.prompt_id, node_id, display, progress,
                           self.ex.interrupt.is_set, send_text, self.preview_method)

    def is_changed(self, node_id: str, node: dict, schema: NodeSchema) -> str:
        """IS_CHANGED sees constants only (links are None); errors and NaN mean 'always re-run'."""
        spec = self.spec(schema)
        params = inspect.signature(schema.is_changed).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        args: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name in spec.inputs and (takes_all or name in params):
                args[name] = None if is_link(value) else value
        for name, kind in spec.hidden.items():
            if takes_all or name in params:
                args[name] = self.hidden_value(kind, node_id, for_validation=True)
        try:
            result = schema.is_changed(**args)
            if inspect.isawaitable(result):
                result = _run_coroutine_blocking(result)
        except Exception:  # noqa: BLE001 - ComfyUI logs and treats the node as always changed
            return never_equal()
        if isinstance(result, ExecutionBlocker):
            result = None
        node["is_changed"] = [result]
        return canonical([result])

    def compute_keys(self, node_ids: list[str]) -> None:
        """Post-order over link inputs; each key digests the node plus its sources' keys."""
        keys = self.keys
        for root in node_ids:
            if root in keys:
                continue
            stack = [root]
            visiting: set[str] = set()
            while stack:
                nid = stack[-1]
                if nid in keys:
                    stack.pop()
                    continue
                if not self.dyn.has_node(nid):
                    keys[nid] = never_equal().encode()
                    stack.pop()
                    continue
                node = self.dyn.get_node(nid)
                waiting = False
                if nid not in visiting:
                    visiting.add(nid)
                    for value in node["inputs"].values():
                        if is_link(value) and value[0] not in keys and value[0] not in visiting:
                            stack.append(value[0])
                            waiting = True
                    if waiting:
                        continue
                stack.pop()
                visiting.discard(nid)
                keys[nid] = self.key_of(nid, node)

    def key_of(self, nid: str, node: dict) -> bytes:
        schema = self.registry.get(node["class_type"])
        if schema is None:
            return never_equal().encode()
        changed = self.is_changed(nid, node, schema) if schema.is_changed is not None else "F"
        parts = []
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                source = self.keys.get(value[0])
                parts.append((name, f"L{source.hex()}:{int(value[1])}" if source else never_equal()))
            else:
                parts.append((name, canonical(value)))
        return node_key(node["class_type"], changed, nid if schema.not_idempotent else None, parts)

    # ---------------------------------------------------------------- execution list
    def available(self, node_id: str) -> list | None:
        """A node's outputs if already computed in this run or present in the cache."""
        outs = self.values.get(node_id)
        if outs is None and self.read_cache and node_id not in self.pending:
            key = self.keys.get(node_id)
            entry = self.ex.cache.get(key) if key is not None else None
            if entry is not None:
                outs = self.values[node_id] = entry.outputs
        return outs

    def add_node(self, root: str) -> None:
        stack = [root]
        while stack:
            nid = stack.pop()
            if nid in self.pending or nid in self.values:
                continue
            self.pending.add(nid)
            self.block_count[nid] = 0
            node = self.dyn.get_node(nid)
            schema = self.registry.get(node["class_type"])
            lazy = self.spec(schema).lazy_names if schema is not None else frozenset()
            for name, value in node["inputs"].items():
                if not is_link(value) or name in lazy:
                    continue
                src = value[0]
                if not self.dyn.has_node(src) or self.available(src) is not None:
                    continue
                self.add_edge(src, nid)
                stack.append(src)
            if self.block_count[nid] == 0:
                self.make_ready(nid)

    def add_edge(self, src: str, dst: str) -> None:
        edges = self.blocking.setdefault(src, {})
        edges[dst] = edges.get(dst, 0) + 1
        self.block_count[dst] = self.block_count.get(dst, 0) + 1

    def make_ready(self, nid: str) -> None:
        """Output nodes and async nodes go first (ComfyUI's UX pick order; results are unaffected)."""
        schema = self.registry.get(self.dyn.get_node(nid)["class_type"])
        first = schema is not None and (schema.output_node or schema.is_async)
        (self.ready_first if first else self.ready).append(nid)

    def complete(self, nid: str) -> None:
        self.pending.discard(nid)
        for dst, count in self.blocking.pop(nid, {}).items():
            left = self.block_count[dst] - count
            self.block_count[dst] = left
            if left == 0 and dst in self.pending:
                self.make_ready(dst)

    def find_cycle_node(self) -> str:
        """Walk 'blocked by' edges from a stuck node until one repeats; prefer an ephemeral member."""
        blocked_by: dict[str, list[str]] = {}
        for src, edges in self.blocking.items():
            for dst in edges:
                blocked_by.setdefault(dst, []).append(src)
        start = next(iter(self.pending))
        path: list[str] = []
        seen: dict[str, int] = {}
        nid = start
        while nid not in seen:
            seen[nid] = len(path)
            path.append(nid)
            nxt = [s for s in blocked_by.get(nid, []) if s in self.pending]
            if not nxt:
                break
            nid = nxt[0]
        cycle = path[seen.get(nid, 0):]
        for member in cycle:
            if self.dyn.get_parent_node_id(member) is not None:
                return self.dyn.get_display_node_id(member)
        return cycle[0]

    # ---------------------------------------------------------------- main loop
    async def execute(self) -> RunOutcome:
        ex = self.ex
        ex.interrupt.clear()
        ex.interrupt.running_prompt = self.prompt_id
        self.async_done = asyncio.Queue()
        self.prefix = ExpansionPrefix()
        prefix_token = current_call.set(self.prefix)
        self.record("execution_start", {"prompt_id": self.prompt_id})
        current: str | None = None
        try:
            original = list(self.dyn.original)
            if self.use_cache:
                self.compute_keys(original)
            ex.cache.begin_prompt(set(self.keys.values()), self.policy)
            live = {(nid, self.dyn.original[nid]["class_type"]) for nid in original}
            for stale in [k for k in ex.objects if k not in live]:
                del ex.objects[stale]
            self.cached = [nid for nid in original if self.read_cache and self.keys.get(nid) in ex.cache]
            self.record("execution_cached", {"nodes": self.cached, "prompt_id": self.prompt_id})
            for output_id in self.output_ids:
                self.add_node(output_id)
            while self.pending:
                while self.async_done.qsize():
                    self.ready_first.append(self.async_done.get_nowait())
                if self.ready_first:
                    current = self.ready_first.popleft()
                elif self.ready:
                    current = self.ready.popleft()
                elif self.async_outstanding:
                    current = await self.async_done.get()
                else:
                    stuck = self.find_cycle_node()
                    raise NodeError(stuck, self.dyn.get_node(stuck)["class_type"] if self.dyn.has_node(stuck)
                                    else "", DependencyCycleError("Dependency cycle detected"))
                if current not in self.pending:
                    continue
                state = await self.execute_node(current)
                if state == SUCCESS:
                    self.complete(current)
                elif self.block_count.get(current, 0) == 0 and current not in self.async_calls:
                    self.make_ready(current)
                if self.measure:
                    ex.cache.trim_ram(self.policy)
            current = None
            outcome_event = ("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
            status = "success"
        except InterruptedError_:
            real = self.dyn.get_real_node_id(current) if current else None
            node_type = self.dyn.get_node(current)["class_type"] if current and self.dyn.has_node(current) else None
            outcome_event = ("execution_interrupted", {"prompt_id": self.prompt_id, "node_id": real,
                                                       "node_type": node_type, "executed": list(self.executed),
                                                       "timestamp": now_ms()})
            status = "interrupted"
        except NodeError as err:
            outcome_event = ("execution_error", self.error_payload(err))
            status = "error"
        finally:
            current_call.reset(prefix_token)
            ex.interrupt.running_prompt = None
            for tasks, _ in self.async_calls.values():
                for task in tasks:
                    if isinstance(task, asyncio.Task):
                        task.cancel()
            if self.use_cache:
                ex.cache.end_prompt(self.policy)
        self.messages.append(outcome_event)
        return RunOutcome(status, self.messages, self.ui, self.meta, outcome_event, self.executed, self.cached)

    def error_payload(self, err: NodeError) -> dict:
        """ComfyUI's execution_error: node exceptions get str(ex) + "\\n" (+ tips); a cycle has no inputs."""
        exc = err.exc
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__) if exc.__traceback__ else []
        cycle = isinstance(exc, DependencyCycleError)
        return {"prompt_id": self.prompt_id, "node_id": self.dyn.get_real_node_id(err.node_id) if
                self.dyn.has_node(err.node_id) else err.node_id, "node_type": err.node_type,
                "executed": list(self.executed), "exception_message": str(exc) if cycle else f"{exc}\n",
                "exception_type": DependencyCycleError.comfy_type if cycle else exception_type_name(exc),
                "traceback": tb[1:] if len(tb) > 1 else tb,
                "current_inputs": [] if cycle else format_inputs(err.inputs),
                "current_outputs": list(self.dyn.original), "timestamp": now_ms()}

    # ---------------------------------------------------------------- one node
    def instance(self, nid: str, schema: NodeSchema) -> Any:
        key = (nid, schema.class_type)
        obj = self.ex.objects.get(key)
        if obj is None:
            obj = self.ex.objects[key] = schema.cls()
        return obj

    async def execute_node(self, nid: str) -> str:
        node = self.dyn.get_node(nid)
        class_type = node["class_type"]
        schema = self.registry.get(class_type)
        display = self.dyn.get_display_node_id(nid)
        try:
            if schema is None:
                raise NodeInputError(f"node type {class_type!r} is not registered")
            if nid in self.expansions:
                return self.finish(nid, schema, self.assemble_expansion(nid), None, emit_ui=False)
            if nid in self.async_calls:
                return self.finish_async(nid, schema)
            key = self.keys.get(nid)
            if self.read_cache and key is not None:
                entry = self.ex.cache.get(key)
                if entry is not None:
                    self.values[nid] = entry.outputs
                    if entry.ui is not None or schema.output_node:
                        self.emit("executed", {"node": nid, "display_node": display, "output": entry.ui,
                                               "prompt_id": self.prompt_id})
                    if entry.ui:
                        self.store_ui(nid, entry.ui)
                    self.node_state(nid, "finished", 1, 1)
                    return SUCCESS
            self.node_state(nid, "running")
            self.emit("executing", {"node": nid, "display_node": display, "prompt_id": self.prompt_id})
            spec = self.spec(schema)
            args, missing = self.resolve_inputs(nid, node, spec)
            obj = self.instance(nid, schema)
            check_lazy = getattr(obj, "check_lazy_status", None)
            if check_lazy is not None and spec.lazy_names:
                needed = await self.lazy_needs(nid, node, check_lazy, args, missing, schema)
                if needed:
                    return PENDING
            calls = self.call_args(args, schema.input_is_list)
            func = getattr(obj, schema.function)
            results: list[Any] = []
            for index, call in enumerate(calls):
                if self.ex.interrupt.is_set():
                    raise InterruptedError_()
                blocker = self.find_blocker(call, schema.input_is_list)
                if blocker is not None:
                    results.append(self.report_blocker(nid, class_type, blocker))
                    continue
                self.prefix.enter(nid, index)
                result = func(**call)
                results.append(_in_call(result, nid, index) if inspect.isawaitable(result) else result)
            if any(inspect.isawaitable(r) for r in results):
                return await self.start_async(nid, schema, results, args)
            return self.handle_results(nid, schema, results, args)
        except (InterruptedError_, NodeError):
            raise
        except Exception as exc:  # noqa: BLE001 - any node failure is attributed to the node
            raise NodeError(nid, class_type, exc, locals().get("args")) from exc

    def resolve_inputs(self, nid: str, node: dict, spec: InputSpec) -> tuple[dict[str, list], set[str]]:
        args: dict[str, list] = {}
        missing: set[str] = set()
        for name, value in node["inputs"].items():
            decl = spec.inputs.get(name)
            if is_link(value):
                if decl is not None and decl.raw_link:
                    args[name] = [value]
                    continue
                outs = self.available(value[0])
                slot = int(value[1])
                if outs is None or slot >= len(outs):
                    args[name] = [None]
                    missing.add(name)
                else:
                    args[name] = outs[slot]
            elif decl is not None:
                args[name] = [value]
        for name, kind in spec.hidden.items():
            args[name] = [self.hidden_value(kind, nid)]
        return args, missing

    @staticmethod
    def call_args(args: dict[str, list], input_is_list: bool) -> list[dict]:
        if input_is_list:
            return [args]
        sizes = [len(v) for v in args.values()]
        if not sizes or max(sizes) == 0:
            return [{}]
        count = max(sizes)
        if count == 1:
            return [{k: v[0] for k, v in args.items() if v}]
        return [{k: v[i] if i < len(v) else v[-1] for k, v in args.items() if v} for i in range(count)]

    @staticmethod
    def find_blocker(call: dict, input_is_list: bool) -> ExecutionBlocker | None:
        for value in call.values():
            if isinstance(value, ExecutionBlocker):
                return value
            if input_is_list and isinstance(value, list):
                for item in value:
                    if isinstance(item, ExecutionBlocker):
                        return item
        return None

    def report_blocker(self, nid: str, class_type: str, blocker: ExecutionBlocker) -> ExecutionBlocker:
        """A blocker with a message is reported once by its first consumer, then goes silent."""
        if blocker.message is None:
            return blocker
        if id(blocker) not in self.blocker_reported:
            self.blocker_reported.add(id(blocker))
            self.emit("execution_error", {
                "prompt_id": self.prompt_id, "node_id": nid, "node_type": class_type,
                "executed": list(self.executed), "exception_message": f"Execution Blocked: {blocker.message}",
                "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": [],
                "current_outputs": []})
        return ExecutionBlocker(None)

    async def lazy_needs(self, nid: str, node: dict, check_lazy: Callable, args: dict, missing: set[str],
                         schema: NodeSchema) -> bool:
        """Ask check_lazy_status which lazy inputs it needs; schedule those still missing."""
        needed: set[str] = set()
        for call in self.call_args(args, schema.input_is_list):
            names = check_lazy(**call)
            if inspect.isawaitable(names):
                names = await names
            needed.update(names or ())
        needed &= missing | {n for n in needed if n not in args}
        added = False
        for name in sorted(needed):
            value = node["inputs"].get(name)
            if value is None:
                raise NodeInputError(f"Node {nid} says it needs input {name}, but there is no input to that node at all")
            if not is_link(value):
                raise NodeInputError(f"Node {nid} says it needs input {name}, but that value is a constant")
            src = value[0]
            if self.available(src) is not None:
                continue
            self.add_edge(src, nid)
            self.add_node(src)
            added = True
        return added

    async def start_async(self, nid: str, schema: NodeSchema, results: list, args: dict) -> str:
        tasks = [asyncio.ensure_future(r) if inspect.isawaitable(r) else r for r in results]
        await asyncio.sleep(0)
        if all(not isinstance(t, asyncio.Future) or t.done() for t in tasks):
            return self.handle_results(nid, schema, [_future_result(t) for t in tasks], args)
        self.async_calls[nid] = (tasks, [args])
        self.async_outstanding += 1

        async def watch() -> None:
            await asyncio.gather(*[t for t in tasks if isinstance(t, asyncio.Future)], return_exceptions=True)
            self.async_outstanding -= 1
            self.async_done.put_nowait(nid)

        asyncio.ensure_future(watch())
        return PENDING

    def finish_async(self, nid: str, schema: NodeSchema) -> str:
        tasks, (args,) = self.async_calls.pop(nid)
        return self.handle_results(nid, schema, [_future_result(t) for t in tasks], args)

    def handle_results(self, nid: str, schema: NodeSchema, results: list, args: dict) -> str:
        """Split each call's return into outputs / ui / expansion, then finish or go pending."""
        per_call: list[tuple[str, Any]] = []
        uis: list[dict] = []
        expanded = False
        for result in results:
            if isinstance(result, ExecutionBlocker):
                per_call.append(("value", result))
                continue
            if isinstance(result, dict):
                if result.get("ui") is not None:
                    uis.append(result["ui"])
                outputs = result.get("result", ())
                graph = result.get("expand")
                if graph:
                    self.expand(nid, graph)
                    for value in outputs:
                        if is_link(value) and self.available(value[0]) is None:
                            self.add_edge(value[0], nid)
                            self.add_node(value[0])
                    per_call.append(("expand", tuple(outputs)))
                    expanded = True
                    continue
                per_call.append(("value", tuple(outputs) if outputs is not None else ()))
                continue
            per_call.append(("value", tuple(result) if result is not None else ()))
        ui = merge_ui(uis)
        if expanded:
            # ui returned with an expansion is published on the first pass only (as in ComfyUI).
            self.expansions[nid] = per_call
            if ui:
                self.publish_ui(nid, ui)
                self.expansion_ui[nid] = ui
            return PENDING
        return self.finish(nid, schema, [value for _, value in per_call], ui)

    def assemble_expansion(self, nid: str) -> list:
        """Second pass of an expanded node: replace result links by the linked outputs (spliced)."""
        assembled = []
        for kind, value in self.expansions.pop(nid):
            if kind != "expand" or isinstance(value, ExecutionBlocker):
                assembled.append(value)
                continue
            row = []
            for item in value:
                if is_link(item):
                    outs = self.available(item[0]) or []
                    slot = int(item[1])
                    row.append(_Spliced(outs[slot] if slot < len(outs) else [None]))
                else:
                    row.append(item)
            assembled.append(tuple(row))
        return assembled

    def finish(self, nid: str, schema: NodeSchema, calls: list, ui: dict | None, emit_ui: bool = True) -> str:
        """Merge per-call results into output lists, store them, publish ui, cache.

        Slots a node never returned stay absent (not empty), so consumers see a missing input (None),
        as ComfyUI does; a whole-result blocker fills every declared slot.
        """
        if len(calls) == 1 and type(calls[0]) is tuple and not any(schema.output_is_list) \
                and not any(isinstance(v, _Spliced) for v in calls[0]):
            return self.store(nid, [[v] for v in calls[0]], ui, emit_ui)
        width = max([len(c) if isinstance(c, tuple) else len(schema.output_types) for c in calls], default=0)
        outputs: list[list] = [[] for _ in range(width)]
        for call in calls:
            for slot in range(width):
                if isinstance(call, ExecutionBlocker):
                    outputs[slot].append(call)
                    continue
                if slot >= len(call):
                    continue
                value = call[slot]
                as_list = slot < len(schema.output_is_list) and schema.output_is_list[slot]
                if isinstance(value, _Spliced):
                    outputs[slot].extend(value.items)
                elif as_list and not isinstance(value, ExecutionBlocker):
                    outputs[slot].extend(value)
                else:
                    outputs[slot].append(value)
        return self.store(nid, outputs, ui, emit_ui)

    def store(self, nid: str, outputs: list[list], ui: dict | None, emit_ui: bool) -> str:
        self.values[nid] = outputs
        if not emit_ui:
            ui = self.expansion_ui.pop(nid, None)
        elif ui:
            self.publish_ui(nid, ui)
        self.executed.append(nid)
        key = self.keys.get(nid)
        if self.use_cache and key is not None:
            self.ex.cache.set(key, outputs, ui, self.measure)
        self.node_state(nid, "finished", 1.0, 1.0)
        return SUCCESS

    def expand(self, nid: str, graph: dict) -> None:
        parent_display = self.dyn.get_display_node_id(nid)
        new_ids = []
        for new_id, new_node in graph.items():
            node = {"class_type": new_node["class_type"], "inputs": dict(new_node.get("inputs", {}))}
            display = new_node.get("override_display_id") or parent_display
            self.dyn.add_ephemeral_node(new_id, node, nid, display)
            self.keys.pop(new_id, None)
            self.values.pop(new_id, None)
            new_ids.append(new_id)
        if self.use_cache:
            self.compute_keys(new_ids)
        for new_id in new_ids:
            schema = self.registry.get(graph[new_id]["class_type"])
            if schema is not None and schema.output_node:
                self.add_node(new_id)

    def publish_ui(self, nid: str, ui: dict) -> None:
        self.emit("executed", {"node": nid, "display_node": self.dyn.get_display_node_id(nid), "output": ui,
                               "prompt_id": self.prompt_id})
        self.store_ui(nid, ui)

    def store_ui(self, nid: str, ui: dict) -> None:
        self.ui[nid] = ui
        self.meta[nid] = {"node_id": nid, "display_node": self.dyn.get_display_node_id(nid),
                          "parent_node": self.dyn.get_parent_node_id(nid),
                          "real_node_id": self.dyn.get_real_node_id(nid)}


class _Spliced:
    """Marks an expansion result that links to a whole output list, spliced into place."""

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items


def merge_ui(uis: list[dict]) -> dict | None:
    """ui dicts of several calls: keys from the first call, values concatenated."""
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in uis[0].items()}
    for ui in uis[1:]:
        for k in merged:
            v = ui.get(k)
            if v is not None:
                merged[k].extend(v if isinstance(v, (list, tuple)) else [v])
    return merged


def _future_result(task: Any) -> Any:
    if isinstance(task, asyncio.Future):
        return task.result()
    return task


def _run_coroutine_blocking(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code inside a running loop (IS_CHANGED)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_awaited(coro)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _in_call(awaitable: Any, node_id: str, call_index: int) -> Any:
    """Await a node call with its own expansion prefix: its task resumes after other calls moved the shared one."""
    state = ExpansionPrefix()
    state.enter(node_id, call_index)
    current_call.set(state)  # tasks run in a copied context, so this stays local to the call
    return await awaitable


async def _awaited(value: Any) -> Any:
    return await value
