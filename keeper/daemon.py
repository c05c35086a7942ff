"""The keeper's lifecycle: startup checks, the head loop, health, graceful shutdown; and the read-only
keeper behind `scan` and `check`.

What each command is built with decides what it can do, not a flag checked somewhere:
- `keeper run`: a signer, the state file (exclusively locked), a transaction manager (the Sender).
- `keeper run --dry-run`, `scan`, `check`: the keeper's ADDRESS only (from the key, or `key.address`),
  an in-memory copy of the state file (opened read-only; nothing on disk is created or written), and
  no Sender: nothing below them can sign or send.
- `keeper run --monitor-only`, `keeper watch`: no key at all (`monitor_address`), the state as in dry-run,
  no Sender, and the pipeline stops after the monitors (no confirmation or simulation either).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeper.adapters import adapter_class
from keeper.adapters.base import Adapter, Context
from keeper.alerts import Alerter
from keeper.config import KeeperConfig
from keeper.execution import Executor
from keeper.gas import FeePolicy
from keeper.heads import HeadWatcher
from keeper.keys import KeyLoadError, load_signer
from keeper.l2 import L2DetectionError, L2Model, detect_l2
from keeper.log import get_logger
from keeper.metrics import Metrics
from keeper.monitors import build_monitors
from keeper.multicall import CallBatcher
from keeper.pipeline import Pipeline
from keeper.pricing import PriceUnavailable
from keeper.reorgs import ReorgTracker
from keeper.rpc import RpcClient, RpcError, RpcUnavailable, TransportError, redact_url
from keeper.store import Store
from keeper.txs import TxManager
from keeper.types import Block
from keeper.units import WAD, to_units

# The cyclic garbage collector, after the initial index (see `process`): automatic young collections only
# past this many new container objects (a 100k-position block makes some tens of thousands, all freed
# by reference counting: no pause inside the block), a young collection after every block and a full
# one every GC_FULL_EVERY blocks, both once the block's work is done.
GC_YOUNG_THRESHOLD = 250_000
GC_FULL_EVERY = 256
JOURNAL_RECHECK_BLOCKS = 1024  # after a history replacement, journal rows mined this recently are re-checked


ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def monitor_address(cfg: KeeperConfig) -> str:
    """The address a monitor-only keeper (`keeper run --monitor-only`, `keeper watch`) reads as: `key.address`
    when set, else the zero address. No key material is read: nothing can be signed."""
    return cfg.key.address or ZERO_ADDRESS


class StartupError(Exception):
    """A startup check failed; the message says which and why."""


def keeper_address(cfg: KeeperConfig) -> str:
    """The keeper's address for read-only use: from the key when one is configured and readable (the key
    object is dropped at once), else `key.address`. Raises KeyLoadError when neither is available."""
    try:
        return load_signer(cfg.key).address
    except KeyLoadError:
        if cfg.key.address:
            return cfg.key.address
        raise


def rpc_client(cfg: KeeperConfig, metrics: Metrics) -> RpcClient:
    """The RPC client every command uses: endpoints, timeouts and retries from `[chain]`, errors counted."""
    return RpcClient(
        list(cfg.chain.rpc_urls),
        timeout=cfg.chain.request_timeout,
        max_retries=cfg.chain.max_retries,
        batch_size=cfg.chain.batch_size,
        on_error=lambda url, kind: metrics.rpc_errors.labels(redact_url(url), kind).inc(),
    )


@dataclass
class Connection:
    """What every command shares: RPC, batched calls, the chain's head, started adapters."""

    rpc: RpcClient
    calls: CallBatcher
    chain_id: int
    head: Block
    adapters: list[Adapter]
    l2: L2Model = L2Model("none")  # the chain's L1-fee model (chain.l2), detected at startup


class BlockOutOfRange(StartupError):
    """`--block N` names a block the node does not have (beyond its head)."""


