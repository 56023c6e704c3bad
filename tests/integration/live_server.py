"""A real `main.py` server process on a free loopback port, for end-to-end tests and API clients."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Starts `python main.py` with its folders under `base`; stop() always kills it."""

    def __init__(self, base: Path, *extra_args: str, port: int | None = None) -> None:
        self.base = Path(base)
        self.port = port or free_port()
        self.args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self.log_path = self.base / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "LiveServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), *self.args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=1) as response:
                    json.loads(response.read())
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
