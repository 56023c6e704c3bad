"""kill -9 in the middle of a run: pending prompts survive, the running one is recorded as failed."""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from tests.integration.live_server import LiveServer

SLOW_PACK = '''
import time

class SumiTestSleep:
    """Sleeps in small steps so a kill lands mid-run; `tag` makes every prompt distinct."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 0.3}), "tag": ("INT", {"default": 0})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, seconds, tag):
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(0.02)
        return {"ui": {"text": [str(tag)]}}

NODE_CLASS_MAPPINGS = {"SumiTestSleep": SumiTestSleep}
'''

pytestmark = pytest.mark.slow


def _get(server: LiveServer, path: str) -> dict:
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return json.loads(response.read())


def _post(server: LiveServer, path: str, body: dict) -> dict:
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else {}


def test_kill_9_keeps_pending_and_fails_running(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "sumi_sleep.py").write_text(SLOW_PACK)
    server = LiveServer(tmp_path)
    server.start()
    try:
        ids = []
        for i in range(20):
            prompt = {"1": {"class_type": "SumiTestSleep", "inputs": {"seconds": 0.3, "tag": i}}}
            ids.append(_post(server, "/prompt", {"prompt": prompt, "client_id": "crash-test"})["prompt_id"])
        deadline = time.time() + 20
        while not _get(server, "/queue")["queue_running"]:
            assert time.time() < deadline, "first prompt never started"
            time.sleep(0.02)
        running = _get(server, "/queue")["queue_running"][0][1]
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()

    restarted = LiveServer(tmp_path)
    restarted.start()
    try:
        deadline = time.time() + 60
        while _get(restarted, "/prompt")["exec_info"]["queue_remaining"]:
            assert time.time() < deadline, "the recovered queue did not drain"
            time.sleep(0.1)
        history = _get(restarted, "/history?max_items=100")
        statuses = {pid: history[pid]["status"]["status_str"] for pid in ids if pid in history}
        done_before = [pid for pid in ids[: ids.index(running)]]
        assert len(statuses) == 20, f"missing from history: {set(ids) - set(statuses)}"
        assert statuses[running] == "error"
        failure = history[running]["status"]["messages"][-1]
        assert failure[0] == "execution_error" and failure[1]["exception_type"] == "ServerRestart"
        others = [pid for pid in ids if pid != running]
        assert all(statuses[pid] == "success" for pid in others), statuses
        assert len(done_before) <= 1  # the kill landed while the first prompts were running
        for pid in others:
            assert history[pid]["outputs"]["1"]["text"] == [str(ids.index(pid))]
        # the failed one can be re-queued and then completes
        again = _post(restarted, f"/api/jobs/{running}/requeue", {})
        deadline = time.time() + 20
        while not _get(restarted, f"/history/{again['prompt_id']}"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert _get(restarted, f"/history/{again['prompt_id']}")[again["prompt_id"]]["status"]["status_str"] \
            == "success"
    finally:
        restarted.stop()
