"""Reading the daemon's JSON log lines (demo and tests)."""

from __future__ import annotations

import json
from pathlib import Path


def read_events(path: Path, name: str | None = None) -> list[dict]:
    """Every JSON log record in `path` (optionally only events called `name`); other lines are skipped."""
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and (name is None or rec.get("event") == name):
            out.append(rec)
    return out
