"""The jobs API view of the queue (spec §5.3.5): one normalized record per job, filtered, sorted, paged.

Pure functions over `JobQueue.job_rows()` dicts, so the HTTP layer stays a thin translation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from execution.queue import JOB_STATUSES

MEDIA_KEYS = ("images", "video", "audio")
MODEL_3D_EXTENSIONS = frozenset({".obj", ".fbx", ".gltf", ".glb", ".stl", ".ply"})
TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
SORT_KEYS = ("created_at", "execution_duration")
# Newer frontends also ask for "cancelled"; Sumi records interrupted jobs as failed, so it matches nothing.
STATUS_FILTERS = (*JOB_STATUSES, "cancelled")


@dataclass(frozen=True)
class JobQuery:
    """Validated query parameters of GET /api/jobs; `parse` raises ValueError with a user-facing message."""

    statuses: frozenset[str] | None
    workflow_id: str | None
    sort_by: str
    descending: bool
    limit: int
    offset: int

    @classmethod
    def parse(cls, query: Mapping[str, str], limit_cap: int) -> "JobQuery":
        statuses = None
        if query.get("status"):
            statuses = frozenset(s.strip() for s in query["status"].split(",") if s.strip())
            unknown = sorted(statuses - set(STATUS_FILTERS))
            if unknown:
                raise ValueError(f"Invalid status {', '.join(unknown)}; expected any of {', '.join(STATUS_FILTERS)}")
        sort_by = query.get("sort_by", "created_at")
        if sort_by not in SORT_KEYS:
            raise ValueError(f"Invalid sort_by {sort_by!r}; expected one of {', '.join(SORT_KEYS)}")
        order = query.get("sort_order", "desc")
        if order not in ("asc", "desc"):
            raise ValueError(f"Invalid sort_order {order!r}; expected 'asc' or 'desc'")
        limit = _int(query, "limit", limit_cap)
        if limit <= 0:
            raise ValueError("limit must be a positive integer")
        offset = max(_int(query, "offset", 0), 0)
        return cls(statuses, query.get("workflow_id") or None, sort_by, order == "desc", min(limit, limit_cap), offset)


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {query[name]!r}") from None


def workflow_id(extra_data: dict) -> str | None:
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow")
    return workflow.get("id") if isinstance(workflow, dict) else None


def count_outputs(outputs: dict) -> int:
    return sum(1 for ui in outputs.values() if isinstance(ui, dict)
               for items in ui.values() if isinstance(items, list)
               for item in items if isinstance(item, dict))


def _media_type(key: str, item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    if key in MEDIA_KEYS:
        return key
    fmt = item.get("format")
    if isinstance(fmt, str) and fmt.startswith(("video/", "audio/")):
        return fmt.split("/", 1)[0]
    if os.path.splitext(str(item.get("filename", "")))[1].lower() in MODEL_3D_EXTENSIONS:
        return "3d"
    return None


def preview_output(outputs: dict) -> dict | None:
    """The first previewable output item, preferring files of type 'output' over temp previews."""
    fallback = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            for item in items if isinstance(items, list) else ():
                media = _media_type(key, item)
                if media is None:
                    continue
                found = {**item, "nodeId": node_id, "mediaType": media}
                if item.get("type") == "output":
                    return found
                fallback = fallback or found
    return fallback


def _timeline(row: dict) -> tuple[int | None, int | None, dict | None]:
    """(start ms, end ms, execution_error payload) from the history messages, else the row's times."""
    start, end, error = row.get("started_at"), row.get("ended_at"), None
    messages = ((row.get("history") or {}).get("status") or {}).get("messages") or []
    for event, data in messages:
        if event == "execution_start":
            start = data.get("timestamp", start)
        elif event in TERMINAL_EVENTS:
            end = data.get("timestamp", end)
            if event == "execution_error":
                error = data
    return start, end, error


def summarize(row: dict, *, detail: bool = False) -> dict:
    """One job object; null fields are dropped as ComfyUI does."""
    extra = row["extra_data"]
    history = row.get("history")
    outputs = (history or {}).get("outputs") or {}
    job: dict[str, Any] = {
        "id": row["id"], "status": row["status"], "priority": row["number"],
        "create_time": extra.get("create_time", row["created_at"]),
        "outputs_count": count_outputs(outputs), "workflow_id": workflow_id(extra),
    }
    if history is not None:
        start, end, error = _timeline(row)
        job.update(execution_start_time=start, execution_end_time=end, execution_error=error,
                   preview_output=preview_output(outputs))
    if detail:
        job.update(outputs=outputs, execution_status=(history or {}).get("status"),
                   workflow={"prompt": row["prompt"], "extra_data": extra})
    return {k: v for k, v in job.items() if v is not None}


def _created(job: dict) -> tuple:
    return job["create_time"], job["priority"]  # same-millisecond submissions keep queue order


def _duration(job: dict) -> tuple:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return (end - start if start is not None and end is not None else -1, *_created(job))


def page(rows: list[dict], query: JobQuery) -> dict:
    """The GET /api/jobs body: filtered, sorted, paginated summaries."""
    jobs = [summarize(row) for row in rows
            if query.workflow_id is None or workflow_id(row["extra_data"]) == query.workflow_id]
    jobs.sort(key=_duration if query.sort_by == "execution_duration" else _created, reverse=query.descending)
    window = jobs[query.offset:query.offset + query.limit]
    return {"jobs": window, "pagination": {"offset": query.offset, "limit": query.limit, "total": len(jobs),
                                           "has_more": query.offset + len(window) < len(jobs)}}
