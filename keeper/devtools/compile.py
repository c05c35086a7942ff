"""Compile the reference Vyper contracts in contracts/ with a content-addressed build cache.

The cache key covers the vyper version, every .vy/.vyi file under contracts/ and the contract's
path, so editing any contract (or an imported module) recompiles; unchanged trees load instantly.
Writes are atomic (tmp + rename), so parallel test workers can share the cache.

`python -m keeper.devtools.compile` compiles everything (used by `make test` to warm the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from keeper.devtools.paths import BUILD_DIR, CONTRACTS_DIR

CACHE_DIR = BUILD_DIR / "contracts"


@dataclass(frozen=True)
class Compiled:
    name: str
    abi: list
    bytecode: str  # 0x-prefixed init code
    bytecode_runtime: str  # 0x-prefixed runtime code

    @property
    def runtime_size(self) -> int:
        return (len(self.bytecode_runtime) - 2) // 2


def _vyper_version() -> str:
    try:
        import vyper  # noqa: PLC0415

        return vyper.__version__
    except ImportError as exc:  # pragma: no cover - dev dependency missing
        raise RuntimeError("vyper is not installed: run `make setup` (pip install -e '.[dev]')") from exc


@lru_cache(maxsize=1)
def _tree_hash() -> str:
    h = hashlib.sha256(_vyper_version().encode())
    for p in sorted(CONTRACTS_DIR.rglob("*")):
        if p.suffix in (".vy", ".vyi") and p.is_file():
            h.update(str(p.relative_to(CONTRACTS_DIR)).encode())
            h.update(b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def resolve(name: str) -> Path:
    """`perp/Amm` or `perp/Amm.vy` or an absolute path → the source file."""
    p = Path(name)
    if not p.is_absolute():
        p = CONTRACTS_DIR / p
    if p.suffix != ".vy":
        p = p.with_suffix(".vy")
    if not p.is_file():
        raise FileNotFoundError(f"no contract source at {p}")
    return p


def compile_contract(name: str) -> Compiled:
    path = resolve(name)
    rel = str(path.relative_to(CONTRACTS_DIR))
    key = hashlib.sha256((_tree_hash() + rel).encode()).hexdigest()[:20]
    cache_file = CACHE_DIR / f"{rel.replace('/', '__')[:-3]}-{key}.json"
    if cache_file.is_file():
        data = json.loads(cache_file.read_text())
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "vyper", "-p", str(CONTRACTS_DIR), "-f", "abi,bytecode,bytecode_runtime", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"vyper failed on {rel}:\n{proc.stderr.strip()}")
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        abi = json.loads(lines[0])
        data = {"name": rel[:-3], "abi": abi, "bytecode": lines[1], "bytecode_runtime": lines[2]}
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, cache_file)
    return Compiled(name=data["name"], abi=data["abi"], bytecode=data["bytecode"], bytecode_runtime=data["bytecode_runtime"])


def all_contracts() -> list[str]:
    """Every deployable contract (files under contracts/ not starting with '_' and not interfaces)."""
    out = []
    for p in sorted(CONTRACTS_DIR.rglob("*.vy")):
        if p.name.startswith("_"):
            continue
        out.append(str(p.relative_to(CONTRACTS_DIR))[:-3])
    return out


def compile_all(workers: int = 2) -> dict[str, Compiled]:
    names = all_contracts()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(names, pool.map(compile_contract, names), strict=True))


def main() -> int:
    compiled = compile_all(workers=os.cpu_count() or 2)
    for name, c in compiled.items():
        print(f"{name:40s} runtime {c.runtime_size:6d} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
