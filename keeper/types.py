"""Core values that cross layers: a block, a position's key, a local evaluation, a plan (an unsigned
call the keeper may send) and a realised outcome. No I/O; imported by adapters, the pipeline, the
execution policy and the transaction manager alike.

All amounts are integers; `value` amounts are in the adapter's value token with 18 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee: int | None
    gas_used: int
    gas_limit: int

    @classmethod
    def from_rpc(cls, b: dict[str, Any] | None) -> Block:
        """A block from eth_getBlockByNumber; a node that has no such block (None) is an RpcError."""
        if b is None:
            from keeper.rpc import RpcError  # noqa: PLC0415 - types stays free of I/O modules at import

            raise RpcError(None, "the node returned no block")
        base = b.get("baseFeePerGas")
        return cls(
            number=int(b["number"], 16),
            hash=b["hash"],
            parent_hash=b["parentHash"],
            timestamp=int(b["timestamp"], 16),
            base_fee=int(base, 16) if base is not None else None,
            gas_used=int(b["gasUsed"], 16),
            gas_limit=int(b["gasLimit"], 16),
        )


class PositionKey(NamedTuple):
    """Hashable and ordered like a tuple (hashing in C matters: it is used per position per block)."""

    protocol: str  # adapter instance name (config `name`)
    market: str  # checksum address of the market (perp Amm, LLAMMA Controller)
    account: str  # checksum address of the trader / borrower

    def __str__(self) -> str:
        return f"{self.protocol}:{self.market}:{self.account}"


class Status(StrEnum):
    HEALTHY = "healthy"
    PARTIAL = "partial"  # liquidatable, the protocol closes part of it
    FULL = "full"  # liquidatable, closed in full
    LOCKOUT = "lockout"  # liquidatable, but the market is in price-deviation lockout: nothing is sent
    OVER_SPREAD = "over-spread"  # under water on market prices, healthy on the oracle (10 % rule)
    BAD_DEBT = "bad-debt"  # only a backstop LP may liquidate it
    UNPROFITABLE = "unprofitable"  # liquidatable, reward − cost < min_profit
    SOFT = "soft-liquidation"  # LLAMMA: inside its bands, health ≥ 0
    UNAFFORDABLE = "unaffordable"  # LLAMMA: keeper cannot pay even the minimum fraction


@dataclass
class Evaluation:
    """One position as local maths sees it (a `keeper scan` row; the pipeline's prefilter)."""

    key: PositionKey
    status: str
    candidate: bool  # liquidatable and not blocked by a rule: worth confirming on-chain
    est_reward: int | None = None  # expected net value before gas, value token 1e18
    fields: dict[str, Any] = field(default_factory=dict)  # protocol-specific columns (ints/bools/str)
    reason: str = ""
    # The adapter's own typed data for a candidate (a dataclass), handed back to its `confirm`: what
    # the local evaluation decided, without round-tripping it through the display columns.
    payload: object | None = None


@dataclass
class Plan:
    """An unsigned call the keeper may send, with what it expects to earn."""

    key: PositionKey
    to: str
    data: bytes
    kind: str  # "partial" | "full" | "frac" | "approval"
    expected_reward: int  # value token 1e18, net of what the keeper pays in tokens, before gas
    value: int = 0  # wei
    fields: dict[str, Any] = field(default_factory=dict)
    # An approval (or other set-up) that must be mined first; the execution policy sends it and the plan waits.
    prerequisite: Plan | None = None
    typical_gas: int = 0  # used to price a plan that cannot be simulated yet (behind a prerequisite)
    # A set-up step's identity (e.g. "approve:<token>:<spender>"), journalled: while one transaction of a
    # step is in flight no other is sent (a second approval would only overwrite the first one's amount).
    step: str = ""


@dataclass
class Outcome:
    """What a mined transaction actually did."""

    key: PositionKey
    tx_hash: str
    status: str  # "landed" | "reverted" | "raced"
    kind: str
    reward: int = 0  # value token 1e18 actually received (net of tokens paid)
    gas_used: int = 0
    gas_cost_wei: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
