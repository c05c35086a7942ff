"""The one execution policy, used alike by the daemon, `--dry-run` and `keeper scan`:

    simulate (eth_estimateGas from the keeper) → gas limit (estimate × multiplier + extra; above
    max_gas_limit → skip `gas_limit_exceeded`) → fees (configured caps, then the break-even cap) →
    decide (reward − cost ≥ min_profit, or the operator opted in) → submit.

The break-even cap: no transaction, first send or replacement, carries a max fee per gas above
(expected reward − min_profit) / simulated gas, converted to wei through the native-token price.
Every replacement needs a fresh successful simulation and passes the same decision at its bumped
fees (`review`); otherwise it is kept as it is, or cancelled when it would now revert (its nonce
must be freed).

Submitting goes through a `Sender`. The daemon has one (the transaction manager, which signs);
dry run and scan are built without any, so nothing below them can sign or send.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from keeper.gas import FeeCapExceeded, FeePolicy, FeeQuote
from keeper.pricing import NativePrice, PriceUnavailable
from keeper.risk.profit import WAD, decide, gas_cost_in_quote
from keeper.rpc import ExecutionReverted, RpcClient, RpcError, call_object
from keeper.txs import Finished, PendingTx, Review, SendAborted, SendRejected
from keeper.types import Block, Plan, PositionKey

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.alerts import Alerter
    from keeper.config import KeeperConfig
    from keeper.metrics import Metrics
    from keeper.store import Store

# Skip reasons (log field `reason`, metric label): one name per cause everywhere.
SIMULATION_REVERTED = "simulation_reverted"
SIMULATION_FAILED = "simulation_failed"
GAS_LIMIT_EXCEEDED = "gas_limit_exceeded"
FEE_CAP = "fee_cap"
NO_NATIVE_PRICE = "no_native_price"
UNPROFITABLE = "unprofitable"


def break_even_fee_per_gas(reward: int, min_profit: int, gas: int, native_price: int) -> int:
    """Highest fee per gas (wei) at which `gas` still leaves `min_profit`: ⌊(reward − min_profit)·1e18 /
    (gas · native_price)⌋, 0 when nothing is left. reward, min_profit: value token 1e18; native_price:
    value-token 1e18 units per native token."""
    budget = reward - min_profit
    if budget <= 0 or gas <= 0 or native_price <= 0:
        return 0
    return budget * WAD // (gas * native_price)


@dataclass(frozen=True)
class Decision:
    """What the policy would do with one plan in one block (a daemon send, a dry-run line, a scan row)."""

    plan: Plan  # the liquidation: what it earns
    send_plan: Plan  # what goes on chain now: the plan itself, or its prerequisite (an approval)
    send: bool
    reason: str  # "" when it is sent, else the skip reason
    min_profit: int  # value token 1e18: the threshold that applied
    gas: int | None = None  # simulated gas of send_plan
    total_gas: int | None = None  # gas, plus the typical gas of the plan waiting behind a prerequisite
    gas_limit: int | None = None
    fees: FeeQuote | None = None  # after the caps
    native_price: int | None = None
    cost: int | None = None  # value token 1e18 at the expected fee per gas
    profit: int | None = None
    break_even_fee: int | None = None  # wei per gas; None when the operator allows unprofitable sends
    detail: str = ""  # revert reason / error text

    @property
    def needs_approval(self) -> bool:
        return self.send_plan is not self.plan

    def numbers(self) -> dict[str, Any]:
        """Log fields: what the decision was made on."""
        out: dict[str, Any] = {"expected_reward": self.plan.expected_reward, "min_profit": self.min_profit}
        if self.total_gas is not None:
            out["gas"] = self.total_gas
        if self.gas_limit is not None:
            out["gas_limit"] = self.gas_limit
        if self.cost is not None:
            out.update(est_cost=self.cost, est_profit=self.profit)
        if self.fees is not None:
            out.update(fee_per_gas=self.fees.expected_fee_per_gas, max_fee=self.fees.max_fee_per_gas)
        if self.break_even_fee is not None:
            out["break_even_fee"] = self.break_even_fee
        if self.native_price is not None:
            out["native_price"] = self.native_price
        if self.detail:
            out["revert" if self.reason == SIMULATION_REVERTED else "error"] = self.detail
        return out


def decide_plan(
    plan: Plan,
    simulated: int | Exception,
    fees: FeeQuote,
    native_price: int,
    min_profit: int,
    allow_unprofitable: bool,
    policy: FeePolicy,
) -> Decision:
    """The policy for one plan, pure: `simulated` is the gas eth_estimateGas gave for what is sent now
    (the plan, or its prerequisite), or the error it raised."""
    send_plan = plan.prerequisite or plan
    base = Decision(plan=plan, send_plan=send_plan, send=False, reason="", min_profit=min_profit, native_price=native_price)
    if isinstance(simulated, Exception):
        if isinstance(simulated, ExecutionReverted):
            return dataclasses.replace(base, reason=SIMULATION_REVERTED, detail=simulated.reason)
        return dataclasses.replace(base, reason=SIMULATION_FAILED, detail=str(simulated))
    gas = simulated
    total_gas = gas + (plan.typical_gas if plan.prerequisite is not None else 0)
    gas_limit = policy.gas_limit(gas)
    base = dataclasses.replace(base, gas=gas, total_gas=total_gas, gas_limit=gas_limit)
    if not policy.fits(gas_limit):
        return dataclasses.replace(base, reason=GAS_LIMIT_EXCEEDED, detail=f"{gas_limit} > max_gas_limit {policy.max_gas_limit}")
    cost = gas_cost_in_quote(total_gas, fees.expected_fee_per_gas, native_price)
    verdict = decide(plan.expected_reward, cost, min_profit, allow_unprofitable)
    base = dataclasses.replace(base, fees=fees, cost=cost, profit=verdict.profit)
    if not verdict.send:
        return dataclasses.replace(base, reason=UNPROFITABLE)
    if allow_unprofitable and verdict.profit < min_profit:
        return dataclasses.replace(base, send=True)
    be = break_even_fee_per_gas(plan.expected_reward, min_profit, total_gas, native_price)
    capped = fees.capped(be)
    if capped.expected_fee_per_gas < fees.expected_fee_per_gas:  # cannot happen when profitable; kept as a guard
        return dataclasses.replace(base, reason=UNPROFITABLE, break_even_fee=be)
    return dataclasses.replace(base, send=True, fees=capped, break_even_fee=be)


def review_replacement(
    expected_reward: int,
    typical_extra_gas: int,
    simulated: int | Exception,
    bumped: FeeQuote,
    native_price: int | None,
    min_profit: int,
    allow_unprofitable: bool,
    policy: FeePolicy,
) -> Review:
    """Replace a stuck transaction only after a fresh successful simulation and only if its bumped max
    fee is within break-even; cancel it when it would now revert; otherwise keep it as it is."""
    if isinstance(simulated, ExecutionReverted):
        return Review("cancel", reason=f"would revert: {simulated.reason}")
    if isinstance(simulated, Exception):
        return Review("keep", reason=f"simulation failed: {simulated}")
    gas_limit = policy.gas_limit(simulated)
    if not policy.fits(gas_limit):
        return Review("keep", reason=f"{GAS_LIMIT_EXCEEDED}: {gas_limit} > {policy.max_gas_limit}")
    if not allow_unprofitable:
        if native_price is None:
            return Review("keep", reason=NO_NATIVE_PRICE)
        be = break_even_fee_per_gas(expected_reward, min_profit, simulated + typical_extra_gas, native_price)
        if bumped.max_fee_per_gas > be:
            return Review("keep", reason=f"replacement_unprofitable: max fee {bumped.max_fee_per_gas} > break-even {be}")
    return Review("replace", gas_limit=gas_limit)


class Sender(Protocol):
    """Submits signed transactions: the daemon's transaction manager. Read-only tools have none."""

    def busy(self, key: PositionKey) -> bool: ...
    def step_in_flight(self, step: str) -> bool: ...
    def in_flight_per_market(self) -> Counter[tuple[str, str]]: ...
    async def submit(self, plan: Plan, gas_limit: int, fees: FeeQuote, expected_cost: int, head: Block) -> PendingTx: ...


