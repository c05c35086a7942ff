"""The transaction manager against a real anvil: replacements only through the execution policy's
review, nonces healed after a failure before broadcast, 'dropped' only after every endpoint was asked
for a receipt, and a journal that keeps each attempt, the transaction type and the cancel state across
a restart. Faults are injected with small wrappers (signer, journal write, broadcast) and the fault
proxy; every assertion reads the node (pool, nonces, receipts) or the journal."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from keeper.config import GasConfig, TxConfig
from keeper.devtools.accounts import ANVIL_ADDRESSES
from keeper.devtools.chain import DevChain
from keeper.devtools.faultproxy import FaultProxy
from keeper.gas import FeePolicy, FeeQuote
from keeper.keys import Signer
from keeper.rpc import RpcClient, RpcError, RpcUnavailable
from keeper.store import Store
from keeper.txs import CANCEL_GAS, DROP_UNVERIFIED_AFTER_BLOCKS, PendingTx, Review, SendAborted, SendRejected, TxManager
from keeper.types import Block, Plan, PositionKey
from tests.conftest import start_anvil
from tests.harness import KEEPER, KEEPER_KEY, RecordingLog

pytestmark = pytest.mark.chain
GWEI = 10**9
RECIPIENT = ANVIL_ADDRESSES[3]
KEY = PositionKey("perp", ANVIL_ADDRESSES[4], ANVIL_ADDRESSES[5])
GAS = {"max_fee_per_gas_gwei": "1000", "priority_fee_gwei": "1", "max_priority_fee_gwei": "50"}


async def open_manager(urls: list[str], state: Path, log: RecordingLog, gas: dict | None = None, **tx: Any) -> TxManager:
    rpc = await RpcClient(urls, backoff_max=0.2, cooldown_base=0.05).start()
    cfg = TxConfig(**{"replace_after_blocks": 2, "fee_bump": Decimal("1.25"), **tx})
    return TxManager(
        rpc, Signer(Account.from_key(KEEPER_KEY)), Store(state), FeePolicy(GasConfig(**(gas or GAS))), cfg, 31337, log
    )


async def close_manager(txm: TxManager) -> None:
    await txm.rpc.close()
    txm.store.close()


def plan(value: int = 1) -> Plan:
    """A call the keeper may send (a 1-wei transfer stands in for a liquidation: same journal, same nonce rules)."""
    return Plan(key=KEY, to=RECIPIENT, data=b"", kind="full", expected_reward=10**18, value=value)


async def head_of(txm: TxManager) -> Block:
    return Block.from_rpc(await txm.rpc.get_block("latest"))


def later(head: Block, blocks: int) -> Block:
    """The head `blocks` later: the manager only counts blocks, so the node's pool stays as it is."""
    return dataclasses.replace(head, number=head.number + blocks)


async def send(
    txm: TxManager, head: Block, *, value: int = 1, fees: FeeQuote | None = None, gas_limit: int = 30_000
) -> PendingTx:
    fees = fees or txm.fee_policy.quote(head.base_fee, head.gas_used, head.gas_limit)
    return await txm.submit(plan(value), gas_limit, fees, 0, head)


def pool(chain: DevChain) -> dict[int, dict]:
    """The keeper's transactions in the node's pending pool, by nonce."""
    pending = chain.rpc("txpool_content")["pending"]
    mine = next((txs for addr, txs in pending.items() if addr.lower() == KEEPER.lower()), {})
    return {int(n): tx for n, tx in mine.items()}


def pool_count(chain: DevChain) -> int:
    return chain.w3.eth.get_transaction_count(KEEPER, "pending")


class Reviews:
    """A scripted execution policy: answers (or raises) in order and records what it was asked."""

    def __init__(self, *answers: Review | BaseException):
        self.answers = list(answers)
        self.asked: list[tuple[int, FeeQuote]] = []

    async def __call__(self, p: PendingTx, bumped: FeeQuote) -> Review:
        self.asked.append((p.nonce, bumped))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def attempts(state: Path) -> list[dict]:
    db = sqlite3.connect(state)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM tx_attempts ORDER BY id")]
    finally:
        db.close()


