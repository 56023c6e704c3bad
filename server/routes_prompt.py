"""Prompt submission, queue, history, interrupt/free and the jobs API (spec §5.2, §5.3.1, §5.3.2, §5.3.5)."""
from __future__ import annotations

import asyncio
from typing import Callable

from aiohttp import web

from execution.submit import SubmitError, submit
from execution.validate import top_error
from server import jobs
from server.errors import RequestError, json_body
from server.keys import CTX

ROUTES = web.RouteTableDef()


async def _json_object(request: web.Request) -> dict:
    body = await json_body(request, if_empty={})
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return body


def _ids(body: dict, key: str) -> list[str]:
    ids = body.get(key, [])
    if not isinstance(ids, list):
        raise RequestError(400, f"{key!r} must be a list of prompt ids")
    return [str(i) for i in ids]


def _queue_status(request: web.Request) -> dict:
    return {"exec_info": {"queue_remaining": request.app[CTX].queue.remaining()}}


# ------------------------------------------------------------------ prompt
@ROUTES.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(_queue_status(request))


@ROUTES.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": top_error("invalid_prompt", "The request body is not valid JSON"),
                                  "node_errors": {}}, status=400)
    try:
        # Validation of a large prompt takes a while; keep the loop serving sockets meanwhile.
        result = await asyncio.to_thread(submit, request.app[CTX], body)
    except SubmitError as exc:
        return web.json_response(exc.body, status=exc.status)
    return web.json_response(result)


# ------------------------------------------------------------------ queue
@ROUTES.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    running, pending = request.app[CTX].queue.snapshot()
    return web.json_response({"queue_running": running, "queue_pending": pending})


async def _clear_and_delete(request: web.Request, clear: Callable[[], object],
                            delete: Callable[[list[str]], object]) -> web.Response:
    """POST /queue and POST /history share a body: {"clear": true} and/or {"delete": [ids]}."""
    body = await _json_object(request)
    if body.get("clear"):
        clear()
    if "delete" in body:
        delete(_ids(body, "delete"))
    return web.Response()


@ROUTES.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    queue = request.app[CTX].queue
    return await _clear_and_delete(request, queue.clear_pending, queue.delete_pending)


# ------------------------------------------------------------------ history
def _optional_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise RequestError(400, f"{name} must be an integer, got {value!r}") from None


@ROUTES.get("/history")
async def get_history(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    max_items, offset = _optional_int(request, "max_items"), _optional_int(request, "offset")
    history = await asyncio.to_thread(ctx.queue.history, max_items, offset, ctx.config.history_page_limit)
    return web.json_response(history)


@ROUTES.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTX].queue.history_item(request.match_info["prompt_id"]))


@ROUTES.post("/history")
async def post_history(request: web.Request) -> web.Response:
    queue = request.app[CTX].queue
    return await _clear_and_delete(request, queue.clear_history, queue.delete_history)


# ------------------------------------------------------------------ interrupt / free
@ROUTES.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    body = await json_body(request, if_empty={})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    request.app[CTX].interrupt.request(str(prompt_id) if prompt_id else None)
    return web.Response()


@ROUTES.post("/free")
async def post_free(request: web.Request) -> web.Response:
    body = await _json_object(request)
    request.app[CTX].worker.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.Response()


# ------------------------------------------------------------------ jobs (literal /api/ prefix, as upstream)
@ROUTES.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        query = jobs.JobQuery.parse(request.query, ctx.config.history_page_limit)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    rows = await asyncio.to_thread(ctx.queue.job_rows, set(query.statuses) if query.statuses else None)
    return web.json_response(jobs.page(rows, query))


def _find_job(request: web.Request) -> dict:
    row = request.app[CTX].queue.job_row(request.match_info["job_id"])
    if row is None:
        raise RequestError(404, "Job not found")
    return row


@ROUTES.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    row = await asyncio.to_thread(_find_job, request)
    return web.json_response(jobs.summarize(row, detail=True))


@ROUTES.post("/api/jobs/{job_id}/requeue")
async def requeue_job(request: web.Request) -> web.Response:
    """Sumi extension: run a finished (or crashed) job's prompt again under a new id."""
    job = request.app[CTX].queue.requeue(request.match_info["job_id"])
    if job is None:
        raise RequestError(404, "Job not found (only finished jobs can be re-queued)")
    return web.json_response({"prompt_id": job.id, "number": job.number, "node_errors": {}})


@ROUTES.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Remove a pending job, or interrupt it if it is running."""
    ctx = request.app[CTX]
    job_id = request.match_info["job_id"]
    if ctx.queue.delete_pending([job_id]):
        return web.json_response({"id": job_id, "status": "cancelled"})
    if job_id in ctx.queue.running_ids():
        ctx.interrupt.request(job_id)
        return web.json_response({"id": job_id, "status": "interrupting"})
    raise RequestError(404, "Job not found or already finished")
