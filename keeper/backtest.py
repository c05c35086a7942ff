"""`keeper backtest`: replay a block range with the daemon's own adapters and execution policy, list every
liquidation OPPORTUNITY in it, who actually took it, and what this config would have earned.

Phase 1 (RPC, once per range, cached): every block in [A, B] is a head as the daemon would see it. The
adapters `sync` and `evaluate` at it (every read block-tagged), and only the positions that are
candidates and were not liquidatable at the previous head (or were just liquidated by someone) are
confirmed on-chain and decided by the executor (the same simulation, gas and fee rules as `run` and
`scan`). Each block's record keeps the liquidatable positions and, for the new ones, the raw figures of
the decision: kind, expected reward, simulated gas units, the native price, plus the block's base fee,
gas used and gas limit. Liquidations are read from the protocols' own events (`liquidation_log_filter`,
paged `eth_getLogs`) and their receipts (liquidator, transaction, effective gas price).

Phase 2 (pure integers, no RPC): the opportunities are rebuilt from the records and events, and each
setting of a sweep (min_profit, tip) decides every opportunity again with `execution.decide_plan` on
the recorded figures: the same integers the daemon would have used at that block.

THE MODEL. We take an opportunity when, at its first liquidatable head ≥ A, our decision says send
(reward − gas cost at that head's next base fee + our tip ≥ min_profit, under the fee caps and the
tip policy) and we would have sent before the actual liquidator's block (first_block < liquidated
block), or it was never liquidated in range. A partial liquidation that leaves the position liquidatable
opens a new opportunity at that block; repeated partials in one block count per liquidation event (the
repeats carry the event's own reward and the first one's gas).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from keeper.config import KeeperConfig
from keeper.execution import UNPROFITABLE, decide_plan
from keeper.gas import FeeCapExceeded, FeePolicy
from keeper.l2 import L1Cost
from keeper.types import Block, Plan, PositionKey
from keeper.units import to_units

CACHE_FILE = "backtest-cache.sqlite"
HEADER_BATCH = 100  # block headers read per JSON-RPC batch
RECEIPT_BATCH = 100
COMMIT_EVERY = 50  # blocks between cache commits (an interrupted run loses at most these)


# ---- records (phase 1) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sighting:
    """Raw figures of a position's decision at the first head it was liquidatable."""

    kind: str
    reward: int  # value token 1e18, the plan's expected reward (simulated events where simulated)
    gas: int | None  # simulated gas units (None: the simulation reverted or could not run)
    min_profit: int  # value token 1e18: the configured threshold for its market
    price: int | None  # native token price in the value token (1e18)
    reason: str = ""  # the decision's skip reason under the config ("" = it would send)
    l1_fee_wei: int = 0  # on an L2 (chain.l2): the fixed L1 data fee of the liquidation at that block, wei
    l1_gas: int = 0  # Arbitrum: L1 gas units charged as L2 gas (priced at each setting's fee per gas)


@dataclass
class BlockRecord:
    number: int
    timestamp: int
    base_fee: int | None
    gas_used: int
    gas_limit: int
    liquidatable: list[str] = field(default_factory=list)  # str(PositionKey), after confirmation where new
    new: dict[str, Sighting] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "n": self.number,
                "t": self.timestamp,
                "bf": self.base_fee,
                "gu": self.gas_used,
                "gl": self.gas_limit,
                "l": self.liquidatable,
                "new": {k: dataclasses.asdict(s) for k, s in self.new.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> BlockRecord:
        d = json.loads(text)
        return cls(d["n"], d["t"], d["bf"], d["gu"], d["gl"], d["l"], {k: Sighting(**v) for k, v in d["new"].items()})


@dataclass(frozen=True)
class Event:
    """A liquidation as mined: from the protocol's event and its transaction's receipt."""

    block: int
    tx: str
    log_index: int
    key: str  # str(PositionKey)
    liquidator: str
    sender: str  # the transaction's from
    reward: int  # value token 1e18
    kind: str
    effective_gas_price: int  # wei
    gas_used: int  # the whole transaction's


def parse_key(text: str) -> PositionKey:
    protocol, market, account = text.rsplit(":", 2)
    return PositionKey(protocol, market, account)


# ---- the cache -----------------------------------------------------------------------------------------
class Cache:
    """Phase 1's records in SQLite, keyed by chain id + config hash + block: a range already replayed is
    not read again, an interrupted replay resumes at its first missing block."""

    def __init__(self, path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.key = key
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS blocks (key TEXT, block INTEGER, data TEXT, PRIMARY KEY (key, block));"
            "CREATE TABLE IF NOT EXISTS event_ranges (key TEXT, start INTEGER, end INTEGER, data TEXT,"
            " PRIMARY KEY (key, start, end));"
        )

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def blocks(self, start: int, end: int) -> dict[int, BlockRecord]:
        rows = self.db.execute(
            "SELECT block, data FROM blocks WHERE key = ? AND block BETWEEN ? AND ?", (self.key, start, end)
        ).fetchall()
        return {b: BlockRecord.from_json(d) for b, d in rows}

    def put_block(self, rec: BlockRecord) -> None:
        self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?)", (self.key, rec.number, rec.to_json()))

    def commit(self) -> None:
        self.db.commit()

    def events(self, start: int, end: int) -> list[Event] | None:
        """The events of [start, end] from a cached range that covers it, or None."""
        row = self.db.execute(
            "SELECT data FROM event_ranges WHERE key = ? AND start <= ? AND end >= ? ORDER BY end - start LIMIT 1",
            (self.key, start, end),
        ).fetchone()
        if row is None:
            return None
        return [e for e in (Event(**x) for x in json.loads(row[0])) if start <= e.block <= end]

    def put_events(self, start: int, end: int, events: list[Event]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO event_ranges VALUES (?, ?, ?, ?)",
            (self.key, start, end, json.dumps([dataclasses.asdict(e) for e in events])),
        )
        self.db.commit()


