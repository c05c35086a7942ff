"""Helpers to run the real keeper (in-process Daemon or the `keeper` CLI as a subprocess) against
the reference deployments on anvil."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from keeper.config import parse_config
from keeper.daemon import Daemon as KeeperDaemon
from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.devtools.configfile import write_config  # noqa: F401 - re-exported for tests
from keeper.devtools.logs import read_events
from keeper.types import Block

KEEPER_KEY = ANVIL_KEYS[9]  # TEST KEY ONLY (anvil default account 9)
KEEPER = ANVIL_ADDRESSES[9]
KEY_ENV = "KEEPER_TEST_PRIVATE_KEY"


class RecordingLog:
    """A structlog-like logger that records every event as a dict (for asserting log fields)."""

    def __init__(self, records: list | None = None, ctx: dict | None = None):
        self.records = records if records is not None else []
        self.ctx = ctx or {}

    def bind(self, **kw: Any) -> RecordingLog:
        return RecordingLog(self.records, {**self.ctx, **kw})

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append({"event": event, "level": level, **self.ctx, **kw})

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records if r["event"] == name]


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def keeper_config(url: str | list[str], state_path: Path | str, protocols: list[dict], **over: Any) -> dict:
    cfg = {
        "chain": {"rpc_urls": [url] if isinstance(url, str) else list(url), "chain_id": 31337, "poll_interval": 0.1},
        "key": {"private_key_env": KEY_ENV},
        "pricing": {"source": "fixed", "value": "3000"},
        "profit": {"min_profit": "0"},
        "state": {"path": str(state_path)},
        "http": {"listen": ""},
        "log": {"format": "json"},
        "protocols": protocols,
    }
    return deep_merge(cfg, over)


def perp_protocol(perp: Any, **kw: Any) -> dict:
    return {
        "kind": "perp_v1",
        "name": "perp",
        "clearing_house": perp.clearing_house.address,
        "start_block": perp.start_block,
        **kw,
    }


async def start_engine(cfg: dict, *, dry_run: bool = False, key: str = KEEPER_KEY) -> tuple[KeeperDaemon, RecordingLog]:
    os.environ[KEY_ENV] = key
    log = RecordingLog()
    engine = await KeeperDaemon.open(parse_config(cfg, environ={}), dry_run=dry_run, log=log)
    return engine, log


async def settle_pool(engine: KeeperDaemon, timeout: float = 30.0) -> None:
    """With automining on, anvil returns a transaction's hash before it has mined the block holding
    it; wait (bounded poll) until its pool is empty so the next head includes what was sent."""
    if not await engine.rpc.request("anvil_getAutomine"):
        return
    deadline = time.monotonic() + timeout
    while int((await engine.rpc.request("txpool_status"))["pending"], 16):
        assert time.monotonic() < deadline, "anvil did not mine its pooled transactions"
        await asyncio.sleep(0.01)


async def step(engine: KeeperDaemon) -> Block:
    """Process the current head once (what the daemon does on a new block), after anvil has mined
    what the previous step sent."""
    await settle_pool(engine)
    head = Block.from_rpc(await engine.rpc.get_block("latest"))
    await engine.process(head)
    return head


async def run_engine(cfg: dict, blocks: int, *, dry_run: bool = False) -> tuple[KeeperDaemon, RecordingLog]:
    """An engine over `blocks` steps; the last step's transactions are mined before it returns, so
    the test reads a settled chain. The engine is closed."""
    engine, log = await start_engine(cfg, dry_run=dry_run)
    try:
        for _ in range(blocks):
            await step(engine)
        await settle_pool(engine)
    finally:
        await engine.close()
    return engine, log


class Daemon:
    """`keeper run` as a subprocess with JSON logs captured to a file."""

    def __init__(self, config_path: Path, log_path: Path, env: dict | None = None, args: tuple[str, ...] = ()):
        self.config_path = config_path
        self.log_path = log_path
        self.env = {**os.environ, KEY_ENV: KEEPER_KEY, **(env or {})}
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "-c", str(self.config_path), "run", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    def events(self, name: str | None = None) -> list[dict]:
        return read_events(self.log_path, name)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        """Poll `predicate()` until true (bounded); fails with the daemon's log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            time.sleep(0.1)  # polling an external process with a bound, not synchronising on time
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not exit within {timeout}s of signal {sig}") from None
        self._log.close()
        return self.proc.returncode


async def open_adapter(url: str, protocol: dict, keeper: str = KEEPER):
    """A started adapter (no engine, no signer) and its head, for comparing local maths with views."""
    from keeper.adapters import adapter_class  # noqa: PLC0415
    from keeper.adapters.base import Context  # noqa: PLC0415
    from keeper.multicall import CallBatcher  # noqa: PLC0415
    from keeper.rpc import RpcClient  # noqa: PLC0415
    from keeper.store import Store  # noqa: PLC0415

    cfg = parse_config(keeper_config(url, ":memory:", [protocol]), environ={})
    rpc = await RpcClient([url]).start()
    calls = await CallBatcher.detect(rpc, "auto")
    ctx = Context(rpc=rpc, calls=calls, store=Store(":memory:"), keeper=keeper, config=cfg, log=RecordingLog())
    adapter = adapter_class(protocol["kind"])(cfg.protocols[0], ctx)
    head = Block.from_rpc(await rpc.get_block("latest"))
    await adapter.start(head)
    await adapter.sync(head)
    return adapter, rpc, head


class WebhookReceiver:
    """A local alert webhook (loopback): every POST recorded as {"raw": text, "json": payload}."""

    """A loopback HTTP server (in a thread) recording every JSON body POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"raw": body.decode(errors="replace"), "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kinds(self) -> list[str]:
        return [r["json"].get("kind") for r in list(self.received)]
