"""A JSON-RPC proxy on loopback that injects faults between the keeper and a node (tests only).

Every JSON-RPC method received is recorded in order (`methods`, and per method in GET /__stats), in
every mode: a test asserts which endpoint saw which call (e.g. raw transactions only on the private
endpoint). `private_tx=True` makes it stand in for a private-transaction endpoint: it answers
`eth_sendPrivateTransaction` [{"tx": raw}] by forwarding `eth_sendRawTransaction` [raw] upstream.

Modes (switch at runtime with POST /__mode {"mode": "..."}; GET /__stats for counters):
  ok        forward every request
  error     answer HTTP 503
  hang      never answer (until the client times out)
  garbage   answer 200 with invalid JSON
  rpcerror  answer a JSON-RPC "header not found" error for every call
  stale     forward, but freeze the chain head: latest block / block number stay as when set

Run standalone: python -m keeper.devtools.faultproxy --upstream URL [--port P] [--mode M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

MODES = ("ok", "error", "hang", "garbage", "rpcerror", "stale")


class FaultProxy:
    def __init__(self, upstream: str, mode: str = "ok", *, private_tx: bool = False):
        self.upstream = upstream
        self.mode = mode
        self.private_tx = private_tx
        self.requests = 0
        self.faults = 0
        self.methods: list[str] = []  # every JSON-RPC method received, in order (batch items included)
        self._frozen: dict[str, Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, payload: Any) -> Any:
        if self._session is None:
            raise RuntimeError("FaultProxy.start() has not been called")
        async with self._session.post(self.upstream, json=payload) as resp:
            return await resp.json(content_type=None)

    def count(self, method: str) -> int:
        """How many calls of `method` this proxy received."""
        return self.methods.count(method)

    def _record(self, payload: Any) -> None:
        items = payload if isinstance(payload, list) else [payload]
        self.methods.extend(str(i.get("method")) for i in items if isinstance(i, dict))

    def _translate(self, payload: Any) -> Any:
        """eth_sendPrivateTransaction [{"tx": raw, ...}] → eth_sendRawTransaction [raw] (private_tx only)."""
        if not self.private_tx:
            return payload
        items = payload if isinstance(payload, list) else [payload]
        out = []
        for i in items:
            if isinstance(i, dict) and i.get("method") == "eth_sendPrivateTransaction":
                params = i.get("params") or [{}]
                raw = params[0].get("tx") if isinstance(params[0], dict) else None
                i = {**i, "method": "eth_sendRawTransaction", "params": [raw]}
            out.append(i)
        return out if isinstance(payload, list) else out[0]

    async def _stale_answer(self, item: dict) -> dict | None:
        method, params = item.get("method"), item.get("params") or []
        if method == "eth_blockNumber" or (method == "eth_getBlockByNumber" and params and params[0] == "latest"):
            key = method
            if key not in self._frozen:
                self._frozen[key] = (await self._forward({**item, "id": 1})).get("result")
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": self._frozen[key]}
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        self._record(payload)
        mode = self.mode
        if mode != "ok" and mode != "stale":
            self.faults += 1
        if mode == "error":
            return web.Response(status=503, text="injected outage")
        if mode == "hang":
            await self._closing.wait()  # until the proxy stops
            return web.Response(status=503, text="proxy stopping")
        if mode == "garbage":
            return web.Response(status=200, text="<html>not json")
        if payload is None:
            return web.Response(status=400, text="invalid JSON")
        payload = self._translate(payload)
        if mode == "rpcerror":
            items = payload if isinstance(payload, list) else [payload]
            out = [{"jsonrpc": "2.0", "id": i.get("id"), "error": {"code": -32000, "message": "header not found"}} for i in items]
            return web.json_response(out if isinstance(payload, list) else out[0])
        if mode == "stale":
            items = payload if isinstance(payload, list) else [payload]
            answers = []
            for item in items:
                ans = await self._stale_answer(item)
                answers.append(ans if ans is not None else await self._forward(item))
            return web.json_response(answers if isinstance(payload, list) else answers[0])
        return web.json_response(await self._forward(payload))

    async def set_mode(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("mode") not in MODES:
            return web.json_response({"error": f"mode must be one of {MODES}"}, status=400)
        self.mode = data["mode"]
        self._frozen.clear()
        return web.json_response({"mode": self.mode})

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"mode": self.mode, "requests": self.requests, "faults": self.faults, "methods": dict(Counter(self.methods))}
        )

    async def start(self, port: int = 0) -> FaultProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application()
        app.router.add_post("/__mode", self.set_mode)
        app.router.add_get("/__stats", self.stats)
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the bound ephemeral port
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


async def _serve(upstream: str, port: int, mode: str) -> None:
    proxy = await FaultProxy(upstream, mode).start(port)
    print(proxy.url, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="ok", choices=MODES)
    a = ap.parse_args()
    asyncio.run(_serve(a.upstream, a.port, a.mode))


if __name__ == "__main__":
    main()
