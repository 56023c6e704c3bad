"""Persistent job queue and history in SQLite (WAL), so nothing queued is lost on a crash.

Pending jobs are mirrored in a heap for O(log n) pops; every state change is committed before
it is announced.  On start, a job that was running when the process died is recorded as failed
(with a reason) and can be re-queued; pending jobs simply run.
"""
from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
JOB_STATUSES = ("pending", "in_progress", "completed", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    number NUMERIC NOT NULL,
    status TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    history TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, seq);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(order=True)
class Job:
    number: float
    seq: int
    id: str = field(compare=False)
    prompt: dict = field(compare=False)
    extra_data: dict = field(compare=False)
    outputs: list = field(compare=False)
    created_at: int = field(compare=False, default_factory=now_ms)
    sensitive: dict = field(compare=False, default_factory=dict)

    def item(self) -> list:
        """ComfyUI's 5-element queue item (sensitive keys never included)."""
        return [self.number, self.id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


class DuplicatePromptId(ValueError):
    pass


class JobQueue:
    """Thread-safe: the server thread submits and reads, the worker thread pops and finishes."""

    def __init__(self, db_path: str | Path, *, max_history: int = 10000,
                 on_change: Callable[[], None] | None = None) -> None:
        self.db_path = str(db_path)
        if self.db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.max_history = max_history
        self.on_change = on_change or (lambda: None)
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        if self.db_path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)
        self._heap: list[Job] = []
        self._running: dict[str, Job] = {}
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(number), 0) FROM jobs").fetchone()
        self._seq = int(row[0])
        self.number = int(max(row[1], 0)) + 1 if row[0] else 0
        self._finished = self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('completed','failed')").fetchone()[0]

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> list[str]:
        """Mark jobs that were running at a crash as failed; load pending jobs into the heap."""
        failed = []
        with self._lock:
            rows = self._db.execute("SELECT id, created_at, started_at FROM jobs WHERE status='in_progress'").fetchall()
            for job_id, created, started in rows:
                message = ("execution_error", {
                    "prompt_id": job_id, "node_id": None, "node_type": None, "executed": [],
                    "exception_message": "The server stopped while this prompt was running; it was not completed. "
                                         "Re-queue it with POST /api/jobs/{id}/requeue.",
                    "exception_type": "ServerRestart", "traceback": [], "current_inputs": {},
                    "current_outputs": [], "timestamp": now_ms()})
                history = {"outputs": {}, "meta": {}, "status": {
                    "status_str": "error", "completed": False,
                    "messages": [["execution_start", {"prompt_id": job_id, "timestamp": started or created}],
                                 list(message)]}}
                self._db.execute("UPDATE jobs SET status='failed', ended_at=?, history=? WHERE id=?",
                                 (now_ms(), json.dumps(history), job_id))
                self._finished += 1
                failed.append(job_id)
            for row in self._db.execute(
                    "SELECT id, seq, number, prompt, extra_data, outputs, created_at FROM jobs "
                    "WHERE status='pending'"):
                self._heap.append(Job(row[2], row[1], row[0], json.loads(row[3]), json.loads(row[4]),
                                      json.loads(row[5]), row[6]))
            heapq.heapify(self._heap)
            self._trim_history()
        return failed

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ submit / pop / finish
    def next_number(self, front: bool = False) -> float:
        with self._lock:
            number = self.number
            self.number += 1
            return -number if front else number

    def put(self, prompt: dict, extra_data: dict, outputs: list, *, number: float,
            prompt_id: str | None = None) -> Job:
        extra_data = dict(extra_data)
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_KEYS if k in extra_data}
        with self._lock:
            job_id = prompt_id or str(uuid.uuid4())
            self._seq += 1
            job = Job(number, self._seq, job_id, prompt,
                      extra_data, outputs, sensitive=sensitive)
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, seq, number, status, prompt, extra_data, outputs, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (job.id, job.seq, job.number, "pending", json.dumps(prompt), json.dumps(extra_data),
                     json.dumps(outputs), job.created_at))
            except sqlite3.IntegrityError as exc:
                raise DuplicatePromptId(f"prompt_id {job_id!r} is already in use") from exc
            heapq.heappush(self._heap, job)
            self._ready.notify()
        self.on_change()
        return job

    def get(self, timeout: float | None = None) -> Job | None:
        """Pop the highest-priority pending job (lowest number) and mark it running."""
        with self._ready:
            if not self._heap:
                self._ready.wait(timeout)
            if not self._heap:
                return None
            job = heapq.heappop(self._heap)
            self._db.execute("UPDATE jobs SET status='in_progress', started_at=? WHERE id=?", (now_ms(), job.id))
            self._running[job.id] = job
        self.on_change()
        return job

    def finish(self, job: Job, history: dict, failed: bool) -> None:
        """Write the history record; only after this returns may completion be announced."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status=?, ended_at=?, history=? WHERE id=?",
                             ("failed" if failed else "completed", now_ms(), json.dumps(history, default=str),
                              job.id))
            self._running.pop(job.id, None)
            self._finished += 1
            self._trim_history()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _trim_history(self) -> None:
        excess = self._finished - self.max_history
        if excess > 0:
            self._db.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
                             "('completed','failed') ORDER BY seq LIMIT ?)", (excess,))
            self._finished -= excess

    # ------------------------------------------------------------------ queue views
    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self._running)

    def snapshot(self) -> tuple[list, list]:
        with self._lock:
            return [j.item() for j in self._running.values()], [j.item() for j in self._heap]

    def delete_pending(self, ids: list[str]) -> int:
        wanted = set(map(str, ids))
        with self._lock:
            keep = [j for j in self._heap if j.id not in wanted]
            removed = len(self._heap) - len(keep)
            if removed:
                self._heap = keep
                heapq.heapify(self._heap)
                self._db.executemany("DELETE FROM jobs WHERE id=? AND status='pending'", [(i,) for i in wanted])
        if removed:
            self.on_change()
        return removed

    def clear_pending(self) -> None:
        with self._lock:
            self._heap = []
            self._db.execute("DELETE FROM jobs WHERE status='pending'")
        self.on_change()

    def running_ids(self) -> list[str]:
        with self._lock:
            return list(self._running)

    # ------------------------------------------------------------------ history
    def _history_entry(self, row: tuple) -> dict:
        job_id, number, prompt, extra, outputs, history = row
        record = json.loads(history) if history else {}
        return {"prompt": [number, job_id, json.loads(prompt), json.loads(extra), json.loads(outputs)],
                "outputs": record.get("outputs", {}), "status": record.get("status"),
                "meta": record.get("meta", {})}

    _HISTORY_COLS = "id, number, prompt, extra_data, outputs, history"

    def history(self, max_items: int | None, offset: int | None, limit_cap: int) -> dict:
        """ComfyUI paging: max_items alone = newest N; offset counts from the oldest. Always bounded."""
        with self._lock:
            if offset is None or offset < 0:
                count = min(max_items if max_items is not None else limit_cap, limit_cap)
                rows = self._db.execute(
                    f"SELECT {self._HISTORY_COLS} FROM (SELECT * FROM jobs WHERE status IN ('completed','failed') "
                    f"ORDER BY seq DESC LIMIT ?) ORDER BY seq", (max(count, 0),)).fetchall()
            else:
                count = min(max_items if max_items is not None else limit_cap, limit_cap)
                rows = self._db.execute(
                    f"SELECT {self._HISTORY_COLS} FROM jobs WHERE status IN ('completed','failed') "
                    f"ORDER BY seq LIMIT ? OFFSET ?", (max(count, 0), offset)).fetchall()
        return {row[0]: self._history_entry(row) for row in rows}

    def history_item(self, job_id: str) -> dict:
        with self._lock:
            row = self._db.execute(f"SELECT {self._HISTORY_COLS} FROM jobs WHERE id=? AND "
                                   f"status IN ('completed','failed')", (job_id,)).fetchone()
        return {row[0]: self._history_entry(row)} if row else {}

    def delete_history(self, ids: list[str]) -> None:
        with self._lock:
            for job_id in ids:
                cur = self._db.execute("DELETE FROM jobs WHERE id=? AND status IN ('completed','failed')",
                                       (str(job_id),))
                self._finished -= cur.rowcount

    def clear_history(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE status IN ('completed','failed')")
            self._finished = 0

    def requeue(self, job_id: str) -> Job | None:
        """Queue a finished job's prompt again under a new id (e.g. one that died with the server)."""
        with self._lock:
            row = self._db.execute("SELECT prompt, extra_data, outputs FROM jobs WHERE id=? AND "
                                   "status IN ('completed','failed')", (job_id,)).fetchone()
        if row is None:
            return None
        extra = json.loads(row[1])
        extra["requeued_from"] = job_id
        return self.put(json.loads(row[0]), extra, json.loads(row[2]), number=self.next_number())

    # ------------------------------------------------------------------ jobs API
    def job_row(self, job_id: str) -> dict[str, Any] | None:
        rows = self.job_rows(job_id=job_id)
        return rows[0] if rows else None

    def job_rows(self, statuses: set[str] | None = None, job_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs as plain dicts (running and pending from memory, the rest from the DB)."""
        with self._lock:
            out: list[dict[str, Any]] = []
            for status, jobs in (("in_progress", list(self._running.values())), ("pending", list(self._heap))):
                if statuses and status not in statuses:
                    continue
                for job in jobs:
                    if job_id is not None and job.id != job_id:
                        continue
                    out.append({"id": job.id, "status": status, "number": job.number, "created_at": job.created_at,
                                "prompt": job.prompt, "extra_data": job.extra_data, "outputs": job.outputs,
                                "history": None, "started_at": None, "ended_at": None})
            wanted = [s for s in ("completed", "failed") if not statuses or s in statuses]
            if wanted:
                marks = ",".join("?" * len(wanted))
                by_id = "" if job_id is None else " AND id=?"
                params = wanted if job_id is None else [*wanted, job_id]
                for row in self._db.execute(
                        f"SELECT id, status, number, created_at, prompt, extra_data, outputs, history, started_at, "
                        f"ended_at FROM jobs WHERE status IN ({marks}){by_id}", params):
                    out.append({"id": row[0], "status": row[1], "number": row[2], "created_at": row[3],
                                "prompt": json.loads(row[4]), "extra_data": json.loads(row[5]),
                                "outputs": json.loads(row[6]), "history": json.loads(row[7]) if row[7] else None,
                                "started_at": row[8], "ended_at": row[9]})
        return out
