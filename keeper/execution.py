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

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from keeper.bidding import bid_fees, outbid_replacement
from keeper.gas import FeeCapExceeded, FeePolicy, FeeQuote, next_base_fee
from keeper.l2 import NO_L1, L1Cost, L1FeeUnavailable, L2Fees, L2Model
from keeper.mempool import RivalWatch
from keeper.pricing import NativePrice, PriceUnavailable
from keeper.risk.profit import WAD, ceil_div, cost_in_quote, decide
from keeper.rpc import ExecutionReverted, RpcClient, RpcError, RpcUnavailable, TransportError, call_object
from keeper.simulate import SimCall, SimResult, SimulationUnsupported, simulate_sequence
from keeper.txs import CANCEL_GAS, Finished, PendingTx, Review, SendAborted, SendRejected
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
L1_FEE_UNAVAILABLE = "l1_fee_unavailable"


def break_even_fee_per_gas(reward: int, min_profit: int, gas: int, native_price: int, l1_fee_wei: int = 0) -> int:
    """Highest fee per gas (wei) at which `gas` still leaves `min_profit`: ⌊((reward − min_profit)·1e18 −
    l1_fee_wei · native_price) / (gas · native_price)⌋, 0 when nothing is left. reward, min_profit: value
    token 1e18; native_price: value-token 1e18 units per native token; l1_fee_wei: the fixed L1 data fee
    (OP stack), paid whatever the fee per gas, so it comes off the budget first (on Arbitrum the L1 part
    is gas: it is in `gas`). At the returned fee, cost_in_quote(gas, fee, native_price, l1_fee_wei) ≤
    reward − min_profit."""
    budget = reward - min_profit
    if budget <= 0 or gas <= 0 or native_price <= 0:
        return 0
    left = budget * WAD - l1_fee_wei * native_price
    if left <= 0:
        return 0
    return left // (gas * native_price)


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
    after: Plan | None = None  # a set-up step (approval) sent right before it at the same head; its gas priced in
    # The L1 part of the cost on an L2 (keeper/l2.py), priced in `cost`: None when the chain has none.
    l1_fee_wei: int | None = None  # wei: the fixed L1 data fee + the L1 gas at the expected fee per gas
    l1_gas: int = 0  # Arbitrum: L1 gas units inside gas_limit (and priced at the fee per gas)
    l1_cost: int | None = None  # value token 1e18: l1_fee_wei at the native price (rounded up)

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
        if self.l1_fee_wei is not None:
            out["l1_fee_wei"] = self.l1_fee_wei
            if self.l1_gas:
                out["l1_gas"] = self.l1_gas
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
    extra_gas: int = 0,
    rival_tip: int | None = None,
    l1: L1Cost | None = None,
    extra_l1: L1Cost = NO_L1,
) -> Decision:
    """The policy for one plan, pure: `simulated` is the gas eth_estimateGas gave for what is sent now
    (the plan, or its prerequisite), or the error it raised. `extra_gas`: gas another transaction spends
    on this plan's behalf (its approval, sent just before it in the same block): priced in, not part of
    this transaction's gas limit. The fees follow the tip policy (keeper/bidding.py) under the caps and
    break-even; `rival_tip`: a rival's pending liquidation of the same position to outbid.
    `l1`: on an L2, the L1 part of this transaction's cost (keeper/l2.py; None: the chain has none): its
    L1 gas is inside the gas limit, and all of it is priced in, break-even included (the fixed L1 fee
    comes off the budget before it is spread over the gas). `extra_l1`: the L1 part of the other
    transaction made on this plan's behalf (its approval, or the liquidation behind an approval sent now):
    priced in, not in this gas limit."""
    own = l1 if l1 is not None else NO_L1
    priced_l1 = own + extra_l1

    def l1_fields(fee_per_gas: int) -> dict[str, Any]:
        if l1 is None:
            return {}
        wei = priced_l1.wei_at(fee_per_gas)
        return {"l1_fee_wei": wei, "l1_gas": own.gas, "l1_cost": ceil_div(wei * native_price, WAD)}

    send_plan = plan.prerequisite or plan
    base = Decision(plan=plan, send_plan=send_plan, send=False, reason="", min_profit=min_profit, native_price=native_price)
    if isinstance(simulated, Exception):
        if isinstance(simulated, ExecutionReverted):
            return dataclasses.replace(base, reason=SIMULATION_REVERTED, detail=simulated.reason)
        return dataclasses.replace(base, reason=SIMULATION_FAILED, detail=str(simulated))
    gas = simulated
    total_gas = gas + extra_gas + (plan.typical_gas if plan.prerequisite is not None else 0)
    gas_limit = policy.gas_limit(gas + own.gas)  # Arbitrum: the L1 gas is charged as gas of this transaction
    base = dataclasses.replace(base, gas=gas, total_gas=total_gas, gas_limit=gas_limit, **l1_fields(fees.expected_fee_per_gas))
    if not policy.fits(gas_limit):
        return dataclasses.replace(base, reason=GAS_LIMIT_EXCEEDED, detail=f"{gas_limit} > max_gas_limit {policy.max_gas_limit}")
    priced_gas = total_gas + priced_l1.gas
    cost = cost_in_quote(priced_gas, fees.expected_fee_per_gas, native_price, priced_l1.fee_wei)
    verdict = decide(plan.expected_reward, cost, min_profit, allow_unprofitable)
    base = dataclasses.replace(base, fees=fees, cost=cost, profit=verdict.profit)
    if not verdict.send:
        return dataclasses.replace(base, reason=UNPROFITABLE)
    if allow_unprofitable and verdict.profit < min_profit:
        return dataclasses.replace(base, send=True)
    be = break_even_fee_per_gas(plan.expected_reward, min_profit, priced_gas, native_price, priced_l1.fee_wei)
    bid = bid_fees(
        fees,
        policy=policy.cfg.tip_policy,
        share=policy.cfg.tip_share,
        # the share policy splits what is left after the fixed L1 fee
        reward=plan.expected_reward - ceil_div(priced_l1.fee_wei * native_price, WAD),
        min_profit=min_profit,
        gas=priced_gas,
        native_price=native_price,
        break_even_fee=be,
        cap_fee=policy.cap_fee,
        cap_tip=policy.cap_tip,
        rival_tip=rival_tip,
    )
    if not bid.send:
        return dataclasses.replace(base, reason=bid.reason, break_even_fee=be)
    cost = cost_in_quote(priced_gas, bid.fees.expected_fee_per_gas, native_price, priced_l1.fee_wei)
    return dataclasses.replace(
        base,
        send=True,
        fees=bid.fees,
        cost=cost,
        profit=plan.expected_reward - cost,
        break_even_fee=be,
        **l1_fields(bid.fees.expected_fee_per_gas),
    )