def rows(state: Path) -> list[dict]:
    db = sqlite3.connect(state)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM txs ORDER BY id")]
    finally:
        db.close()


# ---- A: replacements only through the review --------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "event"),
    [
        (Review("keep", reason="replacement_unprofitable"), "replacement_kept"),
        (RpcUnavailable("all RPC endpoints failed"), "replacement_review_failed"),
        (RpcError(-32000, "header not found"), "replacement_review_failed"),
    ],
    ids=["keep", "review-unavailable", "review-rpc-error"],
)
async def test_stuck_transaction_is_not_replaced_unless_the_review_says_so(anvil, tmp_path, answer, event):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    log = RecordingLog()
    txm = await open_manager([anvil.url], tmp_path / "k.sqlite", log)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        before = pool(chain)
        assert list(before) == [0] and before[0]["hash"] == p.hashes[0]
        review = Reviews(answer)
        assert await txm.poll(later(head, 2), review) == []
        # asked once, at fees bumped by the configured 25 %
        ((nonce, bumped),) = review.asked
        assert nonce == 0 and bumped.max_fee_per_gas * 100 >= p.fees.max_fee_per_gas * 125
        assert log.events(event)
        # nothing was sent: the node's pool holds the original only
        assert pool(chain) == before and pool_count(chain) == 1
        assert [a["action"] for a in attempts(tmp_path / "k.sqlite")] == ["send"]
        # asked again only after another replace_after_blocks
        assert await txm.poll(later(head, 3), review) == [] and len(review.asked) == 1
    finally:
        await close_manager(txm)
        chain.set_automine(True)


async def test_a_kept_transaction_the_node_evicted_is_offered_again_unchanged(anvil, tmp_path):
    """Keeping a transaction must not leave a gap at its nonce: if the pool dropped it, the same signed
    bytes go back (no new transaction, no new fee)."""
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    log = RecordingLog()
    txm = await open_manager([anvil.url], tmp_path / "k.sqlite", log)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        original = pool(chain)[0]
        chain.rpc("anvil_dropTransaction", [p.hashes[0]])
        assert pool(chain) == {}
        await txm.poll(later(head, 2), Reviews(Review("keep", reason="replacement_unprofitable")))
        assert pool(chain) == {0: original} and log.events("tx_reoffered")[0]["tx"] == p.hashes[0]
        await txm.poll(later(head, 4), Reviews(Review("keep")))  # still known to the node: nothing is sent
        assert len(log.events("tx_reoffered")) == 1
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert [a["action"] for a in attempts(tmp_path / "k.sqlite")] == ["send"]


