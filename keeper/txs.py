"""Sending transactions safely: local nonces, journal before send, receipts, replacement of
stuck transactions with bumped fees, cancellation, and reconciliation after a restart.

Invariants:
- A nonce is only reused after the node definitively rejected the transaction that held it
  (`_REJECTIONS`), or when the transaction never left the process (a failure between allocating the
  nonce and broadcasting: signing, journal write, interruption). Any other error while sending leaves
  the outcome unknown: the transaction is tracked as sent and its receipts settle it.
- A position (PositionKey) has at most one transaction in flight; the engine checks `busy(key)`.
- Every transaction is journalled (status 'intent') before it is signed, and every signed attempt
  (first send, replacement, cancellation: its call, gas and fees) before it is broadcast. A restart
  reconciles every open journal row by receipt and nonce, and never sends a second transaction for a
  row that is pending or mined; it resumes a cancellation as a cancellation, with the row's type.
- A stuck transaction is only replaced when `review` (the execution policy) approves the bumped fees
  after a fresh simulation; on any doubt nothing is sent. A cancellation in progress continues.
- 'dropped' (the nonce was consumed by a transaction that is none of ours) is concluded only when no
  configured endpoint has a receipt for any of the row's hashes.
- Private submission (`tx.private_rpc_urls`): every raw transaction (send, replacement, cancellation,
  re-offer, rebroadcast at startup) goes to all private endpoints at once and to no public endpoint,
  unless `tx.private_fallback` and no private endpoint answered. Accepted if any endpoint accepted (or
  knew it); rejected only if every endpoint that answered refused it definitively; other mixes are
  outcome unknown (tracked as sent). When every endpoint refused the connection the bytes never left:
  the send fails with SendUnreachable and its nonce is released. Receipts and nonces stay on the public RPC.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from eth_utils import keccak

from keeper.config import TxConfig
from keeper.gas import FeePolicy, FeeQuote
from keeper.keys import Signer
from keeper.rpc import RpcClient, RpcError, RpcUnavailable, TransportError, redact_url
from keeper.store import Store, TxRow
from keeper.types import Block, Plan, PositionKey

CANCEL_GAS = 21_000
# A nonce consumed with no receipt on the endpoints that answer, while some endpoint does not answer:
# after this many blocks the row is journalled dropped anyway (a dead backup endpoint must not keep a
# position busy forever). Deeper than any reorg the keeper tracks.
DROP_UNVERIFIED_AFTER_BLOCKS = 256

# Node answers that mean "this raw transaction will never be mined as sent" (definitive rejections).
_REJECTIONS = (
    "nonce too low",
    "nonce too high",
    "insufficient funds",
    "intrinsic gas too low",
    "exceeds block gas limit",
    "fee cap less than block base fee",
    "max fee per gas less than block base fee",
    "max priority fee per gas higher than max fee per gas",
    "underpriced",
    "invalid sender",
    "gas limit reached",
    "exceeds the configured cap",
    "transaction type not supported",
    "oversized data",
)
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")


def definitive_rejection(message: str) -> bool:
    """Does this node answer to eth_sendRawTransaction mean the transaction will never be mined?"""
    msg = message.lower()
    return any(k in msg for k in _REJECTIONS)


def already_known(message: str) -> bool:
    """Does this node answer mean it already holds the transaction (as good as accepted)?"""
    msg = message.lower()
    return any(k in msg for k in _ALREADY_KNOWN)


Route = Literal["private", "public"]


@dataclass
class PendingTx:
    tx_id: int
    plan: Plan
    nonce: int
    fees: FeeQuote
    gas_limit: int
    sent_block: int
    hashes: list[str] = field(default_factory=list)
    raw: bytes = b""
    replacements: int = 0
    cancelling: bool = False
    first_block: int = 0  # block of the first send (for health: how long this nonce has been pending)
    consumed_since: int | None = None  # head at which the nonce was first seen consumed without a receipt

    def __post_init__(self) -> None:
        self.first_block = self.first_block or self.sent_block

    @property
    def key(self) -> PositionKey:
        return self.plan.key

    @property
    def tx_type(self) -> str:
        return "legacy" if self.fees.legacy else "eip1559"


@dataclass
class Finished:
    pending: PendingTx
    status: str  # "mined" | "reverted" | "cancelled" | "dropped"
    receipt: dict[str, Any] | None
    tx_hash: str | None


@dataclass(frozen=True)
class Review:
    """The execution policy's answer for a stuck transaction at bumped fees."""

    action: Literal["replace", "cancel", "keep"]
    gas_limit: int = 0  # for "replace": the new gas limit (≥ estimate × multiplier + extra)
    reason: str = ""


