"""One block's work, protocol-agnostic: adapters sync → evaluate (local maths) → choose the candidates
this block can act on → confirm them on-chain → the execution policy. And `scan`: the same path
for every position, reporting what the policy would do instead of doing it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import compress, count
from operator import attrgetter, is_not
from typing import Any

from keeper.adapters.base import Adapter
from keeper.execution import Decision, Executor, SendBatch
from keeper.metrics import Metrics
from keeper.monitors import Monitor
from keeper.types import Block, Evaluation, PositionKey, Status

NEEDS_APPROVAL = "needs-approval"
# What a plan knows beyond the local evaluation and shows in `keeper scan` (LLAMMA callback mode: the
# route, its quote at the head and the profit it gives for the chosen fraction).
PLAN_SCAN_FIELDS = ("mode", "route", "frac", "quoted_proceeds", "route_profit", "min_out")


class Pipeline:
    def __init__(
        self,
        adapters: list[Adapter],
        executor: Executor,
        log: Any,
        metrics: Metrics,
        monitors: list[Monitor] | None = None,
        *,
        monitor_only: bool = False,
    ) -> None:
        self.adapters = adapters
        self.monitors = monitors or []
        self.monitor_only = monitor_only  # `keeper run --monitor-only`: evaluate and observe, never confirm or execute
        self.executor = executor
        self.log = log
        self.metrics = metrics
        self.last_status: dict[str, dict[PositionKey, str]] = {}  # adapter → position → last status
        self._prev_evals: dict[str, list[Evaluation]] = {}  # adapter → last block's evaluations, in order
        self.status_counts: dict[str, Counter[str]] = {}
        self.last_error = ""

    async def process(self, head: Block) -> None:
        results = await asyncio.gather(*(a.sync(head) for a in self.adapters), return_exceptions=True)
        for a, r in zip(self.adapters, results, strict=True):
            if isinstance(r, BaseException):
                self.last_error = f"{a.name} sync: {r}"
                self.log.error("sync_failed", protocol=a.name, block=head.number, error=f"{type(r).__name__}: {r}")
        work: list[tuple[Adapter, list[Evaluation]]] = []
        idle: list[Adapter] = []
        for a, r in zip(self.adapters, results, strict=True):
            if isinstance(r, BaseException):
                continue
            evals = a.evaluate(head)
            self._track_statuses(a, evals, head)
            await self._observe(a, evals, head)
            if self.monitor_only:
                continue
            ready = [e for e in evals if e.candidate and not self.executor.blocked(e.key, head)]
            candidates = self._best_candidates(a, ready)
            if candidates:
                work.append((a, candidates))
            elif not any(e.candidate for e in evals):
                idle.append(a)
        # Every protocol's candidates confirmed and decided at once; then the sends, most valuable first.
        planned = await asyncio.gather(*(self._plan(a, c, head) for a, c in work), return_exceptions=True)
        batches = []
        for (a, _c), b in zip(work, planned, strict=True):
            if isinstance(b, BaseException):
                if not isinstance(b, Exception):
                    raise b
                self.last_error = f"{a.name} confirm: {b}"
                self.log.error("confirm_failed", protocol=a.name, block=head.number, error=f"{type(b).__name__}: {b}")
                continue
            batches.append(b)
        await self.executor.send_all(batches, head)
        for a in idle:
            await self.executor.prepare(a, head)  # idle: set-up steps ahead of the money

    async def _plan(self, a: Adapter, candidates: list[Evaluation], head: Block) -> SendBatch:
        return await self.executor.plan_sends(a, await a.confirm(candidates, head), head)

    async def _observe(self, a: Adapter, evals: list[Evaluation], head: Block) -> None:
        """Hand the evaluations to every monitor; a failing monitor is logged, never fails the block."""
        for m in self.monitors:
            try:
                await m.observe(a, evals, head)
            except Exception as exc:  # noqa: BLE001 - monitors only look
                self.log.error(
                    "monitor_failed", monitor=m.name, protocol=a.name, block=head.number, error=f"{type(exc).__name__}: {exc}"
                )

    def _best_candidates(self, a: Adapter, candidates: list[Evaluation]) -> list[Evaluation]:
        """Per market, only the candidates this block can act on: the best by expected reward, twice
        the free in-flight slots (a margin for ones the on-chain check drops). The rest wait, so the
        confirmation reads grow with what can be sent, not with how many positions are under water."""
        limit = self.executor.in_flight_limit(a)
        sender = self.executor.sender
        busy: Counter[tuple[str, str]] = sender.in_flight_per_market() if sender else Counter()
        by_market: dict[str, list[Evaluation]] = {}
        for e in candidates:
            by_market.setdefault(e.key.market, []).append(e)
        out: list[Evaluation] = []
        for market, group in by_market.items():
            free = max(limit - busy[(a.name, market)], 0)
            group.sort(key=lambda e: e.est_reward or 0, reverse=True)
            out.extend(group[: 2 * free])
        return out

    def _track_statuses(self, a: Adapter, evals: list[Evaluation], head: Block) -> None:
        """Log each position whose status changed, forget the ones gone, export the counts. Per block over
        every position (100k at scale): one dict per adapter, statuses compared by identity first (they are
        enum members), the set work done in C."""
        last = self.last_status.setdefault(a.name, {})
        prev = self._prev_evals.get(a.name)
        self._prev_evals[a.name] = evals
        if prev is not None and len(prev) == len(evals) and a.name in self.status_counts:
            # Same positions in the same order as last block (an adapter may hand back the very same
            # Evaluation object for a position that did not change): only the differing ones are looked at,
            # as the adapter knows them, else found by a scan in C (identity per index; 100k positions, a
            # few thousand differ).
            delta = a.evaluation_delta(evals, prev)
            changed = compress(count(), map(is_not, evals, prev)) if delta is None else delta
            diffs = [(evals[i], prev[i]) for i in changed if evals[i] is not prev[i]]
            if all(e.key == p.key for e, p in diffs):
                counts = self.status_counts[a.name]
                for e, p in diffs:
                    if e.status != p.status:
                        counts[p.status] -= 1
                        counts[e.status] += 1
                        last[e.key] = e.status
                        self._log_status(a, e, p.status, head)
                self._export_counts(a, counts, counts)
                return
        # Every position (the first block, or positions added, removed or reordered): the dict and the
        # comparison with last block's statuses built in C, the changed ones looked at one by one.
        keys = list(map(attrgetter("key"), evals))
        statuses = list(map(attrgetter("status"), evals))
        now: dict[PositionKey, str] = dict(zip(keys, statuses, strict=True))
        was_all = list(map(last.get, keys))
        for i in compress(count(), map(is_not, statuses, was_all)):
            was = was_all[i]
            if was != statuses[i]:
                self._log_status(a, evals[i], was, head)
        if len(now) != len(last) or last.keys() != now.keys():
            for k in last.keys() - now.keys():
                self.executor.forget(k)
        self.last_status[a.name] = now
        self._export_counts(a, self.status_counts.get(a.name, Counter()), Counter(now.values()))

    def _log_status(self, a: Adapter, e: Evaluation, prev: str | None, head: Block) -> None:
        if prev is None and e.status == Status.HEALTHY:
            return  # a new healthy position is not news
        self.log.info(
            "position_status",
            protocol=a.name,
            market=a.market_label(e.key.market),
            account=e.key.account,
            status=e.status,
            previous=prev,
            block=head.number,
            reason=e.reason or None,
        )

    def _export_counts(self, a: Adapter, old: Counter[str], counts: Counter[str]) -> None:
        for s in set(old) | set(counts):
            self.metrics.positions.labels(a.name, s).set(counts.get(s, 0))
        self.status_counts[a.name] = counts
        self.metrics.markets.labels(a.name).set(len(a.markets()))

    # ---- scan ---------------------------------------------------------------------------------------
    async def scan(self, head: Block) -> list[dict[str, Any]]:
        """Every indexed position with what the daemon would do with it in this block, for this keeper:
        the same confirmation, simulation (from the keeper's address) and decision, nothing sent.
        Sorted by how close each position is to liquidation."""
        for a in self.adapters:
            await a.sync(head)
            await a.prepare_scan(head)
        rows: list[tuple[tuple[int, int], dict[str, Any]]] = []
        for a in self.adapters:
            evals = a.evaluate(head, full=True)
            plans = await a.confirm([e for e in evals if e.candidate], head)
            decisions = {d.plan.key: d for d in await self.executor.decide(a, plans, head)}
            for e in evals:
                row = scan_row(a, e, decisions.get(e.key), self.executor.min_profit(a, e.key.market))
                closeness = a.closeness(e)
                order = (0 if e.candidate else 1, closeness if closeness is not None else 2**255)
                rows.append((order, row))
        rows.sort(key=lambda r: r[0])
        return [r for _, r in rows]


def scan_row(a: Adapter, e: Evaluation, d: Decision | None, min_profit: int) -> dict[str, Any]:
    """One `keeper scan` row: the local evaluation, then what the execution policy decided."""
    row: dict[str, Any] = {
        "protocol": a.name,
        "kind": a.kind,
        "market": a.market_label(e.key.market),
        "market_address": e.key.market,
        "account": e.key.account,
        "status": str(e.status),
        "reason": e.reason,
        "action": None,
        "est_reward": e.est_reward,
        "est_cost": None,
        "est_profit": None,
        "min_profit": min_profit,
        "gas": None,
        "value_symbol": a.value_symbol,
        **e.fields,
    }
    row["risk_usage"] = a.risk_usage(e)  # 1e18 = 100 % = the liquidation threshold; None where the adapter has none
    if e.candidate and d is None:
        row["reason"] = row["reason"] or "dropped by the on-chain confirmation"
    if d is None:
        return row
    row["est_reward"] = d.plan.expected_reward
    row["action"] = d.plan.kind
    row.update({k: d.plan.fields[k] for k in PLAN_SCAN_FIELDS if k in d.plan.fields})
    row["gas"] = d.total_gas
    if d.cost is not None:
        row["est_cost"], row["est_profit"] = d.cost, d.profit
    if d.l1_fee_wei:  # an L2's L1 data fee, inside est_cost (keeper/l2.py)
        row["l1_fee"], row["l1_fee_wei"] = d.l1_cost, d.l1_fee_wei
        if d.l1_gas:
            row["l1_gas"] = d.l1_gas
    if not d.send:
        row["status"] = {"unprofitable": str(Status.UNPROFITABLE)}.get(d.reason, d.reason.replace("_", "-"))
        row["reason"] = d.detail or d.reason
    elif d.needs_approval:
        row["status"] = NEEDS_APPROVAL
        row["reason"] = (
            f"approval first ({d.gas} gas simulated) + {d.plan.typical_gas} typical gas for the liquidation, priced in"
        )
    elif d.after is not None:
        row["status"] = NEEDS_APPROVAL
        row["reason"] = f"approval sent right before it at this head; its gas ({(d.total_gas or 0) - (d.gas or 0)}) priced in"
    return row
