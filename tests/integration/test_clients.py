"""Third-party ComfyUI API clients, unchanged, against a live Sumi server (model-free workflow).

Each client exercises a different part of the contract: pydantic-validated response shapes
(comfy-catapult), WS completion + /view (comfy-api-simplified), /object_info schema
(comfy-lint), the /history race and WS tracking (comfy-toolkit), strict text-only frames and
the cached-resubmission path through /queue + /history (comfyui-utils), pure history polling
(comfyui-workflow-client).
"""
from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.integration.live_server import LiveServer

pytestmark = pytest.mark.slow


def workflow(color: int, prefix: str) -> dict:
    """EmptyImage -> ImageInvert -> SaveImage; the saved pixel is the inverse of `color`."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": color},
              "_meta": {"title": "Empty Image"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix},
              "_meta": {"title": "Save Image"}},
    }


def inverted_rgb(color: int) -> tuple[int, int, int]:
    """Expected saved pixel: float32 invert, then 255*x truncated to uint8 (as ComfyUI saves)."""
    channels = np.array([(color >> shift) & 0xFF for shift in (16, 8, 0)], dtype=np.float32) / np.float32(255)
    return tuple(int(v) for v in np.clip((np.float32(1) - channels) * 255.0, 0, 255).astype(np.uint8))


def assert_png(data: bytes, color: int) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (16, 8)
    assert image.getpixel((3, 3)) == inverted_rgb(color)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("clients")) as live:
        yield live


def test_comfy_api_simplified(server):
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(server.url)
    assert "EmptyImage" in api.get_object_info()
    assert api.get_system_stats()["devices"]
    wf = ComfyWorkflowWrapper(workflow(0x102030, "simplified"))
    wf.set_node_param("Empty Image", "color", 0x405060)
    files = api.queue_and_wait_images(wf, "Save Image")
    assert len(files) == 1
    assert_png(next(iter(files.values())), 0x405060)
    again = api.queue_and_wait_images(wf, "Save Image")  # identical resubmission: served from cache
    assert list(again) == list(files)


def test_comfy_catapult(server, caplog):
    from comfy_catapult.api_client import ComfyAPIClient
    from comfy_catapult.catapult import ComfyCatapult
    from comfy_catapult.comfy_schema import APIHistoryEntry

    async def run() -> None:
        async with ComfyAPIClient(comfy_api_url=server.url) as client:
            await client.GetSystemStats()
            await client.GetObjectInfo()
            await client.GetQueue()
            async with ComfyCatapult(comfy_client=client, debug_path=None) as catapult:
                for job_id in ("catapult-1", "catapult-2"):  # the second is an identical resubmission
                    history = await catapult.Catapult(job_id=job_id, prepared_workflow=workflow(0x00FF00, "catapult"),
                                                      important=["3"])
                    entry = APIHistoryEntry.model_validate(history, strict=True)
                    images = entry.outputs["3"].root["images"]  # type: ignore[index]
                    assert images and images[0]["filename"].startswith("catapult_")
    asyncio.run(run())
    # catapult logs (instead of raising) when a response fails its strict schema
    assert not [r for r in caplog.records if "Error parsing" in r.getMessage()]


def test_comfy_lint(server, tmp_path, capsys):
    from comfy_lint.cli import main as lint

    good = tmp_path / "good.json"
    good.write_text(json.dumps(workflow(1, "lint")))
    assert lint(["--server", server.url, "--strict", "--json", str(good)]) == 0
    bad_wf = workflow(1, "lint")
    bad_wf["1"]["inputs"]["color"] = "not a number"
    del bad_wf["2"]["inputs"]["image"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_wf))
    assert lint(["--server", server.url, "--strict", "--json", str(bad)]) != 0
    capsys.readouterr()


def test_comfy_toolkit(server):
    from comfy_toolkit import ComfyClient

    client = ComfyClient(server.url)
    assert client.is_online()
    nodes = []
    result = client.submit_and_track(workflow(0xABCDEF, "toolkit"), on_node=nodes.append)
    assert result["filenames"] and result["filenames"][0].startswith("toolkit_")
    assert "3" in nodes  # it stops reading at execution_success, which comes after history is written
    assert_png(client.download(result["images"][0]), 0xABCDEF)
    again = client.submit_and_track(workflow(0xABCDEF, "toolkit"))
    assert again["filenames"] == result["filenames"]


def test_comfyui_utils_including_cached_resubmission(server):
    from comfyui_utils import comfy

    class Callbacks(comfy.Callbacks):
        def __init__(self) -> None:
            self.outputs = None
            self.cached = None

        async def queue_position(self, position):
            pass

        async def in_progress(self, node_id, progress, total):
            assert isinstance(node_id, int)

        async def completed(self, outputs, cached):
            self.outputs, self.cached = outputs, cached

    api = comfy.ComfyAPI(server.host)
    wf = workflow(0x777777, "utils")
    first = Callbacks()
    asyncio.run(api.submit(wf, first))
    assert first.outputs["images"][0]["filename"].startswith("utils_")
    second = Callbacks()
    asyncio.run(api.submit(wf, second))
    assert second.outputs["images"] == first.outputs["images"]


def test_comfyui_workflow_client_history_polling(server, tmp_path):
    from comfyuiclient import ComfyUIClient

    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow(0, "polling")))
    client = ComfyUIClient(server.host, str(path))
    client.connect()
    try:
        client.set_data(key="Empty Image", input_key="color", input_value=0x0000FF)
        results = client.generate(["Save Image"])
    finally:
        client.close()
    image = results["Save Image"].convert("RGB")
    assert image.getpixel((0, 0)) == inverted_rgb(0x0000FF)
