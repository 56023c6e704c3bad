"""Time from queueing the default workflow to its image, on a freshly started server (issue #6).

    python bench/default_workflow.py [--runs 5] [-- SERVER FLAGS...]

Starts `main.py` on a free loopback port (the tests' LiveServer) with an empty base directory (so only the bundled model is there,
as on a fresh clone), converts workflows/default.json with the server's own /object_info, and times
POST /prompt → the prompt's entry in /history, polled every 10 ms:

* first: the first prompt after start (reads and builds the checkpoint, encodes the prompts, samples, decodes);
* later: each further prompt with a new seed (the model and the text encodings come from the cache).

Prints a table and one JSON line (prefix "RESULT ").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from execution.convert import ui_to_api  # noqa: E402
from tests.integration.live_server import LiveServer  # noqa: E402

WORKFLOW = REPO / "workflows" / "default.json"


def _request(url: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _queue_and_wait(url: str, prompt: dict) -> float:
    """Seconds from POST /prompt until /history has the prompt's outputs."""
    start = time.perf_counter()
    prompt_id = _request(url + "/prompt", {"prompt": prompt, "client_id": "bench"})["prompt_id"]
    while True:
        entry = _request(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry is not None:
            if entry["status"]["status_str"] != "success":
                raise RuntimeError(f"the default workflow failed: {entry['status']}")
            return time.perf_counter() - start
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="prompts after the first, each with a new seed")
    parser.add_argument("server_flags", nargs="*", help="passed to main.py (after --), e.g. --preview-method none")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sumi-bench-") as base:
        server = LiveServer(Path(base), "--dont-print-server", *args.server_flags)
        start = time.perf_counter()
        with server:
            ready = time.perf_counter() - start  # polled every 0.1 s
            url = server.url
            prompt = ui_to_api(json.loads(WORKFLOW.read_text()), _request(url + "/object_info").get)
            sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
            first = _queue_and_wait(url, prompt)
            later = []
            for seed in range(1, args.runs + 1):
                sampler["inputs"]["seed"] = seed
                later.append(_queue_and_wait(url, prompt))
    inputs = sampler["inputs"]
    result = {"server_ready_s": round(ready, 3), "first_s": round(first, 3),
              "later_median_s": round(statistics.median(later), 3), "later_max_s": round(max(later), 3),
              "steps": inputs["steps"], "sampler": inputs["sampler_name"], "scheduler": inputs["scheduler"],
              "cpu_count": os.cpu_count(), "server_flags": args.server_flags}
    print(f"default workflow ({inputs['steps']} steps {inputs['sampler_name']}/{inputs['scheduler']}, 64×64)")
    print(f"{'server start → ready':<34} {ready:8.2f} s")
    print(f"{'first prompt (loads the model)':<34} {first:8.2f} s")
    print(f"{'later prompts, median / max':<34} {result['later_median_s']:8.2f} / {result['later_max_s']:.2f} s")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
