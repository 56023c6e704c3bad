"""Fixtures for the memory manager, patcher, LoRA and merging tests.

* `tiny(family="sd15", seed=0)`: a cached tiny random single-file state dict (tools/make_random_checkpoint).
* `memory_base`: a session-wide app folder tree; `write_model(folder, name, state_dict)` writes a file in
  models/<folder> (``.safetensors``, or a torch pickle for other suffixes) and returns its name.
* `make_rt(manager)`: a NodeRuntime whose services hold `manager` (fp32 on the CPU).
* `load(name, rt)`: (MODEL, CLIP, VAE) through CheckpointLoaderSimple.
* `kohya_lora(model, clip, ...)` / `make_kohya_lora(unet, text, ...)`: a LoRA in sd-scripts' layout
  (reference manifests lora_sd15_kohya_*: ``lora_unet_`` + diffusers module path with '_', ``lora_te_`` +
  HF path; down [r, in(, kh, kw)], up [out, r(, 1, 1)], 0-dim alpha), with the weights a merge would give.
* `make_app(**config)`: the real app (build_context) over memory_base; `app.run(prompt)` goes through
  validation, the queue and the worker.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from diffusion.keymaps_unet import ldm_to_diffusers
from diffusion.unet_config import unet_config_from_state_dict
from execution.context import AppContext, Config, build_context
from execution.events import Message
from execution.executor import RunOutcome
from execution.validate import validate_prompt
from model_management.devices import DevicePolicy
from model_management.folders import Folders
from model_management.handles import ClipHandle, ModelHandle
from model_management.manager import MemorySettings, ModelManager
from nodes.loaders import CheckpointLoaderSimple
from nodes.runtime import NodeRuntime, NodeServices
from tools.make_random_checkpoint import make_checkpoint


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy machine waiting threads slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@lru_cache(maxsize=None)
def _tiny(family: str, seed: int) -> dict[str, Tensor]:
    return make_checkpoint(family, tiny=True, seed=seed)


@pytest.fixture(scope="session")
def tiny() -> Callable[..., dict[str, Tensor]]:
    return lambda family="sd15", seed=0: _tiny(family, seed)


@pytest.fixture(scope="session")
def memory_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("memory_app")
    Folders.create(base).ensure()
    return base


def write_file(state_dict: dict[str, Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save({"state_dict": state_dict}, path)


@pytest.fixture(scope="session")
def write_model(memory_base: Path) -> Callable[[str, str, dict], str]:
    def write(folder: str, name: str, state_dict: dict[str, Tensor]) -> str:
        write_file(state_dict, memory_base / "models" / folder / name)
        return name
    return write


@pytest.fixture
def make_rt(memory_base: Path) -> Callable[..., NodeRuntime]:
    def make(manager: ModelManager | None = None) -> NodeRuntime:
        manager = manager or ModelManager(MemorySettings())
        services = NodeServices(Folders.create(memory_base), devices=DevicePolicy.cpu(), models=manager)
        return NodeRuntime(services, "p1", "1", "1", lambda value, total, preview: None, lambda: False,
                           lambda text: None)
    return make


@pytest.fixture
def load(write_model, tiny) -> Callable[..., tuple]:
    """load(rt, family="sd15", seed=0) -> (MODEL, CLIP, VAE) of a tiny checkpoint file."""
    def run(rt: NodeRuntime, family: str = "sd15", seed: int = 0) -> tuple:
        name = write_model("checkpoints", f"{family}-{seed}.safetensors", tiny(family, seed))
        return CheckpointLoaderSimple().execute(name, rt)
    return run


# -- LoRA files in the kohya layout -------------------------------------------------------------


@dataclass
class KohyaLora:
    state_dict: dict[str, Tensor]
    unet_deltas: dict[str, Tensor]  # ldm key -> scale·up@down (before the strength)
    clip_deltas: dict[str, dict[str, Tensor]]  # role -> encoder module key -> delta

    def merged_unet(self, model: ModelHandle, strength: float) -> nn.Module:
        return _merged(model.base.unet, self.unet_deltas, strength)

    def merged_encoder(self, clip: ClipHandle, strength: float, index: int = 0) -> nn.Module:
        slot = clip.slots[index]
        return _merged(slot.encoder, self.clip_deltas[slot.key], strength)


def _merged(module: nn.Module, deltas: dict[str, Tensor], strength: float) -> nn.Module:
    """A copy of `module` (which must hold its original weights) with the deltas added."""
    module = copy.deepcopy(module)
    module.load_state_dict({k: v + strength * deltas[k] if k in deltas else v for k, v in module.state_dict().items()})
    return module


def make_kohya_lora(unet: Mapping[str, Tensor], text: Mapping[str, Mapping[str, Tensor]], *, rank: int = 4,
                    alpha: float = 2.0, conv: bool = False, seed: int = 0, ldm_names: bool = False) -> KohyaLora:
    """A LoRA (a LoCon with `conv`) for a UNet state dict (ldm keys) and text encoders ({role: module keys}),
    named as sd-scripts does: SD1 trainers use diffusers paths, SDXL trainers (`ldm_names`) ldm paths;
    text encoders lora_te_ (one encoder) or lora_te1_ / lora_te2_ (SDXL). fp16 tensors, as released."""
    gen = torch.Generator().manual_seed(seed)
    config = unet_config_from_state_dict(unet)
    diffusers_of = {v: k for k, v in ldm_to_diffusers({k: k for k in unet}, config).items()}
    out: dict[str, Tensor] = {}

    def add(name: str, weight: Tensor) -> Tensor:
        down = 0.1 * torch.randn(rank, *weight.shape[1:], generator=gen)
        up = 0.1 * torch.randn(weight.shape[0], rank, *([1, 1] if weight.ndim == 4 else []), generator=gen)
        if weight.ndim == 4 and weight.shape[2:] == (1, 1):
            down = down[:, :, :1, :1]
        out[f"{name}.lora_down.weight"], out[f"{name}.lora_up.weight"] = down.half(), up.half()
        out[f"{name}.alpha"] = torch.tensor(alpha).half()
        return (alpha / rank) * (up.half().float().flatten(1) @ down.half().float().flatten(1)).reshape(weight.shape)

    unet_deltas = {}
    for key, weight in unet.items():
        if not key.endswith(".weight") or weight.ndim not in (2, 4):
            continue
        diffusers = diffusers_of[key][: -len(".weight")]
        in_transformer = ".attentions." in diffusers and (weight.ndim == 2 or weight.shape[2:] == (1, 1))
        in_blocks = ".attentions." not in diffusers and diffusers.startswith(("down_blocks", "mid_block", "up_blocks"))
        if in_transformer or (conv and in_blocks):
            path = key[: -len(".weight")] if ldm_names else diffusers
            unet_deltas[key] = add("lora_unet_" + path.replace(".", "_"), weight)
    prefixes = {"clip_l": "lora_te1_", "clip_g": "lora_te2_"} if len(text) == 2 else {role: "lora_te_" for role in text}
    clip_deltas: dict[str, dict[str, Tensor]] = {}
    for role, weights in text.items():
        clip_deltas[role] = {}
        for key, weight in weights.items():
            if weight.ndim == 2 and (".self_attn." in key or ".mlp." in key):
                hf = "text_model." + key.removeprefix("transformer.")[: -len(".weight")]
                clip_deltas[role][key] = add(prefixes[role] + hf.replace(".", "_"), weight)
    return KohyaLora(out, unet_deltas, clip_deltas)


def lora_for(model: ModelHandle, clip: ClipHandle | None, **options: Any) -> KohyaLora:
    text = {} if clip is None else {slot.key: slot.encoder.state_dict() for slot in clip.slots}
    return make_kohya_lora(model.base.unet.state_dict(), text, **options)


@pytest.fixture
def kohya_lora() -> Callable[..., KohyaLora]:
    """kohya_lora(model, clip, rank=4, alpha=2.0, conv=False, seed=0) for loaded handles."""
    return lora_for


# -- the real app ---------------------------------------------------------------------------------


@dataclass
class Run:
    outcome: RunOutcome
    messages: list[Message]


class App:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @property
    def manager(self) -> ModelManager:
        return self.ctx.services.models

    def run(self, prompt: dict) -> Run:
        result = validate_prompt(prompt, self.ctx.registry)
        assert result.ok and not result.node_errors, result.body()
        messages: list[Message] = []
        unsubscribe = self.ctx.hub.subscribe(messages.append)
        try:
            job = self.ctx.queue.put(prompt, {"client_id": "tests"}, result.outputs,
                                     number=self.ctx.queue.next_number())
            self.ctx.queue.get(timeout=0)
            outcome = self.ctx.worker.run_job(job)
        finally:
            unsubscribe()
        assert outcome.status == "success", outcome.messages
        return Run(outcome, messages)


@pytest.fixture
def make_app(memory_base: Path) -> Iterator[Callable[..., App]]:
    contexts: list[AppContext] = []

    def make(**config: Any) -> App:
        ctx = build_context(Config(base_dir=memory_base, persistent_queue=False, cpu=True, **config),
                            start_worker=False)
        ctx.services.devices = DevicePolicy.cpu()
        contexts.append(ctx)
        return App(ctx)
    yield make
    for ctx in contexts:
        ctx.close()
