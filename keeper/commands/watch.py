"""`keeper watch` (being written)."""

from __future__ import annotations

import argparse

NAME = "watch"
HELP = "(not available yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("keeper watch: not available yet")
    return 2
