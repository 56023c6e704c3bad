"""Typed events from the worker to whoever listens (WebSocket hub, CLI progress bar, tests).

Routing follows ComfyUI: status and interrupts go to everyone; progress goes to the prompt's
client (or everyone when it has none); everything else only to the prompt's client.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

BROADCAST = frozenset({"status", "execution_interrupted"})
CLIENT_OR_BROADCAST = frozenset({"progress", "progress_state", "progress_text", "preview"})


@dataclass(slots=True)
class Message:
    event: str
    data: Any
    sid: str | None  # target client; None with broadcast=True means every client
    broadcast: bool


Listener = Callable[[Message], None]


class EventHub:
    """Fan-out point.  Listeners must be cheap and thread-safe (the worker thread calls them)."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = self._listeners + (listener,)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
        return unsubscribe

    def publish(self, message: Message) -> None:
        for listener in self._listeners:
            listener(message)

    def broadcast(self, event: str, data: Any) -> None:
        if self._listeners:
            self.publish(Message(event, data, None, True))

    def emitter(self, client_id: str | None) -> Callable[[str, Any], None]:
        """An emit function for one prompt, applying the routing rules above."""
        def emit(event: str, data: Any) -> None:
            if not self._listeners:
                return
            if event in BROADCAST:
                self.publish(Message(event, data, None, True))
            elif event in CLIENT_OR_BROADCAST:
                self.publish(Message(event, data, client_id, client_id is None))
            elif client_id is not None:
                self.publish(Message(event, data, client_id, False))
        return emit
