"""Simulating a block's sends in order: `eth_simulateV1` runs the calls one after the other in one
simulated block on top of the head, each on the state the previous ones leave, and answers each
call's status, gas used, logs and revert data. That is the state a sequence of consecutive nonces
actually runs on when it lands in the next block.

Nodes without the method answer "method not found": `SimulationUnsupported`, and the execution
policy falls back to simulating each send alone with eth_estimateGas at the head (docs/DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keeper.rpc import RpcClient, RpcError, decode_revert_data
from keeper.types import Block

_UNSUPPORTED = ("method not found", "not supported", "does not exist", "not available", "unsupported", "unknown method")


class SimulationUnsupported(Exception):
    """The node has no eth_simulateV1."""


@dataclass(frozen=True)
class SimCall:
    """One call of a sequence: from the keeper, with an optional gas limit (None: the node's default)."""

    to: str
    data: bytes
    value: int = 0
    gas: int | None = None


@dataclass
class SimResult:
    ok: bool
    gas_used: int
    logs: list[dict[str, Any]] = field(default_factory=list)
    revert: str = ""  # decoded revert reason (or the node's error message) when not ok

    def receipt(self, tx_hash: str = "0x" + "00" * 32) -> dict[str, Any]:
        """The result in the shape of a transaction receipt, so an adapter's `outcome` can read the reward
        the call would realise (its own events) exactly as it reads a mined one."""
        return {
            "transactionHash": tx_hash,
            "status": "0x1" if self.ok else "0x0",
            "gasUsed": hex(self.gas_used),
            "effectiveGasPrice": "0x0",
            "logs": self.logs,
        }


def is_unsupported(exc: RpcError) -> bool:
    return exc.code == -32601 or any(k in exc.message.lower() for k in _UNSUPPORTED)


def _objs(sender: str, calls: list[SimCall]) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for c in calls:
        obj: dict[str, Any] = {"from": sender, "to": c.to, "input": "0x" + c.data.hex()}
        if c.value:
            obj["value"] = hex(c.value)
        if c.gas is not None:
            obj["gas"] = hex(c.gas)
        objs.append(obj)
    return objs


def _results(blocks: Any, n: int) -> list[SimResult]:
    calls = [r for b in blocks for r in b.get("calls", [])] if isinstance(blocks, list) else []
    if len(calls) != n:
        raise RpcError(None, f"eth_simulateV1: unexpected answer shape for {n} calls")
    out: list[SimResult] = []
    for r in calls:
        ok = int(r.get("status", "0x0"), 16) == 1
        gas_used = int(r.get("gasUsed", "0x0"), 16)
        revert = ""
        if not ok:
            err = r.get("error") or {}
            data = err.get("data") if isinstance(err, dict) else None
            revert = decode_revert_data(data) if isinstance(data, str) else ""
            if not revert:
                revert = decode_revert_data(r.get("returnData")) or (err.get("message", "") if isinstance(err, dict) else "")
            revert = revert or "reverted"
        out.append(SimResult(ok, gas_used, list(r.get("logs") or []), revert))
    return out


def _raise(answer: Any) -> Any:
    if isinstance(answer, RpcError) and is_unsupported(answer):
        raise SimulationUnsupported(answer.message) from answer
    if isinstance(answer, BaseException):
        raise answer
    return answer


async def simulate_sequence(
    rpc: RpcClient, sender: str, calls: list[SimCall], head: Block, *, spread: bool = False
) -> tuple[list[SimResult], list[SimResult] | None]:
    """Run `calls` in order from `sender` after `head`: all in one simulated block (how they are meant
    to land), and with `spread` also each in a block of its own (how they land when the sequence is
    split across blocks: storage first written in a new block, e.g. a vAMM's reserve snapshot, costs
    more gas than in the block that already wrote it). One batched request. Raises
    SimulationUnsupported when the node lacks eth_simulateV1, RpcError / TransportError otherwise."""
    if not calls:
        return [], [] if spread else None
    objs = _objs(sender, calls)
    opts = {"validation": False, "traceTransfers": False}
    req = [("eth_simulateV1", [{"blockStateCalls": [{"calls": objs}], **opts}, hex(head.number)])]
    if spread:
        req.append(("eth_simulateV1", [{"blockStateCalls": [{"calls": [o]} for o in objs], **opts}, hex(head.number)]))
    answers = await rpc.batch(req)
    together = _results(_raise(answers[0]), len(calls))
    apart = _results(_raise(answers[1]), len(calls)) if spread else None
    return together, apart
