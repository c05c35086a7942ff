"""`keeper fork` (being written)."""

from __future__ import annotations

import argparse

NAME = "fork"
HELP = "(not available yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("keeper fork: not available yet")
    return 2
