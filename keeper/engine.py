"""The protocol-agnostic engine: startup checks, then per block
    reorg check → settle/replace pending txs → adapters sync → evaluate → confirm → simulate →
    profit decision → send,
with every skip logged with its numbers. It knows no protocol: adapters do the maths.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from keeper.adapters import adapter_class
from keeper.adapters.base import Adapter, Context
from keeper.alerts import Alerter
from keeper.config import KeeperConfig
from keeper.gas import FeeCapExceeded, FeePolicy
from keeper.heads import HeadWatcher
from keeper.keys import Signer, load_signer
from keeper.log import get_logger
from keeper.metrics import Metrics
from keeper.multicall import CallBatcher
from keeper.pricing import NativePrice, PriceUnavailable
from keeper.risk.profit import decide, gas_cost_in_quote
from keeper.rpc import ExecutionReverted, RpcClient, RpcError, RpcUnavailable, call_object
from keeper.store import Store
from keeper.txs import Finished, PendingTx, SendRejected, TxManager
from keeper.types import Block, Evaluation, Plan, PositionKey, Status
from keeper.units import WAD, to_units

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_REORG_DEPTH = 64
JOURNAL_RECHECK_BLOCKS = 1024  # after a history replacement, journal rows mined this recently are re-checked


class StartupError(Exception):
    """A startup check failed; the message says which and why."""


class Engine:
    def __init__(self, cfg: KeeperConfig, *, dry_run: bool = False, log: Any = None):
        self.cfg = cfg
        self.dry_run = dry_run or cfg.dry_run
        self.log = log or get_logger()
        self.metrics = Metrics()
        self.rpc = RpcClient(
            list(cfg.chain.rpc_urls), timeout=cfg.chain.request_timeout, max_retries=cfg.chain.max_retries,
            batch_size=cfg.chain.batch_size, on_error=self._on_rpc_error,
        )  # fmt: skip
        self.store: Store | None = None
        self.signer: Signer | None = None
        self.keeper_address = ZERO_ADDRESS
        self.calls: CallBatcher | None = None
        self.fees = FeePolicy(cfg.gas)
        self.adapters: list[Adapter] = []
        self.prices: dict[str, NativePrice] = {}
        self.txs: TxManager | None = None
        self.cooldown: dict[PositionKey, int] = {}
        self.last_status: dict[PositionKey, str] = {}
        self.last_skip: dict[PositionKey, str] = {}
        self.status_counts: dict[str, Counter] = {}
        self.head: Block | None = None
        self.last_head_change = time.monotonic()
        self.last_error: str = ""
        self.balance_wei: int | None = None
        self.block_failures = 0
        self.heads = HeadWatcher(cfg.chain.ws_url, self.log, timeout=cfg.chain.request_timeout)
        self.alerts = Alerter(cfg.alerts.webhook_url, self.log, source="keeper", min_interval=cfg.alerts.repeat_after)
        self.min_balance = to_units(cfg.alerts.min_balance_eth, 18)
        self._healthy = True
        self._stale_window_start = time.monotonic()

    # ---- lifecycle ----------------------------------------------------------------------------
    def _on_rpc_error(self, url: str, kind: str) -> None:
        from keeper.rpc import redact_url  # noqa: PLC0415

        self.metrics.rpc_errors.labels(redact_url(url), kind).inc()

    async def open(self, *, with_signer: bool = True, start_adapters: bool = True) -> Block:
        """Connect, run the startup checks, start adapters. Raises StartupError with a clear message."""
        await self.rpc.start()
        try:
            chain_id = await self.rpc.chain_id()
        except RpcUnavailable as exc:
            raise StartupError(f"RPC unreachable: {exc}") from None
        if chain_id != self.cfg.chain.chain_id:
            raise StartupError(f"chain id mismatch: the RPC serves chain {chain_id}, config says chain.chain_id = {self.cfg.chain.chain_id}")
        if with_signer:
            self.signer = load_signer(self.cfg.key)
            self.keeper_address = self.signer.address
            self.alerts.source = f"keeper {self.keeper_address}"
            self.balance_wei = await self.rpc.balance(self.keeper_address)
            if self.balance_wei == 0 and not self.dry_run:
                raise StartupError(f"the keeper account {self.keeper_address} has no native balance to pay for gas")
        elif self.cfg.key.address:
            self.keeper_address = self.cfg.key.address
        self.store = Store(self.cfg.state.path)
        stored_chain = self.store.get_meta("chain_id")
        if stored_chain is not None and int(stored_chain) != chain_id:
            raise StartupError(f"state file {self.cfg.state.path} belongs to chain {stored_chain}, not {chain_id}")
        self.store.set_meta("chain_id", str(chain_id))
        setting = self.cfg.chain.multicall
        try:
            self.calls = await CallBatcher.detect(self.rpc, setting, self.cfg.chain.batch_size)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        head = Block.from_rpc(await self.rpc.get_block("latest"))
        ctx = Context(rpc=self.rpc, calls=self.calls, store=self.store, keeper=self.keeper_address, config=self.cfg, log=self.log)
        self.adapters = []
        for pcfg in self.cfg.protocols:
            if not pcfg.enabled:
                continue
            adapter = adapter_class(pcfg.kind)(pcfg, ctx)
            self.adapters.append(adapter)
            self.prices[adapter.name] = NativePrice(pcfg.native_price or self.cfg.pricing, self.rpc)
        if start_adapters:
            for a in self.adapters:
                try:
                    await a.start(head)
                except (RuntimeError, RpcError) as exc:
                    raise StartupError(f"protocol {a.name}: {exc}") from None
            await self._check_code()
        if self.balance_wei is not None and self.balance_wei < self.min_balance:
            self.alerts.alert("low_balance", f"keeper balance {self.balance_wei / WAD:.6f} is below the floor "
                              f"{self.cfg.alerts.min_balance_eth}", balance_wei=self.balance_wei)  # fmt: skip
        if self.signer is not None:
            self.txs = TxManager(self.rpc, self.signer, self.store, self.fees, self.cfg.tx, chain_id, self.log)
            for f in await self.txs.start(head):
                await self._settle(f, head)
        self.log.info(
            "keeper_started", chain_id=chain_id, keeper=self.keeper_address, dry_run=self.dry_run,
            multicall=self.calls.multicall or "json-rpc batch", protocols=[a.name for a in self.adapters], head=head.number,
        )  # fmt: skip
        return head

    async def _check_code(self) -> None:
        addrs: dict[str, str] = {}
        for a in self.adapters:
            addrs.update(a.addresses())
        if not addrs:
            return
        codes = await self.rpc.batch([("eth_getCode", [addr, "latest"]) for addr in addrs.values()])
        for (label, addr), code in zip(addrs.items(), codes, strict=True):
            if isinstance(code, Exception) or code in ("0x", "", None):
                raise StartupError(f"no contract code at {label} = {addr}")

    async def checks(self) -> list[tuple[str, bool, str]]:
        """The startup checks as (name, ok, detail) rows, for `keeper check`."""
        rows: list[tuple[str, bool, str]] = [("chain id", True, str(self.cfg.chain.chain_id)), ("key", True, self.keeper_address)]
        for a in self.adapters:
            for label, addr in a.addresses().items():
                rows.append((f"code at {label}", True, addr))
        bal = await self.rpc.balance(self.keeper_address)
        floor = to_units(self.cfg.alerts.min_balance_eth, 18)
        rows.append(("native balance", bal >= floor, f"{bal / WAD:.6f} (floor {self.cfg.alerts.min_balance_eth})"))
        for a in self.adapters:
            try:
                p = await self.prices[a.name].price()
                rows.append((f"{a.name} native price", True, f"{p / WAD:.6f} {a.value_symbol} ({self.prices[a.name].describe()})"))
            except (PriceUnavailable, RpcError) as exc:
                rows.append((f"{a.name} native price", False, str(exc)))
            extra = getattr(a, "check_rows", None)
            if extra is not None:
                rows.extend(await extra())
        return rows

    async def close(self) -> None:
        await self.rpc.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- the loop --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Process every new head until `stop` is set. Heads come from the websocket subscription
        when there is one (then the poll is a slower safety net) and from polling otherwise."""
        watcher = asyncio.create_task(self.heads.run(stop))
        try:
            await self._loop(stop)
        finally:
            watcher.cancel()
            await self.alerts.flush()

    async def _loop(self, stop: asyncio.Event) -> None:
        poll = self.cfg.chain.poll_interval
        while not stop.is_set():
            try:
                raw = await self.rpc.get_block("latest")
                head = Block.from_rpc(raw)
            except (RpcUnavailable, RpcError) as exc:
                self.last_error = f"head poll failed: {exc}"
                self.log.error("head_poll_failed", error=str(exc))
                head = None
            now = time.monotonic()
            if head is not None and (self.head is None or head.hash != self.head.hash):
                self.last_head_change = self._stale_window_start = now
                await self.process(head)
            elif now - self._stale_window_start > self.cfg.chain.stale_head_after:
                self.log.warning("head_stale", seconds=round(now - self.last_head_change, 1), endpoint=self.rpc.current.url)
                self.rpc.demote(reason="stale head")
                self._stale_window_start = now  # give the next endpoint a full window
            self.metrics.head_age.set(time.monotonic() - self.last_head_change)
            self._watch_health()
            await self.heads.wait(stop, timeout=max(poll, 5.0) if self.heads.connected else poll)

    def _watch_health(self) -> None:
        ok, components = self.health()
        if ok != self._healthy:
            self._healthy = ok
            if ok:
                self.log.info("healthy_again")
            else:
                failing = {k: v for k, v in components.items() if not v["ok"]}
                self.alerts.alert("unhealthy", f"keeper unhealthy: {', '.join(failing)}", dedupe=",".join(sorted(failing)),
                                  **{k: str(v) for k, v in failing.items()})  # fmt: skip

    async def process(self, head: Block) -> None:
        """One block, isolated: an error is logged and the next block is processed normally."""
        t0 = time.perf_counter()
        calls0 = self.rpc.stats.calls
        try:
            await self._process(head)
            self.block_failures = 0
        except Exception as exc:  # noqa: BLE001 - the daemon must survive one bad block
            self.block_failures += 1
            self.last_error = f"block {head.number}: {type(exc).__name__}: {exc}"
            self.log.exception("block_failed", block=head.number, error=str(exc))
        finally:
            self.head = head
            self.metrics.eval_seconds.observe(time.perf_counter() - t0)
            self.metrics.rpc_calls.set(self.rpc.stats.calls - calls0)
            self.metrics.head.set(head.number)
            self.metrics.head_lag.set(max(0.0, time.time() - head.timestamp))

    async def _process(self, head: Block) -> None:
        await self._check_reorg(head)
        if self.txs is not None:
            for f in await self.txs.poll(head, self._still_wanted):
                await self._settle(f, head)
            self.metrics.pending.set(self.txs.pending_count())
        results = await asyncio.gather(*(a.sync(head) for a in self.adapters), return_exceptions=True)
        for a, r in zip(self.adapters, results, strict=True):
            if isinstance(r, Exception):
                self.last_error = f"{a.name} sync: {r}"
                self.log.error("sync_failed", protocol=a.name, block=head.number, error=f"{type(r).__name__}: {r}")
        for a, r in zip(self.adapters, results, strict=True):
            if isinstance(r, Exception):
                continue
            evals = a.evaluate(head)
            self._track_statuses(a, evals, head)
            candidates = self._best_candidates(a, [e for e in evals if e.candidate and not self._blocked(e.key, head)])
            if not candidates:
                continue
            plans = await a.confirm(candidates, head)
            await self._execute(a, plans, head)
        self.store.record_block(head.number, head.hash, head.parent_hash)
        if head.number % 20 == 0 or self.balance_wei is None:
            self.balance_wei = await self.rpc.balance(self.keeper_address)
            self.metrics.balance.set(self.balance_wei)
            if self.signer is not None and self.balance_wei < self.min_balance:
                self.alerts.alert("low_balance", f"keeper balance {self.balance_wei / WAD:.6f} is below the floor "
                                  f"{self.cfg.alerts.min_balance_eth}", balance_wei=self.balance_wei)  # fmt: skip

    def _in_flight_limit(self, a: Adapter) -> int:
        return self.cfg.tx.max_in_flight_per_market or a.max_in_flight_per_market

    async def _simulate(self, plans: list[Plan]) -> list:
        """eth_estimateGas from the keeper for each plan (its prerequisite when it has one), batched:
        gas as an int, or the RpcError / ExecutionReverted."""
        first = [p.prerequisite or p for p in plans]
        out = await self.rpc.batch(
            [("eth_estimateGas", [call_object(s.to, s.data, sender=self.keeper_address, value=s.value), "latest"]) for s in first]
        )
        return [r if isinstance(r, Exception) else int(r, 16) for r in out]

    def _best_candidates(self, a: Adapter, candidates: list[Evaluation]) -> list[Evaluation]:
        """Per market, only the candidates this block can act on: the best by expected reward, twice
        the free in-flight slots (a margin for ones the on-chain check drops). The rest wait, so the
        confirmation reads grow with what can be sent, not with how many positions are under water."""
        limit = self._in_flight_limit(a)
        busy = self.txs.in_flight_per_market() if self.txs else Counter()
        by_market: dict[str, list[Evaluation]] = {}
        for e in candidates:
            by_market.setdefault(e.key.market, []).append(e)
        out: list[Evaluation] = []
        for market, group in by_market.items():
            free = max(limit - busy[(a.name, market)], 0)
            group.sort(key=lambda e: e.est_reward or 0, reverse=True)
            out.extend(group[: 2 * free])
        return out

    def _blocked(self, key: PositionKey, head: Block) -> bool:
        if self.txs is not None and self.txs.busy(key):
            return True
        until = self.cooldown.get(key)
        if until is not None and head.number < until:
            return True
        self.cooldown.pop(key, None)
        return False

    def _track_statuses(self, a: Adapter, evals: list[Evaluation], head: Block) -> None:
        counts: Counter = Counter()
        seen: set[PositionKey] = set()
        for e in evals:
            counts[e.status] += 1
            seen.add(e.key)
            prev = self.last_status.get(e.key)
            if prev != e.status:
                self.last_status[e.key] = e.status
                if prev is not None or e.status != Status.HEALTHY:
                    self.log.info(
                        "position_status", protocol=a.name, market=a.market_label(e.key.market), account=e.key.account,
                        status=e.status, previous=prev, block=head.number, reason=e.reason or None,
                    )  # fmt: skip
        for k in [k for k in self.last_status if k.protocol == a.name and k not in seen]:
            del self.last_status[k]
            self.last_skip.pop(k, None)
        old = self.status_counts.get(a.name, Counter())
        for s in set(old) | set(counts):
            self.metrics.positions.labels(a.name, s).set(counts.get(s, 0))
        self.status_counts[a.name] = counts
        self.metrics.markets.labels(a.name).set(len(a.markets()))

    # ---- decisions and sending --------------------------------------------------------------------
    def _min_profit(self, a: Adapter, market: str) -> int:
        per_market = getattr(a, "min_profit_for", None)
        value = per_market(market) if per_market else a.config.min_profit
        if value is None:
            value = self.cfg.profit.min_profit
        return to_units(value, 18)

    def _skip(self, a: Adapter, plan: Plan, reason: str, **numbers: Any) -> None:
        """Every skip is logged with its numbers: at info when the reason for this position changes,
        at debug while it repeats block after block."""
        self.metrics.skips.labels(a.name, reason).inc()
        repeated = self.last_skip.get(plan.key) == reason
        self.last_skip[plan.key] = reason
        (self.log.debug if repeated else self.log.info)(
            "liquidation_skipped", protocol=a.name, market=a.market_label(plan.key.market), account=plan.key.account,
            kind=plan.kind, reason=reason, **numbers,
        )  # fmt: skip

    async def _execute(self, a: Adapter, plans: list[Plan], head: Block) -> None:
        if not plans:
            return
        try:
            price = await self.prices[a.name].price()
        except (PriceUnavailable, RpcError) as exc:
            for p in plans:
                self._skip(a, p, "no_native_price", error=str(exc))
            return
        try:
            fees = self.fees.quote(head.base_fee, head.gas_used, head.gas_limit, await self._legacy_gas_price(head))
        except FeeCapExceeded as exc:
            for p in plans:
                self._skip(a, p, "fee_cap", error=str(exc))
            return
        plans = sorted(plans, key=lambda p: p.expected_reward, reverse=True)
        in_flight = self.txs.in_flight_per_market() if self.txs else Counter()
        limit = self._in_flight_limit(a)
        sendable: list[Plan] = []
        for p in plans:
            if p.prerequisite is not None and self.txs is not None and self.txs.same_call_in_flight(p.prerequisite):
                self._skip(a, p, "prerequisite_pending", prerequisite=p.prerequisite.kind)
                continue
            if in_flight[(a.name, p.key.market)] >= limit:
                self._skip(a, p, "market_busy", in_flight=in_flight[(a.name, p.key.market)])
                continue
            in_flight[(a.name, p.key.market)] += 1
            sendable.append(p)
        sims = await self._simulate(sendable)
        for plan, sim in zip(sendable, sims, strict=True):
            sent_plan = plan.prerequisite or plan
            min_profit = self._min_profit(a, plan.key.market)
            if isinstance(sim, RpcError):
                reason = sim.reason if isinstance(sim, ExecutionReverted) else sim.message
                self._skip(a, plan, "simulation_reverted", revert=reason, expected_reward=plan.expected_reward)
                self.cooldown[plan.key] = head.number + 1
                continue
            gas = sim
            total_gas = gas + (plan.typical_gas if plan.prerequisite is not None else 0)
            cost = gas_cost_in_quote(total_gas, fees.expected_fee_per_gas, price)
            d = decide(plan.expected_reward, cost, min_profit, self.cfg.profit.allow_unprofitable)
            numbers = dict(expected_reward=plan.expected_reward, est_cost=cost, est_profit=d.profit, min_profit=min_profit,
                           gas=total_gas, fee_per_gas=fees.expected_fee_per_gas, native_price=price)  # fmt: skip
            if not d.send:
                self._skip(a, plan, "unprofitable", **numbers)
                continue
            gas_limit = self.fees.gas_limit(gas)
            if self.dry_run:
                self.log.info("dry_run_would_send", protocol=a.name, market=a.market_label(plan.key.market),
                              account=plan.key.account, kind=sent_plan.kind, gas_limit=gas_limit, **numbers)  # fmt: skip
                continue
            if self.txs is None:
                continue
            try:
                pending = await self.txs.submit(sent_plan, gas_limit, fees, cost, head)
            except SendRejected as exc:
                self.metrics.liquidations.labels(a.name, "rejected").inc()
                self.log.warning("liquidation_send_rejected", protocol=a.name, account=plan.key.account, reason=str(exc))
                self.alerts.alert("send_failed", f"{a.name}: the node rejected a transaction: {exc}", account=plan.key.account)
                self.cooldown[plan.key] = head.number + self.cfg.tx.failure_cooldown_blocks
                continue
            self.last_skip.pop(plan.key, None)
            if sent_plan.kind != "approval":
                self.metrics.liquidations.labels(a.name, "sent").inc()
            self.log.info(
                "liquidation_sent" if sent_plan.kind != "approval" else "approval_sent", protocol=a.name,
                market=a.market_label(plan.key.market), trader=plan.key.account, kind=sent_plan.kind, tx=pending.hashes[0],
                nonce=pending.nonce, gas_limit=gas_limit, max_fee=fees.max_fee_per_gas, **numbers,
                **(sent_plan.fields if sent_plan is not plan else {}),
            )  # fmt: skip

    async def _legacy_gas_price(self, head: Block) -> int | None:
        if head.base_fee is not None:
            return None
        return int(await self.rpc.request("eth_gasPrice"), 16)

    async def _still_wanted(self, p: PendingTx) -> tuple[bool, int]:
        """Is a stuck transaction still worth replacing? Re-simulates it at the head."""
        try:
            gas = await self.rpc.estimate_gas(p.plan.to, p.plan.data, sender=self.keeper_address, value=p.plan.value)
        except ExecutionReverted as exc:
            self.log.info("stuck_tx_no_longer_valid", key=str(p.key), reason=exc.reason)
            return False, 0
        except RpcError:
            return True, 0
        return True, gas

    def _adapter(self, name: str) -> Adapter | None:
        return next((a for a in self.adapters if a.name == name), None)

    async def _settle(self, f: Finished, head: Block) -> None:
        p = f.pending
        a = self._adapter(p.key.protocol)
        label = a.market_label(p.key.market) if a else p.key.market
        if f.receipt is not None:
            gas_cost = int(f.receipt["gasUsed"], 16) * int(f.receipt.get("effectiveGasPrice", "0x0"), 16)
            self.metrics.gas_spent.inc(gas_cost)
        if p.plan.kind == "approval" or f.status in ("cancelled", "dropped"):
            self.log.info("tx_settled", key=str(p.key), kind=p.plan.kind, status=f.status, tx=f.tx_hash)
            if f.status in ("cancelled", "dropped"):
                self.metrics.liquidations.labels(p.key.protocol, f.status).inc()
            return
        if a is None:
            self.log.warning("tx_settled_unknown_protocol", key=str(p.key), status=f.status, tx=f.tx_hash)
            return
        if f.status == "mined":
            out = a.outcome(p.plan, f.receipt)
            price = await self._price_or_none(a)
            cost_quote = gas_cost_in_quote(out.gas_used, out.gas_cost_wei // max(out.gas_used, 1), price) if price else None
            self.store.annotate_tx(p.tx_id, reward=out.reward, kind=out.kind)
            self.metrics.liquidations.labels(a.name, "landed").inc()
            self.metrics.reward.labels(a.name).inc(out.reward / WAD)
            self.log.info(
                "liquidation_landed", protocol=a.name, market=label, trader=p.key.account, kind=out.kind, tx=f.tx_hash,
                reward=out.reward, expected_reward=p.plan.expected_reward, gas_used=out.gas_used, gas_cost_wei=out.gas_cost_wei,
                gas_cost_quote=cost_quote, profit=None if cost_quote is None else out.reward - cost_quote, **out.fields,
            )  # fmt: skip
            return
        # reverted
        explain = getattr(a, "explain_failure", None)
        status, reason = ("reverted", "")
        if explain is not None:
            try:
                status, reason = await explain(p.plan, f.receipt, p.sent_block)
            except RpcError as exc:
                reason = f"could not explain: {exc}"
        self.store.annotate_tx(p.tx_id, reason=f"{status}: {reason}")
        self.metrics.liquidations.labels(a.name, status).inc()
        self.cooldown[p.key] = head.number + self.cfg.tx.failure_cooldown_blocks
        if status != "raced":
            self.alerts.alert("send_failed", f"{a.name}: liquidation reverted: {reason}", tx=f.tx_hash, account=p.key.account)
        self.log.warning(
            "liquidation_raced" if status == "raced" else "liquidation_reverted", protocol=a.name, market=label,
            trader=p.key.account, tx=f.tx_hash, reason=reason, retry_after_block=self.cooldown[p.key],
        )  # fmt: skip

    async def _price_or_none(self, a: Adapter) -> int | None:
        try:
            return await self.prices[a.name].price()
        except (PriceUnavailable, RpcError):
            return None

    # ---- reorgs ---------------------------------------------------------------------------------
    async def _check_reorg(self, head: Block) -> None:
        stored_parent = self.store.block_hash(head.number - 1)
        stored_same = self.store.block_hash(head.number)
        if (stored_parent is None or stored_parent == head.parent_hash) and (stored_same is None or stored_same == head.hash):
            return
        ancestor = None
        for number, h in self.store.recorded_blocks_desc():
            if number >= head.number:
                continue
            if head.number - number > MAX_REORG_DEPTH:
                break
            blk = await self.rpc.get_block(number)
            if blk is not None and blk["hash"] == h:
                ancestor = number
                break
        self.metrics.reorgs.inc()
        if ancestor is None:
            # History replaced (node restarted from a dump with placeholder hashes, or a reorg
            # deeper than we track): re-anchor at this head and re-read every position.
            # Transactions the journal saw mined in the last JOURNAL_RECHECK_BLOCKS blocks are
            # checked for their receipts; every adapter re-indexes from its configured start block.
            self.log.warning("history_replaced", block=head.number, note="re-anchoring; re-indexing from the start blocks")
            # first: if this read fails, the next block detects the same and retries
            reopened = await self.txs.unsettle_missing(max(0, head.number - JOURNAL_RECHECK_BLOCKS)) if self.txs else []
            rewind_to = -1
        else:
            self.log.warning("reorg_detected", block=head.number, common_ancestor=ancestor, depth=head.number - ancestor)
            self.store.forget_blocks_after(ancestor)
            reopened = self.txs.unsettle_after(ancestor) if self.txs else []
            rewind_to = ancestor
        for row in reopened:
            self.log.warning("tx_unmined_by_reorg", tx=row.tx_hash, nonce=row.nonce, key=row.key, block=row.mined_block)
        for a in self.adapters:
            await a.rewind(max(rewind_to, a.config.start_block - 1))  # never before the configured start block
        if ancestor is None:
            self.store.forget_all_blocks()

    # ---- scan ---------------------------------------------------------------------------------------
    async def scan(self, head: Block) -> list[dict]:
        """Every indexed position with its status and, for liquidatable ones, the profit estimate."""
        for a in self.adapters:
            await a.sync(head)
            await a.prepare_scan(head)
        rows: list[dict] = []
        fees = None
        try:
            fees = self.fees.quote(head.base_fee, head.gas_used, head.gas_limit, await self._legacy_gas_price(head))
        except FeeCapExceeded:
            fees = None
        for a in self.adapters:
            evals = a.evaluate(head, full=True)
            plans = {p.key: p for p in await a.confirm([e for e in evals if e.candidate], head)}
            price = await self._price_or_none(a)
            plan_list = list(plans.values())
            gas_by_key = dict(zip((p.key for p in plan_list), await self._simulate(plan_list), strict=True))
            for e in evals:
                row = {"protocol": a.name, "kind": a.kind, "market": a.market_label(e.key.market), "market_address": e.key.market,
                       "account": e.key.account, "status": str(e.status), "reason": e.reason, "est_reward": e.est_reward,
                       "est_cost": None, "est_profit": None, "value_symbol": a.value_symbol, **e.fields}  # fmt: skip
                if e.key in plans and fees is not None and price is not None:
                    g = gas_by_key.get(e.key)
                    if isinstance(g, Exception):
                        row["status"], row["reason"] = "simulation-reverted", getattr(g, "reason", str(g))
                    else:
                        plan = plans[e.key]
                        total = g + (plan.typical_gas if plan.prerequisite else 0)
                        cost = gas_cost_in_quote(total, fees.expected_fee_per_gas, price)
                        row["est_reward"] = plan.expected_reward
                        row["est_cost"], row["est_profit"] = cost, plan.expected_reward - cost
                        if plan.expected_reward - cost < self._min_profit(a, e.key.market):
                            row["status"] = str(Status.UNPROFITABLE)
                rows.append(row)
        return rows

    # ---- health -----------------------------------------------------------------------------------
    def _tx_health(self) -> dict:
        """Unhealthy when a transaction stays unmined far past its replacements (fee caps too low?)."""
        if self.txs is None or not self.txs.pending or self.head is None:
            return {"ok": True, "pending": 0}
        oldest = max(self.head.number - p.first_block for p in self.txs.pending.values())
        limit = self.cfg.tx.replace_after_blocks * (self.cfg.tx.max_replacements + 2)
        return {"ok": oldest <= limit, "pending": self.txs.pending_count(), "oldest_blocks": oldest}

    def health(self) -> tuple[bool, dict]:
        now = time.monotonic()
        head_age = now - self.last_head_change
        floor = to_units(self.cfg.alerts.min_balance_eth, 18)
        components = {
            "head": {"ok": head_age <= self.cfg.chain.stale_head_after, "block": self.head.number if self.head else None,
                     "age_seconds": round(head_age, 1)},
            "rpc": {"ok": any(e["up"] for e in self.rpc.endpoint_status()), "endpoints": self.rpc.endpoint_status()},
            "balance": {"ok": self.signer is None or self.balance_wei is None or self.balance_wei >= floor,
                        "wei": self.balance_wei, "floor_wei": floor},
            "transactions": self._tx_health(),
            "heads": {"ok": True, "source": "websocket" if self.heads.connected else "polling"},
            "processing": {"ok": self.block_failures < 3, "consecutive_failures": self.block_failures, "last_error": self.last_error},
        }  # fmt: skip
        ok = all(c["ok"] for c in components.values())
        self.metrics.up.set(1 if ok else 0)
        return ok, components