async def test_replacement_re_signs_the_same_call_at_the_same_nonce_with_the_bumped_fees_and_reviewed_gas(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    state = tmp_path / "k.sqlite"
    txm = await open_manager([anvil.url], state, RecordingLog())
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        first_fees = p.fees
        review = Reviews(Review("replace", gas_limit=45_000))
        await txm.poll(later(head, 2), review)
        ((_, bumped),) = review.asked
        replacement = pool(chain)[0]
        assert replacement["hash"] == p.hashes[-1] != p.hashes[0]
        assert int(replacement["maxFeePerGas"], 16) == bumped.max_fee_per_gas
        assert int(replacement["maxPriorityFeePerGas"], 16) == bumped.max_priority_fee_per_gas
        assert int(replacement["gas"], 16) == 45_000
        assert replacement["to"].lower() == RECIPIENT.lower() and int(replacement["value"], 16) == 1
        chain.mine()
        (done,) = await txm.poll(later(head, 3), Reviews())
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert done.status == "mined" and done.tx_hash == replacement["hash"] and chain.nonce(KEEPER) == 1
    (row,) = rows(state)
    assert row["status"] == "mined" and row["tx_hash"] == replacement["hash"] and row["replacements"] == 1
    # the journal keeps each attempt's call, gas and fees, as the node saw them
    first, second = attempts(state)
    assert (first["action"], second["action"]) == ("send", "replace")
    for att in (first, second):
        assert att["nonce"] == 0 and att["to_addr"] == RECIPIENT and att["data"] == "0x" and att["value"] == "1"
        assert att["tx_type"] == "eip1559" and att["status"] == "sent"
    assert first["gas_limit"] == 30_000 and int(first["max_fee"]) == first_fees.max_fee_per_gas
    mined = chain.w3.eth.get_transaction(second["tx_hash"])
    assert mined["gas"] == second["gas_limit"] == 45_000
    assert mined["maxFeePerGas"] == int(second["max_fee"]) == bumped.max_fee_per_gas


async def test_fee_caps_without_room_for_10_percent_keep_the_transaction_without_review(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    log = RecordingLog()
    txm = await open_manager([anvil.url], tmp_path / "k.sqlite", log)
    try:
        head = await head_of(txm)
        cap = txm.fee_policy.cap_fee
        p = await send(txm, head, fees=FeeQuote(cap, 1 * GWEI, cap, head.base_fee or 0))
        before = pool(chain)
        review = Reviews(Review("replace", gas_limit=45_000))
        await txm.poll(later(head, 2), review)
        assert review.asked == [] and log.events("replacement_capped")
        assert pool(chain) == before and before[0]["hash"] == p.hashes[0]
    finally:
        await close_manager(txm)
        chain.set_automine(True)


async def test_after_max_replacements_only_a_cancellation_is_sent(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    log = RecordingLog()
    txm = await open_manager([anvil.url], tmp_path / "k.sqlite", log, max_replacements=1)
    try:
        head = await head_of(txm)
        await send(txm, head)
        review = Reviews(Review("replace", gas_limit=40_000), Review("replace", gas_limit=40_000), Review("cancel"))
        await txm.poll(later(head, 2), review)
        replaced = pool(chain)[0]
        await txm.poll(later(head, 4), review)  # max reached: a "replace" answer is not honoured
        assert pool(chain)[0] == replaced and "max_replacements" in log.events("replacement_kept")[-1]["reason"]
        await txm.poll(later(head, 6), review)  # a "cancel" answer is: the nonce must be freed
        cancel = pool(chain)[0]
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert len(review.asked) == 3
    assert cancel["to"].lower() == KEEPER.lower() and int(cancel["value"], 16) == 0 and int(cancel["gas"], 16) == CANCEL_GAS
    assert int(cancel["maxFeePerGas"], 16) > int(replaced["maxFeePerGas"], 16)


# ---- D: the journal keeps type and cancel state across a restart ---------------------------------------


async def test_restart_mid_cancel_resumes_the_cancellation_not_the_liquidation(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    state = tmp_path / "k.sqlite"
    recipient_before = chain.w3.eth.get_balance(RECIPIENT)
    txm = await open_manager([anvil.url], state, RecordingLog())
    try:
        head = await head_of(txm)
        await send(txm, head)
        await txm.poll(later(head, 2), Reviews(Review("cancel", reason="would revert")))
        first_cancel = pool(chain)[0]
        assert first_cancel["to"].lower() == KEEPER.lower()
    finally:
        await close_manager(txm)  # the keeper stops here, its cancellation in the pool
    log = RecordingLog()
    txm = await open_manager([anvil.url], state, log)
    try:
        assert await txm.start(later(head, 2)) == []
        (reconciled,) = log.events("journal_reconciled")
        assert reconciled["status"] == "pending" and reconciled["cancelling"] is True
        review = Reviews()  # must not be asked: a cancellation in progress is not re-decided
        await txm.poll(later(head, 4), review)
        resumed = pool(chain)[0]
        assert review.asked == [] and log.events("tx_cancel_sent")
        assert resumed["to"].lower() == KEEPER.lower() and int(resumed["value"], 16) == 0 and resumed["input"] == "0x"
        assert int(resumed["maxFeePerGas"], 16) > int(first_cancel["maxFeePerGas"], 16)
        chain.mine()
        (done,) = await txm.poll(later(head, 5), review)
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert done.status == "cancelled" and done.tx_hash == resumed["hash"]
    (row,) = rows(state)
    assert row["status"] == "cancelled" and row["kind"] == "cancel" and row["cancelling"] == 1
    assert [a["action"] for a in attempts(state)] == ["send", "cancel", "cancel"]
    assert chain.nonce(KEEPER) == 1 and chain.w3.eth.get_balance(RECIPIENT) == recipient_before


async def test_restart_keeps_a_legacy_transaction_legacy(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    state = tmp_path / "k.sqlite"
    txm = await open_manager([anvil.url], state, RecordingLog())
    try:
        head = await head_of(txm)
        price = 3 * (head.base_fee or GWEI)
        await send(txm, head, fees=FeeQuote(price, 0, price, 0, legacy=True))
        assert pool(chain)[0]["type"] == "0x0"
    finally:
        await close_manager(txm)
    txm = await open_manager([anvil.url], state, RecordingLog())
    try:
        await txm.start(later(head, 1))
        review = Reviews(Review("replace", gas_limit=40_000))
        await txm.poll(later(head, 3), review)
        ((_, bumped),) = review.asked
        replacement = pool(chain)[0]
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert bumped.legacy and replacement["type"] == "0x0" and int(replacement["gasPrice"], 16) == bumped.max_fee_per_gas
    assert rows(state)[0]["tx_type"] == "legacy" and [a["tx_type"] for a in attempts(state)] == ["legacy", "legacy"]


# ---- B: nonces ----------------------------------------------------------------------------------------------


class FailingOnce:
    """Wraps a callable: the first call raises `exc`, later calls go through."""

    def __init__(self, fn: Any, exc: BaseException):
        self.fn, self.exc, self.calls = fn, exc, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.exc
        return self.fn(*a, **kw)


class FaultySigner:
    def __init__(self, signer: Signer, exc: BaseException):
        self.address = signer.address
        self.sign = FailingOnce(signer.sign, exc)


@pytest.mark.parametrize("fault", ["signing", "journal-write", "interrupted"])
async def test_a_failure_between_nonce_allocation_and_broadcast_leaves_no_gap(anvil, tmp_path, fault):
    chain = DevChain(anvil.url)
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_manager([anvil.url], state, log)
    try:
        head = await head_of(txm)
        if fault == "signing":
            txm.signer = FaultySigner(txm.signer, ValueError("signing device unavailable"))  # type: ignore[assignment]
            expected: type[BaseException] = SendAborted
        elif fault == "journal-write":
            txm.store.attempt_signed = FailingOnce(txm.store.attempt_signed, sqlite3.OperationalError("disk I/O error"))  # type: ignore[method-assign]
            expected = SendAborted
        else:
            txm.signer = FaultySigner(txm.signer, asyncio.CancelledError())  # type: ignore[assignment]
            expected = asyncio.CancelledError
        with pytest.raises(expected):
            await send(txm, head)
        assert pool_count(chain) == 0 and not txm.pending
        p = await send(txm, head)  # the next transaction takes the same nonce: no gap
        receipt = chain.w3.eth.wait_for_transaction_receipt(p.hashes[0], timeout=30)
    finally:
        await close_manager(txm)
    assert p.nonce == 0 and receipt["status"] == 1 and chain.nonce(KEEPER) == 1
    assert [r["status"] for r in rows(state)] == ["failed", "sent"] and log.events("send_aborted")


async def test_only_a_definitive_rejection_releases_a_nonce(anvil, tmp_path):
    chain = DevChain(anvil.url)
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_manager([anvil.url], state, log)
    try:
        head = await head_of(txm)
        # definitive ("insufficient funds"): released, the next transaction takes nonce 0
        with pytest.raises(SendRejected, match="(?i)insufficient funds"):
            await send(txm, head, value=chain.w3.eth.get_balance(KEEPER) + 1)
        first = await send(txm, head, value=2)
        # the node takes the transaction but answers with an error that is no known rejection:
        # the outcome is unknown, the nonce stays used, the transaction is followed
        real_send = txm.rpc.send_raw

        async def send_then_fail(raw: bytes) -> str:
            await real_send(raw)
            raise RpcError(-32603, "internal error")

        txm.rpc.send_raw = send_then_fail  # type: ignore[method-assign]
        unknown = await send(txm, head, value=3)
        txm.rpc.send_raw = real_send  # type: ignore[method-assign]
        after = await send(txm, head, value=4)
        for p in (first, unknown, after):
            assert chain.w3.eth.wait_for_transaction_receipt(p.hashes[0], timeout=30)["status"] == 1
    finally:
        await close_manager(txm)
    assert (first.nonce, unknown.nonce, after.nonce) == (0, 1, 2) and chain.nonce(KEEPER) == 3
    assert unknown.tx_id in txm.pending and log.events("send_outcome_unknown")
    assert [r["status"] for r in rows(state)] == ["failed", "sent", "sent", "sent"]
    assert [a["status"] for a in attempts(state)] == ["refused", "sent", "sent", "sent"]


# ---- C: 'dropped' only after every endpoint was asked ------------------------------------------------------


async def test_mined_transaction_whose_receipt_one_endpoint_lacks_is_not_journalled_dropped(anvil, tmp_path):
    """Endpoint A mined the keeper's transaction; endpoint B (another history, where the keeper's
    nonce 0 was used by something else) has no receipt for it. While A is down the keeper reads the
    nonce and receipts from B alone: the nonce looks consumed by a stranger — not proof."""
    chain_a = DevChain(anvil.url)
    other = start_anvil()
    proxy = await FaultProxy(anvil.url).start()
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_manager([proxy.url, other.url], state, log)
    try:
        chain_b = DevChain(other.url)
        head = await head_of(txm)
        p = await send(txm, head)
        assert chain_a.w3.eth.wait_for_transaction_receipt(p.hashes[0], timeout=30)["status"] == 1
        chain_b.w3.eth.send_transaction({"from": KEEPER, "to": KEEPER, "value": 0})  # nonce 0 used on B
        assert chain_b.nonce(KEEPER) == 1
        proxy.mode = "error"  # A is down: failover to B
        never = Reviews()
        assert await txm.poll(head, never) == []
        assert rows(state)[0]["status"] == "sent" and p.tx_id in txm.pending and log.events("drop_check_incomplete")
        proxy.mode = "ok"  # A is back: its receipt settles the row
        (done,) = await txm.poll(head, never)
    finally:
        await close_manager(txm)
        await proxy.stop()
        other.stop()
    assert done.status == "mined" and done.tx_hash == p.hashes[0] and never.asked == []
    (row,) = rows(state)
    assert row["status"] == "mined" and row["tx_hash"] == p.hashes[0]


async def test_nonce_used_by_another_transaction_is_dropped_once_every_endpoint_answered(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    state = tmp_path / "k.sqlite"
    txm = await open_manager([anvil.url], state, RecordingLog())
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        chain.rpc("anvil_dropTransaction", [p.hashes[0]])  # evicted, then the nonce goes to another sender's tx
        chain.w3.eth.send_transaction({"from": KEEPER, "to": KEEPER, "value": 0, "nonce": 0})
        chain.mine()
        (done,) = await txm.poll(later(head, 1), Reviews())
    finally:
        await close_manager(txm)
        chain.set_automine(True)
    assert done.status == "dropped" and done.receipt is None
    assert rows(state)[0]["status"] == "dropped"


async def test_an_endpoint_that_never_answers_delays_dropped_but_does_not_block_it_forever(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    dead = await FaultProxy(anvil.url, mode="error").start()
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_manager([anvil.url, dead.url], state, log)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        chain.rpc("anvil_dropTransaction", [p.hashes[0]])
        chain.w3.eth.send_transaction({"from": KEEPER, "to": KEEPER, "value": 0, "nonce": 0})
        chain.mine()
        assert await txm.poll(later(head, 1), Reviews(Review("keep"))) == []  # the dead endpoint was not asked yet
        assert rows(state)[0]["status"] == "sent" and len(log.events("drop_check_incomplete")) == 1
        assert await txm.poll(later(head, 2), Reviews(Review("keep"))) == []
        assert len(log.events("drop_check_incomplete")) == 1  # once per row, not per block
        (done,) = await txm.poll(later(head, 1 + DROP_UNVERIFIED_AFTER_BLOCKS), Reviews())
    finally:
        await close_manager(txm)
        await dead.stop()
        chain.set_automine(True)
    assert done.status == "dropped"
    (row,) = rows(state)
    assert row["status"] == "dropped" and "1 endpoint(s) unanswered" in row["reason"]
