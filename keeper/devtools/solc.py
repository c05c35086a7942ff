"""Compile the Solidity contracts under contracts/ with solcjs (npm `solc`, pinned in
tools/package.json) through node, with a content-addressed build cache like `compile.py`'s.

The real Perp v1 contracts are Solidity 0.6.9; the test stubs that mirror their interfaces are
compiled by that same compiler so the keeper's variant probes meet solc's dispatcher, revert
encoding and (absent) fallback behaviour, not only Vyper's.

The cache key covers the solc version, every .sol file under contracts/ (imports included), the
source path and the contract name. Writes are atomic (tmp + rename), so parallel test workers
can share the cache.

    compiled = compile_solidity("perp/solc/ClearingHouseV23.sol", "ClearingHouse")
    python -m keeper.devtools.solc        # compile every contract of every .sol file
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from keeper.devtools.compile import Compiled
from keeper.devtools.paths import BUILD_DIR, CONTRACTS_DIR, TOOLS_DIR

CACHE_DIR = BUILD_DIR / "solc"
SOLC_PACKAGE = TOOLS_DIR / "node_modules" / "solc"
OPTIMIZER_RUNS = 200  # as the Perp v1 repository's build

# Reads the standard-JSON input on stdin, resolves imports under the contracts folder, prints the output.
_DRIVER = r"""
const fs = require('fs'), path = require('path');
const solc = require(process.argv[1]);
const root = process.argv[2];
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const read = (p) => {
    const full = path.resolve(root, p);
    if (!full.startsWith(root + path.sep)) return { error: 'outside the contracts folder: ' + p };
    try { return { contents: fs.readFileSync(full, 'utf8') }; } catch (e) { return { error: String(e) }; }
  };
  process.stdout.write(solc.compile(input, { import: read }));
});
"""


class SolcUnavailable(RuntimeError):
    pass


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise SolcUnavailable("node is not installed: solcjs needs Node.js (https://nodejs.org)")
    return node


@lru_cache(maxsize=1)
def solc_version() -> str:
    """The installed solcjs package version (e.g. '0.6.9')."""
    meta = SOLC_PACKAGE / "package.json"
    if not meta.is_file():
        raise SolcUnavailable(f"solcjs is not installed at {SOLC_PACKAGE}: run `make setup` (npm ci in tools/)")
    return str(json.loads(meta.read_text())["version"])


@lru_cache(maxsize=1)
def _tree_hash() -> str:
    h = hashlib.sha256(f"solc {solc_version()} runs {OPTIMIZER_RUNS}".encode())
    for p in sorted(CONTRACTS_DIR.rglob("*.sol")):
        if p.is_file():
            h.update(str(p.relative_to(CONTRACTS_DIR)).encode())
            h.update(b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def resolve(source: str) -> Path:
    """`perp/solc/ClearingHouseV23.sol` (relative to contracts/) or an absolute path → the file."""
    p = Path(source)
    if not p.is_absolute():
        p = CONTRACTS_DIR / p
    if p.suffix != ".sol":
        p = p.with_suffix(".sol")
    if not p.is_file():
        raise FileNotFoundError(f"no Solidity source at {p}")
    return p


def _run_solc(rel: str) -> dict:
    """Standard-JSON compile of one source file; returns its `contracts[rel]` map."""
    request = {
        "language": "Solidity",
        "sources": {rel: {"urls": [rel]}},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "outputSelection": {rel: {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    root = str(CONTRACTS_DIR)
    proc = subprocess.run(
        [_node(), "-e", _DRIVER, str(SOLC_PACKAGE), root],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"solcjs failed on {rel}:\n{proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError(
            f"solc {solc_version()} failed on {rel}:\n" + "\n".join(e.get("formattedMessage", e["message"]) for e in errors)
        )
    return dict(out["contracts"][rel])


def _cache_file(rel: str, contract: str) -> Path:
    key = hashlib.sha256(f"{_tree_hash()}\0{rel}\0{contract}".encode()).hexdigest()[:20]
    return CACHE_DIR / f"{rel.replace('/', '__')[:-4]}__{contract}-{key}.json"


def _compile_file(rel: str) -> dict[str, Compiled]:
    """Run solc on one file and cache every contract in it (one solc run per file)."""
    out: dict[str, Compiled] = {}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for name, c in _run_solc(rel).items():
        entry = {
            "name": f"{rel}:{name}",
            "abi": c["abi"],
            "bytecode": "0x" + c["evm"]["bytecode"]["object"],
            "bytecode_runtime": "0x" + c["evm"]["deployedBytecode"]["object"],
        }
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, _cache_file(rel, name))
        out[name] = Compiled(**entry)
    return out


def compile_solidity(source: str, contract: str) -> Compiled:
    """Compile `contract` of the .sol file `source` (cached); name of the result: `source:contract`."""
    path = resolve(source)
    rel = path.relative_to(CONTRACTS_DIR).as_posix()
    cache_file = _cache_file(rel, contract)
    if cache_file.is_file():
        return Compiled(**json.loads(cache_file.read_text()))
    compiled = _compile_file(rel)
    if contract not in compiled:
        raise KeyError(f"{rel} has no contract {contract!r} (it has {sorted(compiled)})")
    return compiled[contract]


def main() -> int:
    for p in sorted(CONTRACTS_DIR.rglob("*.sol")):
        for c in _compile_file(p.relative_to(CONTRACTS_DIR).as_posix()).values():
            print(f"{c.name:60s} runtime {c.runtime_size:6d} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
