"""`main.py run` / `main.py convert`: run or convert a workflow file without a server."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from execution.context import AppContext
from execution.events import Message
from execution.executor import RunOutcome
from execution.validate import validate_prompt

SEED_INPUTS = ("seed", "noise_seed")


def load_prompt(ctx: AppContext, path: Path) -> tuple[dict, dict]:
    """Any of: UI workflow JSON, API prompt JSON, PNG with metadata -> (API prompt, extra_data)."""
    from execution.convert import load_any, ui_to_api

    kind, data = load_any(path)
    if kind == "api":
        return data, {}

    def info(class_type: str) -> dict | None:
        schema = ctx.registry.get(class_type)
        return schema.object_info() if schema is not None else None
    return ui_to_api(data, info), {"extra_pnginfo": {"workflow": data}}


def format_errors(body: dict) -> str:
    lines = []
    error = body.get("error")
    if error:
        lines.append(f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": "))
    for node_id, entry in (body.get("node_errors") or {}).items():
        for err in entry.get("errors", []):
            lines.append(f"  node {node_id} ({entry.get('class_type')}): {err['message']} - {err['details']}")
    return "\n".join(lines)


class _ProgressPrinter:
    """A tqdm bar per node that reports progress; node starts and errors as plain lines."""

    def __init__(self, prompt: dict) -> None:
        self.prompt = prompt
        self.bar: tqdm | None = None

    def __call__(self, msg: Message) -> None:
        data = msg.data if isinstance(msg.data, dict) else {}
        if msg.event == "executing" and data.get("node") is not None:
            self.close()
            node = self.prompt.get(data.get("display_node") or data["node"], {})
            title = (node.get("_meta") or {}).get("title") or node.get("class_type", "")
            tqdm.write(f"[{data['node']}] {title}", file=sys.stderr)
        elif msg.event == "progress":
            if self.bar is None or self.bar.total != data["max"]:
                self.close()
                self.bar = tqdm(total=data["max"], file=sys.stderr, leave=False, unit="step")
            self.bar.n = data["value"]
            self.bar.refresh()
        elif msg.event == "execution_error":
            self.close()
            tqdm.write(f"error in node {data.get('node_id')} ({data.get('node_type')}): "
                       f"{data.get('exception_type')}: {data.get('exception_message')}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def output_paths(ctx: AppContext, outputs: dict) -> list[Path]:
    paths = []
    for ui in outputs.values():
        for item in ui.get("images", []) if isinstance(ui, dict) else []:
            if isinstance(item, dict) and {"filename", "type"} <= item.keys():
                paths.append(ctx.folders.type_dir(item["type"]) / item.get("subfolder", "") / item["filename"])
    return paths


def run_prompt(ctx: AppContext, prompt: dict, extra: dict, outputs: list[str]) -> RunOutcome:
    """Run a validated API prompt (`outputs`: validation's output nodes) on this thread, through the
    queue and the worker's job path, so history and events are those of a served prompt. The context
    must be built with start_worker=False."""
    job = ctx.queue.put(prompt, extra, outputs, number=ctx.queue.next_number())
    ctx.queue.get(timeout=0)
    return ctx.worker.run_job(job)


def run_file(ctx: AppContext, path: Path, seed: int | None = None) -> int:
    """Validate and execute a workflow file in this process; prints output paths. Returns an exit code."""
    prompt, extra = load_prompt(ctx, path)
    if seed is not None:
        for node in prompt.values():
            for name in SEED_INPUTS:
                if name in node.get("inputs", {}) and not isinstance(node["inputs"][name], list):
                    node["inputs"][name] = seed
    result = validate_prompt(prompt, ctx.registry)
    if not result.ok:
        print(format_errors(result.body()), file=sys.stderr)
        return 2
    if result.node_errors:
        print("some outputs were skipped:\n" + format_errors(result.body()), file=sys.stderr)
    extra["client_id"] = "headless"  # per-prompt messages are only routed to a named client
    printer = _ProgressPrinter(prompt)
    unsubscribe = ctx.hub.subscribe(printer)
    try:
        outcome = run_prompt(ctx, prompt, extra, result.outputs)
    finally:
        printer.close()
        unsubscribe()
    for out in output_paths(ctx, outcome.outputs):
        print(out)
    if outcome.status != "success":
        print(f"prompt {outcome.status}", file=sys.stderr)
        return 1
    return 0
