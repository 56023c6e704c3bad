"""What a running node may reach: the app's services and its own per-call runtime.

Nodes get these explicitly (a parameter named `rt` on a typed node's execute) instead of
importing process-wide globals, so every test builds its own isolated app.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from diffusion.preview import PREVIEW_METHODS
from model_management.devices import DevicePolicy
from model_management.folders import Folders


class InterruptedError_(Exception):
    """Raised at a checkpoint when the user interrupted the running prompt."""


@dataclass
class NodeServices:
    """Long-lived services shared by every node of one app instance."""

    folders: Folders
    disable_metadata: bool = False
    preview_size: int = 512
    preview_method: str = "none"  # --preview-method: none | auto | latent2rgb | taesd
    models: Any = None  # the model manager (model_management); None until models are used
    devices: DevicePolicy = field(default_factory=DevicePolicy.from_flags)  # where models run, in which dtype
    settings: dict = field(default_factory=dict)

    def preview_method_for(self, requested: Any) -> str:
        """A prompt's extra_data["preview_method"]; "default", empty or unknown values mean the server's."""
        return requested if requested in PREVIEW_METHODS else self.preview_method


@dataclass
class NodeRuntime:
    """Per-call handle: identity of the call plus progress/interrupt hooks wired by the executor."""

    services: NodeServices
    prompt_id: str
    node_id: str
    display_node_id: str
    _progress: Callable[[float, float, Any], None]
    _interrupted: Callable[[], bool]
    _send_text: Callable[[str], None]
    preview_method: str = "none"  # this prompt's: extra_data["preview_method"] or the server's default

    @property
    def folders(self) -> Folders:
        return self.services.folders

    def check_interrupt(self) -> None:
        if self._interrupted():
            raise InterruptedError_("interrupted")

    def progress(self, value: float, total: float, preview: Any = None) -> None:
        """Report progress (a checkpoint for interrupts). `preview` is (format, PIL.Image, max_size)."""
        self.check_interrupt()
        self._progress(value, total, preview)

    def send_text(self, text: str) -> None:
        self._send_text(text)
