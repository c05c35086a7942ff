"""Where the repository's non-package folders live (contracts/, abis/, tools/, build/)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = Path(os.environ.get("KEEPER_REPO_ROOT", PACKAGE_DIR.parent)).resolve()
CONTRACTS_DIR = Path(os.environ.get("KEEPER_CONTRACTS_DIR", REPO_ROOT / "contracts")).resolve()
BUILD_DIR = Path(os.environ.get("KEEPER_BUILD_DIR", REPO_ROOT / "build")).resolve()
TOOLS_DIR = REPO_ROOT / "tools"
