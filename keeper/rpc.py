"""JSON-RPC over aiohttp with endpoint failover, a timeout on every request, retries with
exponential backoff and jitter (tenacity), batches, and revert-reason decoding.

Error model:
- TransportError: the endpoint did not answer properly (connection, timeout, HTTP 5xx/429, bad JSON,
  or a JSON-RPC error known to be transient). Retried on the next available endpoint.
- ExecutionReverted: the EVM reverted; `.reason` is the decoded revert string. Never retried.
- RpcError: any other JSON-RPC error answer (bad params, nonce too low, ...). Never retried here.
- RpcUnavailable: retries exhausted on every endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from eth_abi import decode as abi_decode
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
MAX_BATCH_BYTES = 1_000_000  # per HTTP request body

_TRANSIENT_MESSAGES = (
    "header not found",
    "rate limit",
    "too many requests",
    "timeout",
    "timed out",
    "try again",
    "temporarily unavailable",
    "service unavailable",
    "backend",
    "unknown block",
    "missing trie node",
)


class RpcError(Exception):
    def __init__(self, code: int | None, message: str, data: Any = None):
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code
        self.message = message
        self.data = data


class ExecutionReverted(RpcError):
    def __init__(self, reason: str, code: int | None = None, message: str = "", data: Any = None):
        super().__init__(code, message or f"execution reverted: {reason}", data)
        self.reason = reason


class TransportError(Exception):
    """`detail`: the message without the URL (safe to log). `unsent`: the connection could not even be
    opened (refused, no route, DNS), so no byte of the request left the process."""

    def __init__(self, url: str, message: str, *, unsent: bool = False):
        super().__init__(f"{url}: {message}")
        self.url = url
        self.detail = message
        self.unsent = unsent


class RpcUnavailable(Exception):
    pass


def decode_revert_data(data: str | bytes | None) -> str:
    """Revert data → human reason: Error(string), Panic(code), custom-error selector, or ''."""
    if data is None:
        return ""
    if isinstance(data, str):
        if not data.startswith("0x"):
            return data
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            return data
    else:
        raw = data
    if raw[:4] == ERROR_SELECTOR:
        try:
            return abi_decode(["string"], raw[4:])[0]
        except Exception:  # noqa: BLE001 - malformed payload: show it raw
            return "0x" + raw.hex()
    if raw[:4] == PANIC_SELECTOR and len(raw) >= 36:
        return f"panic 0x{int.from_bytes(raw[4:36], 'big'):x}"
    if not raw:
        return ""
    return "custom error 0x" + raw[:4].hex()


def _classify_error(err: dict, url: str) -> Exception:
    code = err.get("code")
    message = str(err.get("message", ""))
    data = err.get("data")
    if isinstance(data, dict):  # some nodes nest {"data": "0x..."}
        data = data.get("data", data)
    lower = message.lower()
    if code == 3 or "revert" in lower:
        reason = decode_revert_data(data) if isinstance(data, str) else ""
        if not reason and "execution reverted: " in message:
            reason = message.split("execution reverted: ", 1)[1]
        return ExecutionReverted(reason, code, message, data)
    if code in (-32005, 429) or any(m in lower for m in _TRANSIENT_MESSAGES):
        return TransportError(url, f"transient error {code}: {message}")
    return RpcError(code, message, data)


@dataclass
class Endpoint:
    url: str
    requests: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    last_error: str = ""
    last_ok: float = 0.0

    def available(self, now: float) -> bool:
        return now >= self.down_until

    def status(self) -> dict:
        now = time.monotonic()
        return {
            "url": redact_url(self.url),
            "up": self.available(now),
            "requests": self.requests,
            "errors": self.errors,
            "last_error": self.last_error,
        }


def redact_url(url: str) -> str:
    """Hide credentials and API keys in paths/query (…/v3/<key>) when showing an endpoint."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.split("@", 1)[1]
    return f"{scheme}://{host}" + ("/…" if path else "")


@dataclass
class RpcStats:
    calls: int = 0  # JSON-RPC method invocations (each batch item counts)
    http_requests: int = 0
    by_method: Counter = field(default_factory=Counter)


