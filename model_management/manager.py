"""The model memory manager: which weights sit on the compute device, in RAM, or on disk.

One `ModelManager` per app (built in ``execution.context.build_context``, reached by nodes as
``rt.services.models``; handles made by the loaders carry it). A node asks for the models it needs
plus an estimate of its working memory::

    manager.load([model, vae], working_memory=unet_working_memory(unet.config, latent.shape, ...))
    manager.run([vae], working_memory, lambda: vae.vae.decode(z))   # load, call, retry on OOM

(`Handle.to_device()` and `Handle.run()` do this for one handle with the handle's own estimate.)

How a request is served, per device (the handles' ``load_device``):

1. Budget: a CUDA device's total memory minus ``reserve_vram``, capped by ``vram_budget``; a CPU
   compute device has no budget unless ``vram_budget`` is set, which simulates a device that small
   (the bytes are counted and the policies run exactly as on a GPU, so CI can test them).
2. Models not in the request are unloaded least-recently-used first until the request fits
   (``smart_memory=False`` unloads them all). Unloading swaps the original tensors back in; the
   device copies are simply dropped, so it costs no copy.
3. Each requested model is loaded in full, with its weight patches applied (`patcher.patched`,
   computed on the device). A model that does not fit in what is left is loaded *partially*: leaf
   layers (Linear, Conv, norms) are kept resident in order while they fit, the others stay in RAM and
   are streamed to the device around their own forward (hooks), the next one prefetched on a side
   CUDA stream. On a simulated device the parked layers hold meta tensors, so a layer used without
   being streamed fails loudly instead of silently reading RAM.
   ``vram_mode``: "high" / "gpu_only" never stream, "low" keeps at most half the free budget
   resident, "no" streams every leaf layer.
4. A real out-of-memory error while loading or inside `run` is answered by unloading everything
   else, then retrying with a doubled working-memory reservation, which moves the model down the
   modes (full → partial → everything streamed) instead of failing the prompt.
5. RAM: when the models' weights in RAM exceed ``ram_budget``, idle models (not in the request) are
   dropped, least recently used first: their weights are written to a spill file and the module
   holds meta tensors until the next request reads them back straight onto the offload device.

Every transition is an entry of ``events`` (`MemoryEvent`: kind, model, bytes, ms, device), which
tests and ``bench/memory.py`` read. Slots hold only weak references to modules: a handle that nobody
holds any more takes its weights, copies and spill file with it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from model_management.patcher import INPUT_HOOKS, TensorSlot, nbytes, patched, signature, tensor_slots

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1 << 20
GiB = 1 << 30
# Leaf layers whose weights are only read inside their own forward, so they can be streamed.
STREAMABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)
OOM_RETRIES = 4
VRAM_MODES = ("gpu_only", "high", "normal", "low", "no")


@dataclass(frozen=True)
class MemoryEvent:
    """kind: load | partial | unload | drop | restore | oom; bytes moved (partial: kept resident)."""

    kind: str
    model: str
    bytes: int
    ms: float
    device: str
    streamed: int = 0  # partial: bytes left in RAM and streamed per forward


@dataclass(frozen=True)
class MemorySettings:
    """Start-up memory policy (main.py flags; see the module docstring)."""

    device: torch.device = torch.device("cpu")  # the compute device the budget applies to
    vram_mode: str = "normal"
    vram_budget: int | None = None
    reserve_vram: int = 0
    ram_budget: int | None = None
    smart_memory: bool = True
    spill_dir: Path | None = None
    event_limit: int = 10_000


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _meta(t: Tensor) -> Tensor:
    return torch.empty_like(t, device="meta")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


# -- working-memory estimates (bytes) -------------------------------------------------------------------


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def unet_working_memory(config: Any, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Peak activations of one UNet call on a latent batch `shape` (B, C, H, W): the skips every input
    block keeps, plus the largest level's temporaries (ResBlocks ~6 maps, transformer blocks ~20 maps
    for q/k/v, GEGLU's 8× widening and the residuals); ×1.25 safety. Attention scores are not counted:
    torch's fused attention (CUDA and CPU) never materialises them."""
    batch, _, height, width = shape
    size = _itemsize(dtype)
    tokens0 = height * width
    skips = 0
    transient = 0
    depths = iter(config.transformer_depth)
    for level, (mult, blocks) in enumerate(zip(config.channel_mult, config.num_res_blocks)):
        channels = config.model_channels * mult
        tokens = max(1, tokens0 // (4 ** level))
        attention = False
        for _ in range(blocks):
            attention |= next(depths) > 0
            skips += batch * channels * tokens * size
        transient = max(transient, batch * channels * tokens * size * (20 if attention else 6))
    io = 4 * batch * config.in_channels * tokens0 * 4
    return int(1.25 * (skips * 2 + transient + io))


def vae_working_memory(channels: int, pixels: int, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak activations of a VAE decode / encode at `pixels` per image: ~8 maps of the full-resolution
    level's width (its upsampling input is twice as wide); ×1.25."""
    return int(1.25 * batch * channels * pixels * _itemsize(dtype) * 8)


def clip_working_memory(width: int, mlp_width: int, chunks: int, dtype: torch.dtype = torch.float32) -> int:
    """One text-encoder call on `chunks` 77-token chunks (plus the empty prompt): a few MLP-wide maps."""
    return int(2 * (chunks + 1) * 77 * (4 * width + 2 * mlp_width) * _itemsize(dtype))


# -- one set of shared weights ------------------------------------------------------------------------


@dataclass
class _Unit:
    """A streamed leaf layer: its tensors' RAM sources and what they hold while parked."""

    module: weakref.ref
    names: list[tuple[str, bool, Tensor, Tensor]]  # (attr, is_param, source, parked)
    nbytes: int
    on_device: bool = False


class _Streamer:
    """Moves streamed layers onto the device around their forward, prefetching the next one."""

    def __init__(self, units: list[_Unit], device: torch.device) -> None:
        self.units = units
        self.device = device
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: dict[int, tuple[Any, list[Tensor]]] = {}
        self.hooks: list[Any] = []
        ref = weakref.ref(self)
        for index, unit in enumerate(units):
            module = unit.module()
            self.hooks.append(module.register_forward_pre_hook(_StreamHook(ref, index, True)))
            self.hooks.append(module.register_forward_hook(_StreamHook(ref, index, False)))

    def _copy(self, index: int) -> list[Tensor]:
        return [src.to(self.device, non_blocking=True) for _, _, src, _ in self.units[index].names]

    def _prefetch(self, index: int) -> None:
        if self.stream is None or index >= len(self.units) or index in self.pending or self.units[index].on_device:
            return
        with torch.cuda.stream(self.stream):
            values = self._copy(index)
            done = torch.cuda.Event()
            done.record(self.stream)
        self.pending[index] = (done, values)

    def _set(self, index: int, values: Iterable[Tensor]) -> None:
        unit = self.units[index]
        module = unit.module()
        for (attr, is_param, _, _), value in zip(unit.names, values):
            TensorSlot(module, attr, is_param).set(value)

    @torch.no_grad()
    def enter(self, index: int) -> None:
        unit = self.units[index]
        if unit.on_device:
            return
        if index in self.pending:
            done, values = self.pending.pop(index)
            current = torch.cuda.current_stream(self.device)
            current.wait_event(done)
            for value in values:
                value.record_stream(current)
        else:
            values = self._copy(index)
        self._set(index, values)
        unit.on_device = True
        self.calls += 1
        self.in_flight += unit.nbytes
        self._prefetch(index + 1)
        self.peak = max(self.peak, self.in_flight + sum(self.units[i].nbytes for i in self.pending))

    def leave(self, index: int) -> None:
        unit = self.units[index]
        if unit.on_device:
            self._set(index, (parked for _, _, _, parked in unit.names))
            unit.on_device = False
            self.in_flight -= unit.nbytes

    def reserve(self) -> int:
        """Device bytes streaming needs beside the resident part: a layer in use plus one prefetched."""
        largest = sorted((u.nbytes for u in self.units), reverse=True)[:2]
        return sum(largest)

    def detach(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.pending.clear()
        self.hooks.clear()


class _StreamHook:
    """A forward (pre-)hook that reaches its streamer weakly, so modules and streamer form no cycle."""

    def __init__(self, streamer: weakref.ref, index: int, enter: bool) -> None:
        self.streamer, self.index, self.entering = streamer, index, enter

    def __call__(self, module: nn.Module, args: Any, output: Any = None) -> None:
        streamer = self.streamer()
        if streamer is not None:
            (streamer.enter if self.entering else streamer.leave)(self.index)


@dataclass
class _Slot:
    """The manager's record of one set of shared weights (a handle and all its clones)."""

    key: tuple[int, ...]
    label: str
    roots: dict[str, weakref.ref]  # tensor-name prefix → module
    load_device: torch.device
    offload_device: torch.device
    size: int
    mode: str = "offloaded"  # offloaded | full | partial | dropped
    home: dict[str, Tensor] | None = None  # the original tensors while the modules hold others
    patch_sig: tuple = ()
    patch_refs: tuple = ()  # the patch lists and hooks of patch_sig, kept alive so their ids stay unique
    hooks: list[Any] = field(default_factory=list)  # installed input hooks (removable handles)
    device_bytes: int = 0
    streamer: _Streamer | None = None
    spill: Path | None = None

    def modules(self) -> dict[str, nn.Module] | None:
        out = {prefix: ref() for prefix, ref in self.roots.items()}
        return None if any(m is None for m in out.values()) else out

    def tensor_slots(self) -> dict[str, TensorSlot]:
        modules = self.modules()
        return {} if modules is None else tensor_slots(modules)


def _slot_key(handle: Any) -> tuple[int, ...]:
    return tuple(id(m) for m in handle.prefixed_modules().values())


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _total_ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_ram_budget() -> int:
    """Model weights kept in RAM before idle ones are dropped: all but max(2 GiB, 10 %) of the machine."""
    total = _total_ram()
    return total - max(2 * GiB, total // 10)


class ModelManager:
    """See the module docstring. Thread-safe: every public method holds one re-entrant lock."""

    def __init__(self, settings: MemorySettings | None = None) -> None:
        self.settings = settings or MemorySettings()
        if self.settings.vram_mode not in VRAM_MODES:
            raise ValueError(f"vram_mode must be one of {VRAM_MODES}")
        self.events: deque[MemoryEvent] = deque(maxlen=self.settings.event_limit)
        self._slots: dict[tuple[int, ...], _Slot] = {}  # least recently used first
        self._lock = threading.RLock()
        self._spill_dir: Path | None = None
        self._counter = 0

    # -- public API ------------------------------------------------------------------------------

    def register(self, handle: Any, label: str | None = None) -> None:
        """Start accounting a freshly loaded handle's weights (RAM budget); names it in events."""
        with self._lock:
            self._enforce_ram(keep={id(self._slot(handle, label))})

    def load(self, handles: Sequence[Any], working_memory: int = 0) -> None:
        """Every handle's weights on its load device with its patches applied (see the module docstring)."""
        with self._lock:
            self._load(handles, working_memory)

    def run(self, handles: Sequence[Any], working_memory: int, fn: Callable[[], T]) -> T:
        """`fn()` with `handles` loaded; an out-of-memory error retries with everything else unloaded
        and twice the working-memory reservation (so the models move down the modes)."""
        reserve = working_memory
        for attempt in range(OOM_RETRIES + 1):
            self.load(handles, reserve)
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - only OOM is handled; the rest re-raised
                if not _is_oom(exc) or attempt == OOM_RETRIES:
                    raise
                self.unload(handles)
                self._after_oom(handles, "run", exc)
                reserve = max(2 * reserve, 256 * MiB)
        raise AssertionError("unreachable")

    def unload(self, handles: Iterable[Any]) -> None:
        with self._lock:
            for handle in handles:
                slot = self._slots.get(_slot_key(handle))
                if slot is not None:
                    self._unload(slot)

    def unload_all(self) -> None:
        """POST /free: every model back to its offload device, device caches emptied."""
        with self._lock:
            for slot in list(self._slots.values()):
                self._unload(slot)
            self._empty_cache()

    def free(self, nbytes_needed: int, device: torch.device | None = None) -> int:
        """Unload least-recently-used models until `nbytes_needed` are available; returns what is."""
        device = device or self.settings.device
        with self._lock:
            self._evict(device, nbytes_needed, keep=())
            return self.available(device)

    def originals(self, handle: Any) -> dict[str, Tensor]:
        """The handle's unpatched tensors by name (read back from disk if the model was dropped)."""
        with self._lock:
            slot = self._slot(handle)
            if slot.mode == "dropped":
                self._enforce_ram({id(slot)}, extra=slot.size)
                self._restore(slot)
            current = {name: ts.get() for name, ts in slot.tensor_slots().items()}
            return {name: slot.home[name] if slot.home is not None else t for name, t in current.items()}

    @torch.no_grad()
    def state_dict(self, handle: Any) -> dict[str, Tensor]:
        """The handle's persistent tensors with its patches applied (what saving writes), on the offload
        device; unpatched tensors are the originals themselves (no copy)."""
        with self._lock:
            originals = self.originals(handle)
            slots = tensor_slots(handle.prefixed_modules())
            out = {}
            for name, ts in slots.items():
                if not ts.persistent:
                    continue
                original = originals[name]
                patches = handle.patches.get(name)
                out[name] = patched(original, patches).to(handle.offload_device) if patches else original
            return out

    def available(self, device: torch.device | None = None) -> int:
        """Device bytes the manager may still fill (budget minus loaded models; real free memory too)."""
        device = device or self.settings.device
        with self._lock:
            used = sum(s.device_bytes + (s.streamer.reserve() if s.streamer else 0)
                       for s in self._slots.values() if s.load_device == device and s.mode in ("full", "partial"))
            capacity = self.capacity(device)
            if capacity == math.inf:
                return 1 << 62
            free = capacity - used
            if device.type == "cuda":
                real_free, _ = torch.cuda.mem_get_info(device)
                cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
                free = min(free, real_free + cached - self.settings.reserve_vram)
            return max(0, int(free))

    def capacity(self, device: torch.device | None = None) -> float:
        """The device budget in bytes (inf for a CPU without --vram-budget)."""
        device = device or self.settings.device
        budget = self.settings.vram_budget if device == self.settings.device else None
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory - self.settings.reserve_vram
            return min(total, budget) if budget else total
        return float(budget) if budget else math.inf

    def loaded(self) -> list[dict[str, Any]]:
        """What each known model is doing now: label, mode, device bytes, size."""
        with self._lock:
            return [{"model": s.label, "mode": s.mode, "device_bytes": s.device_bytes, "size": s.size,
                     "device": str(s.load_device)} for s in self._slots.values()]

    def budget_view(self) -> tuple[int, int] | None:
        """(total, free) bytes of the compute device as the budget sees it, when --vram-budget sets one."""
        budget = self.settings.vram_budget
        if not budget:
            return None
        with self._lock:
            total = min(budget, int(self.capacity()))
            return total, min(total, self.available())

    def ram_in_use(self) -> int:
        """Bytes of model weights the manager holds in RAM (dropped models excluded)."""
        with self._lock:
            return sum(s.size for s in self._slots.values()
                       if s.mode != "dropped" and s.offload_device.type == "cpu")

    # -- slots -----------------------------------------------------------------------------------

    def _slot(self, handle: Any, label: str | None = None) -> _Slot:
        key = _slot_key(handle)
        slot = self._slots.get(key)
        if slot is None:
            modules = handle.prefixed_modules()
            self._counter += 1
            name = label or f"{type(handle).__name__.removesuffix('Handle').upper()}#{self._counter}"
            size = nbytes(ts.get() for ts in tensor_slots(modules).values())
            slot = _Slot(key, name, {p: weakref.ref(m) for p, m in modules.items()}, handle.load_device,
                         handle.offload_device, size)
            self._slots[key] = slot
            first = next(iter(modules.values()))
            weakref.finalize(first, _forget, weakref.ref(self), key)
        elif label is not None:
            slot.label = label
        return slot

    def _forget(self, key: tuple[int, ...]) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is not None and slot.spill is not None:
                slot.spill.unlink(missing_ok=True)

    # -- loading ---------------------------------------------------------------------------------

    def _load(self, handles: Sequence[Any], working_memory: int) -> None:
        wanted = [(handle, self._slot(handle)) for handle in handles]
        keep = {id(slot) for _, slot in wanted}
        for handle, slot in wanted:
            if slot.mode == "dropped":
                self._enforce_ram(keep, extra=slot.size)
                self._restore(slot)
            if slot.mode in ("full", "partial") and slot.patch_sig != signature(handle):
                self._unload(slot)
        for attempt in range(OOM_RETRIES + 1):
            try:
                self._place(wanted, working_memory, keep)
                break
            except Exception as exc:  # noqa: BLE001 - only OOM is handled; the rest re-raised
                if not _is_oom(exc) or attempt == OOM_RETRIES:
                    raise
                for _, slot in wanted:
                    self._unload(slot)
                self._after_oom([h for h, _ in wanted], "load", exc)
                working_memory = max(2 * working_memory, 256 * MiB)
        for _, slot in wanted:
            self._touch(slot)
        self._enforce_ram(keep)

    def _place(self, wanted: list[tuple[Any, _Slot]], working_memory: int, keep: set[int]) -> None:
        """Evict what the request needs, then load each model fully or partially, smallest first so the
        small ones (text encoders, VAE) load fully and the largest gets what is left."""
        for device in {slot.load_device for _, slot in wanted}:
            todo = sorted(((h, s) for h, s in wanted if s.load_device == device and s.mode != "full"),
                          key=lambda item: item[1].size)
            need = sum(s.size - s.device_bytes for _, s in todo) + working_memory
            self._evict(device, need if self.settings.smart_memory else math.inf, keep)
            for handle, slot in todo:
                room = self.available(device) - working_memory
                if slot.mode == "partial":
                    room += slot.device_bytes + slot.streamer.reserve()
                cap = self._resident_cap(slot, room)
                if cap >= slot.size:
                    self._unload(slot)
                    self._load_full(handle, slot)
                elif slot.mode != "partial" or slot.device_bytes > cap:
                    self._unload(slot)
                    self._load_partial(handle, slot, cap)

    def _resident_cap(self, slot: _Slot, room: int) -> int:
        mode = self.settings.vram_mode
        if mode in ("gpu_only", "high") or self.capacity(slot.load_device) == math.inf:
            return slot.size
        if mode == "no":
            return 0
        if mode == "low":
            room = room // 2
        return max(0, room)

    def _evict(self, device: torch.device, needed: float, keep: set[int]) -> None:
        for slot in list(self._slots.values()):
            if self.available(device) >= needed:
                return
            if id(slot) not in keep and slot.load_device == device and slot.mode in ("full", "partial"):
                self._unload(slot)

    @torch.no_grad()
    def _load_full(self, handle: Any, slot: _Slot) -> None:
        start = time.perf_counter()
        device = slot.load_device
        slots = tensor_slots(handle.prefixed_modules())
        home = {name: ts.get() for name, ts in slots.items()}
        try:
            for name, ts in slots.items():
                ts.set(_on_device(home[name], handle.patches.get(name), device))
        except BaseException:
            _put_back(slots, home)
            raise
        slot.home, slot.mode, slot.device_bytes = home, "full", slot.size
        self._adopt(handle, slot)
        self._event("load", slot, slot.size, start)

    @torch.no_grad()
    def _load_partial(self, handle: Any, slot: _Slot, cap: int) -> None:
        """Leaf layers resident in order while they fit under `cap`; the rest streamed per forward."""
        start = time.perf_counter()
        device, offload = slot.load_device, slot.offload_device
        simulated = device.type == offload.type
        modules = handle.prefixed_modules()
        slots = tensor_slots(modules)
        home = {name: ts.get() for name, ts in slots.items()}
        streamable: list[tuple[nn.Module, list[str]]] = []
        for prefix, root in modules.items():
            for path, module in root.named_modules():
                base = f"{prefix}{path}." if path else prefix
                names = [base + attr for attr, t in (*module._parameters.items(), *module._buffers.items())
                         if t is not None]
                if isinstance(module, STREAMABLE) and names:
                    streamable.append((module, names))
        in_units = {name for _, names in streamable for name in names}
        resident = {name for name in slots if name not in in_units}
        used = nbytes(home[n] for n in resident)
        # Streaming needs room for the layer in use and the one being prefetched.
        cap -= sum(sorted((nbytes(home[n] for n in names) for _, names in streamable), reverse=True)[:2])
        streamed: list[tuple[nn.Module, list[str]]] = []
        for module, names in streamable:
            size = nbytes(home[n] for n in names)
            if not streamed and used + size <= cap:
                resident.update(names)
                used += size
            else:
                streamed.append((module, names))
        units = []
        try:
            for name in resident:
                slots[name].set(_on_device(home[name], handle.patches.get(name), device))
            for module, names in streamed:
                entries = []
                for name in names:
                    source = _on_device(home[name], handle.patches.get(name), offload)
                    if device.type == "cuda":
                        source = source.pin_memory()
                    parked = _meta(source) if simulated else source
                    slots[name].set(parked)
                    entries.append((slots[name].attr, slots[name].is_param, source, parked))
                units.append(_Unit(weakref.ref(module), entries, nbytes(e[2] for e in entries)))
        except BaseException:
            _put_back(slots, home)
            raise
        slot.home, slot.mode, slot.device_bytes = home, "partial", used
        self._adopt(handle, slot)
        slot.streamer = _Streamer(units, device)
        self._event("partial", slot, used, start, streamed=sum(u.nbytes for u in units))

    def _adopt(self, handle: Any, slot: _Slot) -> None:
        """Remember which patches are applied and install the handle's input hooks."""
        hooks = handle.options.get(INPUT_HOOKS, ())
        slot.patch_sig = signature(handle)
        slot.patch_refs = (tuple(tuple(v) for v in handle.patches.values()), hooks)
        modules = handle.prefixed_modules()
        for name, hook in hooks:
            prefix = next(p for p in modules if name.startswith(p))
            slot.hooks.append(modules[prefix].get_submodule(name[len(prefix):]).register_forward_pre_hook(hook))

    def _unload(self, slot: _Slot) -> None:
        if slot.mode not in ("full", "partial"):
            return
        start = time.perf_counter()
        for hook in slot.hooks:
            hook.remove()
        slot.hooks.clear()
        if slot.streamer is not None:
            slot.streamer.detach()
            slot.streamer = None
        if slot.home is not None:
            _put_back(slot.tensor_slots(), slot.home)
        moved = slot.device_bytes
        slot.home, slot.mode, slot.device_bytes = None, "offloaded", 0
        slot.patch_sig, slot.patch_refs = (), ()
        self._event("unload", slot, moved, start)

    def _touch(self, slot: _Slot) -> None:
        self._slots[slot.key] = self._slots.pop(slot.key)

    def _after_oom(self, handles: Sequence[Any], where: str, exc: BaseException) -> None:
        keep = {id(self._slot(h)) for h in handles}
        log.warning("out of memory during %s (%s); unloading other models and retrying in a lower mode", where,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        for slot in list(self._slots.values()):
            if id(slot) not in keep:
                self._unload(slot)
        for handle in handles:
            self.events.append(MemoryEvent("oom", self._slot(handle).label, 0, 0.0, str(handle.load_device)))
        self._empty_cache()

    def _empty_cache(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    # -- RAM: dropping idle models to disk ------------------------------------------------------

    def _enforce_ram(self, keep: Iterable[int], extra: int = 0) -> None:
        keep = set(keep)
        budget = self.settings.ram_budget if self.settings.ram_budget is not None else default_ram_budget()
        for slot in list(self._slots.values()):
            if self.ram_in_use() + extra <= budget:
                return
            if id(slot) not in keep and slot.mode != "dropped" and slot.offload_device.type == "cpu":
                self._drop(slot)

    def _spill_path(self, slot: _Slot) -> Path:
        if self._spill_dir is None:
            base = self.settings.spill_dir
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix="sumi-spill-", dir=base))
            weakref.finalize(self, shutil.rmtree, self._spill_dir, True)
        self._counter += 1
        return self._spill_dir / f"{self._counter}.safetensors"

    def _drop(self, slot: _Slot) -> None:
        self._unload(slot)
        slots = slot.tensor_slots()
        if not slots:
            return
        start = time.perf_counter()
        tensors, seen = {}, set()
        for name, ts in slots.items():
            t = ts.get().detach()
            pointer = t.data_ptr()
            tensors[name] = t.contiguous() if pointer not in seen else t.clone()
            seen.add(pointer)
        path = self._spill_path(slot)
        save_file(tensors, str(path))
        del tensors
        for ts in slots.values():
            ts.set(_meta(ts.get()))
        slot.spill, slot.mode = path, "dropped"
        self._event("drop", slot, slot.size, start)

    def _restore(self, slot: _Slot) -> None:
        start = time.perf_counter()
        slots = slot.tensor_slots()
        with safe_open(str(slot.spill), framework="pt", device=str(slot.offload_device)) as f:
            for name, ts in slots.items():
                # A CPU tensor would view the file's mapping at any alignment; kernels may then round
                # differently. A copy is aligned and leaves nothing mapped.
                value = f.get_tensor(name)
                ts.set(value.clone() if value.device.type == "cpu" else value)
        slot.spill.unlink(missing_ok=True)
        slot.spill, slot.mode = None, "offloaded"
        self._event("restore", slot, slot.size, start)

    def _event(self, kind: str, slot: _Slot, moved: int, start: float, streamed: int = 0) -> None:
        event = MemoryEvent(kind, slot.label, moved, _ms(start), str(slot.load_device), streamed)
        self.events.append(event)
        log.debug("%s %s: %.1f MiB in %.1f ms", kind, slot.label, moved / MiB, event.ms)


def _on_device(original: Tensor, patches: Sequence[Any] | None, device: torch.device) -> Tensor:
    """What a loaded module holds for one tensor: the original on `device` (itself when it is there
    already), patched on that device when it has patches."""
    moved = original.to(device)
    return patched(moved, patches) if patches else moved


def _put_back(slots: Mapping[str, TensorSlot], home: Mapping[str, Tensor]) -> None:
    """Swap the original tensors back in wherever a module holds another one."""
    for name, ts in slots.items():
        original = home.get(name)
        if original is not None and ts.get() is not original:
            ts.set(original)


def _forget(manager_ref: weakref.ref, key: tuple[int, ...]) -> None:
    manager = manager_ref()
    if manager is not None:
        manager._forget(key)
