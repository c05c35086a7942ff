"""The committed build of the LLAMMA liquidator contract: abis/llamma/Liquidator.json.

`keeper liquidator deploy` runs from an installed keeper, without a compiler, so the contract's ABI and
init code are committed next to the other ABIs (packaged with them). This module produces that file
from contracts/llamma/Liquidator.vy with the project's compiler; tests/test_liquidator_cmd.py checks
that the committed file equals a fresh build, so the two cannot drift.

    python -m keeper.devtools.liquidator_artifact           # (re)write abis/llamma/Liquidator.json
    python -m keeper.devtools.liquidator_artifact --check   # exit 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from keeper.devtools.compile import compile_contract, resolve
from keeper.devtools.paths import REPO_ROOT

SOURCE = "llamma/Liquidator"
ARTIFACT_PATH = REPO_ROOT / "abis" / "llamma" / "Liquidator.json"


def build_artifact() -> dict[str, Any]:
    """{"abi", "bytecode" (init code), "compiler", "source", "source_sha256"} from a fresh compile."""
    source = resolve(SOURCE)
    c = compile_contract(SOURCE)
    return {
        "contract": "Liquidator",
        "source": "contracts/llamma/Liquidator.vy",
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "compiler": f"vyper {c.compiler}",
        "abi": c.abi,
        "bytecode": c.bytecode,
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=1) + "\n"


def write_artifact(path: Path = ARTIFACT_PATH) -> Path:
    path.write_text(render(build_artifact()))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keeper.devtools.liquidator_artifact", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when the committed file differs")
    args = p.parse_args(argv)
    fresh = render(build_artifact())
    if args.check:
        current = ARTIFACT_PATH.read_text() if ARTIFACT_PATH.is_file() else ""
        if current != fresh:
            print(f"{ARTIFACT_PATH} is stale: run python -m keeper.devtools.liquidator_artifact", file=sys.stderr)
            return 1
        print(f"{ARTIFACT_PATH} is up to date")
        return 0
    ARTIFACT_PATH.write_text(fresh)
    print(f"wrote {ARTIFACT_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