def review_replacement(
    expected_reward: int,
    typical_extra_gas: int,
    simulated: int | Exception,
    bumped: FeeQuote,
    native_price: int | None,
    min_profit: int,
    allow_unprofitable: bool,
    policy: FeePolicy,
    l1: L1Cost | Exception = NO_L1,
) -> Review:
    """Replace a stuck transaction only after a fresh successful simulation and only if its bumped max
    fee is within break-even (the L1 part of its cost on an L2, `l1`, included; its L1 gas inside the gas
    limit); cancel it when it would now revert; otherwise keep it as it is."""
    if isinstance(simulated, ExecutionReverted):
        return Review("cancel", reason=f"would revert: {simulated.reason}")
    if isinstance(simulated, Exception):
        return Review("keep", reason=f"simulation failed: {simulated}")
    if isinstance(l1, Exception):
        return Review("keep", reason=f"{L1_FEE_UNAVAILABLE}: {l1}")
    gas_limit = policy.gas_limit(simulated + l1.gas)
    if not policy.fits(gas_limit):
        return Review("keep", reason=f"{GAS_LIMIT_EXCEEDED}: {gas_limit} > {policy.max_gas_limit}")
    if not allow_unprofitable:
        if native_price is None:
            return Review("keep", reason=NO_NATIVE_PRICE)
        be = break_even_fee_per_gas(expected_reward, min_profit, simulated + typical_extra_gas + l1.gas, native_price, l1.fee_wei)
        if bumped.max_fee_per_gas > be:
            return Review("keep", reason=f"replacement_unprofitable: max fee {bumped.max_fee_per_gas} > break-even {be}")
    return Review("replace", gas_limit=gas_limit)


SEQUENCE_ROUNDS = 4  # simulate → decide → verify at the gas limits; more rounds only when members were dropped


@dataclass(frozen=True)
class _Member:
    """One transaction of a block's sequence: a liquidation (or a repeat of one), or a set-up step."""

    plan: Plan
    step: str = ""  # set for a set-up step (an approval): its identity
    needs: str = ""  # the set-up step this liquidation needs
    repeat: int = 0  # 0: the plan itself; n: its n-th repeat in the same block


