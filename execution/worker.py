"""The worker thread: pop a job, execute it, write history, *then* announce completion."""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import Callable

from execution.events import EventHub
from execution.executor import Executor, RunOutcome
from execution.queue import Job, JobQueue

log = logging.getLogger("sumi.worker")


class Worker:
    """One worker = one device.  Several workers may share a JobQueue (one per GPU)."""

    def __init__(self, queue: JobQueue, executor: Executor, hub: EventHub,
                 unload_models: Callable[[], None] | None = None) -> None:
        self.queue = queue
        self.executor = executor
        self.hub = hub
        self.unload_models = unload_models or (lambda: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._free = {"unload_models": False, "free_memory": False}
        self._free_lock = threading.Lock()
        self.current: Job | None = None
        self.last_node: dict[str, str] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="sumi-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.executor.interrupt.request()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Flags applied after the current prompt, or right away when idle."""
        with self._free_lock:
            self._free["unload_models"] |= unload_models
            self._free["free_memory"] |= free_memory
        self.queue.wake()

    def _apply_free(self) -> None:
        with self._free_lock:
            flags, self._free = self._free, {"unload_models": False, "free_memory": False}
        if flags["unload_models"] or flags["free_memory"]:
            self.unload_models()
        if flags["free_memory"]:
            self.executor.reset()
            gc.collect()

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            while not self._stop.is_set():
                job = self.queue.get(timeout=1.0)
                if job is not None and not self._stop.is_set():
                    self.run_job(job)
                self._apply_free()
        finally:
            self._loop.close()

    def run_job(self, job: Job) -> RunOutcome:
        """Execute one job on this thread's loop; history is committed before any completion message."""
        loop = self._loop or asyncio.new_event_loop()
        emit = self.hub.emitter(job.client_id)
        tracker = self._track(job, emit)
        self.current = job
        started = time.perf_counter()
        extra = {**job.extra_data, **job.sensitive}
        try:
            outcome = loop.run_until_complete(self.executor.run(job.id, job.prompt, extra, job.outputs, tracker))
        finally:
            self.current = None
        history = {"outputs": outcome.outputs, "meta": outcome.meta, "status": {
            "status_str": "success" if outcome.status == "success" else "error",
            "completed": outcome.status == "success",
            "messages": [[event, data] for event, data in outcome.messages]}}
        self.queue.finish(job, history, failed=outcome.status != "success")
        emit(*outcome.terminal)
        self.hub.broadcast("status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}})
        emit("executing", {"node": None, "prompt_id": job.id})
        log.info("Prompt %s executed in %.2f seconds (%s)", job.id, time.perf_counter() - started, outcome.status)
        return outcome

    def _track(self, job: Job, emit: Callable) -> Callable:
        """Remember the executing node per client so a reconnecting socket can be told."""
        client = job.client_id

        def tracked(event: str, data: dict) -> None:
            if event == "executing" and client is not None:
                self.last_node[client] = data.get("display_node") or data.get("node")
            emit(event, data)
        return tracked
