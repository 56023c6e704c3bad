"""Fixtures for executor-level conformance tests: the testing pack loaded as a custom node pack,
a fresh Executor per test, and a Runner that validates and runs prompts like POST /prompt would."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from execution.cache import CachePolicy
from execution.executor import Executor, RunOutcome
from execution.validate import ValidationResult, validate_prompt
from model_management.folders import Folders
from nodes.graph_builder import GraphBuilder
from nodes.registry import NodeRegistry
from nodes.runtime import NodeServices

PACK_DIR = Path(__file__).resolve().parent.parent / "testing_pack"


def custom_nodes_root(base: Path) -> Path:
    """A custom_nodes root holding only the testing pack (a symlink, as users often install packs)."""
    root = base / "custom_nodes"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "testing_pack"
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    return root


@pytest.fixture
def pack_root(tmp_path: Path) -> Path:
    """A fresh custom_nodes root containing the testing pack."""
    return custom_nodes_root(tmp_path / "packs")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> NodeServices:
    folders = Folders.create(tmp_path_factory.mktemp("app"))
    folders.ensure()
    return NodeServices(folders)


@pytest.fixture(scope="session")
def registry(services: NodeServices, tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    """Built-ins plus the testing pack; loaded once, since importing a pack re-executes its modules."""
    reg = NodeRegistry(services)
    reg.load_builtins()
    reg.load_custom_nodes([custom_nodes_root(tmp_path_factory.mktemp("packs"))])
    assert not reg.import_failures, reg.import_failures
    return reg


@dataclass
class Result:
    """One executed prompt: what the executor emitted, plus the terminal message the worker sends."""

    prompt_id: str
    outcome: RunOutcome
    emitted: list[tuple[str, dict]]
    validation: ValidationResult

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def sequence(self) -> list[tuple[str, dict]]:
        return [*self.emitted, self.outcome.terminal]

    def events(self, *names: str) -> list[dict]:
        return [data for event, data in self.sequence if event in names]

    @property
    def ran(self) -> list[str]:
        """Node ids in `executing` order (a lazy node appears once per round)."""
        return [data["node"] for data in self.events("executing")]

    @property
    def cached(self) -> list[str]:
        return self.events("execution_cached")[0]["nodes"]

    def ui(self, node_id: str) -> dict:
        return self.outcome.outputs[node_id]

    def values(self, node_id: str, key: str = "values") -> list:
        return self.ui(node_id)[key]


class Runner:
    """Validates (writing conversions back) and executes prompts on one Executor, on one event loop."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.loop = asyncio.new_event_loop()
        self.count = 0

    def validate(self, prompt: dict, partial: list | None = None) -> tuple[dict, ValidationResult]:
        wire = json.loads(json.dumps(prompt))  # what the server would have decoded
        return wire, validate_prompt(wire, self.executor.registry, partial)

    def run(self, prompt: dict | GraphBuilder, extra: dict | None = None, partial: list | None = None,
            outputs: list[str] | None = None) -> Result:
        if isinstance(prompt, GraphBuilder):
            prompt = prompt.finalize()
        wire, checked = self.validate(prompt, partial)
        assert checked.ok, checked.body()
        self.count += 1
        prompt_id = f"prompt-{self.count}"
        emitted: list[tuple[str, dict]] = []
        outcome = self.loop.run_until_complete(self.executor.run(
            prompt_id, wire, dict(extra or {}), outputs if outputs is not None else checked.outputs,
            lambda event, data: emitted.append((event, data))))
        return Result(prompt_id, outcome, emitted, checked)

    def close(self) -> None:
        self.loop.close()


def make_executor(registry: NodeRegistry, policy: str = "classic") -> Executor:
    return Executor(registry, registry.services, CachePolicy.parse(policy))


@pytest.fixture
def executor(registry: NodeRegistry) -> Executor:
    return make_executor(registry)


@pytest.fixture
def runner(executor: Executor) -> Iterator[Runner]:
    r = Runner(executor)
    yield r
    r.close()


@pytest.fixture
def runner_for(registry: NodeRegistry) -> Iterator[Callable[[str], Runner]]:
    """runner_for("lru:4"): a Runner on a fresh Executor whose default policy is the one given."""
    made: list[Runner] = []

    def make(policy: str) -> Runner:
        made.append(Runner(make_executor(registry, policy)))
        return made[-1]
    yield make
    for r in made:
        r.close()


@pytest.fixture(params=["classic", "lru:100", "none"])
def cache_runner(request: pytest.FixtureRequest, runner_for: Callable[[str], Runner]) -> Runner:
    """The same test under each cache policy the upstream suite uses (classic, LRU, none)."""
    return runner_for(request.param)


@pytest.fixture
def g() -> GraphBuilder:
    """A prompt builder with dotted ids ("t.1", "t.2", ...), as upstream's tests build them."""
    return GraphBuilder(prefix="t.")