def _drop_orphans(members: list[_Member], decisions: list[Decision | None]) -> list[Decision | None]:
    """An approval is sent only with a sent plan behind it, and a plan that needs an approval only with it."""
    out = list(decisions)
    for j, m in enumerate(members):
        d = out[j]
        if not m.step or d is None or not d.send:
            continue
        if not any(
            mm.needs == m.step and (dd is not None and dd.send) for mm, dd in zip(members[j + 1 :], out[j + 1 :], strict=True)
        ):
            out[j] = dataclasses.replace(d, send=False, reason="not_needed")
    sent_steps = {m.step for m, d in zip(members, out, strict=True) if m.step and d is not None and d.send}
    for i, m in enumerate(members):
        d = out[i]
        if m.needs and m.needs not in sent_steps and d is not None and d.send:
            out[i] = dataclasses.replace(d, send=False, reason="prerequisite_failed")
    return out


@dataclass
class SendBatch:
    """One adapter's sends for a head, in order: (decision, repeat number)."""

    adapter: Adapter
    items: list[tuple[Decision, int]] = dataclasses.field(default_factory=list)
    sequence: bool = False  # decided as one simulated sequence (its order matters)

    @property
    def value(self) -> int:
        return sum(d.plan.expected_reward for d, _ in self.items if not d.needs_approval)


