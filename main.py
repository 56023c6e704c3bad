"""Sumi entry point: `python main.py [serve] [flags]`, `python main.py run FILE`, `python main.py convert FILE`.

Flags keep ComfyUI's names and meanings so existing launch scripts work unchanged.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

# OpenMP reads this once, when torch loads: its default spin-wait burns the cores that a loaded CPU
# needs for the next kernel (a bf16 UNet call measured 6x slower on a busy 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent
SUBCOMMANDS = ("serve", "run", "convert")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="Sumi: a ComfyUI-compatible workflow engine")
    net = p.add_argument_group("server")
    net.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1",
                     help="address(es) to bind, comma separated; a bare flag means all interfaces")
    net.add_argument("--port", type=int, default=8188)
    net.add_argument("--tls-keyfile")
    net.add_argument("--tls-certfile")
    net.add_argument("--enable-cors-header", nargs="?", const="*", default=None, metavar="ORIGIN",
                     help="send CORS headers for ORIGIN (default *); disables the origin check")
    net.add_argument("--trusted-origin", action="append", default=[], metavar="ORIGIN",
                     help="an extra origin (e.g. https://proxy.example) allowed to call the API")
    net.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN' on HTTP and WebSocket")
    net.add_argument("--max-upload-size", type=float, default=100, metavar="MB")
    net.add_argument("--enable-compress-response-body", action="store_true")
    net.add_argument("--auto-launch", action="store_true")
    net.add_argument("--disable-auto-launch", action="store_true")
    net.add_argument("--dont-print-server", action="store_true")
    net.add_argument("--multi-user", action="store_true")
    net.add_argument("--front-end-root")

    paths = p.add_argument_group("folders")
    paths.add_argument("--base-directory", default=str(REPO))
    paths.add_argument("--output-directory")
    paths.add_argument("--input-directory")
    paths.add_argument("--temp-directory")
    paths.add_argument("--user-directory")
    paths.add_argument("--extra-model-paths-config", nargs="+", action="append", default=[], metavar="PATH")

    cache = p.add_argument_group("cache").add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="keep what the next prompt can reuse (default)")
    cache.add_argument("--cache-lru", type=int, default=0, metavar="N", help="keep the N most recent node results")
    cache.add_argument("--cache-ram", nargs="?", type=float, const=4.0, default=0, metavar="GB",
                       help="evict while less than GB of system RAM is available")
    cache.add_argument("--cache-ram-budget", type=int, default=0, metavar="BYTES",
                       help="keep cached results under BYTES (Sumi)")
    cache.add_argument("--cache-none", action="store_true", help="re-run every node on every prompt")

    dev = p.add_argument_group("device and precision (model management)")
    for flag in ("--cpu", "--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram",
                 "--disable-smart-memory", "--force-fp32", "--force-fp16", "--bf16-unet", "--fp16-unet",
                 "--fp32-unet", "--fp16-vae", "--fp32-vae", "--bf16-vae", "--cpu-vae", "--fp16-text-enc",
                 "--fp32-text-enc", "--deterministic", "--use-pytorch-cross-attention", "--disable-xformers"):
        dev.add_argument(flag, action="store_true")
    dev.add_argument("--reserve-vram", type=float, metavar="GB")
    dev.add_argument("--vram-budget", type=int, metavar="BYTES",
                     help="treat the compute device as this small, on CPU too (Sumi)")
    dev.add_argument("--ram-budget", type=int, metavar="BYTES",
                     help="RAM for model weights before idle models are dropped to disk (Sumi)")

    misc = p.add_argument_group("misc")
    misc.add_argument("--preview-method", choices=("none", "auto", "latent2rgb", "taesd"), default="none")
    misc.add_argument("--preview-size", type=int, default=512)
    misc.add_argument("--default-hashing-function", choices=("md5", "sha1", "sha256", "sha512"), default="sha256")
    misc.add_argument("--disable-metadata", action="store_true")
    misc.add_argument("--disable-all-custom-nodes", action="store_true")
    misc.add_argument("--whitelist-custom-nodes", nargs="+", default=[])
    misc.add_argument("--disable-api-nodes", action="store_true")
    misc.add_argument("--max-history", type=int, default=10000, help="finished jobs kept in history")
    misc.add_argument("--history-page-limit", type=int, default=1000,
                      help="most history entries one /history response returns")
    misc.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO")
    misc.add_argument("--log-stdout", action="store_true")
    misc.add_argument("--quick-test-for-ci", action="store_true", help="load everything, then exit 0")
    return p


def cache_policy(args: argparse.Namespace):
    from execution.cache import CachePolicy
    if args.cache_lru > 0:
        return CachePolicy("lru", args.cache_lru)
    if args.cache_ram_budget > 0:
        return CachePolicy("ram", args.cache_ram_budget)
    if args.cache_ram > 0:
        return CachePolicy("ram", 1 << 62, int(args.cache_ram * (1 << 30)))
    if args.cache_none:
        return CachePolicy("none")
    return CachePolicy("classic")


def vram_mode(args: argparse.Namespace) -> str:
    if args.gpu_only:
        return "gpu_only"
    if args.highvram:
        return "high"
    if args.novram:
        return "no"
    if args.lowvram and not args.normalvram:
        return "low"
    return "normal"


def config_from_args(args: argparse.Namespace, argv: list[str]):
    from execution.context import Config
    from model_management.devices import FLAGS
    return Config(
        base_dir=Path(args.base_directory), input_dir=args.input_directory, output_dir=args.output_directory,
        temp_dir=args.temp_directory, user_dir=args.user_directory,
        extra_model_paths=[p for group in args.extra_model_paths_config for p in group],
        listen=args.listen, port=args.port, cache=cache_policy(args), disable_metadata=args.disable_metadata,
        disable_custom_nodes=args.disable_all_custom_nodes,
        whitelist_custom_nodes=tuple(args.whitelist_custom_nodes), cors_origin=args.enable_cors_header,
        trusted_origins=tuple(args.trusted_origin), auth_token=args.auth_token, max_upload_mb=args.max_upload_size,
        max_history=args.max_history, history_page_limit=args.history_page_limit,
        preview_method=args.preview_method, preview_size=args.preview_size, cpu=args.cpu,
        device_flags={name: getattr(args, name) for name in FLAGS if name != "cpu"}, vram_mode=vram_mode(args),
        reserve_vram_gb=args.reserve_vram, vram_budget=args.vram_budget, ram_budget=args.ram_budget,
        smart_memory=not args.disable_smart_memory, hashing=args.default_hashing_function, argv=argv)


def setup_logging(level: str, to_stdout: bool) -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        stream=sys.stdout if to_stdout else sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace, argv: list[str]) -> int:
    import gc

    from execution.context import build_context
    ctx = build_context(config_from_args(args, argv), start_worker=not args.quick_test_for_ci)
    if args.quick_test_for_ci:
        ctx.close()
        return 0
    # Start-up objects (torch, transformers, node classes) live for the whole process: move them out
    # of the collector's view so a full collection during a prompt does not walk them (~100 ms each).
    gc.freeze()
    from server.app import serve
    try:
        asyncio.run(serve(ctx))
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()
    return 0


def headless_context(args: argparse.Namespace, argv: list[str]):
    from dataclasses import replace

    from execution.context import build_context
    return build_context(replace(config_from_args(args, argv), persistent_queue=False), start_worker=False)


def cmd_convert(args: argparse.Namespace, argv: list[str]) -> int:
    from execution.headless import load_prompt
    ctx = headless_context(args, argv)
    try:
        prompt, _ = load_prompt(ctx, Path(args.file))
    finally:
        ctx.close()
    json.dump(prompt, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from execution.headless import run_file
    ctx = headless_context(args, argv)
    try:
        return run_file(ctx, Path(args.file), seed=args.seed)
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "serve"
    parser = build_parser()
    if command in ("run", "convert"):
        parser.add_argument("file", help="UI workflow JSON, API prompt JSON, or a PNG with embedded metadata")
    if command == "run":
        parser.add_argument("--seed", type=int, help="override every seed / noise_seed input")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_stdout)
    return {"serve": cmd_serve, "run": cmd_run, "convert": cmd_convert}[command](args, ["main.py", *argv])


if __name__ == "__main__":
    sys.exit(main())