class Executor:
    """Applies the policy to an adapter's plans and, with a Sender, submits what passes; settles
    outcomes. Without a Sender (`scan`, `--dry-run`) it only decides and reports."""

    def __init__(
        self,
        cfg: KeeperConfig,
        rpc: RpcClient,
        keeper_address: str,
        adapters: list[Adapter],
        log: Any,
        metrics: Metrics,
        alerts: Alerter | None,
        store: Store | None,
        sender: Sender | None,
    ) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.keeper_address = keeper_address
        self.fees = FeePolicy(cfg.gas)
        self.adapters = {a.name: a for a in adapters}
        self.prices: dict[str, NativePrice] = {}
        for a in adapters:
            source = a.config.native_price or cfg.pricing
            if source is None:  # config validation requires one of them
                raise ValueError(f"protocol {a.name}: no native price source")
            self.prices[a.name] = NativePrice(source, rpc)
        self.log = log
        self.metrics = metrics
        self.alerts = alerts
        self.store = store
        self.sender = sender
        self.cooldown: dict[PositionKey, int] = {}  # position → first block it may be tried again
        self.last_skip: dict[PositionKey, str] = {}

    # ---- inputs ------------------------------------------------------------------------------------
    def min_profit(self, a: Adapter, market: str) -> int:
        """The threshold that applies to a market: the market's, else the protocol's, else the global one
        (value token 1e18)."""
        value = a.min_profit_for(market)
        if value is None:
            value = a.config.min_profit
        if value is None:
            value = self.cfg.profit.min_profit
        return int(value * WAD)

    async def price(self, a: Adapter) -> int | None:
        return (await self.price_or_error(a))[0]

    async def price_or_error(self, a: Adapter) -> tuple[int | None, str]:
        """The native token's price in the adapter's value token (1e18), or None and why not."""
        try:
            return await self.prices[a.name].price(), ""
        except (PriceUnavailable, RpcError) as exc:
            return None, str(exc)

    async def fee_quote(self, head: Block) -> FeeQuote:
        """Fees for the block after `head` under the configured caps. Raises FeeCapExceeded."""
        legacy_price = None
        if head.base_fee is None:
            legacy_price = int(await self.rpc.request("eth_gasPrice"), 16)
        return self.fees.quote(head.base_fee, head.gas_used, head.gas_limit, legacy_price)

    async def simulate(self, plans: list[Plan]) -> list[int | Exception]:
        """eth_estimateGas from the keeper for what each plan sends now (its prerequisite when it has
        one), in one batch: gas, or the RpcError / ExecutionReverted."""
        first = [p.prerequisite or p for p in plans]
        if not first:
            return []
        calls = [
            ("eth_estimateGas", [call_object(s.to, s.data, sender=self.keeper_address, value=s.value), "latest"]) for s in first
        ]
        out = await self.rpc.batch(calls)
        return [r if isinstance(r, Exception) else int(r, 16) for r in out]

    # ---- the decision --------------------------------------------------------------------------------
    async def decide(self, a: Adapter, plans: list[Plan], head: Block) -> list[Decision]:
        """The policy's decision for each plan in this block (simulation batched)."""
        if not plans:
            return []
        price, price_error = await self.price_or_error(a)
        fees: FeeQuote | None = None
        fee_error = ""
        try:
            fees = await self.fee_quote(head)
        except FeeCapExceeded as exc:
            fee_error = str(exc)
        if price is None or fees is None:
            reason, detail = (NO_NATIVE_PRICE, price_error) if price is None else (FEE_CAP, fee_error)
            return [
                Decision(p, p.prerequisite or p, False, reason, self.min_profit(a, p.key.market), detail=detail) for p in plans
            ]
        sims = await self.simulate(plans)
        allow = self.cfg.profit.allow_unprofitable
        return [
            decide_plan(p, s, fees, price, self.min_profit(a, p.key.market), allow, self.fees)
            for p, s in zip(plans, sims, strict=True)
        ]

    # ---- the daemon's per-block execution -------------------------------------------------------------
    def in_flight_limit(self, a: Adapter) -> int:
        return self.cfg.tx.max_in_flight_per_market or a.max_in_flight_per_market

    def blocked(self, key: PositionKey, head: Block) -> bool:
        """In flight, or cooling down after a failure."""
        if self.sender is not None and self.sender.busy(key):
            return True
        until = self.cooldown.get(key)
        if until is not None and head.number < until:
            return True
        self.cooldown.pop(key, None)
        return False

    def forget(self, key: PositionKey) -> None:
        self.last_skip.pop(key, None)

    def skip(self, a: Adapter, plan: Plan, reason: str, **numbers: Any) -> None:
        """Every skip is logged with its numbers: at info when the reason for this position changes,
        at debug while it repeats block after block."""
        self.metrics.skips.labels(a.name, reason).inc()
        repeated = self.last_skip.get(plan.key) == reason
        self.last_skip[plan.key] = reason
        (self.log.debug if repeated else self.log.info)(
            "liquidation_skipped",
            protocol=a.name,
            market=a.market_label(plan.key.market),
            account=plan.key.account,
            kind=plan.kind,
            reason=reason,
            **numbers,
        )

    async def execute(self, a: Adapter, plans: list[Plan], head: Block) -> None:
        """Decide on this block's plans and submit those that pass (dry run: log them)."""
        if not plans:
            return
        plans = sorted(plans, key=lambda p: p.expected_reward, reverse=True)
        in_flight: Counter[tuple[str, str]] = self.sender.in_flight_per_market() if self.sender else Counter()
        limit = self.in_flight_limit(a)
        sendable: list[Plan] = []
        for p in plans:
            if p.prerequisite is not None and self.sender is not None and self.sender.step_in_flight(p.prerequisite.step):
                self.skip(a, p, "prerequisite_pending", prerequisite=p.prerequisite.kind)
                continue
            if in_flight[(a.name, p.key.market)] >= limit:
                self.skip(a, p, "market_busy", in_flight=in_flight[(a.name, p.key.market)])
                continue
            in_flight[(a.name, p.key.market)] += 1
            sendable.append(p)
        for d in await self.decide(a, sendable, head):
            if not d.send:
                if d.reason in (SIMULATION_REVERTED, SIMULATION_FAILED):
                    self.cooldown[d.plan.key] = head.number + 1
                self.skip(a, d.plan, d.reason, **d.numbers())
                continue
            await self._submit(a, d, head)

    async def _submit(self, a: Adapter, d: Decision, head: Block) -> None:
        assert d.fees is not None and d.gas_limit is not None and d.cost is not None
        label = a.market_label(d.plan.key.market)
        event = "approval" if d.needs_approval else "liquidation"
        if self.sender is None:
            self.log.info(
                "dry_run_would_send",
                protocol=a.name,
                market=label,
                account=d.plan.key.account,
                kind=d.send_plan.kind,
                **d.numbers(),
            )
            return
        # A prerequisite carries the reward of the plan behind it, so a replacement of it is re-priced the same way.
        to_send = (
            d.send_plan if not d.needs_approval else dataclasses.replace(d.send_plan, expected_reward=d.plan.expected_reward)
        )
        try:
            pending = await self.sender.submit(to_send, d.gas_limit, d.fees, d.cost, head)
        except SendRejected as exc:
            aborted = isinstance(exc, SendAborted)  # never left the process (signing or journal failure)
            self.metrics.liquidations.labels(a.name, "aborted" if aborted else "rejected").inc()
            self.log.warning(
                f"{event}_send_{'aborted' if aborted else 'rejected'}",
                protocol=a.name,
                market=label,
                account=d.plan.key.account,
                reason=str(exc),
            )
            if self.alerts is not None:
                what = "could not sign or journal a transaction" if aborted else "the node rejected a transaction"
                self.alerts.alert("send_failed", f"{a.name}: {what}: {exc}", account=d.plan.key.account)
            self.cooldown[d.plan.key] = head.number + self.cfg.tx.failure_cooldown_blocks
            return
        self.last_skip.pop(d.plan.key, None)
        if not d.needs_approval:
            self.metrics.liquidations.labels(a.name, "sent").inc()
        self.log.info(
            f"{event}_sent",
            protocol=a.name,
            market=label,
            account=d.plan.key.account,
            kind=d.send_plan.kind,
            tx=pending.hashes[0],
            nonce=pending.nonce,
            **d.numbers(),
            **(d.send_plan.fields if d.needs_approval else {}),
        )

    # ---- replacements ----------------------------------------------------------------------------------
    async def review(self, p: PendingTx, bumped: FeeQuote) -> Review:
        """Is a stuck transaction worth replacing at `bumped` fees? A fresh simulation at the head and the
        same decision as a first send (break-even cap included)."""
        a = self.adapters.get(p.key.protocol)
        try:
            gas: int | Exception = await self.rpc.estimate_gas(
                p.plan.to, p.plan.data, sender=self.keeper_address, value=p.plan.value
            )
        except RpcError as exc:
            gas = exc
        price = await self.price(a) if a is not None else None
        min_profit = self.min_profit(a, p.key.market) if a is not None else int(self.cfg.profit.min_profit * WAD)
        extra = (a.typical_gas if a is not None else 0) if p.plan.kind == "approval" else 0
        verdict = review_replacement(
            p.plan.expected_reward, extra, gas, bumped, price, min_profit, self.cfg.profit.allow_unprofitable, self.fees
        )
        self.log.info(
            "tx_reviewed",
            account=p.key.account,
            market=p.key.market,
            tx=p.hashes[-1] if p.hashes else None,
            nonce=p.nonce,
            action=verdict.action,
            reason=verdict.reason or None,
            max_fee=bumped.max_fee_per_gas,
        )
        return verdict

    # ---- outcomes ---------------------------------------------------------------------------------------
    async def settle(self, f: Finished, head: Block) -> None:
        p = f.pending
        a = self.adapters.get(p.key.protocol)
        label = a.market_label(p.key.market) if a else p.key.market
        if f.receipt is not None:
            gas_cost = int(f.receipt["gasUsed"], 16) * int(f.receipt.get("effectiveGasPrice", "0x0"), 16)
            self.metrics.gas_spent.inc(gas_cost)
        if p.plan.kind == "approval" or f.status in ("cancelled", "dropped"):
            self.log.info("tx_settled", account=p.key.account, market=label, kind=p.plan.kind, status=f.status, tx=f.tx_hash)
            if f.status in ("cancelled", "dropped"):
                self.metrics.liquidations.labels(p.key.protocol, f.status).inc()
            return
        if a is None:
            self.log.warning("tx_settled_unknown_protocol", key=str(p.key), status=f.status, tx=f.tx_hash)
            return
        if f.status == "mined":
            assert f.receipt is not None
            out = a.outcome(p.plan, f.receipt)
            price = await self.price(a)
            cost_quote = gas_cost_in_quote(out.gas_used, out.gas_cost_wei // max(out.gas_used, 1), price) if price else None
            if self.store is not None:
                self.store.annotate_tx(p.tx_id, reward=out.reward, kind=out.kind)
            self.metrics.liquidations.labels(a.name, "landed").inc()
            self.metrics.reward.labels(a.name).inc(out.reward / WAD)
            self.log.info(
                "liquidation_landed",
                protocol=a.name,
                market=label,
                account=p.key.account,
                kind=out.kind,
                tx=f.tx_hash,
                reward=out.reward,
                expected_reward=p.plan.expected_reward,
                gas_used=out.gas_used,
                gas_cost_wei=out.gas_cost_wei,
                gas_cost_quote=cost_quote,
                profit=None if cost_quote is None else out.reward - cost_quote,
                **out.fields,
            )
            return
        status, reason = "reverted", ""
        try:
            status, reason = await a.explain_failure(p.plan, f.receipt, p.sent_block)
        except RpcError as exc:
            reason = f"could not explain: {exc}"
        if self.store is not None:
            self.store.annotate_tx(p.tx_id, reason=f"{status}: {reason}")
        self.metrics.liquidations.labels(a.name, status).inc()
        self.cooldown[p.key] = head.number + self.cfg.tx.failure_cooldown_blocks
        if status != "raced" and self.alerts is not None:
            self.alerts.alert("send_failed", f"{a.name}: liquidation reverted: {reason}", tx=f.tx_hash, account=p.key.account)
        self.log.warning(
            "liquidation_raced" if status == "raced" else "liquidation_reverted",
            protocol=a.name,
            market=label,
            account=p.key.account,
            tx=f.tx_hash,
            reason=reason,
            retry_after_block=self.cooldown[p.key],
        )
