"""The port every protocol adapter implements, and the values that cross it.

The pipeline knows no protocol: per block it asks each adapter to `sync` (index events, refresh
market state with a bounded number of batched calls), `evaluate` (pure local maths over every
indexed position), `confirm` the candidates on-chain and turn them into `Plan`s (unsigned calls
with the exact expected reward), and later to read the realised `Outcome` from a receipt.
All amounts are integers; `value` amounts are in the adapter's value token with 18 decimals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from keeper.types import Block, Evaluation, Outcome, Plan, PositionKey, Status

__all__ = [
    "USAGE_CAP",
    "Adapter",
    "Block",
    "Context",
    "Evaluation",
    "Liquidation",
    "Outcome",
    "Plan",
    "PositionKey",
    "Status",
    "usage",
]

if TYPE_CHECKING:
    import structlog

    from keeper.config import KeeperConfig, ProtocolConfig
    from keeper.metrics import Metrics
    from keeper.multicall import CallBatcher
    from keeper.rpc import RpcClient
    from keeper.store import Store


@dataclass
class Context:
    """What an adapter may use: no signer (adapters never send)."""

    rpc: RpcClient
    calls: CallBatcher
    store: Store
    keeper: str  # keeper address (checksum)
    config: KeeperConfig
    log: structlog.stdlib.BoundLogger
    metrics: Metrics | None = None  # counters an adapter may bump (e.g. on-chain/local discrepancies)


USAGE_CAP = 10 * 10**18  # risk usage is capped at 1000 % (no margin / collateral left at all)


def usage(required: int, available: int) -> int:
    """Risk usage, 1e18 = 100 %: ⌊required·1e18/available⌋ capped at USAGE_CAP; available ≤ 0 → USAGE_CAP.
    For 0 < required ≤ 1e18 it is > 100 % exactly when available < required (the floor keeps that exact)."""
    if available <= 0:
        return USAGE_CAP
    return min(required * 10**18 // available, USAGE_CAP)


@dataclass(frozen=True)
class Liquidation:
    """One liquidation event (anyone's) as the protocol recorded it (`keeper backtest`)."""

    key: PositionKey
    liquidator: str  # checksum address the event names
    reward: int  # value token 1e18: what the liquidator received (net of tokens paid), as `outcome` reads it
    kind: str  # "partial" | "full"
    log_index: int


class Adapter(ABC):
    kind: ClassVar[str]
    config_model: ClassVar[type[ProtocolConfig]]
    value_symbol: str = "quote"
    # Gas a typical liquidation of this protocol uses; only for pricing before it can be simulated.
    typical_gas: ClassVar[int] = 500_000
    # Liquidations in flight per market at once (tx.max_in_flight_per_market overrides).
    max_in_flight_per_market: ClassVar[int] = 8
    # Does one liquidation leave the next one's state alone (LLAMMA: each loan has its own bands), or
    # move it (a vAMM: price, and so every other position's ratio and reward)? Without sequence
    # simulation a dependent market gets one liquidation per block.
    independent_liquidations: ClassVar[bool] = False

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

    def evaluation_delta(self, evals: list[Evaluation], prev: list[Evaluation]) -> list[int] | None:
        """Optional: the indexes where `evals` (this adapter's last `evaluate`) holds another object than
        `prev` (the list it returned the time before), when the adapter knows them without a scan
        (same positions in the same order); None otherwise. The status tracking then looks at only
        these instead of comparing every position."""
        return None

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

    def field_units(self) -> dict[str, str]:
        """Units of the Evaluation.fields beyond the scan columns, for exact machine output: field →
        'amount' (1e18 → token units) or 'ratio' (1e18 → fraction). Unlisted ints stay integers."""
        return {}

    def markets(self) -> list[str]:
        return []

    def min_profit_for(self, market: str) -> Decimal | None:
        """A per-market min_profit override (value-token units), or None to use the protocol's / global one."""
        return None

    async def explain_failure(self, plan: Plan, receipt: dict | None, since_block: int) -> tuple[str, str]:
        """Why a sent liquidation did not land: ("raced" | "reverted", reason)."""
        return "reverted", ""

    async def check_rows(self) -> list[tuple[str, bool, str]]:
        """Protocol-specific `keeper check` rows: (name, ok, detail)."""
        return []

    def closeness(self, e: Evaluation) -> int | None:
        """How far a position is from liquidation, 1e18 scale (< 0: liquidatable; smaller is closer), for
        sorting `keeper scan`; None when unknown."""
        return None

    def position_count(self) -> int:
        return 0

    # ---- the race (keeper/execution.py sequences, keeper/mempool.py) ----------------------------------
    def repeatable(self, plan: Plan) -> bool:
        """May the same call liquidate this position again right after `plan` in the same block (a
        partial close that leaves it liquidatable)? The sequence simulation decides whether it does."""
        return False

    def setup_plans(self, head: Block) -> list[Plan]:
        """Set-up transactions worth sending ahead of the money while idle (allowances), each with a
        `step`; the executor sends each one once, simulated and under the fee caps."""
        return []

    def position_for_call(self, to: str, data: bytes) -> PositionKey | None:
        """The position a liquidation call (anyone's: a rival's pending transaction) targets, or None when
        `to`/`data` is not a liquidation of one of this adapter's markets."""
        return None

    # ---- analytics (keeper backtest) ----------------------------------------------------------------
    def liquidation_log_filter(self) -> tuple[list[str], list[str]] | None:
        """(contract addresses, topic0s) of this protocol's liquidation events, anyone's; None when the
        adapter cannot attribute liquidations (the backtest then reports none for it)."""
        return None

    async def liquidations_in(self, logs: list[dict], block: int) -> list[Liquidation]:
        """The liquidations one transaction's receipt logs (mined in `block`) record, in log order: who, which
        position, the liquidator's reward in the value token (1e18) read from the event as `outcome` reads
        our own (prices it needs are read at `block`)."""
        return []

    # ---- analytics (keeper whatif) ------------------------------------------------------------------
    def shock_symbols(self) -> dict[str, str]:
        """market address → the asset symbol a `--shock SYMBOL=±P%` names (e.g. "ETH"); case-insensitive match."""
        return {m: self.market_label(m) for m in self.markets()}

    async def evaluate_shocked(self, head: Block, factors: dict[str, int]) -> list[Evaluation]:
        """What-if: every indexed position re-evaluated with the oracle and market prices of each market in
        `factors` multiplied by factors[market] (1e18 fixed point: 0.9e18 = −10 %; markets not listed are
        unchanged), markets moved as arbitrage would move them. Pure local maths on the state read at
        `head` (may read more at `head`, never writes). Each Evaluation carries the exact status and
        est_reward under the shock and fields["notional"] (value token, 1e18)."""
        raise NotImplementedError(f"{self.kind}: no what-if model")

    # ---- watchlist (keeper/monitors/watch.py) ------------------------------------------------------
    def risk_usage(self, e: Evaluation) -> int | None:
        """Risk usage of a position, 1e18 = 100 % = the liquidation threshold (above it: liquidatable), as
        `usage(required, available)`; None when `e` lacks what it needs (e.g. a prefiltered healthy row)."""
        return None

    async def evaluate_positions(self, keys: list[PositionKey], head: Block) -> list[Evaluation]:
        """Every column of just these positions, exact even where the per-block prefilter skipped them
        (the watchlist); may read on-chain what the per-block state lacks. Calls grow with `keys`."""
        want = set(keys)
        return [e for e in self.evaluate(head, full=True) if e.key in want]
