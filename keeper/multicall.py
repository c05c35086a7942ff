"""Batched read-only calls: one Multicall3 `aggregate3` eth_call per chunk when an aggregator is
available, otherwise a JSON-RPC batch of eth_calls. Either way a list of calls costs one HTTP
round trip; with Multicall3 it is also one node call per chunk.

Calls whose answer depends on msg.sender (LLAMMA `tokens_to_liquidate`) must not go through
Multicall3 — use `sender=` on CallBatcher.run, which forces plain eth_calls from that address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from keeper.rpc import ExecutionReverted, RpcClient, RpcError, block_tag, call_object, decode_revert_data

MULTICALL3_ADDRESS = to_checksum_address("0xcA11bde05977b3631167028862bE2a173976CA11")
AGGREGATE3 = bytes.fromhex("82ad56cb")  # aggregate3((address,bool,bytes)[])


@dataclass(frozen=True)
class Call:
    to: str
    data: bytes
    decode: Callable[[bytes], Any] | None = None


class CallFailed(Exception):
    """A call inside a batch reverted (`reason`) or could not be decoded."""

    def __init__(self, call: Call, reason: str):
        super().__init__(reason)
        self.call = call
        self.reason = reason


class CallBatcher:
    def __init__(self, rpc: RpcClient, multicall: str | None, chunk: int = 100):
        self.rpc = rpc
        self.multicall = to_checksum_address(multicall) if multicall else None
        self.chunk = chunk

    @classmethod
    async def detect(cls, rpc: RpcClient, setting: str, chunk: int = 100) -> CallBatcher:
        """setting: 'auto' (canonical Multicall3 if it has code), 'off', or an aggregator address."""
        if setting == "off":
            return cls(rpc, None, chunk)
        address = MULTICALL3_ADDRESS if setting == "auto" else setting
        code = await rpc.get_code(address)
        if code in ("0x", "0x0", "", None):
            if setting != "auto":
                raise ValueError(f"no code at the configured multicall address {address}")
            return cls(rpc, None, chunk)
        return cls(rpc, address, chunk)

    async def run(self, calls: list[Call], block: int | str = "latest", *, sender: str | None = None) -> list[Any]:
        """Results in order; a failed call yields a CallFailed instance (never raises for one call)."""
        if not calls:
            return []
        if self.multicall is None or sender is not None:
            return await self._plain(calls, block, sender)
        chunks = [calls[i : i + self.chunk] for i in range(0, len(calls), self.chunk)]
        data = [AGGREGATE3 + abi_encode(["(address,bool,bytes)[]"], [[(c.to, True, c.data) for c in ch]]) for ch in chunks]
        answers = await self.rpc.batch([("eth_call", [call_object(self.multicall, d), block_tag(block)]) for d in data])
        out: list[Any] = []
        for ch, ans in zip(chunks, answers, strict=True):
            if isinstance(ans, RpcError):  # the aggregate itself failed (e.g. eth_call gas cap): fall back
                out.extend(await self._plain(ch, block, None))
                continue
            (results,) = abi_decode(["(bool,bytes)[]"], bytes.fromhex(ans[2:]))
            for c, (ok, ret) in zip(ch, results, strict=True):
                out.append(_finish(c, ok, ret, decode_revert_data(ret) if not ok else ""))
        return out

    async def _plain(self, calls: list[Call], block: int | str, sender: str | None) -> list[Any]:
        answers = await self.rpc.batch(
            [("eth_call", [call_object(c.to, c.data, sender=sender), block_tag(block)]) for c in calls]
        )
        out: list[Any] = []
        for c, ans in zip(calls, answers, strict=True):
            if isinstance(ans, ExecutionReverted):
                out.append(CallFailed(c, ans.reason or "reverted"))
            elif isinstance(ans, RpcError):
                out.append(CallFailed(c, ans.message))
            else:
                out.append(_finish(c, True, bytes.fromhex(ans[2:]), ""))
        return out


def _finish(call: Call, ok: bool, ret: bytes, reason: str) -> Any:
    if not ok:
        return CallFailed(call, reason or "reverted")
    if call.decode is None:
        return ret
    try:
        return call.decode(ret)
    except Exception as exc:  # noqa: BLE001 - undecodable answer (no code at address, wrong ABI)
        return CallFailed(call, f"undecodable answer ({len(ret)} bytes): {type(exc).__name__}")