def config_hash(cfg: KeeperConfig, keeper: str) -> str:
    """What phase 1's records depend on: protocols, gas/profit/tx policy, pricing, the keeper's address
    (simulations run from it). Not the key, state file, logs, HTTP or alerts."""
    dump = cfg.model_dump(mode="json", exclude={"key", "state", "log", "http", "alerts", "watch", "shutdown_timeout"})
    dump["chain"] = {"chain_id": cfg.chain.chain_id, "multicall": dump["chain"].get("multicall")}
    text = json.dumps({"config": dump, "keeper": keeper}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- progress -------------------------------------------------------------------------------------------
class Progress:
    """A progress bar with ETA on stderr, shown once the run has taken more than `after` seconds.
    Hand-written (20 lines) rather than a dependency: it needs no terminal library, and off a terminal it
    prints one plain line per 10 % instead of carriage returns."""

    def __init__(self, total: int, *, stream: TextIO | None = None, after: float = 3.0, label: str = "blocks") -> None:
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.after = after
        self.label = label
        self.t0 = time.monotonic()
        self.tty = self.stream.isatty()
        self.shown = False
        self._last_decile = -1

    def update(self, done: int) -> None:
        elapsed = time.monotonic() - self.t0
        if elapsed < self.after or done <= 0:
            return
        frac = min(done / self.total, 1.0)
        eta = elapsed * (1 - frac) / frac
        text = f"{'#' * int(frac * 30):30s} {done}/{self.total} {self.label} {frac:4.0%} {elapsed:5.1f}s ETA {eta:5.1f}s"
        if self.tty:
            self.stream.write(f"\r[{text}]")
            self.stream.flush()
            self.shown = True
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(f"backtest: {text}\n")

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


# ---- phase 1: the replay ------------------------------------------------------------------------------
async def fetch_events(keeper: Any, start: int, end: int) -> list[Event]:
    """Every liquidation in [start, end] of every adapter that can attribute them: paged eth_getLogs of
    the liquidation events, then the receipts of their transactions (batched), parsed by the adapter."""
    rpc = keeper.rpc
    page = keeper.cfg.chain.log_page_size
    txs: dict[str, int] = {}
    for a in keeper.adapters:
        spec = a.liquidation_log_filter()
        if spec is None:
            continue
        addresses, topics = spec
        s = start
        while s <= end:
            e = min(end, s + page - 1)
            for lg in await rpc.get_logs(addresses, [topics], s, e):
                txs[lg["transactionHash"]] = int(lg["blockNumber"], 16)
            s = e + 1
    hashes = sorted(txs, key=lambda h: txs[h])
    out: list[Event] = []
    for i in range(0, len(hashes), RECEIPT_BATCH):
        chunk = hashes[i : i + RECEIPT_BATCH]
        receipts = await rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
        for h, r in zip(chunk, receipts, strict=True):
            if isinstance(r, BaseException) or r is None:
                raise RuntimeError(f"receipt of {h} unavailable: {r}")
            for a in keeper.adapters:
                for x in await a.liquidations_in(r.get("logs", []), int(r["blockNumber"], 16)):
                    out.append(
                        Event(
                            block=int(r["blockNumber"], 16),
                            tx=h,
                            log_index=x.log_index,
                            key=str(x.key),
                            liquidator=x.liquidator,
                            sender=r.get("from", ""),
                            reward=x.reward,
                            kind=x.kind,
                            effective_gas_price=int(r.get("effectiveGasPrice") or "0x0", 16),
                            gas_used=int(r["gasUsed"], 16),
                        )
                    )
    out.sort(key=lambda e: (e.block, e.log_index))
    return out


async def _headers(rpc: Any, numbers: list[int]) -> list[Block]:
    answers = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out = []
    for n, b in zip(numbers, answers, strict=True):
        if isinstance(b, BaseException):
            raise b
        if b is None:
            raise RuntimeError(f"the node has no block {n}")
        out.append(Block.from_rpc(b))
    return out


async def replay_block(keeper: Any, head: Block, previous: set[str], liquidated_here: set[str]) -> BlockRecord:
    """One head as the daemon sees it: sync and evaluate every adapter; confirm and decide only the
    candidates that are new at this head (not liquidatable at the previous one, or liquidated in it)."""
    rec = BlockRecord(head.number, head.timestamp, head.base_fee, head.gas_used, head.gas_limit)
    for a in keeper.adapters:
        await a.sync(head)
        candidates = [e for e in a.evaluate(head) if e.candidate]
        known = [str(e.key) for e in candidates if str(e.key) in previous and str(e.key) not in liquidated_here]
        rec.liquidatable += known
        new = [e for e in candidates if str(e.key) not in previous or str(e.key) in liquidated_here]
        if not new:
            continue
        plans = await a.confirm(new, head)
        if not plans:
            continue
        decisions = {d.plan.key: d for d in await keeper.executor.decide(a, plans, head)}
        price = await keeper.executor.price(a)
        # The L1 part of each liquidation's cost at this block (OP: fee in wei; Arbitrum: L1 gas), read once
        # and recorded raw so every sweep setting prices it at its own fee per gas; cached per head.
        l1s = await keeper.executor.l1_costs(plans, head)
        for i, p in enumerate(plans):
            d = decisions.get(p.key)
            reward = d.plan.expected_reward if d is not None else p.expected_reward
            kind = d.plan.kind if d is not None else p.kind
            gas = d.total_gas if d is not None else None
            reason = ("" if d.send else d.reason) if d is not None else "not_decided"
            min_profit = d.min_profit if d is not None else keeper.executor.min_profit(a, p.key.market)
            rec.liquidatable.append(str(p.key))
            l1 = l1s[i] if l1s is not None else None
            if isinstance(l1, Exception):
                reason, gas = reason or "l1_fee_unavailable", None
                l1 = None
            rec.new[str(p.key)] = Sighting(
                kind, reward, gas, min_profit, price, reason, l1.fee_wei if l1 else 0, l1.gas if l1 else 0
            )
    return rec


async def replay(
    keeper_open: Any, cache: Cache, start: int, end: int, *, progress: bool = True
) -> tuple[dict[int, BlockRecord], list[Event], int]:
    """Phase 1 over [start, end], resuming from the cache: (records, events, blocks replayed now).
    `keeper_open(block)` opens a read-only keeper as of a block (adapters started, index built up to it)."""
    records = cache.blocks(start, end)
    events = cache.events(start, end)
    missing = [b for b in range(start, end + 1) if b not in records]
    if not missing and events is not None:
        return records, events, 0
    first = missing[0] if missing else end
    keeper = await keeper_open(first)
    try:
        if events is None:
            events = await fetch_events(keeper, start, end)
            cache.put_events(start, end, events)
        by_block: dict[int, set[str]] = {}
        for ev in events:
            by_block.setdefault(ev.block, set()).add(ev.key)
        bar = Progress(len(missing)) if progress else None
        previous = set(records[first - 1].liquidatable) if first - 1 in records else set()
        todo = list(range(first, end + 1))
        done = 0
        for i in range(0, len(todo), HEADER_BATCH):
            for head in await _headers(keeper.rpc, todo[i : i + HEADER_BATCH]):
                if head.number in records:  # replayed before (a hole in the cache): the next sync catches up
                    rec = records[head.number]
                else:
                    rec = await replay_block(keeper, head, previous, by_block.get(head.number, set()))
                    records[head.number] = rec
                    cache.put_block(rec)
                    done += 1
                    if done % COMMIT_EVERY == 0:
                        cache.commit()
                    if bar is not None:
                        bar.update(done)
                previous = set(rec.liquidatable)
        cache.commit()
        if bar is not None:
            bar.close()
    finally:
        await keeper.close()
    return records, events, done


# ---- opportunities ----------------------------------------------------------------------------------------
@dataclass
class Opportunity:
    key: str
    first_block: int | None  # the first head (≥ A) at which it was liquidatable; None: never seen at a head
    kind: str
    reward: int  # value token 1e18: what we would have earned (expected at first_block; a repeat: the event's)
    gas: int | None
    base_fee: int | None
    gas_used: int
    gas_limit: int
    price: int | None
    min_profit: int
    reason: str  # the config's decision at first_block ("" = send)
    liquidated_block: int | None = None
    tx: str = ""
    liquidator: str = ""
    effective_gas_price: int | None = None
    actual_reward: int | None = None
    blocks_available: int = 0
    repeat: int = 0  # 0: the first liquidation of its episode; n: the n-th repeated partial in that block
    ended: str = ""  # "liquidated" | "recovered" (no longer liquidatable) | "open" (still at B)
    l1_fee_wei: int = 0  # on an L2: the fixed L1 data fee at first_block (wei)
    l1_gas: int = 0  # Arbitrum: L1 gas units in the gas limit

    @property
    def position(self) -> PositionKey:
        return parse_key(self.key)


def opportunities(records: dict[int, BlockRecord], events: list[Event], start: int, end: int) -> list[Opportunity]:
    """Episodes per position, walking the heads in order: a position opens an opportunity at the first
    head it is liquidatable; a liquidation event closes it (each further event in the same block for the
    same position is a repeat row); a position no longer liquidatable closes it as recovered."""
    out: list[Opportunity] = []
    open_: dict[str, Opportunity] = {}
    ev_at: dict[int, list[Event]] = {}
    for ev in events:
        ev_at.setdefault(ev.block, []).append(ev)
    for b in range(start, end + 1):
        rec = records[b]
        closed_here: dict[str, Opportunity] = {}
        repeats: dict[str, int] = {}
        for ev in ev_at.get(b, []):
            o = open_.pop(ev.key, None)
            if o is not None:
                o.liquidated_block, o.tx, o.liquidator = b, ev.tx, ev.liquidator
                o.effective_gas_price, o.actual_reward = ev.effective_gas_price, ev.reward
                o.blocks_available, o.ended = b - (o.first_block or b), "liquidated"
                closed_here[ev.key] = o
                out.append(o)
                continue
            first = closed_here.get(ev.key)
            if first is not None:  # a repeated partial in the same block
                repeats[ev.key] = n = repeats.get(ev.key, 0) + 1
                out.append(
                    dataclasses.replace(
                        first,
                        kind=ev.kind,
                        reward=ev.reward,
                        tx=ev.tx,
                        liquidator=ev.liquidator,
                        effective_gas_price=ev.effective_gas_price,
                        actual_reward=ev.reward,
                        repeat=n,
                    )
                )
                continue
            # liquidated without ever being liquidatable at a head in range (before A, or in the very block
            # that made it liquidatable): nobody reading heads could have taken it
            out.append(
                Opportunity(
                    ev.key,
                    None,
                    ev.kind,
                    ev.reward,
                    None,
                    None,
                    0,
                    0,
                    None,
                    0,
                    "not_seen_at_a_head",
                    liquidated_block=b,
                    tx=ev.tx,
                    liquidator=ev.liquidator,
                    effective_gas_price=ev.effective_gas_price,
                    actual_reward=ev.reward,
                    ended="liquidated",
                )
            )
        now = set(rec.liquidatable)
        for k in [k for k in open_ if k not in now]:
            o = open_.pop(k)
            o.blocks_available, o.ended = b - (o.first_block or b), "recovered"
            out.append(o)
        for k, s in rec.new.items():
            if k in open_:
                continue
            open_[k] = Opportunity(
                k,
                b,
                s.kind,
                s.reward,
                s.gas,
                rec.base_fee,
                rec.gas_used,
                rec.gas_limit,
                s.price,
                s.min_profit,
                s.reason,
                l1_fee_wei=s.l1_fee_wei,
                l1_gas=s.l1_gas,
            )
    for o in open_.values():
        o.blocks_available, o.ended = end + 1 - (o.first_block or end + 1), "open"
        out.append(o)
    out.sort(key=lambda o: (o.liquidated_block or o.first_block or 0, o.first_block or 0, o.key, o.repeat))
    return out


# ---- phase 2: the model, and sweeps ------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    min_profit: Decimal | None  # value-token units; None: each market's configured threshold
    tip_gwei: Decimal | None  # None: gas.priority_fee_gwei

    def label(self) -> str:
        mp = "config" if self.min_profit is None else format(self.min_profit, "f")
        tip = "config" if self.tip_gwei is None else format(self.tip_gwei, "f")
        return f"min_profit={mp} tip={tip}"


@dataclass(frozen=True)
class Verdict:
    taken: bool
    reason: str  # "" taken; "late" (liquidated before we saw it); a decision skip reason otherwise
    cost: int | None
    profit: int | None


def judge(o: Opportunity, cfg: KeeperConfig, policy: FeePolicy, setting: Setting) -> Verdict:
    """One opportunity under one setting: the daemon's decision (`decide_plan`) on the recorded figures,
    then the timing rule (first_block < liquidated_block, or never liquidated in range)."""
    if o.first_block is None:
        return Verdict(False, "late", None, None)
    if o.gas is None or o.price is None or o.base_fee is None:
        return Verdict(False, o.reason or "not_simulated", None, None)
    try:
        fees = policy.quote(o.base_fee, o.gas_used, o.gas_limit)
    except FeeCapExceeded:
        return Verdict(False, "fee_cap", None, None)
    min_profit = o.min_profit if setting.min_profit is None else to_units(setting.min_profit, 18)
    k = o.position
    plan = Plan(key=k, to=k.market, data=b"", kind=o.kind, expected_reward=o.reward)
    l1 = L1Cost(o.l1_fee_wei, o.l1_gas) if (o.l1_fee_wei or o.l1_gas) else None
    d = decide_plan(plan, o.gas, fees, o.price, min_profit, cfg.profit.allow_unprofitable, policy, l1=l1)
    if not d.send:
        return Verdict(False, d.reason, d.cost, d.profit)
    return Verdict(True, "", d.cost, d.profit)


def policy_for(cfg: KeeperConfig, setting: Setting) -> FeePolicy:
    if setting.tip_gwei is None:
        return FeePolicy(cfg.gas)
    return FeePolicy(cfg.gas.model_copy(update={"priority_fee_gwei": setting.tip_gwei}))


@dataclass
class SweepRow:
    """One setting's result for one protocol (amounts in that protocol's value token, 1e18: rows of
    different protocols are never added up)."""

    setting: Setting
    opportunities: int
    taken: int
    reward: int
    gas_cost: int
    profit: int
    missed_by_threshold: int  # seen in time, but the decision said no (unprofitable / not worth the bid)
    missed_late: int  # liquidated before any head showed it
    protocol: str = ""


def sweep(opps: list[Opportunity], cfg: KeeperConfig, settings: Iterable[Setting]) -> list[SweepRow]:
    """One row per setting and protocol (in order of first appearance), each over that protocol's opportunities."""
    protocols = list(dict.fromkeys(o.position.protocol for o in opps)) or [""]
    rows = []
    for s in settings:
        policy = policy_for(cfg, s)
        for proto in protocols:
            mine = [o for o in opps if o.position.protocol == proto] if proto else opps
            row = SweepRow(s, len(mine), 0, 0, 0, 0, 0, 0, proto)
            for o in mine:
                v = judge(o, cfg, policy, s)
                if v.taken:
                    row.taken += 1
                    row.reward += o.reward
                    row.gas_cost += v.cost or 0
                    row.profit += v.profit or 0
                elif v.reason == "late":
                    row.missed_late += 1
                elif v.reason == UNPROFITABLE or v.reason.startswith("bid") or v.reason == "below_break_even":
                    row.missed_by_threshold += 1
            rows.append(row)
    return rows


def parse_sweeps(specs: list[str]) -> list[Setting]:
    """`--sweep min_profit=0,1,5` / `--sweep tip=0.5,1` (gwei): the cartesian product, one Setting each.
    Raises ValueError naming what is wrong."""
    values: dict[str, list[Decimal | None]] = {"min_profit": [None], "tip": [None]}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        name = name.strip()
        if not sep or name not in values:
            raise ValueError(f"--sweep {spec!r}: expected min_profit=V1,V2,… or tip=V1,V2,… (gwei)")
        try:
            vals = [Decimal(v.strip()) for v in rest.split(",") if v.strip()]
        except ArithmeticError:
            raise ValueError(f"--sweep {spec!r}: not a list of numbers") from None
        if not vals or any(v < 0 or not v.is_finite() for v in vals):
            raise ValueError(f"--sweep {spec!r}: needs one or more numbers ≥ 0")
        values[name] = list(vals)
    return [Setting(mp, tip) for mp in values["min_profit"] for tip in values["tip"]]