# (stuck transaction, bumped fees) → decision. Any exception counts as "keep".
ReviewFn = Callable[[PendingTx, FeeQuote], Awaitable[Review]]


class SendRejected(Exception):
    """The node refused the transaction; its nonce was released."""


class SendAborted(SendRejected):
    """The transaction never left the process (signing or journal failure); its nonce was released."""


class SendUnreachable(SendRejected):
    """No private endpoint could be connected to (and no public fallback): the bytes never left the
    process; its nonce was released."""


class BroadcastUnreachable(TransportError):
    """No private endpoint answered and the public fallback is off. `unsent`: every endpoint refused the
    connection, so the transaction never left; otherwise its outcome is unknown (one may hold it)."""


class NonceManager:
    """Next nonce to use; released (never-accepted) nonces are reused first, lowest first."""

    def __init__(self, rpc: RpcClient, address: str) -> None:
        self.rpc = rpc
        self.address = address
        self.next: int = 0
        self.released: set[int] = set()

    async def sync(self, in_flight: list[int]) -> None:
        pending = await self.rpc.nonce(self.address, "pending")
        self.next = max([pending, *[n + 1 for n in in_flight]])
        self.released = {n for n in self.released if n < self.next and n not in in_flight and n >= pending}

    def allocate(self) -> int:
        if self.released:
            n = min(self.released)
            self.released.discard(n)
            return n
        n = self.next
        self.next += 1
        return n

    def release(self, nonce: int) -> None:
        if nonce >= self.next:
            return
        self.released.add(nonce)
        while self.next - 1 in self.released:  # the top of the range is free again: shrink it
            self.next -= 1
            self.released.discard(self.next)


def _plan_from_row(row: TxRow) -> Plan:
    return Plan(
        key=PositionKey(row.protocol, row.market, row.account),
        to=row.to_addr,
        data=bytes.fromhex(row.data[2:]) if row.data.startswith("0x") else bytes.fromhex(row.data),
        kind=row.kind,
        expected_reward=row.expected_reward,
        value=row.value,
        step=row.step,
    )


def _pending_from_row(row: TxRow, sent_block: int) -> PendingTx:
    """A journalled transaction back under follow-up (after a restart or a reorg), with its type,
    its replacement count and its cancel state."""
    fees = FeeQuote(row.max_fee, row.max_priority, row.max_fee, 0, legacy=row.legacy)
    p = PendingTx(row.id, _plan_from_row(row), row.nonce, fees, row.gas_limit, sent_block, list(row.hashes))
    p.raw = bytes.fromhex(row.raw_tx[2:]) if row.raw_tx else b""
    p.replacements = row.replacements
    p.cancelling = row.cancelling
    return p


def _room_to_replace(old: FeeQuote, new: FeeQuote) -> bool:
    """Nodes accept a replacement only with both fee fields up by ≥ 10 % (gasPrice alone when legacy)."""
    if new.max_fee_per_gas * 10 < old.max_fee_per_gas * 11:
        return False
    return old.legacy or new.max_priority_fee_per_gas * 10 >= old.max_priority_fee_per_gas * 11