class RpcClient:
    def __init__(
        self,
        urls: list[str],
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        batch_size: int = 100,
        backoff_max: float = 5.0,
        cooldown_base: float = 0.5,
        cooldown_max: float = 60.0,
        on_error: Callable[[str, str], None] | None = None,
    ):
        if not urls:
            raise ValueError("at least one RPC URL is required")
        self.endpoints = [Endpoint(u) for u in urls]
        self.timeout = timeout
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.backoff_max = backoff_max
        self.cooldown_base = cooldown_base  # seconds out of rotation after a first failure; doubles per failure
        self.cooldown_max = cooldown_max
        self.on_error = on_error
        self.stats = RpcStats()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> RpcClient:
        self._open_session()
        return self

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=32),
                headers={"Content-Type": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RpcClient:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- endpoint choice ---------------------------------------------------------------------
    @property
    def current(self) -> Endpoint:
        return self._pick()

    def _pick(self) -> Endpoint:
        now = time.monotonic()
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self._preferred + i) % n]
            if ep.available(now):
                return ep
        return min(self.endpoints, key=lambda e: e.down_until)  # all down: the one back soonest

    def _failed(self, ep: Endpoint, message: str, kind: str) -> None:
        ep.errors += 1
        ep.consecutive_failures += 1
        ep.last_error = message[:300]
        ep.down_until = time.monotonic() + min(self.cooldown_max, self.cooldown_base * 2 ** (ep.consecutive_failures - 1))
        if self.on_error is not None:
            self.on_error(ep.url, kind)
        # Prefer the next endpoint from now on; the primary is retried after its cooldown.
        idx = self.endpoints.index(ep)
        if idx == self._preferred:
            self._preferred = (idx + 1) % len(self.endpoints)

    def _succeeded(self, ep: Endpoint) -> None:
        ep.consecutive_failures = 0
        ep.down_until = 0.0  # it answers: up again (a cooldown earned while it was down must not outlive its recovery)
        ep.last_ok = time.monotonic()
        # Fall back to a higher-priority endpoint once it is out of cooldown.
        idx = self.endpoints.index(ep)
        now = time.monotonic()
        for i in range(idx):
            if self.endpoints[i].available(now):
                self._preferred = i
                return
        self._preferred = idx

    def demote(self, url: str | None = None, reason: str = "stale head") -> None:
        """Take an endpoint (default: the current one) out of rotation for a cooldown."""
        ep = next((e for e in self.endpoints if e.url == url), None) if url else self._pick()
        if ep is not None:
            self._failed(ep, reason, "stale")

    def endpoint_status(self) -> list[dict]:
        return [e.status() for e in self.endpoints]

    # ---- transport -----------------------------------------------------------------------------
    async def _post(self, ep: Endpoint, payload: Any) -> Any:
        session = self._open_session()
        ep.requests += 1
        self.stats.http_requests += 1
        try:
            async with session.post(ep.url, data=json.dumps(payload)) as resp:
                if resp.status == 429 or resp.status >= 500:
                    raise TransportError(ep.url, f"HTTP {resp.status}")
                text = await resp.text()
                if resp.status != 200:
                    raise TransportError(ep.url, f"HTTP {resp.status}: {text[:200]}")
        except TransportError:
            raise
        except TimeoutError:
            raise TransportError(ep.url, f"timeout after {self.timeout}s") from None
        except aiohttp.ClientConnectorError as exc:  # connect() failed: the request was never written
            raise TransportError(ep.url, f"{type(exc).__name__}: {exc}", unsent=True) from None
        except aiohttp.ClientError as exc:
            raise TransportError(ep.url, f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise TransportError(ep.url, f"invalid JSON answer: {text[:120]!r}") from None

    async def _with_failover(self, send: Callable[[Endpoint], Any]) -> Any:
        last: Exception | None = None
        attempts = (self.max_retries + 1) * 1
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(max(attempts, len(self.endpoints))),
                wait=wait_random_exponential(multiplier=0.1, max=self.backoff_max),
                retry=retry_if_exception_type(TransportError),
                reraise=True,
            ):
                with attempt:
                    ep = self._pick()
                    try:
                        out = await send(ep)
                    except TransportError as exc:
                        last = exc
                        self._failed(ep, str(exc), "transport")
                        raise
                    self._succeeded(ep)
                    return out
        except TransportError:
            raise RpcUnavailable(f"all RPC endpoints failed; last error: {last}") from None
        raise RpcUnavailable(f"all RPC endpoints failed; last error: {last}")  # pragma: no cover

    async def request(self, method: str, params: list | None = None) -> Any:
        self.stats.calls += 1
        self.stats.by_method[method] += 1

        async def send(ep: Endpoint) -> Any:
            answer = await self._post(ep, {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
            if not isinstance(answer, dict):
                raise TransportError(ep.url, "malformed JSON-RPC answer")
            if "error" in answer and answer["error"] is not None:
                err = _classify_error(answer["error"], ep.url)
                if isinstance(err, TransportError):
                    raise err
                return err
            if "result" not in answer:
                raise TransportError(ep.url, "answer without result")
            return answer["result"]

        out = await self._with_failover(send)
        if isinstance(out, Exception):
            raise out
        return out

    async def request_on(self, url: str, method: str, params: list | None = None) -> Any:
        """One call on one configured endpoint, whatever its cooldown: no failover, no retry, and no
        change to the endpoint's rotation state (e.g. to ask every endpoint for a receipt).
        Raises TransportError when it does not answer properly, RpcError for an error answer."""
        ep = next((e for e in self.endpoints if e.url == url), None)
        if ep is None:
            raise ValueError(f"not a configured endpoint: {redact_url(url)}")
        self.stats.calls += 1
        self.stats.by_method[method] += 1
        answer = await self._post(ep, {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
        if not isinstance(answer, dict):
            raise TransportError(ep.url, "malformed JSON-RPC answer")
        if answer.get("error") is not None:
            raise _classify_error(answer["error"], ep.url)
        if "result" not in answer:
            raise TransportError(ep.url, "answer without result")
        return answer["result"]

    async def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        """Several calls in JSON-RPC batches of `batch_size`; each item is a result or an RpcError."""
        if not calls:
            return []
        for m, _ in calls:
            self.stats.calls += 1
            self.stats.by_method[m] += 1
        parts = await asyncio.gather(*(self._batch_chunk(c) for c in self._chunks(calls)))
        return [item for part in parts for item in part]

    def _chunks(self, calls: list[tuple[str, list]]) -> list[list[tuple[str, list]]]:
        """Split into HTTP requests of at most `batch_size` calls and about MAX_BATCH_BYTES of JSON
        (nodes refuse large bodies: anvil ≈ 2 MiB, geth 5 MiB)."""
        chunks: list[list[tuple[str, list]]] = []
        cur: list[tuple[str, list]] = []
        size = 0
        for call in calls:
            n = len(json.dumps(call[1])) + len(call[0]) + 48
            if cur and (len(cur) >= self.batch_size or size + n > MAX_BATCH_BYTES):
                chunks.append(cur)
                cur, size = [], 0
            cur.append(call)
            size += n
        if cur:
            chunks.append(cur)
        return chunks

    async def _batch_chunk(self, calls: list[tuple[str, list]]) -> list[Any]:
        async def send(ep: Endpoint) -> list[Any]:
            ids = [next(self._ids) for _ in calls]
            payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls, strict=True)]
            answer = await self._post(ep, payload)
            if isinstance(answer, dict) and "error" in answer:  # the whole batch was refused
                err = _classify_error(answer["error"], ep.url)
                if isinstance(err, TransportError):
                    raise err
                return [err] * len(calls)
            if not isinstance(answer, list):
                raise TransportError(ep.url, "batch answer is not a list")
            by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
            out: list[Any] = []
            for i in ids:
                item = by_id.get(i)
                if item is None:
                    raise TransportError(ep.url, "batch answer is missing items")
                if item.get("error") is not None:
                    err = _classify_error(item["error"], ep.url)
                    if isinstance(err, TransportError):
                        raise err
                    out.append(err)
                else:
                    out.append(item.get("result"))
            return out

        return await self._with_failover(send)

    # ---- typed helpers -----------------------------------------------------------------------
    async def chain_id(self) -> int:
        return int(await self.request("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.request("eth_blockNumber"), 16)

    async def get_block(self, tag: int | str = "latest") -> dict | None:
        return await self.request("eth_getBlockByNumber", [hex(tag) if isinstance(tag, int) else tag, False])

    async def get_code(self, address: str, block: str = "latest") -> str:
        return await self.request("eth_getCode", [address, block])

    async def balance(self, address: str, block: str = "latest") -> int:
        return int(await self.request("eth_getBalance", [address, block]), 16)

    async def nonce(self, address: str, block: str = "pending") -> int:
        return int(await self.request("eth_getTransactionCount", [address, block]), 16)

    async def eth_call(
        self,
        to: str,
        data: bytes,
        *,
        sender: str | None = None,
        block: int | str = "latest",
        value: int = 0,
        gas: int | None = None,
    ) -> bytes:
        out = await self.request("eth_call", [call_object(to, data, sender=sender, value=value, gas=gas), block_tag(block)])
        return bytes.fromhex(out[2:])

    async def estimate_gas(self, to: str, data: bytes, *, sender: str, value: int = 0, block: int | str = "latest") -> int:
        return int(
            await self.request("eth_estimateGas", [call_object(to, data, sender=sender, value=value), block_tag(block)]), 16
        )

    async def get_logs(self, address: str | list[str], topics: list, from_block: int, to_block: int) -> list[dict]:
        return await self.request(
            "eth_getLogs", [{"address": address, "topics": topics, "fromBlock": hex(from_block), "toBlock": hex(to_block)}]
        )

    async def send_raw(self, raw: bytes) -> str:
        return await self.request("eth_sendRawTransaction", ["0x" + raw.hex()])

    async def send_raw_on(self, url: str, raw: bytes, method: str = "eth_sendRawTransaction") -> Any:
        """A raw transaction to one endpoint, no failover or retry (`request_on`): `eth_sendRawTransaction`
        [raw], or `eth_sendPrivateTransaction` [{"tx": raw}] (Flashbots / bloXroute private-transaction style)."""
        raw_hex = "0x" + raw.hex()
        params: list[Any] = [{"tx": raw_hex}] if method == "eth_sendPrivateTransaction" else [raw_hex]
        return await self.request_on(url, method, params)

    async def receipt(self, tx_hash: str) -> dict | None:
        return await self.request("eth_getTransactionReceipt", [tx_hash])


def block_tag(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block


def call_object(to: str, data: bytes, *, sender: str | None = None, value: int = 0, gas: int | None = None) -> dict:
    obj: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
    if sender:
        obj["from"] = sender
    if value:
        obj["value"] = hex(value)
    if gas is not None:
        obj["gas"] = hex(gas)
    return obj
