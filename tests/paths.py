"""Where the shared reference data lives: beside the repository (CI's layout), else /work/shared."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [Path(os.environ["SUMI_SHARED"])] if os.environ.get("SUMI_SHARED") else []
_CANDIDATES += [REPO.parent / "shared", Path("/work/shared")]
SHARED = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
