"""The port every protocol adapter implements, and the values that cross it.

The engine knows no protocol: per block it asks each adapter to `sync` (index events, refresh
market state with a bounded number of batched calls), `evaluate` (pure local maths over every
indexed position), `confirm` the candidates on-chain and turn them into `Plan`s (unsigned calls
with the exact expected reward), and later to read the realised `Outcome` from a receipt.
All amounts are integers; `value` amounts are in the adapter's value token with 18 decimals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    import structlog

    from keeper.config import KeeperConfig, ProtocolConfig
    from keeper.multicall import CallBatcher
    from keeper.rpc import RpcClient
    from keeper.store import Store


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
    def from_rpc(cls, b: dict) -> Block:
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
    """One position as local maths sees it (a `keeper scan` row; the engine's prefilter)."""

    key: PositionKey
    status: str
    candidate: bool  # liquidatable and not blocked by a rule: worth confirming on-chain
    est_reward: int | None = None  # expected net value before gas, value token 1e18
    fields: dict[str, Any] = field(default_factory=dict)  # protocol-specific columns (ints/bools/str)
    reason: str = ""


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
    # An approval (or other set-up) that must be mined first; the engine sends it and waits.
    prerequisite: Plan | None = None
    typical_gas: int = 0  # used to price a plan that cannot be simulated yet (behind a prerequisite)


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


@dataclass
class Context:
    """What an adapter may use: no signer (adapters never send)."""

    rpc: RpcClient
    calls: CallBatcher
    store: Store
    keeper: str  # keeper address (checksum)
    config: KeeperConfig
    log: structlog.stdlib.BoundLogger


class Adapter(ABC):
    kind: ClassVar[str]
    config_model: ClassVar[type[ProtocolConfig]]
    value_symbol: str = "quote"
    # Gas a typical liquidation of this protocol uses; only for pricing before it can be simulated.
    typical_gas: ClassVar[int] = 500_000
    # Liquidations in flight per market at once: 1 where each liquidation changes the market for
    # the next (a vAMM), more where they are independent (LLAMMA bands). tx.max_in_flight_per_market overrides.
    max_in_flight_per_market: ClassVar[int] = 1

    def __init__(self, config: ProtocolConfig, ctx: Context):
        self.config = config
        self.ctx = ctx
        self.log = ctx.log.bind(protocol=config.name)

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def start(self, head: Block) -> None:
        """Discover markets, read protocol parameters, load the persisted index."""

    @abstractmethod
    def addresses(self) -> dict[str, str]:
        """label → address of every contract this adapter uses (startup checks code at each)."""

    @abstractmethod
    async def sync(self, head: Block) -> None:
        """Index events up to `head` and refresh per-market state (calls grow with markets, not positions)."""

    @abstractmethod
    def evaluate(self, head: Block, *, full: bool = False) -> list[Evaluation]:
        """Local maths over every indexed position. `full=False` may skip expensive fields of
        clearly healthy positions (the per-block prefilter); `full=True` fills every column (scan)."""

    @abstractmethod
    async def confirm(self, candidates: list[Evaluation], head: Block) -> list[Plan]:
        """Re-check candidates on-chain (batched) and build the calls to send."""

    @abstractmethod
    def outcome(self, plan: Plan, receipt: dict) -> Outcome:
        """Realised result of a mined plan, from its receipt's logs."""

    async def prepare_scan(self, head: Block) -> None:  # noqa: B027 - optional hook
        """Fetch what `evaluate(full=True)` needs beyond the per-block state (scan only)."""

    async def rewind(self, block_number: int) -> None:  # noqa: B027 - optional hook
        """A reorg replaced blocks after `block_number` (never before the configured start block − 1):
        forget what was indexed from them."""

    def market_label(self, market: str) -> str:
        return market

    def scan_columns(self) -> list[tuple[str, str, str]]:
        """Protocol-specific `keeper scan` columns: (header, Evaluation.fields key, format) with
        format one of 'str', 'ratio' (1e18 → %), 'amount' (1e18 → decimal), 'int', 'bool'."""
        return []

    def markets(self) -> list[str]:
        return []

    def position_count(self) -> int:
        return 0
