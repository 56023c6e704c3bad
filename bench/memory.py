"""Model memory: peak RSS, checkpoint switching, partial loading, and on CUDA peak VRAM and the largest
resolution that runs under a budget.

    python bench/memory.py [--family sd15] [--tiny] [--switches 6] [--budget-gb 4]

Two random checkpoints of the family (real sizes unless --tiny, fp16 files as released) are written by
tools/make_random_checkpoint.py in a child process, so the numbers below are this process's own:

* file switch: CheckpointLoaderSimple alternating between the two files (read, cast, build);
* device switch: both models loaded, a device budget that holds one UNet, alternating
  `ModelManager.load` (unload one, load the other, from RAM);
* one UNet call (512 px, batch 2 as with CFG) loaded fully and partially (budget = half the UNet);
* CUDA only: peak VRAM of those calls, and the largest square resolution a UNet call survives when the
  allocator is capped at --budget-gb (the manager streams and retries on OOM) against a plain full load.

Prints a table and one JSON line (prefix "RESULT ").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.context import Config, build_context  # noqa: E402
from model_management.handles import ModelHandle  # noqa: E402
from model_management.manager import GiB, MiB, MemorySettings, ModelManager  # noqa: E402
from nodes.loaders import CheckpointLoaderSimple  # noqa: E402
from nodes.runtime import NodeRuntime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESOLUTIONS = (512, 768, 1024, 1536, 2048, 3072, 4096)


def rss_now() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_checkpoints(folder: Path, family: str, tiny: bool) -> list[str]:
    names = []
    for seed in (0, 1):
        name = f"bench_{family}_{seed}.safetensors"
        command = [sys.executable, str(ROOT / "tools" / "make_random_checkpoint.py"), family, str(folder / name),
                   "--dtype", "fp16", "--seed", str(seed)] + (["--tiny"] if tiny else [])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        names.append(name)
    return names


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def unet_call(model: ModelHandle, pixels: int, batch: int = 2) -> Callable[[], torch.Tensor]:
    """One UNet call at `pixels`² (latent ÷ 8) on the model's load device, in its dtype."""
    config = model.base.unet.config
    device = model.load_device
    side = pixels // 8

    @torch.no_grad()
    def call() -> torch.Tensor:
        x = torch.randn(batch, config.in_channels, side, side, device=device)
        context = torch.randn(batch, 77, config.context_dim, device=device)
        return model.denoiser.unet(x, torch.full((batch,), 500.0, device=device), context).float().sum()
    return call


def unet_bytes(model: ModelHandle) -> int:
    return sum(t.numel() * t.element_size() for t in model.base.unet.state_dict().values())


def with_manager(model: ModelHandle, manager: ModelManager) -> ModelHandle:
    clone = model.clone()
    clone.manager = manager
    manager.register(clone)
    return clone


def file_switches(rt: NodeRuntime, names: list[str], switches: int) -> list[float]:
    times = []
    for i in range(switches):
        seconds, handles = timed(lambda: CheckpointLoaderSimple().execute(names[i % 2], rt))
        times.append(seconds)
        del handles
    return times


def device_switches(models: list[ModelHandle], switches: int, device: torch.device) -> tuple[list[float], ModelManager]:
    size = max(unet_bytes(m) for m in models)
    manager = ModelManager(MemorySettings(device=device, vram_budget=int(1.3 * size)))
    handles = [with_manager(m, manager) for m in models]
    times = [timed(lambda h=handles[i % 2]: manager.load([h], 0))[0] for i in range(switches)]
    manager.unload_all()
    return times, manager