class TxManager:
    def __init__(
        self,
        rpc: RpcClient,
        signer: Signer,
        store: Store,
        fees: FeePolicy,
        cfg: TxConfig,
        chain_id: int,
        log: Any,
        private_rpc: RpcClient | None = None,
    ) -> None:
        """`private_rpc`: the client for `cfg.private_rpc_urls` (built here when not given and the list is
        set; `close()` closes the one built here). Inclusion tracking always uses `rpc`."""
        self.rpc = rpc
        self.signer = signer
        self.store = store
        self.fee_policy = fees
        self.cfg = cfg
        self.chain_id = chain_id
        self.log = log
        self.nonces = NonceManager(rpc, signer.address)
        self.pending: dict[int, PendingTx] = {}  # tx_id → pending
        self._own_private = private_rpc is None and bool(cfg.private_rpc_urls)
        if private_rpc is None and cfg.private_rpc_urls:
            private_rpc = RpcClient(list(cfg.private_rpc_urls), timeout=rpc.timeout, max_retries=0)
        self.private: RpcClient | None = private_rpc
        # Where the last broadcast went, and when (time.monotonic()) the last send, replacement or
        # cancellation was accepted: the pipeline's head-to-broadcast latency reads it.
        self.last_route: Route = "private" if private_rpc is not None else "public"
        self.last_broadcast_at: float = 0.0
        # Gas limit of a cancellation (a self-transfer with no data): 21,000, plus on Arbitrum the L1 gas
        # such a transaction is charged as L2 gas, read when a cancellation is made (keeper/l2.py).
        self.cancel_gas_source: Callable[[], Awaitable[int]] | None = None

    async def cancel_gas(self) -> int:
        """The gas limit of a cancellation now: CANCEL_GAS, or what `cancel_gas_source` says (never less)."""
        if self.cancel_gas_source is None:
            return CANCEL_GAS
        try:
            return max(CANCEL_GAS, await self.cancel_gas_source())
        except Exception as exc:  # noqa: BLE001 - a cancellation is still tried with the plain limit
            self.log.warning("cancel_gas_unavailable", error=f"{type(exc).__name__}: {exc}", gas_limit=CANCEL_GAS)
            return CANCEL_GAS

    async def close(self) -> None:
        """Close the private endpoints' client if this manager built it (the public one is the caller's)."""
        if self.private is not None and self._own_private:
            await self.private.close()

    # ---- queries for the engine ------------------------------------------------------------
    def busy(self, key: PositionKey) -> bool:
        return any(p.key == key for p in self.pending.values())

    def step_in_flight(self, step: str) -> bool:
        """Is a transaction of this set-up step (Plan.step, e.g. an approval of one spender) still pending?
        A step is never sent twice while one is in flight."""
        return bool(step) and any(p.plan.step == step for p in self.pending.values())

    def in_flight_per_market(self) -> Counter[tuple[str, str]]:
        return Counter((p.key.protocol, p.key.market) for p in self.pending.values())

    def pending_count(self) -> int:
        return len(self.pending)

    def pending_txs(self) -> list[PendingTx]:
        return list(self.pending.values())

    async def resend_now(self, p: PendingTx, head: Block, fees: FeeQuote, *, cancel: bool, gas_limit: int, reason: str) -> bool:
        """Replace (same call) or cancel (self-transfer) a pending transaction at its nonce now, with fees
        the caller chose (an outbid, keeper/execution.py): only when both fee fields rise ≥ 10 % (the
        node's replacement rule). The caller has re-simulated it. False when there is no room."""
        if p.tx_id not in self.pending or not _room_to_replace(p.fees, fees):
            return False
        await self._resend(p, head, fees, cancel=cancel, gas_limit=gas_limit, reason=reason)
        return True

    # ---- start-up reconciliation -------------------------------------------------------------
    async def start(self, head: Block) -> list[Finished]:
        """Reconcile the journal with the chain; returns transactions that finished while we were down.
        Rebroadcasts the signed bytes of what is still pending: only the signing daemon builds this."""
        finished: list[Finished] = []
        latest_nonce = await self.rpc.nonce(self.signer.address, "latest")
        for row in self.store.open_txs():
            if row.status == "intent":  # never signed, so never sent: the nonce was not used by us
                self.store.tx_final(row.id, "failed", reason="not sent before shutdown")
                self.log.info("journal_reconciled", tx_id=row.id, nonce=row.nonce, status="failed", reason="never signed")
                continue
            p = _pending_from_row(row, row.sent_block or row.created_block)
            done = await self._check(p, latest_nonce, head.number)
            if done is not None:
                finished.append(done)
                self.log.info("journal_reconciled", tx_id=row.id, nonce=row.nonce, status=done.status, tx=done.tx_hash)
                continue
            # Still pending (or lost by the node): keep tracking it; rebroadcast the signed bytes.
            self.pending[row.id] = p
            if row.status == "signed":
                self.store.tx_sent(row.id, head.number)
            if p.raw:
                try:
                    await self._broadcast(p.raw, quiet=True)
                except BroadcastUnreachable as exc:  # followed anyway; re-offered when it is stuck
                    self.log.warning("rebroadcast_failed", tx_id=row.id, nonce=row.nonce, error=str(exc))
            self.log.info(
                "journal_reconciled",
                tx_id=row.id,
                nonce=row.nonce,
                status="pending",
                tx=p.hashes[-1:] or None,
                tx_type=p.tx_type,
                cancelling=p.cancelling,
            )
        await self.nonces.sync([p.nonce for p in self.pending.values()])
        return finished

    def unsettle_after(self, block: int) -> list[TxRow]:
        """A reorg dropped blocks after `block`: transactions mined there are pending again. They keep
        their nonces and count as stuck at once, so the next poll re-simulates each one and replaces it
        (same nonce, bumped fees) or cancels it — never a blind rebroadcast. Returns them."""
        return self._reopen(self.store.mined_after(block), block)

    def _reopen(self, rows: list[TxRow], block: int) -> list[TxRow]:
        """Journal rows back to pending, counted as stuck since `block` (re-simulated on the next poll)."""
        for row in rows:
            self.store.reopen_tx(row.id)
            self.pending[row.id] = _pending_from_row(row, block - self.cfg.replace_after_blocks)
        return rows

    async def unsettle_missing(self, since_block: int) -> list[TxRow]:
        """History was replaced deeper than the blocks we track: every transaction the journal has
        mined after `since_block` whose receipt the node no longer has is pending again (kept nonce,
        re-simulated before any replacement, as after a reorg). One batched receipt read."""
        rows = self.store.mined_after(since_block)
        if not rows:
            return []
        receipts = await self.rpc.batch([("eth_getTransactionReceipt", [r.tx_hash]) for r in rows])
        failed = next((rc for rc in receipts if isinstance(rc, RpcError)), None)
        if failed is not None:
            raise failed  # unknown is not "gone": the caller retries on the next block
        return self._reopen([r for r, rc in zip(rows, receipts, strict=True) if rc is None], since_block)

    # ---- sending ---------------------------------------------------------------------------------
    def _tx_dict(self, to: str, data: bytes, value: int, nonce: int, gas: int, fees: FeeQuote) -> dict[str, Any]:
        tx: dict[str, Any] = {"chainId": self.chain_id, "nonce": nonce, "to": to, "value": value, "data": data, "gas": gas}
        if fees.legacy:
            tx["gasPrice"] = fees.max_fee_per_gas
        else:
            tx["type"] = 2
            tx["maxFeePerGas"] = fees.max_fee_per_gas
            tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
        return tx

    async def _broadcast(self, raw: bytes, quiet: bool = False) -> str | None:
        """Send raw bytes (to the private endpoints when configured, else the public RPC). Returns None on
        success/already-known, else the node's error message. Transport failures propagate (outcome
        unknown: the caller keeps the tx as sent); BroadcastUnreachable when no private endpoint answered
        (`.unsent`: none was even connected to). Sets `last_route`, and `last_broadcast_at` when a
        non-quiet broadcast (send, replacement, cancellation) was accepted."""
        if self.private is None:
            self.last_route = "public"
            refused = await self._broadcast_public(raw, quiet)
        else:
            refused = await self._broadcast_private(raw, quiet, self.private)
        if refused is None and not quiet:
            self.last_broadcast_at = time.monotonic()
        return refused

    async def _broadcast_public(self, raw: bytes, quiet: bool) -> str | None:
        try:
            await self.rpc.send_raw(raw)
            return None
        except RpcError as exc:
            if already_known(exc.message):
                return None
            if quiet:
                self.log.debug("rebroadcast_refused", error=exc.message)
            return exc.message

    async def _broadcast_private(self, raw: bytes, quiet: bool, private: RpcClient) -> str | None:
        """All private endpoints at once. Any acceptance wins; an answer that is no known rejection makes
        the outcome unknown (returned, tracked as sent); definitive rejections from every endpoint that
        answered are a rejection; no answer at all: the public fallback, or BroadcastUnreachable."""
        self.last_route = "private"
        urls = [ep.url for ep in private.endpoints]
        answers = await asyncio.gather(
            *(private.send_raw_on(u, raw, self.cfg.private_method) for u in urls), return_exceptions=True
        )
        accepted = False
        refusals: list[str] = []
        unknown: list[str] = []
        failures: list[tuple[str, str, bool]] = []  # (redacted url, error, unsent)
        for u, a in zip(urls, answers, strict=True):
            if isinstance(a, RpcError):
                if already_known(a.message):
                    accepted = True
                elif definitive_rejection(a.message):
                    refusals.append(a.message)
                else:
                    unknown.append(a.message)
            elif isinstance(a, TransportError):
                failures.append((redact_url(u), a.detail, a.unsent))
            elif isinstance(a, Exception):
                failures.append((redact_url(u), f"{type(a).__name__}: {a}", False))
            elif isinstance(a, BaseException):
                raise a
            else:
                accepted = True
        for endpoint, error, unsent in failures:
            self.log.warning("private_endpoint_failed", endpoint=endpoint, error=error, unsent=unsent)
        if accepted:
            return None
        if unknown:
            return unknown[0]
        if refusals:
            if quiet:
                self.log.debug("rebroadcast_refused", error=refusals[0], route="private")
            return refusals[0]
        if self.cfg.private_fallback:
            self.log.warning(
                "private_fallback_public", endpoints=len(failures), note="no private endpoint answered; sent publicly"
            )
            self.last_route = "public"
            return await self._broadcast_public(raw, quiet)
        unsent = all(f[2] for f in failures)
        detail = "; ".join(f"{e}: {err}" for e, err, _ in failures)
        raise BroadcastUnreachable("private endpoints", f"no private endpoint answered ({detail})", unsent=unsent)

    async def _resync(self) -> None:
        try:
            await self.nonces.sync([q.nonce for q in self.pending.values()])
        except (RpcError, TransportError, RpcUnavailable) as exc:
            self.log.warning("nonce_resync_failed", error=str(exc))

    def _abandon(self, nonce: int, tx_id: int | None, reason: str) -> None:
        """A transaction that never left the process: its nonce is free again, its row failed."""
        self.nonces.release(nonce)
        if tx_id is not None:
            try:
                self.store.tx_final(tx_id, "failed", reason=reason[:300])
            except Exception as exc:  # noqa: BLE001 - the journal is what failed; a restart fails 'intent' rows
                self.log.error("journal_write_failed", tx_id=tx_id, error=f"{type(exc).__name__}: {exc}")
        self.log.error("send_aborted", nonce=nonce, tx_id=tx_id, reason=reason, note="never broadcast; nonce released")

    async def submit(self, plan: Plan, gas_limit: int, fees: FeeQuote, expected_cost: int, head: Block) -> PendingTx:
        """Journal, sign, send. Raises SendRejected (nonce released) if the node definitively refuses it,
        SendAborted (nonce released) if it could not be signed or journalled."""
        nonce = self.nonces.allocate()
        tx_type = "legacy" if fees.legacy else "eip1559"
        tx_id: int | None = None
        try:
            tx_id = self.store.tx_intent(
                protocol=plan.key.protocol,
                market=plan.key.market,
                account=plan.key.account,
                kind=plan.kind,
                nonce=nonce,
                to=plan.to,
                data="0x" + plan.data.hex(),
                value=plan.value,
                gas_limit=gas_limit,
                max_fee=fees.max_fee_per_gas,
                max_priority=fees.max_priority_fee_per_gas,
                expected_reward=plan.expected_reward,
                expected_cost=expected_cost,
                block=head.number,
                tx_type=tx_type,
                step=plan.step,
            )
            raw, tx_hash = self.signer.sign(self._tx_dict(plan.to, plan.data, plan.value, nonce, gas_limit, fees))
            attempt_id = self.store.attempt_signed(
                tx_id,
                action="send",
                tx_hash=tx_hash,
                raw="0x" + raw.hex(),
                tx_type=tx_type,
                nonce=nonce,
                to=plan.to,
                data="0x" + plan.data.hex(),
                value=plan.value,
                gas_limit=gas_limit,
                max_fee=fees.max_fee_per_gas,
                max_priority=fees.max_priority_fee_per_gas,
                block=head.number,
            )
        except Exception as exc:
            self._abandon(nonce, tx_id, f"{type(exc).__name__}: {exc}")
            raise SendAborted(f"not sent: {type(exc).__name__}: {exc}") from exc
        except BaseException:  # interrupted (shutdown): nothing was broadcast either
            self._abandon(nonce, tx_id, "interrupted before broadcast")
            raise
        p = PendingTx(tx_id, plan, nonce, fees, gas_limit, head.number, [tx_hash], raw)
        try:
            rejected = await self._broadcast(raw)
        except BroadcastUnreachable as exc:
            if exc.unsent:  # no private endpoint could be connected to: the bytes never left
                self.nonces.release(nonce)
                try:
                    self.store.attempt_refused(attempt_id, str(exc)[:300])
                    self.store.tx_final(tx_id, "failed", reason=str(exc)[:300])
                except Exception as jexc:  # noqa: BLE001 - a restart settles the row by receipt and nonce
                    self.log.error("journal_write_failed", tx_id=tx_id, tx=tx_hash, error=f"{type(jexc).__name__}: {jexc}")
                self.log.error("send_unreachable", tx=tx_hash, nonce=nonce, error=str(exc), note="never sent; nonce released")
                raise SendUnreachable(str(exc)) from None
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=nonce, error=str(exc), route="private")
            rejected = None
        except (TransportError, RpcUnavailable) as exc:
            # Unknown whether the node got it: track it as sent; receipts/replacement settle it.
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=nonce, error=str(exc))
            rejected = None
        except Exception as exc:  # noqa: BLE001 - bytes may have left: unknown, never a released nonce
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=nonce, error=f"{type(exc).__name__}: {exc}")
            rejected = None
        except BaseException:  # interrupted mid-broadcast: the journal holds it as signed; keep following it
            self.pending[tx_id] = p
            raise
        if rejected is not None and definitive_rejection(rejected):
            self.nonces.release(nonce)
            try:
                self.store.attempt_refused(attempt_id, rejected)
                self.store.tx_final(tx_id, "failed", reason=rejected[:300])
            except Exception as exc:  # noqa: BLE001 - a restart settles the row by receipt and nonce
                self.log.error("journal_write_failed", tx_id=tx_id, tx=tx_hash, error=f"{type(exc).__name__}: {exc}")
            await self._resync()  # e.g. "nonce too low": another sender used it; the node knows the next one
            raise SendRejected(rejected)
        if rejected is not None:
            # An error that is not a known rejection: the node may hold it. Tracked, nonce kept.
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=nonce, error=rejected)
        self.pending[tx_id] = p
        try:
            self.store.attempt_sent(attempt_id, head.number)
        except Exception as exc:  # noqa: BLE001 - the row stays 'signed': a restart treats it as pending
            self.log.error("journal_write_failed", tx_id=tx_id, tx=tx_hash, error=f"{type(exc).__name__}: {exc}")
        return p

    # ---- per-block follow-up ---------------------------------------------------------------------
    def _settled(self, p: PendingTx, h: str, r: dict[str, Any]) -> Finished:
        ok = int(r["status"], 16) == 1
        is_cancel = (r.get("to") or "").lower() == self.signer.address.lower()
        status = "cancelled" if is_cancel and ok else ("mined" if ok else "reverted")
        self.store.tx_final(
            p.tx_id,
            status,
            tx_hash=h,
            block=int(r["blockNumber"], 16),
            gas_used=int(r["gasUsed"], 16),
            effective_gas_price=int(r.get("effectiveGasPrice", "0x0"), 16),
            kind="cancel" if is_cancel else None,
        )
        return Finished(p, status, r, h)

    async def _receipt_anywhere(self, hashes: list[str]) -> tuple[tuple[str, dict[str, Any]] | None, list[str]]:
        """Ask every configured endpoint for every hash's receipt: (a mined (hash, receipt) if any endpoint
        has one, the endpoints that did not answer)."""
        urls = [ep.url for ep in self.rpc.endpoints]
        calls = [(u, h) for u in urls for h in hashes]
        answers = await asyncio.gather(
            *(self.rpc.request_on(u, "eth_getTransactionReceipt", [h]) for u, h in calls), return_exceptions=True
        )
        silent: list[str] = []
        for (u, h), a in zip(calls, answers, strict=True):
            if isinstance(a, dict) and a.get("blockNumber"):
                return (h, a), []
            if isinstance(a, BaseException) and u not in silent:
                silent.append(u)
        return None, silent

    async def _check(self, p: PendingTx, latest_nonce: int, head_number: int) -> Finished | None:
        """Receipt lookup for every hash the row ever had; finalises the journal row if settled."""
        receipts = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in p.hashes])
        for h, r in zip(p.hashes, receipts, strict=True):
            if isinstance(r, dict) and r.get("blockNumber"):
                return self._settled(p, h, r)
        if latest_nonce <= p.nonce:
            p.consumed_since = None
            return None
        # The nonce was consumed, and this endpoint has no receipt for any of our hashes. After a
        # failover (or on a lagging endpoint) that is not proof: ask every endpoint before concluding.
        found, silent = await self._receipt_anywhere(p.hashes)
        if found is not None:
            return self._settled(p, *found)
        reason = "nonce consumed by another transaction (no endpoint has a receipt for any of its hashes)"
        if silent:
            first = p.consumed_since is None
            if p.consumed_since is None:
                p.consumed_since = head_number
            waited = head_number - p.consumed_since
            if waited < DROP_UNVERIFIED_AFTER_BLOCKS:
                if first:  # once per row, not once per block
                    self.log.warning(
                        "drop_check_incomplete",
                        tx_id=p.tx_id,
                        nonce=p.nonce,
                        tx=p.hashes[-1] if p.hashes else None,
                        unanswered=len(silent),
                        note="nonce consumed; not every endpoint answered for its receipts",
                    )
                return None
            reason = f"nonce consumed by another transaction ({len(silent)} endpoint(s) unanswered for {waited} blocks)"
        self.store.tx_final(p.tx_id, "dropped", reason=reason)
        return Finished(p, "dropped", None, None)

    async def poll(self, head: Block, review: ReviewFn) -> list[Finished]:
        """Settle mined transactions; replace or cancel stuck ones.

        review(p, bumped) → Review: asked for a stuck transaction at its bumped fees (a fresh
        simulation and the profit decision at those fees). "replace" re-signs the same call at the
        same nonce with the bumped fees and the given gas limit; "cancel" sends a self-transfer at that
        nonce; "keep" (or any exception) sends nothing. A cancellation in progress is bumped without
        asking.
        """
        if not self.pending:
            return []
        latest_nonce = await self.rpc.nonce(self.signer.address, "latest")
        finished: list[Finished] = []
        for tx_id, p in list(self.pending.items()):
            done = await self._check(p, latest_nonce, head.number)
            if done is not None:
                finished.append(done)
                del self.pending[tx_id]
                continue
            if head.number - p.sent_block >= self.cfg.replace_after_blocks:
                await self._unstick(p, head, review)
        return finished

    def _fields(self, p: PendingTx) -> dict[str, Any]:
        return {
            "protocol": p.key.protocol,
            "market": p.key.market,
            "account": p.key.account,
            "tx": p.hashes[-1] if p.hashes else None,
            "nonce": p.nonce,
        }

    async def _unstick(self, p: PendingTx, head: Block, review: ReviewFn) -> None:
        bumped = self.fee_policy.bump(p.fees, self.cfg.fee_bump)
        if not _room_to_replace(p.fees, bumped):
            self.log.warning(
                "replacement_capped",
                **self._fields(p),
                max_fee=p.fees.max_fee_per_gas,
                cap=self.fee_policy.cap_fee,
                note="fee caps leave no room for the +10 % replacement",
            )
            p.sent_block = head.number
            await self._reoffer(p)
            return
        if p.cancelling:  # the nonce must be freed: keep cancelling, no review
            await self._resend(p, head, bumped, cancel=True, gas_limit=await self.cancel_gas())
            return
        try:
            verdict = await review(p, bumped)
            if not isinstance(verdict, Review):
                raise TypeError(f"review returned {type(verdict).__name__}, not Review")
        except Exception as exc:  # noqa: BLE001 - any doubt: nothing is sent
            self.log.warning("replacement_review_failed", **self._fields(p), error=f"{type(exc).__name__}: {exc}")
            verdict = Review("keep", reason=f"review failed: {type(exc).__name__}")
        if verdict.action == "replace" and p.replacements >= self.cfg.max_replacements:
            verdict = Review(
                "keep", reason=f"max_replacements ({self.cfg.max_replacements}) reached; only a cancellation is sent"
            )
        if verdict.action == "replace" and verdict.gas_limit < CANCEL_GAS:
            verdict = Review("keep", reason=f"invalid gas limit {verdict.gas_limit}")
        if verdict.action == "cancel":
            await self._resend(p, head, bumped, cancel=True, gas_limit=await self.cancel_gas(), reason=verdict.reason)
        elif verdict.action == "replace":
            await self._resend(p, head, bumped, cancel=False, gas_limit=verdict.gas_limit, reason=verdict.reason)
        else:
            self.log.info(
                "replacement_kept",
                **self._fields(p),
                reason=verdict.reason,
                max_fee=p.fees.max_fee_per_gas,
                bumped_max_fee=bumped.max_fee_per_gas,
                replacements=p.replacements,
            )
            p.sent_block = head.number  # asked again after another replace_after_blocks
            await self._reoffer(p)

    async def _reoffer(self, p: PendingTx) -> None:
        """A kept transaction must stay offered: when the node no longer knows it (pools evict what the
        base fee has outgrown), the same signed bytes are offered again — not a new transaction, no new
        fee. Otherwise its nonce would be a gap that holds up every later transaction of the keeper."""
        if not p.raw:
            return
        tx_hash = "0x" + keccak(p.raw).hex()
        try:
            if await self.rpc.request("eth_getTransactionByHash", [tx_hash]) is not None:
                return
            refused = await self._broadcast(p.raw, quiet=True)
        except (RpcError, TransportError, RpcUnavailable) as exc:
            refused = str(exc)
        self.log.info("tx_reoffered", **{**self._fields(p), "tx": tx_hash}, refused=refused, route=self.last_route)

    async def _resend(self, p: PendingTx, head: Block, fees: FeeQuote, *, cancel: bool, gas_limit: int, reason: str = "") -> None:
        """Sign and send a replacement (same call) or a cancellation (self-transfer) at p's nonce."""
        if cancel:
            to, data, value = self.signer.address, b"", 0
        else:
            to, data, value = p.plan.to, p.plan.data, p.plan.value
        tx_type = "legacy" if fees.legacy else "eip1559"
        try:
            raw, tx_hash = self.signer.sign(self._tx_dict(to, data, value, p.nonce, gas_limit, fees))
            attempt_id = self.store.attempt_signed(
                p.tx_id,
                action="cancel" if cancel else "replace",
                tx_hash=tx_hash,
                raw="0x" + raw.hex(),
                tx_type=tx_type,
                nonce=p.nonce,
                to=to,
                data="0x" + data.hex(),
                value=value,
                gas_limit=gas_limit,
                max_fee=fees.max_fee_per_gas,
                max_priority=fees.max_priority_fee_per_gas,
                block=head.number,
            )
        except Exception as exc:  # noqa: BLE001 - nothing left the process; the pending attempt keeps the nonce
            self.log.error("replacement_not_sent", **self._fields(p), error=f"{type(exc).__name__}: {exc}")
            p.sent_block = head.number
            return
        p.hashes.append(tx_hash)
        try:
            rejected = await self._broadcast(raw)
        except BroadcastUnreachable as exc:
            if exc.unsent:  # never left: the previous attempt still holds the nonce; tried again later
                self.store.attempt_refused(attempt_id, str(exc)[:300])
                self.log.warning("replacement_not_sent", **self._fields(p), error=str(exc), route="private")
                p.sent_block = head.number
                return
            rejected = None
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=p.nonce, error=str(exc), route="private")
        except (TransportError, RpcUnavailable) as exc:
            rejected = None
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=p.nonce, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - bytes may have left: follow it as sent
            rejected = None
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=p.nonce, error=f"{type(exc).__name__}: {exc}")
        if rejected is not None and definitive_rejection(rejected):
            # Most likely the original just got mined ("nonce too low"); the next poll settles it.
            self.store.attempt_refused(attempt_id, rejected)
            self.log.info("replacement_refused", **self._fields(p), error=rejected)
            p.sent_block = head.number
            return
        if rejected is not None:
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=p.nonce, error=rejected)
        p.fees, p.gas_limit, p.raw, p.sent_block = fees, gas_limit, raw, head.number
        p.replacements += 1
        p.cancelling = p.cancelling or cancel
        self.store.attempt_sent(attempt_id, head.number)
        self.log.info(
            "tx_cancel_sent" if cancel else "tx_replaced",
            **self._fields(p),
            replacements=p.replacements,
            max_fee=fees.max_fee_per_gas,
            tip=fees.max_priority_fee_per_gas,
            gas_limit=gas_limit,
            reason=reason or None,
            key=str(p.key),
            route=self.last_route,
        )
