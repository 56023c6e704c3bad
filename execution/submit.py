"""POST /prompt semantics shared by the HTTP API and the headless CLI."""
from __future__ import annotations

import copy
from typing import Any

from execution.cache import CachePolicy
from execution.context import AppContext
from execution.queue import DuplicatePromptId, Job, now_ms
from execution.validate import top_error, validate_prompt


class SubmitError(Exception):
    """A rejected submission with ComfyUI's 400 body."""

    def __init__(self, body: dict, status: int = 400) -> None:
        super().__init__(body.get("error", {}).get("message", "invalid prompt"))
        self.body = body
        self.status = status


def prepare(ctx: AppContext, body: Any) -> tuple[dict, dict, list | None]:
    """Extract (prompt, extra_data, partial targets) from a POST body; converts UI workflows."""
    if not isinstance(body, dict):
        raise SubmitError({"error": top_error("invalid_prompt", "The request body must be a JSON object"),
                           "node_errors": {}})
    extra = dict(body.get("extra_data") or {})
    prompt = body.get("prompt")
    if prompt is None and isinstance(body.get("workflow"), dict):
        from execution.convert import WorkflowConversionError, ui_to_api

        def info(class_type: str) -> dict | None:
            schema = ctx.registry.get(class_type)
            return schema.object_info() if schema is not None else None
        try:
            prompt = ui_to_api(body["workflow"], info)
        except WorkflowConversionError as exc:
            raise SubmitError({"error": top_error("invalid_prompt", "The workflow could not be converted",
                                                  str(exc)), "node_errors": {}}) from exc
        extra.setdefault("extra_pnginfo", {}).setdefault("workflow", body["workflow"])
    if prompt is None:
        raise SubmitError({"error": top_error("no_prompt", "No prompt provided", "No prompt provided"),
                           "node_errors": {}})
    if "cache_policy" in extra:
        try:
            CachePolicy.parse(extra["cache_policy"])
        except ValueError as exc:
            raise SubmitError({"error": top_error("invalid_prompt", "Invalid cache policy", str(exc)),
                               "node_errors": {}}) from exc
    partial = body.get("partial_execution_targets")
    return prompt, extra, partial


def submit(ctx: AppContext, body: Any) -> dict:
    """Validate and queue; returns ComfyUI's success body or raises SubmitError."""
    prompt, extra, partial = prepare(ctx, body)
    front = bool(body.get("front"))
    number = float(body["number"]) if body.get("number") is not None else ctx.queue.next_number(front)
    result = validate_prompt(prompt, ctx.registry, partial)
    if not result.ok:
        raise SubmitError(result.body())
    extra["client_id"] = body.get("client_id")
    extra.setdefault("create_time", now_ms())
    prompt_id = str(body["prompt_id"]) if body.get("prompt_id") is not None else None
    try:
        job: Job = ctx.queue.put(copy.deepcopy(prompt), extra, result.outputs, number=number, prompt_id=prompt_id)
    except DuplicatePromptId as exc:
        raise SubmitError({"error": top_error("invalid_prompt", str(exc)), "node_errors": {}}) from exc
    return {"prompt_id": job.id, "number": job.number, "node_errors": result.node_errors}
