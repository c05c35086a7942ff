"""`keeper sandbox` (being written)."""

from __future__ import annotations

import argparse

NAME = "sandbox"
HELP = "(not available yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("keeper sandbox: not available yet")
    return 2
