"""Compile the reference Vyper contracts in contracts/ with a content-addressed build cache.

Two compilers: the project's own (the `vyper` package of the venv, 0.4.x) and Vyper 0.3.10, which
`make setup` installs into its own venv (build/vyper-0.3.10, see SECOND_COMPILERS). A contract
whose source starts with `# pragma version 0.3.10` (or `# @version 0.3.10`) is compiled by 0.3.10;
every other one by the project's compiler. Real deployments were built by 0.3.x, whose selector
dispatch differs from 0.4's, so tests need bytecode from both.

The cache key covers the compiler's version, every .vy/.vyi file under contracts/ and the
contract's path, so editing any contract (or an imported module) recompiles; unchanged trees load
instantly. Writes are atomic (tmp + rename), so parallel test workers can share the cache.

`python -m keeper.devtools.compile` compiles everything (used by `make test` to warm the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    compiler: str = ""  # version string of the compiler that built it

    @property
    def runtime_size(self) -> int:
        return (len(self.bytecode_runtime) - 2) // 2


# version → the `vyper` executable of its own venv (installed by `make setup`)
SECOND_COMPILERS = {"0.3.10": BUILD_DIR / "vyper-0.3.10" / "bin" / "vyper"}
_PRAGMA = re.compile(r"^#\s*(?:pragma\s+version|@version)\s+[~=^>]*\s*([0-9][0-9a-z.]*)", re.MULTILINE)


def source_compiler(source: str) -> str | None:
    """The second compiler a source asks for by its version pragma (None: the project's own)."""
    m = _PRAGMA.search(source)
    return m.group(1) if m and m.group(1) in SECOND_COMPILERS else None


def _compiler_command(version: str | None) -> list[str]:
    if version is None:
        return [sys.executable, "-m", "vyper"]
    exe = SECOND_COMPILERS[version]
    if not exe.is_file():
        raise RuntimeError(f"vyper {version} is not installed at {exe}: run `make setup`")
    return [str(exe)]


@lru_cache(maxsize=4)
def compiler_version(version: str | None) -> str:
    """The exact version string of a compiler (the project's own when `version` is None)."""
    if version is None:
        return _vyper_version()
    out = subprocess.run([*_compiler_command(version), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


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
    second = source_compiler(path.read_text())
    version = compiler_version(second)
    key = hashlib.sha256((_tree_hash() + rel + "\0" + version).encode()).hexdigest()[:20]
    cache_file = CACHE_DIR / f"{rel.replace('/', '__')[:-3]}-{key}.json"
    if cache_file.is_file():
        data = json.loads(cache_file.read_text())
    else:
        # 0.3.x takes no search path (-p); its sources here import nothing
        search = [] if second else ["-p", str(CONTRACTS_DIR)]
        proc = subprocess.run(
            [*_compiler_command(second), *search, "-f", "abi,bytecode,bytecode_runtime", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"vyper {version} failed on {rel}:\n{proc.stderr.strip()}")
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        abi = json.loads(lines[0])
        data = {"name": rel[:-3], "abi": abi, "bytecode": lines[1], "bytecode_runtime": lines[2]}
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, cache_file)
    return Compiled(
        name=data["name"], abi=data["abi"], bytecode=data["bytecode"], bytecode_runtime=data["bytecode_runtime"], compiler=version
    )


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
        print(f"{name:40s} runtime {c.runtime_size:6d} bytes  vyper {c.compiler}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