def step_times(model: ModelHandle, device: torch.device) -> dict[str, Any]:
    """One 512-px UNet call fully loaded and with half of the UNet streamed."""
    out: dict[str, Any] = {}
    for mode, budget in (("full", None), ("partial", unet_bytes(model) // 2)):
        manager = ModelManager(MemorySettings(device=device, vram_budget=budget))
        handle = with_manager(model, manager)
        manager.load([handle], 0)
        call = unet_call(handle, 512)
        call()  # warm-up (kernels, allocator)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        seconds, _ = timed(call)
        out[f"step_s_{mode}"] = seconds
        if torch.cuda.is_available():
            out[f"peak_vram_{mode}"] = torch.cuda.max_memory_allocated()
        event = manager.events[-1]
        out[f"resident_{mode}"], out[f"streamed_{mode}"] = event.bytes, event.streamed
        manager.unload_all()
    return out


def max_resolution(model: ModelHandle, budget: int) -> dict[str, int]:
    """Largest square resolution whose UNet call runs when the CUDA allocator is capped at `budget`."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
    out = {}
    try:
        for name, mode in (("plain_full_load", "high"), ("manager", "normal")):
            manager = ModelManager(MemorySettings(device=model.load_device, vram_mode=mode, vram_budget=budget))
            handle = with_manager(model, manager)
            best = 0
            for pixels in RESOLUTIONS:
                memory = handle.working_memory((2, handle.base.unet.config.in_channels, pixels // 8, pixels // 8))
                try:
                    if mode == "high":
                        manager.load([handle], 0)
                        unet_call(handle, pixels)()
                    else:
                        manager.run([handle], memory, unet_call(handle, pixels))
                    best = pixels
                except torch.OutOfMemoryError:
                    break
                finally:
                    manager.unload_all()
                    torch.cuda.empty_cache()
            out[name] = best
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    return out


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="sumi-bench-memory-"))
    try:
        run(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="sd15", choices=("sd15", "sd21", "sdxl"))
    parser.add_argument("--tiny", action="store_true", help="test-sized models (quick smoke run)")
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--budget-gb", type=float, default=4.0, help="CUDA allocator cap for the resolution test")
    args = parser.parse_args()
    ctx = build_context(Config(base_dir=base, persistent_queue=False), start_worker=False)
    folder = ctx.folders.models["checkpoints"][0]
    folder.mkdir(parents=True, exist_ok=True)
    names = write_checkpoints(folder, args.family, args.tiny)
    file_bytes = sum((folder / n).stat().st_size for n in names) // 2
    rt = NodeRuntime(ctx.services, "bench", "1", "1", lambda *a: None, lambda: False, lambda text: None)
    device = ctx.services.devices.load_device
    rss_start = rss_now()

    files = file_switches(rt, names, args.switches)
    models = [CheckpointLoaderSimple().execute(name, rt)[0] for name in names]
    switches, switch_manager = device_switches(models, args.switches, device)
    steps = step_times(models[0], device)
    result: dict[str, Any] = {
        "bench": "memory", "family": args.family, "tiny": args.tiny, "device": str(device),
        "unet_dtype": str(ctx.services.devices.unet_dtype), "checkpoint_file_bytes": file_bytes,
        "unet_bytes": unet_bytes(models[0]), "file_switch_s": statistics.median(files[1:] or files),
        "file_switch_first_s": files[0], "device_switch_ms": 1000 * statistics.median(switches[1:] or switches),
        "device_switch_events": [e.kind for e in switch_manager.events][:6], **steps,
        "rss_start_bytes": rss_start, "rss_end_bytes": rss_now(), "peak_rss_bytes": peak_rss(),
    }
    if torch.cuda.is_available() and device.type == "cuda":
        result["max_resolution"] = max_resolution(models[0], int(args.budget_gb * GiB))
        result["budget_gb"] = args.budget_gb
    ctx.close()

    print(f"{'measure':<34} {'value':>16}")
    rows = [("device", result["device"]), ("UNet dtype", result["unet_dtype"]),
            ("checkpoint file", f"{file_bytes / GiB:.2f} GiB"),
            ("UNet in memory", f"{result['unet_bytes'] / GiB:.2f} GiB"),
            ("file switch (load checkpoint)", f"{result['file_switch_s']:.2f} s"),
            ("device switch (unload + load)", f"{result['device_switch_ms']:.1f} ms"),
            ("UNet call 512px b2, full", f"{result['step_s_full']:.2f} s"),
            ("UNet call 512px b2, half streamed", f"{result['step_s_partial']:.2f} s"),
            ("streamed per call", f"{result['streamed_partial'] / MiB:.0f} MiB"),
            ("RSS start / end", f"{rss_start / GiB:.2f} / {result['rss_end_bytes'] / GiB:.2f} GiB"),
            ("peak RSS", f"{result['peak_rss_bytes'] / GiB:.2f} GiB")]
    if "peak_vram_full" in result:
        rows += [("peak VRAM full / partial", f"{result['peak_vram_full'] / GiB:.2f} / "
                                              f"{result['peak_vram_partial'] / GiB:.2f} GiB"),
                 (f"max res @ {args.budget_gb} GiB plain / manager",
                  f"{result['max_resolution']['plain_full_load']} / {result['max_resolution']['manager']} px")]
    else:
        rows.append(("CUDA (peak VRAM, max resolution)", "not available"))
    for label, value in rows:
        print(f"{label:<34} {value:>16}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