async def connect(
    cfg: KeeperConfig,
    *,
    address: str,
    store: Store,
    log: Any,
    metrics: Metrics,
    rpc: RpcClient,
    check_code: bool = True,
    block: int | None = None,
) -> Connection:
    """Chain id, call batcher, adapters started (markets discovered, index loaded), code at every address.
    `block`: the connection's head is that past block instead of the latest (`scan --block`, `backtest`):
    the adapters tag every per-block call with the head's number, so they read the chain as of it."""
    await rpc.start()
    try:
        chain_id = await rpc.chain_id()
    except RpcUnavailable as exc:
        raise StartupError(f"RPC unreachable: {exc}") from None
    if chain_id != cfg.chain.chain_id:
        raise StartupError(
            f"chain id mismatch: the RPC serves chain {chain_id}, config says chain.chain_id = {cfg.chain.chain_id}"
        )
    stored_chain = store.get_meta("chain_id")
    if stored_chain is not None and int(stored_chain) != chain_id:
        raise StartupError(f"state file {cfg.state.path} belongs to chain {stored_chain}, not {chain_id}")
    try:
        calls = await CallBatcher.detect(rpc, cfg.chain.multicall, cfg.chain.batch_size)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    head = Block.from_rpc(await rpc.get_block("latest"))
    if block is not None:
        if block > head.number:
            raise BlockOutOfRange(f"block {block} is beyond the chain head {head.number}")
        head = Block.from_rpc(await rpc.get_block(block))
    ctx = Context(rpc=rpc, calls=calls, store=store, keeper=address, config=cfg, log=log, metrics=metrics)
    adapters = [adapter_class(p.kind)(p, ctx) for p in cfg.protocols if p.enabled]
    for a in adapters:
        try:
            await a.start(head)
        except (RuntimeError, RpcError) as exc:
            raise StartupError(f"protocol {a.name}: {exc}") from None
    if check_code:
        missing = await missing_code(rpc, adapters)
        if missing:
            raise StartupError(f"no contract code at {missing[0][0]} = {missing[0][1]}")
    try:
        l2 = await detect_l2(rpc, cfg.chain.l2)
    except L2DetectionError as exc:
        raise StartupError(str(exc)) from None
    except (RpcError, RpcUnavailable, TransportError) as exc:
        raise StartupError(f"chain.l2: the L2 fee model probes failed: {exc}") from None
    log.info("l2_fee_model", l2=l2.kind, source=l2.source, upper_bound=l2.upper_bound, detail=l2.describe())
    return Connection(rpc, calls, chain_id, head, adapters, l2)


async def missing_code(rpc: RpcClient, adapters: list[Adapter]) -> list[tuple[str, str]]:
    addrs: dict[str, str] = {}
    for a in adapters:
        addrs.update(a.addresses())
    if not addrs:
        return []
    codes = await rpc.batch([("eth_getCode", [addr, "latest"]) for addr in addrs.values()])
    return [
        (label, addr)
        for (label, addr), code in zip(addrs.items(), codes, strict=True)
        if isinstance(code, Exception) or code in ("0x", "", None)
    ]


