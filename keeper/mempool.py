"""Rival watch: other senders' pending liquidations of the positions the keeper liquidates.

Once per head, `refresh` reads the node's pending transactions and keeps, per position, the rival with
the highest effective tip at the next block, so the fee bidding (keeper.bidding) can outbid it while
that still pays, or drop ours.

Sources, per `method`:
- "txpool": one `txpool_content` call (geth, erigon, reth, nethermind, anvil): the whole pending pool.
- "filter": `eth_newPendingTransactionFilter` once, then per head `eth_getFilterChanges` and one batch of
  `eth_getTransactionByHash` for the new hashes plus the rivals still tracked (to see them mined or
  replaced). Sees transactions that arrive after the filter was created; a filter the node expired is
  created again.
- "auto" (default): "txpool", falling back to "filter" when the node refuses txpool_content.
When neither works the watch turns itself off (`available` is False) and says so once in the log.
Transport failures (node unreachable, rate limits) leave the last snapshot in place and are retried at
the next head.

Effective tip of a pending transaction at the next block (base = next block's base fee, from the head):
EIP-1559: min(maxPriorityFeePerGas, maxFeePerGas − base); legacy: gasPrice − base (gasPrice when the
chain has no base fee). Transactions that cannot pay the next base fee are not rivals (yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from keeper.gas import next_base_fee
from keeper.rpc import RpcError, RpcUnavailable, TransportError
from keeper.types import Block, PositionKey

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.rpc import RpcClient

Method = Literal["auto", "txpool", "filter"]
MAX_FETCH = 2000  # filter mode: at most this many new pending transactions fetched per head
RECHECK_EVERY = 64  # refreshes after which "not a liquidation of ours" verdicts are worked out again


@dataclass(frozen=True)
class Rival:
    tx_hash: str
    sender: str  # lower-case address
    nonce: int
    tip: int  # effective tip per gas at the next block, wei
    max_fee: int  # maxFeePerGas (gasPrice for legacy), wei
    key: PositionKey


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def effective_tip(tx: dict[str, Any], base_fee: int | None) -> tuple[int, int] | None:
    """(effective tip, max fee) per gas of a pending transaction at a block with `base_fee` (None: no
    base fee), or None when it cannot pay that base fee."""
    if tx.get("maxFeePerGas") is not None:
        max_fee = _int(tx["maxFeePerGas"])
        prio = _int(tx.get("maxPriorityFeePerGas") or 0)
        tip = prio if base_fee is None else min(prio, max_fee - base_fee)
    else:
        max_fee = _int(tx.get("gasPrice") or 0)
        tip = max_fee if base_fee is None else max_fee - base_fee
    return None if tip < 0 else (tip, max_fee)


class RivalWatch:
    def __init__(
        self,
        rpc: RpcClient,
        keeper_address: str,
        adapters: Sequence[Adapter],
        log: Any,
        *,
        method: Method = "auto",
        max_fetch: int = MAX_FETCH,
    ) -> None:
        if method not in ("auto", "txpool", "filter"):
            raise ValueError(f"unknown mempool method {method!r}")
        self.rpc = rpc
        self.keeper = keeper_address.lower()
        self.adapters = list(adapters)
        self.log = log
        self.method: Method = method
        self.max_fetch = max_fetch
        self.mode: str = "filter" if method == "filter" else "txpool"  # "txpool" | "filter" | "off"
        self._filter_id: str | None = None
        self._tracked: dict[str, dict[str, Any]] = {}  # filter mode: hash → pending rival transaction
        self._rivals: dict[PositionKey, Rival] = {}
        self._matched: set[str] = set()  # hashes of the last refresh's liquidations of our positions
        # tx hash → position its call targets (None: not ours). A pending transaction's `to` and input never
        # change, so each is matched once: asking the adapters costs ~20 µs a transaction (a checksum),
        # 200 ms for a 10k pool. Negative verdicts are dropped every RECHECK_EVERY refreshes and on
        # invalidate() (an adapter that gained a market may now recognise them).
        self._memo: dict[str, PositionKey | None] = {}
        self._refreshes = 0
        # Optional prefilter: when every adapter names its liquidation selectors (`liquidation_selectors`,
        # 4-byte values), other calls are skipped on a string compare.
        selectors: set[str] | None = set()
        for a in self.adapters:
            sels = getattr(a, "liquidation_selectors", None)
            if sels is None or selectors is None:
                selectors = None
            else:
                selectors.update("0x" + bytes(x).hex() for x in sels)
        self._selectors = frozenset(selectors) if selectors is not None else None
        self._failing = False
        self.seen = 0  # pending transactions looked at in the last refresh
        self.head: int | None = None  # block number of the last successful refresh

    @property
    def available(self) -> bool:
        return self.mode != "off"

    def rival(self, key: PositionKey) -> Rival | None:
        """The other sender's pending liquidation of `key` with the highest effective tip, if any."""
        return self._rivals.get(key)

    def rivals(self) -> dict[PositionKey, Rival]:
        return dict(self._rivals)

    def invalidate(self) -> None:
        """Forget every "not ours" verdict (call when an adapter gains a market)."""
        self._memo = {h: k for h, k in self._memo.items() if k is not None}

    async def refresh(self, head: Block) -> None:
        """Read the pending transactions once for this head (one call in txpool mode, two round trips in
        filter mode). Never raises for node trouble: see the module docstring."""
        base = None if head.base_fee is None else next_base_fee(head.base_fee, head.gas_used, head.gas_limit)
        try:
            if self.mode == "txpool":
                await self._refresh_txpool(base)
            if self.mode == "filter":
                await self._refresh_filter(base)
        except (RpcError, RpcUnavailable, TransportError, TimeoutError) as exc:  # keep the last snapshot
            self._transient(exc)
            return
        if self.mode != "off":
            self.head = head.number
            if self._failing:
                self._failing = False
                self.log.info("mempool_watch_recovered", mode=self.mode, block=head.number)

    def _transient(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            self.log.warning("mempool_watch_failed", mode=self.mode, error=f"{type(exc).__name__}: {exc}")

    def _disable(self, why: str) -> None:
        self.mode = "off"
        self._rivals = {}
        self._tracked = {}
        self.log.warning("mempool_watch_unavailable", method=self.method, reason=why, note="rival bids are not watched")

    async def _refresh_txpool(self, base: int | None) -> None:
        try:
            content = await self.rpc.request("txpool_content")
        except RpcError as exc:
            if self.method == "txpool":
                self._disable(f"txpool_content refused: {exc}")
            else:
                self.mode = "filter"
                self.log.info("mempool_watch_fallback", mode="filter", reason=f"txpool_content refused: {exc}")
            return
        pending = (content or {}).get("pending") or {}
        txs = (tx for by_nonce in pending.values() for tx in by_nonce.values())
        self._rivals = self._match(txs, base)

    async def _new_filter(self) -> bool:
        try:
            self._filter_id = await self.rpc.request("eth_newPendingTransactionFilter")
        except RpcError as exc:
            self._disable(f"eth_newPendingTransactionFilter refused: {exc}")
            return False
        return True

    async def _refresh_filter(self, base: int | None) -> None:
        changes: list[Any] = []
        if self._filter_id is None:
            if not await self._new_filter():
                return
            # the filter reports what arrives from now on; tracked rivals are still looked up below
        else:
            try:
                changes = await self.rpc.request("eth_getFilterChanges", [self._filter_id]) or []
            except RpcError as exc:  # expired or unknown filter: a new one (what arrived meanwhile is missed)
                self.log.info("mempool_filter_renewed", error=str(exc))
                self._filter_id = None
                if not await self._new_filter():
                    return
        fresh = [h for h in changes if isinstance(h, str) and h not in self._tracked]
        if len(fresh) > self.max_fetch:
            self.log.warning("mempool_watch_truncated", new=len(fresh), fetched=self.max_fetch)
            fresh = fresh[-self.max_fetch :]
        hashes = [*self._tracked, *fresh]
        answers = await self.rpc.batch([("eth_getTransactionByHash", [h]) for h in hashes]) if hashes else []
        pending: list[dict[str, Any]] = []
        for tx in answers:
            if isinstance(tx, dict) and tx.get("blockNumber") is None:  # None: mined, replaced or dropped
                pending.append(tx)
        self._rivals = self._match(pending, base)
        # every pending liquidation of ours is followed until mined or replaced, even one that cannot
        # pay the next base fee yet: the filter reports each hash only once
        self._tracked = {tx["hash"]: tx for tx in pending if tx.get("hash") in self._matched}

    def _match(self, txs: Iterable[dict[str, Any]], base: int | None) -> dict[PositionKey, Rival]:
        """Per position, the highest-tip pending liquidation by another sender (one per sender and nonce:
        the node keeps only the latest)."""
        best: dict[PositionKey, Rival] = {}
        matched: set[str] = set()
        self._refreshes += 1
        old = self._memo
        if self._refreshes % RECHECK_EVERY == 0:
            old = {h: k for h, k in old.items() if k is not None}
        memo: dict[str, PositionKey | None] = {}  # only this refresh's hashes: bounded by the pool
        selectors = self._selectors
        seen = 0
        for tx in txs:
            seen += 1
            to = tx.get("to")
            data = tx.get("input") or tx.get("data")
            if not to or not isinstance(data, str) or len(data) < 10:
                continue
            if selectors is not None and data[:10].lower() not in selectors:
                continue
            sender = str(tx.get("from", "")).lower()
            if sender == self.keeper:
                continue
            tx_hash = tx.get("hash")
            if not isinstance(tx_hash, str):
                continue  # every node names its pending transactions; an unnamed one cannot be outbid anyway
            key = old[tx_hash] if tx_hash in old else self._position(to, data)
            memo[tx_hash] = key
            if key is None:
                continue
            matched.add(tx_hash)
            try:
                fee = effective_tip(tx, base)
                nonce = _int(tx.get("nonce", 0))
            except (TypeError, ValueError):  # malformed fields from the node: not a rival we can price
                continue
            if fee is None:
                continue
            r = Rival(tx_hash, sender, nonce, fee[0], fee[1], key)
            cur = best.get(key)
            if cur is None or r.tip > cur.tip:
                best[key] = r
        self.seen = seen
        self._matched = matched
        self._memo = memo
        return best

    def _position(self, to: str, data: str) -> PositionKey | None:
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            return None
        for a in self.adapters:
            key = a.position_for_call(to, raw)
            if key is not None:
                return key
        return None
