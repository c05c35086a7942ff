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
from types import ModuleType

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
