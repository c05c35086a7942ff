"""Write keeper config dicts as TOML files (tests and the demo generate configs)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_scalar(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def to_toml(cfg: dict) -> str:
    """Top-level scalars, then [tables], then [[arrays of tables]] (nested dicts inline)."""
    lines: list[str] = []
    tables = {k: v for k, v in cfg.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in cfg.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    for k, v in cfg.items():
        if k not in tables and k not in arrays:
            lines.append(f"{k} = {_scalar(v)}")
    for k, v in tables.items():
        lines.append(f"\n[{k}]")
        lines += [f"{kk} = {_scalar(vv)}" for kk, vv in v.items()]
    for k, items in arrays.items():
        for item in items:
            lines.append(f"\n[[{k}]]")
            lines += [f"{kk} = {_scalar(vv)}" for kk, vv in item.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # always valid TOML
    return text


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(to_toml(cfg))
    return path
