"""Extra `keeper` sub-commands, one module each (the daemon's own run/scan/check live in keeper/cli.py).

A command module defines:
    NAME: str                      the sub-command (`keeper NAME ...`)
    HELP: str                      one line for `keeper --help`
    add_arguments(parser) -> None  its arguments (argparse; sub-sub-commands welcome)
    run(args) -> int               the exit code (0 ok, 1 runtime failure, 2 usage / configuration)
`args.config` is the global `-c` path. Heavy imports belong inside `run`, so `keeper --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keeper.config import KeeperConfig

COMMAND_MODULES = (
    "keeper.commands.keystore",
    "keeper.commands.sandbox",
    "keeper.commands.fork",
    "keeper.commands.watch",
    "keeper.commands.liquidator",
    "keeper.commands.whatif",
    "keeper.commands.backtest",
)


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def err(msg: str) -> None:
    """A user-facing error line on stderr, the one form every command uses."""
    print(f"keeper: {msg}", file=sys.stderr)


def load_config_or_report(path: str) -> KeeperConfig | None:
    """The config at `path`, or None after printing `invalid config: …` (the caller exits 2)."""
    import keeper.adapters  # noqa: F401, PLC0415 - registers the protocol kinds
    from keeper.config import ConfigError, load_config  # noqa: PLC0415

    try:
        return load_config(path)
    except ConfigError as exc:
        err(f"invalid config: {exc}")
        return None


def print_table(rows: list[list[str]]) -> None:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
