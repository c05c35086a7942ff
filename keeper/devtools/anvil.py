"""Start and stop local anvil nodes (from the npm package @foundry-rs/anvil) on free loopback ports.

Each AnvilProcess owns exactly one child process and only ever signals that pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from keeper.devtools.paths import TOOLS_DIR


class AnvilError(RuntimeError):
    pass


def find_anvil() -> str:
    """The anvil binary: $KEEPER_ANVIL_BIN, else tools/node_modules (npm), else PATH."""
    env = os.environ.get("KEEPER_ANVIL_BIN")
    if env:
        return env
    for cand in sorted(TOOLS_DIR.glob("node_modules/@foundry-rs/anvil-*/bin/anvil")):
        if os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilError("anvil not found: run `make setup` (npm install in tools/) or set KEEPER_ANVIL_BIN")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc(url: str, method: str, params: list | None = None, timeout: float = 10.0):
    """Minimal synchronous JSON-RPC call (for tooling; the keeper has its own client)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read())
    if "error" in out:
        raise AnvilError(f"{method}: {out['error']}")
    return out["result"]


@dataclass
class AnvilProcess:
    """One anvil node. Use as a context manager or call start()/stop().

    timestamp: genesis timestamp; keep scenario chains behind wall clock (docs/PROTOCOLS.md §L).
    """

    port: int | None = None
    fork_url: str | None = None
    fork_block_number: int | None = None
    chain_id: int | None = None
    block_time: float | None = None
    no_mining: bool = False
    timestamp: int | None = None
    accounts: int = 10
    balance_eth: int | None = None
    code_size_limit: int | None = None
    gas_limit: int | None = None
    base_fee: int | None = None
    load_state: str | None = None
    dump_state: str | None = None
    extra_args: list[str] = field(default_factory=list)
    log_path: str | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def args(self) -> list[str]:
        a = [find_anvil(), "--host", "127.0.0.1", "--port", str(self.port), "--accounts", str(self.accounts)]
        if self.fork_url:
            a += ["--fork-url", self.fork_url]
            if self.fork_block_number is not None:
                a += ["--fork-block-number", str(self.fork_block_number)]
        if self.chain_id is not None:
            a += ["--chain-id", str(self.chain_id)]
        if self.block_time is not None:
            a += ["--block-time", str(self.block_time)]
        if self.no_mining:
            a += ["--no-mining"]
        if self.timestamp is not None:
            a += ["--timestamp", str(self.timestamp)]
        if self.balance_eth is not None:
            a += ["--balance", str(self.balance_eth)]
        if self.code_size_limit is not None:
            a += ["--code-size-limit", str(self.code_size_limit)]
        if self.gas_limit is not None:
            a += ["--gas-limit", str(self.gas_limit)]
        if self.base_fee is not None:
            a += ["--base-fee", str(self.base_fee)]
        if self.load_state:
            a += ["--load-state", self.load_state]
        if self.dump_state:
            a += ["--dump-state", self.dump_state]
        return a + list(self.extra_args)

    def start(self, ready_timeout: float = 20.0) -> AnvilProcess:
        if self.proc is not None:
            raise AnvilError("already started")
        for _attempt in range(5):
            if self.port is None or _attempt > 0:
                self.port = free_port()
            if self.log_path is None:
                fd, self.log_path = tempfile.mkstemp(prefix=f"anvil-{self.port}-", suffix=".log")
                os.close(fd)
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            if self._wait_ready(ready_timeout):
                return self
            self._kill()
            tail = Path(self.log_path).read_text(errors="replace")[-2000:]
            if "Address already in use" not in tail and "in use" not in tail:
                raise AnvilError(f"anvil did not become ready on port {self.port}:\n{tail}")
        raise AnvilError("could not start anvil on a free port")

    def _wait_ready(self, timeout: float) -> bool:
        proc = self.proc
        if proc is None:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                rpc(self.url, "eth_chainId", timeout=1.0)
                return True
            except (urllib.error.URLError, ConnectionError, OSError, AnvilError):
                time.sleep(0.05)  # process start-up, not test synchronisation
        return False

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (anvil writes --dump-state on it), then SIGKILL after `timeout` s. Returns exit code."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        return proc.returncode

    def rpc(self, method: str, params: list | None = None):
        return rpc(self.url, method, params)

    def __enter__(self) -> AnvilProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
