"""The one explicit application context: built in main.py (or a test), passed down, never global."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from execution.cache import CachePolicy
from execution.events import EventHub
from execution.executor import Executor, InterruptFlag
from execution.queue import JobQueue
from execution.worker import Worker
from model_management.devices import DevicePolicy
from model_management.folders import Folders
from model_management.manager import MemorySettings, ModelManager
from nodes.registry import NodeRegistry
from nodes.runtime import NodeServices

log = logging.getLogger("sumi")


@dataclass
class Config:
    """Start-up settings; main.py maps ComfyUI-compatible flags onto these fields."""

    base_dir: Path = Path(".")
    input_dir: str | None = None
    output_dir: str | None = None
    temp_dir: str | None = None
    user_dir: str | None = None
    extra_model_paths: list[str] = field(default_factory=list)
    listen: str = "127.0.0.1"
    port: int = 8188
    cache: CachePolicy = field(default_factory=CachePolicy)
    disable_metadata: bool = False
    disable_custom_nodes: bool = False
    whitelist_custom_nodes: tuple[str, ...] = ()
    cors_origin: str | None = None
    trusted_origins: tuple[str, ...] = ()
    auth_token: str | None = None
    max_upload_mb: float = 100.0
    max_history: int = 10000
    history_page_limit: int = 1000
    preview_method: str = "none"
    preview_size: int = 512
    cpu: bool = False
    # Model memory (model_management.devices / manager): DevicePolicy.from_flags keywords besides cpu,
    # gpu_only | high | normal | low | no, GB kept free on the GPU, a simulated device size and the RAM
    # allowed for idle models' weights (bytes), and --disable-smart-memory.
    device_flags: dict[str, bool] = field(default_factory=dict)
    vram_mode: str = "normal"
    reserve_vram_gb: float | None = None
    vram_budget: int | None = None
    ram_budget: int | None = None
    smart_memory: bool = True
    hashing: str = "sha256"
    argv: list[str] = field(default_factory=list)
    # The headless CLI runs beside a possibly running server: it must not touch the server's
    # persistent queue or wipe its temp folder.
    persistent_queue: bool = True


@dataclass
class AppContext:
    config: Config
    folders: Folders
    services: NodeServices
    registry: NodeRegistry
    hub: EventHub
    queue: JobQueue
    executor: Executor
    worker: Worker
    interrupt: InterruptFlag

    def close(self) -> None:
        self.worker.stop()
        self.queue.close()


def build_context(config: Config, *, start_worker: bool = True) -> AppContext:
    base = Path(config.base_dir)
    extra = list(config.extra_model_paths)
    default_extra = base / "extra_model_paths.yaml"
    if default_extra.exists():
        extra.insert(0, str(default_extra))
    folders = Folders.create(base, input_dir=config.input_dir, output_dir=config.output_dir,
                             temp_dir=config.temp_dir, user_dir=config.user_dir, extra_configs=extra)
    folders.ensure(clean_temp=config.persistent_queue)
    devices = DevicePolicy.from_flags(cpu=config.cpu, **config.device_flags)
    models = ModelManager(MemorySettings(
        device=devices.load_device, vram_mode=config.vram_mode, vram_budget=config.vram_budget,
        reserve_vram=int((config.reserve_vram_gb or 0) * (1 << 30)), ram_budget=config.ram_budget,
        smart_memory=config.smart_memory, spill_dir=folders.temp / "model_spill"))
    services = NodeServices(folders, disable_metadata=config.disable_metadata, preview_size=config.preview_size,
                            preview_method=config.preview_method, models=models, devices=devices)
    registry = NodeRegistry(services)
    registry.load_builtins()
    registry.load_custom_nodes(folders.custom_nodes, disabled=config.disable_custom_nodes,
                               whitelist=config.whitelist_custom_nodes)
    hub = EventHub()
    db_path = folders.user / "sumi_jobs.db" if config.persistent_queue else ":memory:"
    queue = JobQueue(db_path, max_history=config.max_history,
                     on_change=lambda: hub.broadcast("status", {"status": {"exec_info": {
                         "queue_remaining": queue.remaining()}}}))
    failed = queue.recover()
    if failed:
        log.warning("%d prompt(s) were running when the server stopped; recorded as failed: %s",
                    len(failed), ", ".join(failed))
    interrupt = InterruptFlag()
    executor = Executor(registry, services, config.cache, interrupt)
    worker = Worker(queue, executor, hub, unload_models=models.unload_all)
    if not config.smart_memory:
        # --disable-smart-memory: unload every model after each prompt (applied by the worker thread).
        hub.subscribe(lambda message: message.event == "status" and worker.request_free(True, False))
    ctx = AppContext(config, folders, services, registry, hub, queue, executor, worker, interrupt)
    if start_worker:
        worker.start()
    return ctx
