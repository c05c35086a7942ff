"""Identify contract variants by asking the contract (eth_call probes), never from bytecode layout.

Real deployments were built by compilers other than ours (Vyper 0.3.x puts selectors in a hash
table as data, solc 0.6 in PUSH4 operands, proxies delegate elsewhere), so "does the code contain
this selector" is not a question the keeper asks. A probe calls the entry point and reads what
comes back:

- `answers(...)`: a view that exists returns data of the expected size; a missing one reverts
  (Vyper and solc both revert with empty data on an unknown selector when there is no fallback).
- `revert_reason(...)`: a state-changing entry point called with arguments chosen so that, when it
  exists, it reverts early with a known reason string; a missing entry point reverts with none.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeper.rpc import ExecutionReverted, RpcClient

PROBE_SENDER = "0x000000000000000000000000000000000000dEaD"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool  # the call returned
    data: bytes = b""  # what it returned
    reason: str = ""  # decoded revert reason ('' for an empty revert)


async def probe(rpc: RpcClient, to: str, data: bytes, *, sender: str = PROBE_SENDER, block: int | str = "latest") -> ProbeResult:
    """eth_call `data` on `to`; a revert is a result, not an error. Transport errors propagate."""
    try:
        out = await rpc.eth_call(to, data, sender=sender, block=block)
    except ExecutionReverted as exc:
        return ProbeResult(False, b"", exc.reason)
    return ProbeResult(True, out)


async def answers(rpc: RpcClient, to: str, data: bytes, *, min_size: int = 32, block: int | str = "latest") -> bool:
    """Does `to` implement the view called by `data`? True when it returns at least `min_size` bytes."""
    r = await probe(rpc, to, data, block=block)
    return r.ok and len(r.data) >= min_size


async def revert_reason(
    rpc: RpcClient, to: str, data: bytes, *, sender: str = PROBE_SENDER, block: int | str = "latest"
) -> str | None:
    """The revert reason of a call expected to revert ('' = empty revert); None if it returned."""
    r = await probe(rpc, to, data, sender=sender, block=block)
    return None if r.ok else r.reason
