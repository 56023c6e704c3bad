"""`main.py run` and `main.py convert` on UI workflows, API prompts and PNGs with metadata."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "invert_image.json"


def run_main(*args: str, base: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args, "--base-directory", str(base)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_convert_prints_the_api_prompt(tmp_path):
    result = run_main("convert", str(WORKFLOW), base=tmp_path)
    assert result.returncode == 0, result.stderr
    prompt = json.loads(result.stdout)
    assert prompt["1"] == {"class_type": "EmptyImage", "_meta": {"title": "EmptyImage"},
                           "inputs": {"width": 256, "height": 256, "batch_size": 1, "color": 16744448}}
    assert prompt["2"]["inputs"] == {"image": ["1", 0]}
    assert prompt["3"]["inputs"] == {"filename_prefix": "invert", "images": ["2", 0]}


def test_run_ui_workflow_then_rerun_its_png(tmp_path):
    first = run_main("run", str(WORKFLOW), base=tmp_path)
    assert first.returncode == 0, first.stderr
    out = Path(first.stdout.strip().splitlines()[-1])
    assert out == tmp_path / "output" / "invert_00001_.png"
    image = Image.open(out)
    # inverse of 0xFF8000; 255*(1-128/255) is 126.99999 in float32 and truncates, exactly as in ComfyUI
    assert image.convert("RGB").getpixel((5, 5)) == (0, 126, 255)
    assert json.loads(image.info["workflow"])["nodes"][0]["type"] == "EmptyImage"
    assert json.loads(image.info["prompt"])["3"]["class_type"] == "SaveImage"
    assert "[1] EmptyImage" in first.stderr  # progress lines name the nodes

    second = run_main("run", str(out), base=tmp_path)  # a PNG with embedded metadata runs as-is
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip().splitlines()[-1]).name == "invert_00002_.png"


def test_run_reports_validation_errors_with_node_and_input(tmp_path):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    result = run_main("run", str(path), base=tmp_path)
    assert result.returncode == 2
    assert "node 1 (EmptyImage): Value 0 smaller than min of 1 - width" in result.stderr
