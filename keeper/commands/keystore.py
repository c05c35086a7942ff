"""`keeper keystore` (being written)."""

from __future__ import annotations

import argparse

NAME = "keystore"
HELP = "(not available yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("keeper keystore: not available yet")
    return 2
