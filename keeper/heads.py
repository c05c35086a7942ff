"""New-head notifications: an `eth_subscribe("newHeads")` websocket when configured, reconnecting
with backoff; the daemon's head poll stays on as the fallback (and safety net) either way."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp


class HeadWatcher:
    def __init__(self, ws_url: str | None, log: Any, timeout: float = 10.0):
        self.ws_url = ws_url
        self.log = log
        self.timeout = timeout
        self.new_head = asyncio.Event()
        self.connected = False
        self.notifications = 0

    async def run(self, stop: asyncio.Event) -> None:
        if not self.ws_url:
            return
        backoff = 0.5
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)) as session:
            while not stop.is_set():
                try:
                    async with session.ws_connect(self.ws_url, heartbeat=30) as ws:
                        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
                        ack = await asyncio.wait_for(ws.receive_json(), timeout=self.timeout)
                        if "error" in ack:
                            raise RuntimeError(f"eth_subscribe refused: {ack['error']}")
                        self.connected, backoff = True, 0.5
                        self.log.info("head_subscription_started", url=self.ws_url)
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                break
                            data = json.loads(msg.data)
                            if data.get("method") == "eth_subscription":
                                self.notifications += 1
                                self.new_head.set()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any ws failure: fall back to polling, reconnect later
                    if self.connected or backoff == 0.5:
                        self.log.warning(
                            "head_subscription_lost", url=self.ws_url, error=f"{type(exc).__name__}: {exc}", fallback="polling"
                        )
                self.connected = False
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff * (1 + random.random() / 2))
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 30.0)

    async def wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until a new head is announced, `stop` is set, or `timeout` seconds pass."""
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.new_head.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self.new_head.clear()
