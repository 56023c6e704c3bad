"""Sampling speed and memory: an SD txt2img prompt through the real executor, fp32 vs automatic dtype.

    python bench/sampling.py [--family sd15] [--checkpoint FILE] [--size 256] [--cfg 7] [--modes fp32 auto]

Writes a random-weight full-size checkpoint of the family with tools/make_random_checkpoint.py (fp16, the
common download) into a temporary models folder, unless --checkpoint names one. Each mode runs in a fresh
process, so start-up, memory and caches are its own:

* cold start: process launch → the first image saved (CheckpointLoaderSimple, both prompts, 4 steps,
  VAEDecode, SaveImage through the queue and worker); load: the CheckpointLoaderSimple node;
* s/step = (T(12 steps) − T(4 steps)) / 8 over whole prompts (the best of --repeats each; the loader and
  text encoders come from the cache, as on a second click of "Queue");
* peak RSS of the process (and peak VRAM on CUDA).

Modes: fp32 (the --force-fp32 policy), auto (what DevicePolicy picks here: a bf16 UNet on CPUs with
AVX512-BF16 or AMX), bf16 (--bf16-unet: bf16 weights and compute for the UNet). Prints a table and one
"RESULT {json}" line whose "ratio_vs_fp32" is each mode's s/step over fp32's. --profile adds each mode's
top operators.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {"fp32": {"force_fp32": True}, "auto": {}, "bf16": {"bf16_unet": True}}
LOW, HIGH = 4, 12


def txt2img(checkpoint: str, size: int, cfg: float, steps: int, seed: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff at sunset, oil painting",
                                                         "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


# ---- one mode, in its own process ----------------------------------------------------------------


def worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as main.py does, before OpenMP starts with torch
    import torch

    from execution.context import Config, build_context
    from execution.validate import validate_prompt
    from model_management.devices import DevicePolicy

    ctx = build_context(Config(base_dir=Path(args.base), persistent_queue=False), start_worker=False)
    ctx.services.devices = DevicePolicy.from_flags(**MODES[args.mode])
    starts: list[tuple[float, str | None]] = []
    ctx.hub.subscribe(lambda m: m.event == "executing" and starts.append((time.perf_counter(), m.data.get("node"))))

    def run(steps: int, seed: int) -> tuple[float, dict[str, float]]:
        """(seconds for the whole prompt, seconds per executed node)."""
        prompt = txt2img(args.checkpoint, args.size, args.cfg, steps, seed)
        result = validate_prompt(prompt, ctx.registry)
        assert result.ok, result.body()
        job = ctx.queue.put(prompt, {"client_id": "bench"}, result.outputs, number=ctx.queue.next_number())
        ctx.queue.get(timeout=0)
        starts.clear()
        began = time.perf_counter()
        outcome = ctx.worker.run_job(job)
        if outcome.status != "success":
            error = outcome.terminal[1]
            raise RuntimeError(f"{error.get('node_type')}: {error.get('exception_message')}\n"
                               + "".join(error.get("traceback") or []))
        nodes = {node: b - a for (a, node), (b, _) in zip(starts, starts[1:]) if node is not None}
        return time.perf_counter() - began, nodes

    _, cold = run(LOW, 0)
    first_image = time.time() - args.launched
    warm = {steps: min((run(steps, seed) for seed in range(1, args.repeats + 1)), key=lambda r: r[0])
            for steps in (LOW, HIGH)}
    policy = ctx.services.devices
    out = {
        "mode": args.mode, "unet_dtype": str(policy.unet_dtype).removeprefix("torch."), "device": str(policy.load_device),
        "cold_start_s": first_image, "load_s": cold.get("1"), "text_encode_s": cold.get("2"),
        f"t{LOW}_s": warm[LOW][0], f"t{HIGH}_s": warm[HIGH][0],
        "s_per_step": (warm[HIGH][0] - warm[LOW][0]) / (HIGH - LOW),
        f"ksampler_{LOW}_s": warm[LOW][1].get("5"), "vae_decode_s": warm[LOW][1].get("6"),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        out["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if args.profile:
        out["profile"] = profile_prompt(run)
    return out


def profile_prompt(run) -> str:
    """The top operators (self CPU time) of one warm 4-step prompt; the UNet calls dominate."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(LOW, 1000)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


# ---- driver ------------------------------------------------------------------------------------------


def write_checkpoint(family: str, folder: Path) -> str:
    from tools.make_random_checkpoint import DTYPES, make_checkpoint, write_checkpoint as write

    name = f"bench-{family}-fp16.safetensors"
    path = folder / name
    if not path.exists():
        print(f"writing a random full-size {family} checkpoint to {path} …", file=sys.stderr)
        write(make_checkpoint(family, tiny=False, dtype=DTYPES["fp16"]), path)
    return name


def run_mode(mode: str, base: Path, checkpoint: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--mode", mode, "--base", str(base), "--checkpoint", checkpoint,
               "--size", str(args.size), "--cfg", str(args.cfg), "--repeats", str(args.repeats),
               "--launched", repr(time.time())] + (["--profile"] if args.profile else [])
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in done.stdout.splitlines() if line.startswith("WORKER ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("WORKER "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="sd15", choices=("sd15", "sd21", "sd21-v", "sdxl"))
    parser.add_argument("--checkpoint", help="an existing checkpoint file (default: write a random one)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--modes", nargs="+", default=["fp32", "auto"], choices=tuple(MODES))
    parser.add_argument("--repeats", type=int, default=2, help="runs per step count; the fastest counts")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("WORKER " + json.dumps(worker(args)))
        return 0

    with tempfile.TemporaryDirectory(prefix="sumi-bench-") as tmp:
        base = Path(tmp)
        folder = base / "models" / "checkpoints"
        folder.mkdir(parents=True)
        if args.checkpoint:  # found through an extra model path: links out of a folder are refused
            source = Path(args.checkpoint).resolve()
            (base / "extra_model_paths.yaml").write_text(json.dumps({"bench": {"checkpoints": str(source.parent)}}))
            checkpoint = source.name
        else:
            checkpoint = write_checkpoint(args.family, folder)
        results = [run_mode(mode, base, checkpoint, args) for mode in args.modes]

    fp32 = next((r["s_per_step"] for r in results if r["mode"] == "fp32"), None)
    header = ("mode", "unet", "load s", "cold start s", f"T({LOW}) s", f"T({HIGH}) s", "decode s", "s/step",
              "peak RSS GB")
    print(" | ".join(f"{h:>12}" for h in header))
    for r in results:
        r["ratio_vs_fp32"] = r["s_per_step"] / fp32 if fp32 else None
        row = (r["mode"], r["unet_dtype"], f"{r['load_s']:.2f}", f"{r['cold_start_s']:.2f}", f"{r[f't{LOW}_s']:.2f}",
               f"{r[f't{HIGH}_s']:.2f}", f"{r['vae_decode_s']:.2f}", f"{r['s_per_step']:.3f}", f"{r['peak_rss_gb']:.2f}")
        print(" | ".join(f"{c:>12}" for c in row))
        if "profile" in r:
            print(f"\n{r['mode']}: one warm {LOW}-step prompt\n{r.pop('profile')}")
    print("RESULT " + json.dumps({"family": args.family, "size": args.size, "cfg": args.cfg, "cpu_count": os.cpu_count(),
                                  "load_average": os.getloadavg(), "modes": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
