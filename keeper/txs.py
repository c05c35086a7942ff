"""Sending transactions safely: local nonces, journal before send, receipts, replacement of
stuck transactions with bumped fees, cancellation, and reconciliation after a restart.

Invariants:
- A nonce is only reused after the node definitively rejected the transaction that held it.
- A position (PositionKey) has at most one transaction in flight; the engine checks `busy(key)`.
- Every transaction is journalled (status 'intent') before it is signed, and 'sent' after the node
  accepted it. A restart reconciles every open journal row by receipt and nonce, and never sends a
  second transaction for a row that is pending or mined.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keeper.config import TxConfig
from keeper.gas import FeePolicy, FeeQuote
from keeper.keys import Signer
from keeper.rpc import RpcClient, RpcError, RpcUnavailable, TransportError
from keeper.store import Store, TxRow
from keeper.types import Block, Plan, PositionKey

CANCEL_GAS = 21_000

# Node answers that mean "this raw transaction will never be mined as sent".
_REJECTIONS = (
    "nonce too low",
    "nonce too high",
    "insufficient funds",
    "intrinsic gas too low",
    "exceeds block gas limit",
    "fee cap less than block base fee",
    "max fee per gas less than block base fee",
    "underpriced",
    "invalid sender",
    "gas limit reached",
)
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")


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

    def __post_init__(self) -> None:
        self.first_block = self.first_block or self.sent_block

    @property
    def key(self) -> PositionKey:
        return self.plan.key


@dataclass
class Finished:
    pending: PendingTx
    status: str  # "mined" | "reverted" | "cancelled" | "dropped"
    receipt: dict | None
    tx_hash: str | None


class SendRejected(Exception):
    """The node refused the transaction; its nonce was released."""


class NonceManager:
    """Next nonce to use; released (never-accepted) nonces are reused first, lowest first."""

    def __init__(self, rpc: RpcClient, address: str):
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
        if nonce == self.next - 1:
            self.next -= 1
        else:
            self.released.add(nonce)


def _plan_from_row(row: TxRow) -> Plan:
    return Plan(
        key=PositionKey(row.protocol, row.market, row.account),
        to=row.to_addr,
        data=bytes.fromhex(row.data[2:]) if row.data.startswith("0x") else bytes.fromhex(row.data),
        kind=row.kind,
        expected_reward=row.expected_reward,
        value=row.value,
    )


def _pending_from_row(row: TxRow, sent_block: int) -> PendingTx:
    """A journalled transaction back under follow-up (after a restart or a reorg)."""
    fees = FeeQuote(row.max_fee, row.max_priority, row.max_fee, 0)
    p = PendingTx(row.id, _plan_from_row(row), row.nonce, fees, row.gas_limit, sent_block, list(row.hashes))
    p.raw = bytes.fromhex(row.raw_tx[2:]) if row.raw_tx else b""
    return p


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
    ):
        self.rpc = rpc
        self.signer = signer
        self.store = store
        self.fee_policy = fees
        self.cfg = cfg
        self.chain_id = chain_id
        self.log = log
        self.nonces = NonceManager(rpc, signer.address)
        self.pending: dict[int, PendingTx] = {}  # tx_id → pending

    # ---- queries for the engine ------------------------------------------------------------
    def busy(self, key: PositionKey) -> bool:
        return any(p.key == key for p in self.pending.values())

    def same_call_in_flight(self, plan: Plan) -> bool:
        """Is a transaction to the same contract, with the same selector and first argument (e.g. an
        approval of the same spender), still pending? A prerequisite is never sent twice: a second
        approval would only overwrite the first one's amount."""
        head = plan.data[:36]
        return any(p.plan.to.lower() == plan.to.lower() and p.plan.data[:36] == head for p in self.pending.values())

    def in_flight_per_market(self) -> Counter:
        return Counter((p.key.protocol, p.key.market) for p in self.pending.values())

    def pending_count(self) -> int:
        return len(self.pending)

    # ---- start-up reconciliation -------------------------------------------------------------
    async def start(self, head: Block) -> list[Finished]:
        """Reconcile the journal with the chain; returns transactions that finished while we were down."""
        finished: list[Finished] = []
        latest_nonce = await self.rpc.nonce(self.signer.address, "latest")
        for row in self.store.open_txs():
            if row.status == "intent":  # never signed, so never sent: the nonce was not used by us
                self.store.tx_final(row.id, "failed", reason="not sent before shutdown")
                self.log.info("journal_reconciled", tx_id=row.id, nonce=row.nonce, status="failed", reason="never signed")
                continue
            p = _pending_from_row(row, row.sent_block or row.created_block)
            done = await self._check(p, latest_nonce)
            if done is not None:
                finished.append(done)
                self.log.info("journal_reconciled", tx_id=row.id, nonce=row.nonce, status=done.status, tx=done.tx_hash)
                continue
            # Still pending (or lost by the node): keep tracking it; rebroadcast the signed bytes.
            self.pending[row.id] = p
            if row.status == "signed":
                self.store.tx_sent(row.id, head.number)
            if p.raw:
                await self._broadcast(p.raw, quiet=True)
            self.log.info("journal_reconciled", tx_id=row.id, nonce=row.nonce, status="pending", tx=p.hashes[-1:] or None)
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
    def _tx_dict(self, to: str, data: bytes, value: int, nonce: int, gas: int, fees: FeeQuote) -> dict:
        tx: dict[str, Any] = {"chainId": self.chain_id, "nonce": nonce, "to": to, "value": value, "data": data, "gas": gas}
        if fees.legacy:
            tx["gasPrice"] = fees.max_fee_per_gas
        else:
            tx["type"] = 2
            tx["maxFeePerGas"] = fees.max_fee_per_gas
            tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
        return tx

    async def _broadcast(self, raw: bytes, quiet: bool = False) -> str | None:
        """Send raw bytes. Returns None on success/already-known, else the rejection message.
        Transport failures propagate (outcome unknown: the caller keeps the tx as sent)."""
        try:
            await self.rpc.send_raw(raw)
            return None
        except RpcError as exc:
            msg = exc.message.lower()
            if any(k in msg for k in _ALREADY_KNOWN):
                return None
            if quiet:
                self.log.debug("rebroadcast_refused", error=exc.message)
            return exc.message

    async def submit(self, plan: Plan, gas_limit: int, fees: FeeQuote, expected_cost: int, head: Block) -> PendingTx:
        """Journal, sign, send. Raises SendRejected (nonce released) if the node refuses it."""
        nonce = self.nonces.allocate()
        tx_id = self.store.tx_intent(
            protocol=plan.key.protocol, market=plan.key.market, account=plan.key.account, kind=plan.kind, nonce=nonce,
            to=plan.to, data="0x" + plan.data.hex(), value=plan.value, gas_limit=gas_limit, max_fee=fees.max_fee_per_gas,
            max_priority=fees.max_priority_fee_per_gas, expected_reward=plan.expected_reward, expected_cost=expected_cost,
            block=head.number,
        )  # fmt: skip
        raw, tx_hash = self.signer.sign(self._tx_dict(plan.to, plan.data, plan.value, nonce, gas_limit, fees))
        self.store.tx_signed(tx_id, tx_hash, "0x" + raw.hex(), fees.max_fee_per_gas, fees.max_priority_fee_per_gas, gas_limit)
        p = PendingTx(tx_id, plan, nonce, fees, gas_limit, head.number, [tx_hash], raw)
        try:
            rejected = await self._broadcast(raw)
        except (TransportError, RpcUnavailable) as exc:
            # Unknown whether the node got it: track it as sent; receipts/replacement settle it.
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=nonce, error=str(exc))
            rejected = None
        if rejected is not None:
            self.store.tx_final(tx_id, "failed", reason=rejected[:300])
            if "nonce too low" in rejected.lower() or "underpriced" in rejected.lower():
                await self.nonces.sync([q.nonce for q in self.pending.values()])
            else:
                self.nonces.release(nonce)
            raise SendRejected(rejected)
        self.store.tx_sent(tx_id, head.number)
        self.pending[tx_id] = p
        return p

    # ---- per-block follow-up ---------------------------------------------------------------------
    async def _check(self, p: PendingTx, latest_nonce: int) -> Finished | None:
        """Receipt lookup for every hash the row ever had; finalises the journal row if settled."""
        receipts = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in p.hashes])
        for h, r in zip(p.hashes, receipts, strict=True):
            if isinstance(r, dict) and r.get("blockNumber"):
                ok = int(r["status"], 16) == 1
                is_cancel = (r.get("to") or "").lower() == self.signer.address.lower()
                status = "cancelled" if is_cancel and ok else ("mined" if ok else "reverted")
                self.store.tx_final(
                    p.tx_id, status, tx_hash=h, block=int(r["blockNumber"], 16), gas_used=int(r["gasUsed"], 16),
                    effective_gas_price=int(r.get("effectiveGasPrice", "0x0"), 16),
                    kind="cancel" if is_cancel else None,
                )  # fmt: skip
                return Finished(p, status, r, h)
        if latest_nonce > p.nonce:
            # The nonce was consumed, but by none of our hashes: dropped/replaced outside our knowledge.
            self.store.tx_final(p.tx_id, "dropped", reason="nonce consumed by another transaction")
            return Finished(p, "dropped", None, None)
        return None

    async def poll(self, head: Block, still_wanted: Callable[[PendingTx], Awaitable[tuple[bool, int]]]) -> list[Finished]:
        """Settle mined transactions; replace or cancel stuck ones.

        still_wanted(p) → (wanted, gas_estimate): re-simulates the plan at the head; when it no longer
        passes (or is unprofitable) the transaction is cancelled instead of bumped.
        """
        if not self.pending:
            return []
        latest_nonce = await self.rpc.nonce(self.signer.address, "latest")
        finished: list[Finished] = []
        for tx_id, p in list(self.pending.items()):
            done = await self._check(p, latest_nonce)
            if done is not None:
                finished.append(done)
                del self.pending[tx_id]
                continue
            if head.number - p.sent_block >= self.cfg.replace_after_blocks:
                await self._unstick(p, head, still_wanted)
        return finished

    async def _unstick(self, p: PendingTx, head: Block, still_wanted: Callable) -> None:
        cancel = p.cancelling or p.replacements >= self.cfg.max_replacements
        gas = p.gas_limit
        if not cancel:
            wanted, estimate = await still_wanted(p)
            if wanted:
                gas = self.fee_policy.gas_limit(estimate) if estimate else p.gas_limit
            else:
                cancel = True
        new_fees = self.fee_policy.bump(p.fees, self.cfg.fee_bump)
        if new_fees.max_fee_per_gas * 10 < p.fees.max_fee_per_gas * 11 or new_fees.max_priority_fee_per_gas * 10 < p.fees.max_priority_fee_per_gas * 11:
            self.log.warning(
                "replacement_capped", tx=p.hashes[-1], nonce=p.nonce, max_fee=p.fees.max_fee_per_gas,
                cap=self.fee_policy.cap_fee, note="fee caps leave no room for the +10 % replacement",
            )  # fmt: skip
            p.sent_block = head.number
            return
        if cancel:
            to, data, value, gas = self.signer.address, b"", 0, CANCEL_GAS
        else:
            to, data, value = p.plan.to, p.plan.data, p.plan.value
        raw, tx_hash = self.signer.sign(self._tx_dict(to, data, value, p.nonce, gas, new_fees))
        self.store.tx_signed(p.tx_id, tx_hash, "0x" + raw.hex(), new_fees.max_fee_per_gas, new_fees.max_priority_fee_per_gas, gas)
        try:
            rejected = await self._broadcast(raw)
        except (TransportError, RpcUnavailable) as exc:
            rejected = None
            self.log.warning("send_outcome_unknown", tx=tx_hash, nonce=p.nonce, error=str(exc))
        p.hashes.append(tx_hash)
        if rejected is not None:
            # Most likely the original just got mined ("nonce too low"); the next poll settles it.
            self.log.info("replacement_refused", tx=tx_hash, nonce=p.nonce, error=rejected)
            p.sent_block = head.number
            return
        self.store.tx_resent(p.tx_id, head.number)
        p.fees, p.gas_limit, p.raw, p.sent_block = new_fees, gas, raw, head.number
        p.replacements += 1
        p.cancelling = cancel
        self.log.info(
            "tx_cancel_sent" if cancel else "tx_replaced", tx=tx_hash, nonce=p.nonce, replacements=p.replacements,
            max_fee=new_fees.max_fee_per_gas, tip=new_fees.max_priority_fee_per_gas, key=str(p.key),
        )  # fmt: skip