class Daemon:
    """`keeper run` (with a signer) and `keeper run --dry-run` (without one). Build with `Daemon.open`."""

    def __init__(
        self,
        cfg: KeeperConfig,
        *,
        log: Any,
        metrics: Metrics,
        conn: Connection,
        store: Store,
        address: str,
        txs: TxManager | None,
        alerts: Alerter,
        lock: Any,
        balance_wei: int | None,
        monitor_only: bool = False,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.rpc = conn.rpc
        self.calls = conn.calls
        self.adapters = conn.adapters
        self.store = store
        self.keeper_address = address
        self.txs = txs
        self.dry_run = txs is None
        self.alerts = alerts
        self._lock = lock
        self.executor = Executor(cfg, self.rpc, address, self.adapters, log, metrics, alerts, store, txs, l2=conn.l2)
        monitors = build_monitors(cfg, rpc=self.rpc, adapters=self.adapters, alerts=alerts, metrics=metrics, log=log)
        self.monitor_only = monitor_only
        self.pipeline = Pipeline(self.adapters, self.executor, log, metrics, monitors, monitor_only=monitor_only)
        self.reorgs = ReorgTracker(self.rpc, store, log)
        self.heads = HeadWatcher(cfg.chain.ws_url, log, timeout=cfg.chain.request_timeout)
        self.min_balance = to_units(cfg.alerts.min_balance_eth, 18)
        self.balance_wei = balance_wei
        self.head: Block | None = None
        self.last_head_change = time.monotonic()
        self._stale_window_start = time.monotonic()
        self.block_failures = 0
        self._blocks_since_full_gc = 0
        self._healthy = True
        self._last_error = ""

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    async def open(cls, cfg: KeeperConfig, *, dry_run: bool = False, monitor_only: bool = False, log: Any = None) -> Daemon:
        """Startup checks and a fully built daemon. Raises StartupError (exit 1) or KeyLoadError (exit 2).
        `monitor_only`: no key at all (see `monitor_address`), the state as in dry-run, and the pipeline
        stops after the monitors: no confirmation, simulation or send."""
        log = log or get_logger()
        dry_run = dry_run or cfg.dry_run or monitor_only
        metrics = Metrics()
        rpc = rpc_client(cfg, metrics)
        alerts = Alerter(cfg.alerts.webhook_url, log, source="keeper", min_interval=cfg.alerts.repeat_after)
        lock = None
        store: Store | None = None
        try:
            if monitor_only:
                address = monitor_address(cfg)
                signer = None
                store = Store.read_only_copy(cfg.state.path)
            elif dry_run:
                address = keeper_address(cfg)
                signer = None
                store = Store.read_only_copy(cfg.state.path)
            else:
                signer = load_signer(cfg.key)
                address = signer.address
                from keeper.statelock import acquire_state_lock  # noqa: PLC0415 - only the writing daemon locks

                if str(cfg.state.path) != ":memory:":
                    Path(cfg.state.path).parent.mkdir(parents=True, exist_ok=True)
                    lock = acquire_state_lock(cfg.state.path)
                store = Store(cfg.state.path)
            conn = await connect(cfg, address=address, store=store, log=log, metrics=metrics, rpc=rpc)
            alerts.source = f"keeper {address}"
            balance = await rpc.balance(address)
            if balance == 0 and not dry_run:
                raise StartupError(f"the keeper account {address} has no native balance to pay for gas")
            store.set_meta("chain_id", str(conn.chain_id))
            txs = None
            if signer is not None:
                txs = TxManager(rpc, signer, store, FeePolicy(cfg.gas), cfg.tx, conn.chain_id, log)
            daemon = cls(
                cfg,
                log=log,
                metrics=metrics,
                conn=conn,
                store=store,
                address=address,
                txs=txs,
                alerts=alerts,
                lock=lock,
                balance_wei=balance,
                monitor_only=monitor_only,
            )
            if txs is not None:
                for f in await txs.start(conn.head):
                    await daemon.executor.settle(f, conn.head)
        except BaseException:
            await rpc.close()
            if store is not None:
                store.close()
            if lock is not None:
                lock.release()
            raise
        if balance < daemon.min_balance and not monitor_only:
            alerts.alert(
                "low_balance",
                f"keeper balance {balance / WAD:.6f} is below the floor {cfg.alerts.min_balance_eth}",
                balance_wei=balance,
            )
        log.info(
            "keeper_started",
            chain_id=conn.chain_id,
            keeper=address,
            dry_run=dry_run,
            monitor_only=monitor_only,
            monitors=[m.name for m in daemon.pipeline.monitors],
            multicall=conn.calls.multicall or "json-rpc batch",
            l2=conn.l2.kind,
            protocols=[a.name for a in daemon.adapters],
            head=conn.head.number,
        )
        return daemon

    async def close(self) -> None:
        if self.txs is not None:
            await self.txs.close()  # the private endpoints' client (tx.private_rpc_urls)
        await self.rpc.close()
        self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- the loop ---------------------------------------------------------------------------------------
    @property
    def status_counts(self) -> dict[str, Any]:
        return self.pipeline.status_counts

    @property
    def last_error(self) -> str:
        return self._last_error or self.pipeline.last_error

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
            head: Block | None
            try:
                head = Block.from_rpc(await self.rpc.get_block("latest"))
            except (RpcUnavailable, RpcError) as exc:
                self._last_error = f"head poll failed: {exc}"
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

    async def process(self, head: Block) -> None:
        """One block, isolated: an error is logged and the next block is processed normally."""
        t0 = time.perf_counter()
        calls0 = self.rpc.stats.calls
        try:
            await self._process(head)
            self.block_failures = 0
            self._last_error = ""
        except Exception as exc:  # noqa: BLE001 - the daemon must survive one bad block
            self.block_failures += 1
            self._last_error = f"block {head.number}: {type(exc).__name__}: {exc}"
            self.log.exception("block_failed", block=head.number, error=str(exc))
        finally:
            first = self.head is None
            if first:
                # The initial index is the bulk of the heap and lives as long as the daemon: move it out
                # of the cyclic collector's reach, so full collections stop walking 100k positions (their
                # pauses were the per-block maxima).
                gc.collect()
                gc.freeze()
                _, mid, old = gc.get_threshold()
                gc.set_threshold(GC_YOUNG_THRESHOLD, mid, old)
            self.head = head
            self.metrics.eval_seconds.observe(time.perf_counter() - t0)
            self.metrics.rpc_calls.set(self.rpc.stats.calls - calls0)
            self.metrics.head.set(head.number)
            self.metrics.head_lag.set(max(0.0, time.time() - head.timestamp))
            if not first:
                # Later garbage: collected here, between blocks, not in the middle of the next one.
                self._blocks_since_full_gc += 1
                if self._blocks_since_full_gc >= GC_FULL_EVERY:
                    gc.collect()
                    self._blocks_since_full_gc = 0
                else:
                    gc.collect(1)

    async def _process(self, head: Block) -> None:
        seen = time.monotonic()  # the head was read just before: head-to-broadcast counts from here
        await self._handle_reorg(head)
        if self.txs is not None:
            for f in await self.txs.poll(head, self.executor.review):
                await self.executor.settle(f, head)
            self.metrics.pending.set(self.txs.pending_count())
            await self.executor.watch_rivals(head)
        self.pipeline.last_error = ""
        await self.pipeline.process(head)
        if self.txs is not None and self.txs.last_broadcast_at >= seen:
            latency = self.txs.last_broadcast_at - seen
            self.metrics.head_to_broadcast.observe(latency)
            self.log.info(
                "head_sends_done", block=head.number, head_to_broadcast_ms=round(latency * 1000, 1), route=self.txs.last_route
            )
        self.store.record_block(head.number, head.hash, head.parent_hash)
        if head.number % 20 == 0 or self.balance_wei is None:
            self.balance_wei = await self.rpc.balance(self.keeper_address)
            self.metrics.balance.set(self.balance_wei)
            if self.txs is not None and self.balance_wei < self.min_balance:
                self.alerts.alert(
                    "low_balance",
                    f"keeper balance {self.balance_wei / WAD:.6f} is below the floor {self.cfg.alerts.min_balance_eth}",
                    balance_wei=self.balance_wei,
                )

    async def _handle_reorg(self, head: Block) -> None:
        """Rewind what a reorg replaced, across skipped heads. Within the tracked window: rewind each adapter
        to the common ancestor and re-open journal rows mined after it. Deeper (history replaced): re-index
        from each adapter's start block and re-open journal rows mined in the last 1,024 blocks whose
        receipts are gone. Re-opened rows keep their nonces; they are re-simulated, never blindly resent."""
        reorg = await self.reorgs.check(head)
        if reorg is None:
            return
        self.metrics.reorgs.inc()
        if reorg.ancestor is None:
            self.log.warning("history_replaced", block=head.number, note="re-anchoring; re-indexing from the start blocks")
            # first: if this read fails, the next block detects the same and retries
            reopened = await self.txs.unsettle_missing(max(0, head.number - JOURNAL_RECHECK_BLOCKS)) if self.txs else []
            rewind_to = -1
        else:
            self.log.warning(
                "reorg_detected",
                block=head.number,
                common_ancestor=reorg.ancestor,
                depth=reorg.depth,
                last_processed=reorg.last_processed,
            )
            self.store.forget_blocks_after(reorg.ancestor)
            reopened = self.txs.unsettle_after(reorg.ancestor) if self.txs else []
            rewind_to = reorg.ancestor
        for row in reopened:
            self.log.warning("tx_unmined_by_reorg", tx=row.tx_hash, nonce=row.nonce, key=row.key, block=row.mined_block)
        for a in self.adapters:
            await a.rewind(max(rewind_to, a.config.start_block - 1))  # never before the configured start block
        if reorg.ancestor is None:
            self.store.forget_all_blocks()

    # ---- health -------------------------------------------------------------------------------------------
    def _watch_health(self) -> None:
        ok, components = self.health()
        if ok != self._healthy:
            self._healthy = ok
            if ok:
                self.log.info("healthy_again")
            else:
                failing = {k: v for k, v in components.items() if not v["ok"]}
                self.alerts.alert(
                    "unhealthy", f"keeper unhealthy: {', '.join(failing)}", dedupe=",".join(sorted(failing)), **failing
                )

    def _tx_health(self) -> dict[str, Any]:
        """Unhealthy when a transaction stays unmined far past its replacements (fee caps too low?)."""
        if self.txs is None or not self.txs.pending or self.head is None:
            return {"ok": True, "pending": 0}
        oldest = max(self.head.number - p.first_block for p in self.txs.pending.values())
        limit = self.cfg.tx.replace_after_blocks * (self.cfg.tx.max_replacements + 2)
        return {"ok": oldest <= limit, "pending": self.txs.pending_count(), "oldest_blocks": oldest}

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        head_age = now - self.last_head_change
        components: dict[str, dict[str, Any]] = {
            "head": {
                "ok": head_age <= self.cfg.chain.stale_head_after,
                "block": self.head.number if self.head else None,
                "age_seconds": round(head_age, 1),
            },
            "rpc": {"ok": any(e["up"] for e in self.rpc.endpoint_status()), "endpoints": self.rpc.endpoint_status()},
            "balance": {
                "ok": self.txs is None or self.balance_wei is None or self.balance_wei >= self.min_balance,
                "wei": self.balance_wei,
                "floor_wei": self.min_balance,
            },
            "transactions": self._tx_health(),
            "heads": {"ok": True, "source": "websocket" if self.heads.connected else "polling"},
            "processing": {
                "ok": self.block_failures < 3,
                "consecutive_failures": self.block_failures,
                "last_error": self.last_error,
            },
        }
        ok = all(c["ok"] for c in components.values())
        self.metrics.up.set(1 if ok else 0)
        return ok, components


class ReadOnlyKeeper:
    """`scan` and `check`: the keeper's address, an in-memory copy of the state, no Sender."""

    def __init__(self, cfg: KeeperConfig, *, log: Any, metrics: Metrics, conn: Connection, store: Store, address: str) -> None:
        self.cfg = cfg
        self.log = log
        self.rpc = conn.rpc
        self.adapters = conn.adapters
        self.head = conn.head
        self.chain_id = conn.chain_id
        self.store = store
        self.keeper_address = address
        self.l2 = conn.l2
        self.executor = Executor(cfg, self.rpc, address, self.adapters, log, metrics, None, None, None, l2=conn.l2)
        self.pipeline = Pipeline(self.adapters, self.executor, log, metrics)

    @classmethod
    async def open(
        cls,
        cfg: KeeperConfig,
        *,
        log: Any = None,
        address: str | None = None,
        check_code: bool = True,
        block: int | None = None,
    ) -> ReadOnlyKeeper:
        """`block`: as of that past block (`scan --block N`): every read is tagged with it and the index is
        built from the configured start blocks up to it in an empty in-memory store (the state file's index
        may run past N, so it is not read at all)."""
        log = log or get_logger()
        metrics = Metrics()
        address = address or keeper_address(cfg)
        rpc = rpc_client(cfg, metrics)
        store = Store.read_only_copy(cfg.state.path) if block is None else Store(":memory:")
        try:
            conn = await connect(
                cfg, address=address, store=store, log=log, metrics=metrics, rpc=rpc, check_code=check_code, block=block
            )
        except BaseException:
            await rpc.close()
            store.close()
            raise
        return cls(cfg, log=log, metrics=metrics, conn=conn, store=store, address=address)

    async def close(self) -> None:
        await self.rpc.close()
        self.store.close()

    async def scan(self) -> list[dict[str, Any]]:
        return await self.pipeline.scan(self.head)

    async def checks(self) -> list[tuple[str, bool, str]]:
        """The startup checks as (name, ok, detail) rows, for `keeper check`."""
        rows: list[tuple[str, bool, str]] = [("chain id", True, str(self.chain_id)), ("L2 fee model", True, self.l2.describe())]
        missing = dict(await missing_code(self.rpc, self.adapters))
        for a in self.adapters:
            for label, addr in a.addresses().items():
                rows.append((f"code at {label}", label not in missing, addr))
        bal = await self.rpc.balance(self.keeper_address)
        floor = to_units(self.cfg.alerts.min_balance_eth, 18)
        rows.append(("native balance", bal >= floor, f"{bal / WAD:.6f} (floor {self.cfg.alerts.min_balance_eth})"))
        for a in self.adapters:
            try:
                p = await self.executor.prices[a.name].price()
                rows.append(
                    (
                        f"{a.name} native price",
                        True,
                        f"{p / WAD:.6f} {a.value_symbol} ({self.executor.prices[a.name].describe()})",
                    )
                )
            except (PriceUnavailable, RpcError) as exc:
                rows.append((f"{a.name} native price", False, str(exc)))
            rows.extend(await a.check_rows())
        return rows


async def private_endpoint_checks(cfg: KeeperConfig) -> list[tuple[str, bool, str]]:
    """One row per `tx.private_rpc_urls` endpoint: it answers eth_chainId with chain.chain_id (URL redacted)."""
    if not cfg.tx.private_rpc_urls:
        return []
    rows: list[tuple[str, bool, str]] = []
    async with RpcClient(list(cfg.tx.private_rpc_urls), timeout=cfg.chain.request_timeout, max_retries=0) as private:
        for url in cfg.tx.private_rpc_urls:
            name = f"private endpoint {redact_url(url)}"
            try:
                chain_id = int(await private.request_on(url, "eth_chainId"), 16)
            except (RpcError, TransportError, ValueError, TypeError) as exc:
                detail = exc.detail if isinstance(exc, TransportError) else f"{type(exc).__name__}: {exc}"
                rows.append((name, False, f"unreachable: {detail}"))
                continue
            ok = chain_id == cfg.chain.chain_id
            rows.append((name, ok, f"chain {chain_id}" + ("" if ok else f", config says chain.chain_id = {cfg.chain.chain_id}")))
    return rows


async def run_checks(cfg: KeeperConfig, log: Any = None) -> list[tuple[str, bool, str]]:
    """`keeper check`: every check as an (name, ok, detail) row; a failed stage stops only what depends
    on it, so the whole table is printed. Creates and writes no file."""
    rows: list[tuple[str, bool, str]] = [("config", True, "valid")]
    try:
        address = load_signer(cfg.key).address
        rows.append(("key", True, f"{address} (key loads{', matches key.address' if cfg.key.address else ''})"))
    except KeyLoadError as exc:
        rows.append(("key", False, str(exc)))
        if not cfg.key.address:
            return rows
        address = cfg.key.address
    rows.extend(await private_endpoint_checks(cfg))
    try:
        keeper = await ReadOnlyKeeper.open(cfg, log=log, address=address, check_code=False)
    except (StartupError, RpcError, RpcUnavailable) as exc:
        rows.append(("chain and protocols", False, str(exc)))
        return rows
    try:
        rows.extend(await keeper.checks())
    finally:
        await keeper.close()
    return rows
