"""Fixtures for sampling tests.

* `AnalyticUNet`: the reference vectors' analytic ε model (reference README §3.1) standing in for the UNet,
  so a MODEL handle built on it goes through the real handle → Denoiser → guidance → sampler path;
  it records every call's inputs.
* `runtime(...)`: a NodeRuntime that records progress / previews and can be interrupted.
* `tiny_models`: a session-wide models/ tree; `tiny_models.checkpoint("sd15")` writes (once) a tiny
  random checkpoint made by tools/make_random_checkpoint.py and returns its file name;
  `tiny_models.load("sd15", rt)` gives (MODEL, CLIP, VAE) through CheckpointLoaderSimple.
* `app`: the real app (build_context) over the same folders, fp32 on the CPU; `app.run(prompt, extra)`
  validates and runs an API prompt through the queue and worker and returns the outcome and messages.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from diffusion.latent_formats import SD15
from diffusion.model import Denoiser
from diffusion.schedules import DiscreteSchedule
from diffusion.unet import UNetConfig
from model_management.devices import DevicePolicy
from model_management.folders import Folders
from model_management.handles import ModelHandle, model_handle
from execution.context import AppContext, Config, build_context
from execution.events import Message
from execution.executor import RunOutcome
from execution.validate import validate_prompt
from nodes.loaders import CheckpointLoaderSimple
from nodes.runtime import NodeRuntime, NodeServices
from tools.make_random_checkpoint import make_checkpoint, write_checkpoint
from tests.paths import SHARED

VECTORS = SHARED / "reference/vectors"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's waiting
    threads slow every small kernel down by orders of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class AnalyticUNet(nn.Module):
    """ε(x_in, t, c) = M·x_in + (1 − t/1000)·c[:, 0] per latent cell (c: the context's first token, 4 wide).

    Cell-local, so a prediction on an area crop equals the full-size prediction cut to that area.
    `calls` keeps (x_in, t, context) of every forward."""

    def __init__(self, m: Tensor) -> None:
        super().__init__()
        self.m = nn.Parameter(m.clone(), requires_grad=False)
        self.config = UNetConfig()  # 4 latent channels, no vector conditioning: an SD1 UNet to the Denoiser
        self.time_embed = nn.Sequential(nn.Linear(1, 1))  # unused; the handle reads the UNet's dtype from it
        self.calls: list[tuple[Tensor, Tensor, Tensor]] = []
        self.on_call: Callable[[int], None] | None = None

    def forward(self, x: Tensor, t: Tensor, context: Tensor, y: Tensor | None = None, control: Any = None) -> Tensor:
        self.calls.append((x.clone(), t.clone(), context.clone()))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        eps = torch.einsum("ij,bjhw->bihw", self.m, x[:, :4])
        return eps + (1 - t.float().view(-1, 1, 1, 1) / 1000) * context[:, 0, :, None, None]


@dataclass
class Reference:
    """sampler_trajectories: tensors, metadata and cases."""

    tensors: dict[str, Tensor]
    meta: dict

    @property
    def cases(self) -> dict[str, dict]:
        return self.meta["cases"]

    def positive(self) -> list:
        return [[self.tensors["in.cond_positive"], {}]]

    def negative(self) -> list:
        return [[self.tensors["in.cond_negative"], {}]]

    def latent(self, case: str) -> dict:
        spec = self.cases[case]
        if spec["latent"] == "init":
            return {"samples": self.tensors["in.init_latent_img2img"].clone()}
        return {"samples": torch.zeros(spec["batch"], 4, 8, 8)}


@pytest.fixture(scope="session")
def reference() -> Reference:
    if not (VECTORS / "sampler_trajectories.json").exists():
        pytest.skip("reference vectors not available")
    return Reference(load_file(VECTORS / "sampler_trajectories.safetensors"),
                     json.loads((VECTORS / "sampler_trajectories.json").read_text()))


@pytest.fixture
def analytic_model(reference: Reference) -> Callable[..., ModelHandle]:
    """analytic_model(m=None, latent_format=SD15) -> a MODEL handle over a fresh AnalyticUNet (reference M)."""
    def make(m: Tensor | None = None, latent_format=SD15) -> ModelHandle:
        unet = AnalyticUNet(reference.tensors["in.model_M"] if m is None else m)
        return model_handle(Denoiser(unet, DiscreteSchedule(), latent_format, "sd1"), DevicePolicy.cpu())
    return make


@dataclass
class Recorder:
    """What a runtime saw: progress (value, total, preview) and whether to report an interrupt."""

    progress: list[tuple[float, float, Any]] = field(default_factory=list)
    interrupted: bool = False


@pytest.fixture(scope="session")
def app_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sampling_app")
    Folders.create(base).ensure()
    return base


@pytest.fixture
def runtime(app_base: Path) -> Callable[..., tuple[NodeRuntime, Recorder]]:
    """runtime(preview_method="none") -> (rt, recorder) over the session's app folders, fp32 on the CPU."""
    def make(preview_method: str = "none") -> tuple[NodeRuntime, Recorder]:
        recorder = Recorder()
        services = NodeServices(Folders.create(app_base), devices=DevicePolicy.cpu(), preview_size=256)
        rt = NodeRuntime(services, "p1", "1", "1", lambda value, total, preview: recorder.progress.append(
            (value, total, preview)), lambda: recorder.interrupted, lambda text: None, preview_method)
        return rt, recorder
    return make


class TinyModels:
    """Tiny random checkpoints written (once per session) into the app's models/checkpoints."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.folder = base / "models" / "checkpoints"
        self._state_dicts: dict[str, dict[str, Tensor]] = {}

    def state_dict(self, family: str) -> dict[str, Tensor]:
        if family not in self._state_dicts:
            self._state_dicts[family] = make_checkpoint(family, tiny=True, seed=0)
        return self._state_dicts[family]

    def checkpoint(self, family: str, name: str | None = None) -> str:
        name = name or f"{family}.safetensors"
        path = self.folder / name
        if not path.exists():
            write_checkpoint(self.state_dict(family), path)
        return name

    def load(self, family: str, rt: NodeRuntime) -> tuple:
        return CheckpointLoaderSimple().execute(self.checkpoint(family), rt)


@pytest.fixture(scope="session")
def tiny_models(app_base: Path) -> TinyModels:
    return TinyModels(app_base)


@dataclass
class Run:
    outcome: RunOutcome
    messages: list[Message]

    def events(self, name: str) -> list[Any]:
        return [m.data for m in self.messages if m.event == name]


class App:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def run(self, prompt: dict, extra: dict | None = None) -> Run:
        result = validate_prompt(prompt, self.ctx.registry)
        assert result.ok and not result.node_errors, result.body()
        messages: list[Message] = []
        unsubscribe = self.ctx.hub.subscribe(messages.append)
        try:
            job = self.ctx.queue.put(prompt, {"client_id": "tests", **(extra or {})}, result.outputs,
                                     number=self.ctx.queue.next_number())
            self.ctx.queue.get(timeout=0)
            outcome = self.ctx.worker.run_job(job)
        finally:
            unsubscribe()
        return Run(outcome, messages)


@pytest.fixture(scope="session")
def app(app_base: Path) -> Iterator[App]:
    ctx = build_context(Config(base_dir=app_base, persistent_queue=False), start_worker=False)
    ctx.services.devices = DevicePolicy.cpu()
    yield App(ctx)
    ctx.close()
