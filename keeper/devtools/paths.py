"""Where the repository's non-package folders live (contracts/, abis/, tools/, build/), and what
`keeper demo` needs from them.

The dev tools (demo, tests, compilers) run from a source checkout: an installed wheel holds the
`keeper` package and its ABIs only. KEEPER_REPO_ROOT / KEEPER_CONTRACTS_DIR / KEEPER_BUILD_DIR
point them at a checkout from elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = Path(os.environ.get("KEEPER_REPO_ROOT", PACKAGE_DIR.parent)).resolve()
CONTRACTS_DIR = Path(os.environ.get("KEEPER_CONTRACTS_DIR", REPO_ROOT / "contracts")).resolve()
BUILD_DIR = Path(os.environ.get("KEEPER_BUILD_DIR", REPO_ROOT / "build")).resolve()
TOOLS_DIR = REPO_ROOT / "tools"

# the reference contracts the demo deploys (compiled on first use into BUILD_DIR)
DEMO_SOURCES = ("perp/ClearingHouse.vy", "perp/Amm.vy", "llamma/ControllerM2.vy", "llamma/AMM.vy", "common/ERC20.vy")

DEMO_NEEDS = (
    "keeper demo needs a source checkout of keeper with `make setup` done (anvil from tools/, vyper, contracts/): "
    "run `make demo` there"
)


def demo_missing() -> list[str]:
    """What `keeper demo` cannot find here (empty: it can run). Creates nothing."""
    from keeper.devtools.anvil import AnvilError, find_anvil  # noqa: PLC0415 - anvil.py imports this module

    missing = []
    try:
        find_anvil()
    except AnvilError:
        missing.append("anvil")
    if importlib.util.find_spec("vyper") is None:
        missing.append("vyper")
    if not all((CONTRACTS_DIR / s).is_file() for s in DEMO_SOURCES):
        missing.append(f"contract sources in {CONTRACTS_DIR}")
    else:
        probe = BUILD_DIR
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            missing.append(f"a writable build folder ({BUILD_DIR})")
    return missing


def demo_requirements_line() -> str | None:
    """One line saying what the demo needs, or None when everything is here."""
    missing = demo_missing()
    return f"{DEMO_NEEDS} (missing here: {', '.join(missing)})" if missing else None