class Sender(Protocol):
    """Submits signed transactions: the daemon's transaction manager. Read-only tools have none."""

    def busy(self, key: PositionKey) -> bool: ...
    def step_in_flight(self, step: str) -> bool: ...
    def in_flight_per_market(self) -> Counter[tuple[str, str]]: ...
    def pending_txs(self) -> list[PendingTx]: ...
    async def submit(self, plan: Plan, gas_limit: int, fees: FeeQuote, expected_cost: int, head: Block) -> PendingTx: ...
    async def resend_now(
        self, p: PendingTx, head: Block, fees: FeeQuote, *, cancel: bool, gas_limit: int, reason: str
    ) -> bool: ...
    async def cancel_gas(self) -> int: ...

    cancel_gas_source: Callable[[], Awaitable[int]] | None


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
        l2: L2Model | None = None,
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
        self.sequence_support: bool | None = None  # eth_simulateV1 on the node: unknown until first tried
        mode = cfg.tx.mempool_watch
        self.rivals: RivalWatch | None = (
            RivalWatch(rpc, keeper_address, adapters, log, method=mode) if mode != "off" and sender is not None else None
        )
        self._head_sends = (-1, 0)  # (head, transactions sent at it)
        self.last_skip: dict[PositionKey, str] = {}
        # The L1 part of every transaction's cost on an L2 (chain.l2, detected at startup); None: no L1 fee.
        self.l2: L2Fees | None = None
        if l2 is not None and l2.kind != "none":
            self.l2 = L2Fees(
                rpc,
                l2,
                chain_id=cfg.chain.chain_id,
                sender=keeper_address,
                max_fee=self.fees.cap_fee,
                max_gas=cfg.gas.max_gas_limit,
            )
        if sender is not None and self.l2 is not None and l2 is not None and l2.kind == "arbitrum":
            sender.cancel_gas_source = self.cancel_gas_limit

    async def cancel_gas_limit(self) -> int:
        """Arbitrum: a cancellation (self-transfer, no data) needs 21,000 gas plus the L1 gas it is charged
        as L2 gas; read now (uncached), doubled against the L1 price moving before it is mined (unused gas
        is not paid for)."""
        assert self.l2 is not None
        (l1,) = await self.l2.costs([(self.keeper_address, b"", 0)], None)
        if isinstance(l1, Exception):
            raise l1
        return CANCEL_GAS + 2 * l1.gas

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

    async def l1_costs(self, txs: list[Plan], head: Block | None) -> list[L1Cost | Exception] | None:
        """The L1 part of each transaction's cost at `head` (one batched read, cached for the head; None:
        the latest block, uncached); None on a chain without an L1 fee."""
        if self.l2 is None:
            return None
        return list(await self.l2.costs([(p.to, p.data, p.value) for p in txs], head))

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
        """The policy's decision for each plan in this block, as the daemon would take it (`keeper scan`):
        the block's sequence where the node simulates sequences, else each plan alone."""
        if plans and self.sequences_possible():
            ordered = sorted(plans, key=lambda p: p.expected_reward, reverse=True)
            try:
                verified, dropped = await self.decide_sequence(a, ordered, head)
            except SimulationUnsupported:
                self.sequence_support = False
            else:
                first = {m.plan.key: d for m, d in verified + dropped if not m.step and not m.repeat}
                return [first[p.key] for p in plans if p.key in first]
        return await self.decide_single(a, plans, head)

    async def decide_single(self, a: Adapter, plans: list[Plan], head: Block) -> list[Decision]:
        """The policy's decision for each plan alone at the head (eth_estimateGas batched)."""
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
        firsts = [p.prerequisite or p for p in plans]
        behind = [p for p in plans if p.prerequisite is not None]
        sims, l1s = await asyncio.gather(self.simulate(plans), self.l1_costs(firsts + behind, head))
        allow = self.cfg.profit.allow_unprofitable
        out: list[Decision] = []
        behind_l1 = iter(l1s[len(firsts) :] if l1s is not None else [])
        for i, (p, s) in enumerate(zip(plans, sims, strict=True)):
            mp = self.min_profit(a, p.key.market)
            own: L1Cost | Exception | None = l1s[i] if l1s is not None else None
            # a plan behind an approval sent now: its own L1 part is paid later, priced in now
            extra: L1Cost | Exception = next(behind_l1) if l1s is not None and p.prerequisite is not None else NO_L1
            if isinstance(own, Exception) or isinstance(extra, Exception):
                err = own if isinstance(own, Exception) else extra
                out.append(Decision(p, p.prerequisite or p, False, L1_FEE_UNAVAILABLE, mp, native_price=price, detail=str(err)))
                continue
            out.append(
                decide_plan(p, s, fees, price, mp, allow, self.fees, rival_tip=self.rival_tip(p.key), l1=own, extra_l1=extra)
            )
        return out

    # ---- rivals in the mempool ------------------------------------------------------------------------------
    def rival_tip(self, key: PositionKey) -> int | None:
        """The effective tip of a rival's pending liquidation of `key` to outbid (gas.outbid), or None."""
        if self.rivals is None or not self.cfg.gas.outbid:
            return None
        r = self.rivals.rival(key)
        return r.tip if r is not None else None

    async def watch_rivals(self, head: Block) -> None:
        """Once per head, before the block's sends: read the mempool, and for each of our pending
        liquidations a rival outbids, re-simulate ours and outbid it at the same nonce while that stays
        within break-even and the caps; otherwise cancel ours (a 21,000-gas self-transfer) rather than
        let it revert behind the rival's."""
        if self.rivals is None or self.sender is None:
            return
        await self.rivals.refresh(head)
        if not self.cfg.gas.outbid:
            return
        nb = next_base_fee(head.base_fee, head.gas_used, head.gas_limit) if head.base_fee is not None else 0
        for p in self.sender.pending_txs():
            r = self.rivals.rival(p.key)
            if r is None or p.cancelling or p.plan.kind == "approval":
                continue
            ours = (
                p.fees.max_fee_per_gas - nb
                if p.fees.legacy
                else min(p.fees.max_priority_fee_per_gas, p.fees.max_fee_per_gas - nb)
            )
            if ours > r.tip:
                continue
            fields = {
                "account": p.key.account,
                "market": p.key.market,
                "tx": p.hashes[-1],
                "rival_tx": r.tx_hash,
                "rival_tip": r.tip,
            }
            fees = outbid_replacement(p.fees, r.tip, None, self.fees.cap_fee, self.fees.cap_tip, next_base_fee=nb)
            verdict = await self.review(p, fees) if fees is not None else Review("keep", reason="fee caps leave no room")
            if fees is not None and verdict.action == "replace":
                if await self.sender.resend_now(p, head, fees, cancel=False, gas_limit=verdict.gas_limit, reason="outbid"):
                    self.log.info("rival_outbid", **fields, tip=fees.max_priority_fee_per_gas, max_fee=fees.max_fee_per_gas)
                continue
            bumped = self.fees.bump(p.fees, self.cfg.tx.fee_bump)
            dropped = await self.sender.resend_now(
                p, head, bumped, cancel=True, gas_limit=await self.sender.cancel_gas(), reason="outbid by a rival"
            )
            self.log.info("rival_not_outbid", **fields, reason=verdict.reason, cancelled=dropped)

    # ---- the daemon's per-block execution -------------------------------------------------------------
    def in_flight_limit(self, a: Adapter) -> int:
        """Liquidations in flight per market. Without sequence simulation, markets where one liquidation
        changes the next (a vAMM) get one per block: a second one's gas could not be simulated on the
        state it runs on."""
        if self.cfg.tx.max_in_flight_per_market:
            return self.cfg.tx.max_in_flight_per_market
        if not a.independent_liquidations and not self.sequences_possible():
            return 1
        return a.max_in_flight_per_market

    def sequences_possible(self) -> bool:
        return self.cfg.tx.simulation != "single" and self.sequence_support is not False

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

    def sends_left(self, head: Block) -> int:
        """Transactions the key may still send at this head (tx.max_sends_per_block)."""
        if self._head_sends[0] != head.number:
            self._head_sends = (head.number, 0)
        return self.cfg.tx.max_sends_per_block - self._head_sends[1]

    def _count_send(self, head: Block) -> None:
        self.sends_left(head)
        self._head_sends = (head.number, self._head_sends[1] + 1)

    async def execute(self, a: Adapter, plans: list[Plan], head: Block) -> None:
        """Decide on one adapter's plans for this block and send what passes (see `plan_sends`, `send_all`)."""
        await self.send_all([await self.plan_sends(a, plans, head)], head)

    async def plan_sends(self, a: Adapter, plans: list[Plan], head: Block) -> SendBatch:
        """What to send at this head for one adapter, in order, every skip logged. With sequence simulation
        each send is decided on the state the sends before it leave (`decide_sequence`); otherwise each
        alone at the head (`_plan_single`). Adapters are planned concurrently; nothing is sent here."""
        batch = SendBatch(a)
        if not plans:
            return batch
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
        if not sendable:
            return batch
        if self.sequences_possible():
            try:
                verified, dropped = await self.decide_sequence(a, sendable, head, limit)
            except SimulationUnsupported as exc:
                self.sequence_support = False
                self.log.warning(
                    "sequence_simulation_unavailable",
                    error=str(exc),
                    fallback="each send simulated alone with eth_estimateGas; one per block on vAMM markets",
                )
                sendable = self._single_limits(a, sendable)
            else:
                for m, d in dropped:
                    if d.reason in (SIMULATION_REVERTED, SIMULATION_FAILED):
                        self.cooldown[m.plan.key] = head.number + 1
                    self.skip(a, m.plan, d.reason, **d.numbers())
                batch.items = [(d, m.repeat) for m, d in verified]
                batch.sequence = True
                return batch
        batch.items = [(d, 0) for d in await self._plan_single(a, sendable, head)]
        return batch

    async def send_all(self, batches: list[SendBatch], head: Block) -> None:
        """Send the planned batches at this head: the most valuable first (an adapter's batch keeps its
        order: each send was simulated after the ones before it), within tx.max_sends_per_block. A refused
        send stops the rest of its batch (their simulation assumed it)."""
        batches = sorted((b for b in batches if b.items), key=lambda b: b.value, reverse=True)
        for b in batches:
            left = self.sends_left(head)
            for d, _ in b.items[left:] if left < len(b.items) else []:
                if not d.needs_approval:
                    self.skip(b.adapter, d.plan, "block_send_limit", max_sends_per_block=self.cfg.tx.max_sends_per_block)
            for i, (d, repeat) in enumerate(b.items[: max(left, 0)]):
                if not await self._submit(b.adapter, d, head, sequence=i if b.sequence else None, repeat=repeat):
                    if len(b.items) > i + 1:
                        self.log.warning("sequence_stopped", protocol=b.adapter.name, not_sent=len(b.items) - i - 1)
                    break

    def _single_limits(self, a: Adapter, plans: list[Plan]) -> list[Plan]:
        """After falling back mid-block: the single-simulation market limit."""
        if a.independent_liquidations or self.cfg.tx.max_in_flight_per_market:
            return plans
        busy: Counter[tuple[str, str]] = self.sender.in_flight_per_market() if self.sender else Counter()
        out: list[Plan] = []
        for p in plans:
            if busy[(a.name, p.key.market)] >= 1:
                self.skip(a, p, "market_busy", in_flight=busy[(a.name, p.key.market)])
                continue
            busy[(a.name, p.key.market)] += 1
            out.append(p)
        return out

    async def _plan_single(self, a: Adapter, plans: list[Plan], head: Block) -> list[Decision]:
        """Fallback: every plan simulated alone at the head (eth_estimateGas). A plan behind a set-up
        step sends that step first and waits for it to be mined; later plans behind the same step wait."""
        chosen_steps: set[str] = set()
        sendable: list[Plan] = []
        for p in plans:
            if p.prerequisite is not None and p.prerequisite.step in chosen_steps:
                self.skip(a, p, "prerequisite_pending", prerequisite=p.prerequisite.kind)
                continue
            if p.prerequisite is not None:
                chosen_steps.add(p.prerequisite.step)
            sendable.append(p)
        out: list[Decision] = []
        for d in await self.decide_single(a, sendable, head):
            if not d.send:
                if d.reason in (SIMULATION_REVERTED, SIMULATION_FAILED):
                    self.cooldown[d.plan.key] = head.number + 1
                self.skip(a, d.plan, d.reason, **d.numbers())
                continue
            out.append(d)
        return out

    async def prepare(self, a: Adapter, head: Block) -> None:
        """While a protocol has nothing to liquidate: send the set-up steps it wants ahead of the money
        (allowances), each once, simulated first and under the fee caps. Dry run and scan send nothing."""
        if self.sender is None:
            return
        for p in a.setup_plans(head):
            if self.sender.step_in_flight(p.step) or self.blocked(p.key, head) or self.sends_left(head) <= 0:
                continue
            try:
                gas = await self.rpc.estimate_gas(p.to, p.data, sender=self.keeper_address, value=p.value)
                fees = await self.fee_quote(head)
                l1s = await self.l1_costs([p], head)
                l1 = l1s[0] if l1s is not None else NO_L1
                if isinstance(l1, Exception):
                    raise L1FeeUnavailable(str(l1))
            except (RpcError, FeeCapExceeded, L1FeeUnavailable) as exc:
                self.cooldown[p.key] = head.number + self.cfg.tx.failure_cooldown_blocks
                self.log.info("setup_skipped", protocol=a.name, kind=p.kind, step=p.step, error=str(exc))
                continue
            gas_limit = self.fees.gas_limit(gas + l1.gas)  # Arbitrum: its L1 gas is gas of this transaction
            if not self.fees.fits(gas_limit):
                continue
            try:
                pending = await self.sender.submit(p, gas_limit, fees, 0, head)
            except SendRejected as exc:
                self.cooldown[p.key] = head.number + self.cfg.tx.failure_cooldown_blocks
                self.log.warning("setup_send_rejected", protocol=a.name, kind=p.kind, step=p.step, reason=str(exc))
                continue
            self._count_send(head)
            self.log.info(
                "setup_sent",
                protocol=a.name,
                kind=p.kind,
                step=p.step,
                tx=pending.hashes[0],
                nonce=pending.nonce,
                gas=gas,
                **p.fields,
            )

    # ---- sequences --------------------------------------------------------------------------------------
    def _members(self, a: Adapter, plans: list[Plan]) -> list[_Member]:
        """The block's sends in order: each set-up step once, right before the first plan that needs it;
        each plan; after a repeatable one (a partial close) up to max_repeats_per_position repeats."""
        out: list[_Member] = []
        steps: set[str] = set()
        for p in plans:
            if p.prerequisite is not None and p.prerequisite.step not in steps:
                steps.add(p.prerequisite.step)
                out.append(_Member(p.prerequisite, step=p.prerequisite.step))
            base = dataclasses.replace(p, prerequisite=None)
            needs = p.prerequisite.step if p.prerequisite is not None else ""
            out.append(_Member(base, needs=needs))
            if a.repeatable(p):
                for n in range(1, self.cfg.tx.max_repeats_per_position + 1):
                    out.append(_Member(dataclasses.replace(base, fields={**base.fields, "repeat": n}), needs=needs, repeat=n))
        return out

    async def decide_sequence(
        self, a: Adapter, plans: list[Plan], head: Block, market_limit: int | None = None
    ) -> tuple[list[tuple[_Member, Decision]], list[tuple[_Member, Decision]]]:
        """The block's sends in order (`_members`), simulated together (eth_simulateV1), each decided on the
        state the ones before it leave, at the dearer of its gas in that block and alone in a block of its
        own; what fails or does not pay is dropped and the kept sequence simulated again with the exact gas
        limits it will carry, until it passes unchanged. Returns (verified sends in order, dropped
        liquidations with why). Raises SimulationUnsupported."""
        members = self._members(a, plans)
        # the L1 part of every member's cost (an L2) is read alongside the native price: no added round trip
        (price, price_error), l1s = await asyncio.gather(self.price_or_error(a), self.l1_costs([m.plan for m in members], head))
        l1_of = {id(m): c for m, c in zip(members, l1s, strict=True)} if l1s is not None else None
        fees: FeeQuote | None = None
        fee_error = ""
        try:
            fees = await self.fee_quote(head)
        except FeeCapExceeded as exc:
            fee_error = str(exc)
        if price is None or fees is None:
            reason, detail = (NO_NATIVE_PRICE, price_error) if price is None else (FEE_CAP, fee_error)
            return [], [
                (m, Decision(m.plan, m.plan, False, reason, self.min_profit(a, m.plan.key.market), detail=detail))
                for m in members
                if not m.step and not m.repeat
            ]
        limit = market_limit if market_limit is not None else self.in_flight_limit(a)
        in_flight: Counter[tuple[str, str]] = self.sender.in_flight_per_market() if self.sender else Counter()
        verified: list[tuple[_Member, Decision]] = []
        rest: list[tuple[_Member, Decision]] = []
        dropped: list[tuple[_Member, Decision]] = []
        limits: list[int | None] = [None] * len(members)
        # Gas of each member when it lands in a block of its own (the sequence split across blocks): the
        # gas limit and the price cover the dearer of the two.
        apart_gas: dict[int, int] = {}
        for rnd in range(SEQUENCE_ROUNDS):
            calls = [SimCall(m.plan.to, m.plan.data, m.plan.value, g) for m, g in zip(members, limits, strict=True)]
            try:
                results, apart = await simulate_sequence(self.rpc, self.keeper_address, calls, head, spread=rnd == 0)
            except (RpcError, TransportError, RpcUnavailable) as exc:
                failed = [
                    (
                        m,
                        Decision(
                            m.plan, m.plan, False, SIMULATION_FAILED, self.min_profit(a, m.plan.key.market), detail=str(exc)
                        ),
                    )
                    for m in members
                    if not m.step and not m.repeat
                ]
                return [], dropped + failed
            for m, r in zip(members, apart or [], strict=False):
                if r.ok:
                    apart_gas[id(m)] = r.gas_used
            decisions = self._decide_members(a, members, results, fees, price, apart_gas, l1_of)
            # Trim to the limits: per market in flight, per block for the key (approvals count as sends).
            budget = self.sends_left(head)
            per_market = Counter(in_flight)
            for i, (m, d) in enumerate(zip(members, decisions, strict=True)):
                if d is None or not d.send:
                    continue
                if m.step == "":
                    mk = (a.name, m.plan.key.market)
                    if per_market[mk] >= limit:
                        decisions[i] = dataclasses.replace(d, send=False, reason="market_busy")
                        continue
                    per_market[mk] += 1
                if budget <= 0:
                    decisions[i] = dataclasses.replace(d, send=False, reason="block_send_limit")
                    continue
                budget -= 1
            decisions = _drop_orphans(members, decisions)
            # Verified: ran with the gas limit it will carry and passed. A member that changed state (its
            # simulation succeeded) but is dropped invalidates the simulation of every later member.
            verified, rest, converged = [], [], True
            for m, d, r, g in zip(members, decisions, results, limits, strict=True):
                if d is not None and d.send:
                    if converged and g is not None:
                        verified.append((m, dataclasses.replace(d, gas_limit=g)))
                    else:
                        rest.append((m, d))
                    continue
                if d is not None and m.repeat == 0 and m.step == "":
                    dropped.append((m, d))
                if r.ok:
                    converged = False  # it changed the state the later members were simulated on
            if not rest:
                break
            members = [m for m, _ in verified] + [m for m, _ in rest]
            limits = [d.gas_limit for _, d in verified] + [d.gas_limit for _, d in rest]
        for m, d in rest:  # the gas limits did not settle within the rounds: waits for the next block
            if not m.step and not m.repeat:
                dropped.append((m, dataclasses.replace(d, send=False, reason="sequence_not_verified")))
        return verified, dropped

    def _decide_members(
        self,
        a: Adapter,
        members: list[_Member],
        results: list[SimResult],
        fees: FeeQuote,
        price: int,
        apart_gas: dict[int, int],
        l1_of: dict[int, L1Cost | Exception] | None = None,
    ) -> list[Decision | None]:
        """One decision per member; None for a repeat that reverted (nothing left to take). A liquidation
        is priced at the reward its simulated events show, and the first one after an approval that is
        sent carries the approval's gas (and L1 part); an approval is sent when a plan behind it is.
        `l1_of`: member id → the L1 part of its cost on an L2 (None: the chain has no L1 fee)."""
        allow = self.cfg.profit.allow_unprofitable
        out: list[Decision | None] = [None] * len(members)
        approval_gas: dict[str, int] = {}
        approval_l1: dict[str, L1Cost] = {}
        approval_at: dict[str, int] = {}
        failed_steps: set[str] = set()
        attributed: set[str] = set()  # approvals whose gas a sent plan already carries
        for i, (m, r) in enumerate(zip(members, results, strict=True)):
            mp = self.min_profit(a, m.plan.key.market)
            l1 = None if l1_of is None else l1_of.get(id(m), NO_L1)
            if m.step:
                approval_at[m.step] = i
                if r.ok and not isinstance(l1, Exception):
                    approval_gas[m.step] = max(r.gas_used, apart_gas.get(id(m), 0))
                    approval_l1[m.step] = l1 or NO_L1
                else:
                    failed_steps.add(m.step)
                continue
            if m.needs in failed_steps:
                out[i] = Decision(m.plan, m.plan, False, "prerequisite_failed", mp)
                continue
            if isinstance(l1, Exception):
                if not m.repeat:
                    out[i] = Decision(m.plan, m.plan, False, L1_FEE_UNAVAILABLE, mp, native_price=price, detail=str(l1))
                continue
            if not r.ok:
                if m.repeat:
                    continue
                out[i] = decide_plan(m.plan, ExecutionReverted(r.revert), fees, price, mp, allow, self.fees)
                continue
            outcome = a.outcome(m.plan, r.receipt())
            plan = dataclasses.replace(m.plan, expected_reward=outcome.reward, kind=outcome.kind)
            if m.repeat and outcome.reward <= 0:
                continue
            carries = bool(m.needs) and m.needs not in attributed
            extra = approval_gas.get(m.needs, 0) if carries else 0
            extra_l1 = approval_l1.get(m.needs, NO_L1) if carries else NO_L1
            gas = max(r.gas_used, apart_gas.get(id(m), 0))
            rival = self.rival_tip(m.plan.key) if not m.repeat else None
            d = decide_plan(
                plan, gas, fees, price, mp, allow, self.fees, extra_gas=extra, rival_tip=rival, l1=l1, extra_l1=extra_l1
            )
            out[i] = d
            if d.send and extra:
                attributed.add(m.needs)
                j = approval_at[m.needs]
                ap = members[j].plan
                out[i] = d = dataclasses.replace(d, after=ap)
                gas = approval_gas[m.needs]
                ap_l1 = approval_l1.get(m.needs, NO_L1)
                fee = d.fees.expected_fee_per_gas if d.fees else 0
                out[j] = Decision(
                    plan=plan,
                    send_plan=ap,
                    send=True,
                    reason="",
                    min_profit=mp,
                    gas=gas,
                    total_gas=gas,
                    gas_limit=self.fees.gas_limit(gas + ap_l1.gas),
                    fees=d.fees,
                    native_price=price,
                    cost=cost_in_quote(gas + ap_l1.gas, fee, price, ap_l1.fee_wei),
                    profit=d.profit,
                    break_even_fee=d.break_even_fee,
                    l1_fee_wei=None if l1 is None else ap_l1.wei_at(fee),
                    l1_gas=ap_l1.gas,
                    l1_cost=None if l1 is None else ceil_div(ap_l1.wei_at(fee) * price, WAD),
                )
        for step, j in approval_at.items():  # an approval no sent plan needs: not sent
            if out[j] is None:
                ap = members[j].plan
                reason = SIMULATION_REVERTED if step in failed_steps else "not_needed"
                out[j] = Decision(ap, ap, False, reason, 0, detail=results[j].revert)
        return out

    async def _submit(self, a: Adapter, d: Decision, head: Block, *, sequence: int | None = None, repeat: int = 0) -> bool:
        """Send one decided transaction (dry run: log it). False when the node refused it (its nonce was
        released: the caller sends nothing after it at this head)."""
        assert d.fees is not None and d.gas_limit is not None and d.cost is not None
        label = a.market_label(d.plan.key.market)
        event = "approval" if d.needs_approval else "liquidation"
        order: dict[str, Any] = {} if sequence is None else {"sequence": sequence}
        if repeat:
            order["repeat"] = repeat
        self._count_send(head)
        if self.sender is None:
            self.log.info(
                "dry_run_would_send",
                protocol=a.name,
                market=label,
                account=d.plan.key.account,
                kind=d.send_plan.kind,
                **order,
                **d.numbers(),
            )
            return True
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
            return False
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
            route=getattr(self.sender, "last_route", None),
            **order,
            **d.numbers(),
            **(d.send_plan.fields if d.needs_approval else {}),
        )
        return True

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
        l1s = await self.l1_costs([p.plan], None)
        verdict = review_replacement(
            p.plan.expected_reward,
            extra,
            gas,
            bumped,
            price,
            min_profit,
            self.cfg.profit.allow_unprofitable,
            self.fees,
            l1=l1s[0] if l1s is not None else NO_L1,
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
        receipt_l1 = int(f.receipt.get("l1Fee") or "0x0", 16) if f.receipt is not None else 0  # OP-stack receipts
        if f.receipt is not None:
            gas_cost = int(f.receipt["gasUsed"], 16) * int(f.receipt.get("effectiveGasPrice", "0x0"), 16)
            self.metrics.gas_spent.inc(gas_cost + receipt_l1)
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
            cost_quote = (
                cost_in_quote(out.gas_used, out.gas_cost_wei // max(out.gas_used, 1), price, receipt_l1) if price else None
            )
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
                **({"l1_fee_wei": receipt_l1} if receipt_l1 else {}),
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
