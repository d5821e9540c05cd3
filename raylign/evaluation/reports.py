"""Where every `raylign eval ...` (and benchmark) report goes: one JSON file, folders made."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(payload, path: str | Path, indent: int = 2, announce: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=indent))
    if announce:
        print(f"\nwrote {path}")
