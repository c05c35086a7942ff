"""Operator alerts: a JSON POST to a webhook on unhealthy, low balance and failed sends.

Each alert kind is sent at most once per `min_interval` seconds (the state is logged every time);
delivery failures are logged, never raised: alerting must not stop the keeper.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from keeper.log import scrub


def json_details(details: dict[str, Any]) -> dict[str, Any]:
    """Alert details as JSON values (numbers, booleans, nested objects stay what they are; big ints and
    anything else become strings), with every string scrubbed of secrets."""

    def value(v: Any) -> Any:
        if isinstance(v, bool) or v is None or (isinstance(v, int) and abs(v) < 2**53) or isinstance(v, float):
            return v
        if isinstance(v, dict):
            return {str(k): value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [value(x) for x in v]
        return scrub(str(v))

    return {str(k): value(v) for k, v in details.items()}


class Alerter:
    def __init__(self, url: str | None, log: Any, *, source: str, min_interval: float = 600.0, timeout: float = 5.0):
        self.url = url
        self.log = log
        self.source = source
        self.min_interval = min_interval
        self.timeout = timeout
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def alert(self, kind: str, message: str, *, dedupe: str = "", **details: Any) -> None:
        """Fire and forget, rate-limited per (kind, dedupe): a different problem of the same kind
        (another failing component) is not suppressed by the previous alert."""
        self.log.warning("alert", kind=kind, message=message, **details)
        url = self.url
        if not url:
            return
        now = time.monotonic()
        key = f"{kind}:{dedupe}"
        if now - self._last.get(key, -1e9) < self.min_interval:
            return
        self._last[key] = now
        payload = {
            "source": self.source,
            "kind": kind,
            "message": scrub(message),
            "details": json_details(details),
            "time": int(time.time()),
        }
        task = asyncio.get_running_loop().create_task(self._post(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
                async with s.post(url, json=payload) as resp:
                    if resp.status >= 300:
                        self.log.warning("alert_delivery_failed", status=resp.status, kind=payload["kind"])
                    else:
                        self.sent += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("alert_delivery_failed", error=str(exc), kind=payload["kind"])

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)
