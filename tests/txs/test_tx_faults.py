"""Transaction safety under faults, against real anvil: SIGKILL between send and receipt, stuck
transactions (replace with the same nonce, or cancel), reorgs, several liquidations per block,
and nonce resync. Every test checks the chain and the journal."""

from __future__ import annotations

import json
import signal
import sqlite3
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.devtools.anvil import free_port
from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import BUY, deploy_perp
from tests.harness import KEEPER, Daemon, keeper_config, perp_protocol, start_engine, step, write_config

pytestmark = pytest.mark.chain
E = 10**18
GWEI = 10**9


def liquidatable_world(chain: DevChain, markets=("ETH",), margin: int = 1000):
    """One 10x long per market, crashed into full-liquidation territory (solvent)."""
    perp = deploy_perp(chain)
    traders = {}
    for i, market in enumerate(markets):
        t = chain.accounts[1 + i]
        price = perp.oracle_price(market)
        perp.fund_trader(t, margin * E + E)
        perp.open_position(t, market, BUY, margin * E, 10 * E)
        perp.set_oracle_price(market, price * 92 // 100)
        perp.move_spot_price(market, price * 92 // 100, chain.accounts[8])
        traders[market] = t
    perp.advance_twap(900)
    return perp, traders


def keeper_liquidations(perp, trader: str) -> list[dict]:
    return [
        dict(e["args"])
        for e in perp.clearing_house.events.PositionLiquidated.get_logs(from_block=0)
        if e["args"]["trader"] == trader
    ]


def pending_in_pool(chain: DevChain, who: str) -> int:
    return chain.w3.eth.get_transaction_count(who, "pending") - chain.nonce(who)


def journal(db_path) -> list[dict]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM txs ORDER BY id")]


def health(port: int) -> dict:
    """The daemon's /health JSON (also on 503); before it listens: no head processed yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:  # noqa: S310 - loopback
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return {"components": {"head": {"block": None}, "transactions": {"pending": None}}}


def test_sigkill_between_send_and_receipt_then_restart_never_sends_twice(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    trader = traders["ETH"]
    port = free_port()
    state = tmp_path / "state.sqlite"
    cfg = write_config(
        tmp_path / "k.toml",
        keeper_config(
            anvil.url, state, [perp_protocol(perp)], tx={"replace_after_blocks": 50}, http={"listen": f"127.0.0.1:{port}"}
        ),
    )
    chain.set_automine(False)
    first = Daemon(cfg, tmp_path / "first.log").start()
    try:
        first.wait_for(lambda: first.events("liquidation_sent"), what="the liquidation to be sent")
    finally:
        first.stop(signal.SIGKILL)  # killed before any receipt
    (row,) = journal(state)
    assert row["status"] == "sent" and pending_in_pool(chain, KEEPER) == 1
    head = chain.block_number()
    second = Daemon(cfg, tmp_path / "second.log").start()
    try:
        second.wait_for(lambda: second.events("journal_reconciled"), what="journal reconciliation")
        assert second.events("journal_reconciled")[0]["status"] == "pending"
        # The restarted daemon evaluates the same head, where the position is still liquidatable …
        second.wait_for(lambda: (health(port)["components"]["head"]["block"] or 0) >= head, what="the head processed")
        assert health(port)["components"]["transactions"]["pending"] == 1
        assert not second.events("liquidation_sent")  # … but it is in flight: never sent a second time
        assert pending_in_pool(chain, KEEPER) == 1 and chain.nonce(KEEPER) == 0
        # The original transaction is mined and the journal records it.
        chain.mine()
        second.wait_for(lambda: second.events("liquidation_landed"), what="the original transaction to land")
        chain.mine()
        second.wait_for(lambda: journal(state)[0]["status"] == "mined" and journal(state)[0]["reward"], what="journal")
    finally:
        code = second.stop(signal.SIGTERM)
        chain.set_automine(True)
    assert code == 0
    rows = journal(state)
    assert len(rows) == 1 and rows[0]["tx_hash"] == row["tx_hash"]
    assert len(keeper_liquidations(perp, trader)) == 1 and chain.nonce(KEEPER) == 1


STUCK_TX_POLICY = {
    "tx": {"replace_after_blocks": 2, "fee_bump": "2"},
    "gas": {"max_fee_per_gas_gwei": "1000", "max_priority_fee_gwei": "50"},
}


async def send_then_spike_base_fee(engine, log, chain: DevChain) -> dict:
    """Automining off, one step: the keeper sends its liquidation, then a base-fee spike leaves it
    out of the next blocks (anvil even evicts it). Returns the liquidation_sent record."""
    chain.set_automine(False)
    await step(engine)
    (sent,) = log.events("liquidation_sent")
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(sent["max_fee"] * 4)])
    return sent


async def mine_and_step_until(engine, chain: DevChain, done, blocks: int) -> None:
    """A block, then the keeper's step on it, until `done()` or `blocks` blocks (bounded)."""
    for _ in range(blocks):
        chain.mine()
        await step(engine)
        if done():
            return


async def test_stuck_transaction_is_replaced_with_the_same_nonce_and_mined(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    engine, log = await start_engine(keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)], **STUCK_TX_POLICY))
    try:
        sent = await send_then_spike_base_fee(engine, log, chain)
        await mine_and_step_until(engine, chain, lambda: log.events("liquidation_landed"), blocks=12)
    finally:
        chain.set_automine(True)
        await engine.close()
    (landed,) = log.events("liquidation_landed")
    assert log.events("tx_replaced") and landed["tx"] != sent["tx"]
    mined = chain.w3.eth.get_transaction(landed["tx"])
    assert mined["nonce"] == sent["nonce"] and mined["maxFeePerGas"] > sent["max_fee"]
    assert len(keeper_liquidations(perp, traders["ETH"])) == 1 and chain.nonce(KEEPER) == sent["nonce"] + 1
    (row,) = engine_journal(tmp_path)
    assert row["status"] == "mined" and len(json.loads(row["hashes"])) >= 2 and row["tx_hash"] == landed["tx"]


def engine_journal(tmp_path) -> list[dict]:
    return journal(tmp_path / "k.sqlite")


async def test_stuck_liquidation_no_longer_valid_is_cancelled(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    trader, rival = traders["ETH"], chain.accounts[5]
    engine, log = await start_engine(keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)], **STUCK_TX_POLICY))
    try:
        sent = await send_then_spike_base_fee(engine, log, chain)
        # Meanwhile a rival with a generous fee liquidates the position.
        ch = perp.clearing_house
        chain.w3.eth.send_transaction(
            {
                "from": rival,
                "to": ch.address,
                "gas": 1_500_000,
                "maxFeePerGas": 1000 * GWEI,
                "maxPriorityFeePerGas": 10 * GWEI,
                "data": ch.functions.liquidate(perp.amm("ETH").address, trader)._encode_transaction_data(),
            }
        )
        await mine_and_step_until(
            engine, chain, lambda: any(r["status"] == "cancelled" for r in log.events("tx_settled")), blocks=14
        )
    finally:
        chain.set_automine(True)
        await engine.close()
    # the review re-simulated it at the bumped fees, found it would now revert, and chose a cancellation
    assert log.events("tx_cancel_sent") and [r for r in log.events("tx_reviewed") if r["action"] == "cancel"]
    assert [e["liquidator"] for e in keeper_liquidations(perp, trader)] == [rival]
    (row,) = engine_journal(tmp_path)
    assert row["status"] == "cancelled" and row["kind"] == "cancel"
    cancel = chain.w3.eth.get_transaction(row["tx_hash"])
    assert cancel["to"] == KEEPER and cancel["value"] == 0 and cancel["nonce"] == sent["nonce"]
    assert chain.nonce(KEEPER) == sent["nonce"] + 1


def keeper_pool(chain: DevChain) -> dict:
    """The keeper's transactions in the node's pending pool, by nonce (hash and fees)."""
    pending = chain.rpc("txpool_content")["pending"]
    return next((txs for addr, txs in pending.items() if addr.lower() == KEEPER.lower()), {})


async def test_stuck_liquidation_whose_bumped_fee_breaks_even_is_not_replaced(anvil, tmp_path):
    """Sent, stuck, and the operator restarts with a higher min_profit: at its bumped fee the
    liquidation no longer pays, so the review keeps it as it is — nothing is sent."""
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    state = tmp_path / "k.sqlite"
    engine, log = await start_engine(keeper_config(anvil.url, state, [perp_protocol(perp)], **STUCK_TX_POLICY))
    try:
        chain.set_automine(False)
        await step(engine)
        (sent,) = log.events("liquidation_sent")
    finally:
        await engine.close()
    # min_profit such that break-even is the sent max fee: the bumped fee (×2) is far above it
    min_profit = sent["expected_reward"] - sent["max_fee"] * sent["gas"] * sent["native_price"] // E
    assert min_profit > 0
    cfg = keeper_config(
        anvil.url, state, [perp_protocol(perp)], profit={"min_profit": str(Decimal(min_profit) / E)}, **STUCK_TX_POLICY
    )
    engine, log = await start_engine(cfg)
    try:
        (reconciled,) = log.events("journal_reconciled")
        assert reconciled["status"] == "pending"
        chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(sent["max_fee"] * 4)])  # it stays stuck
        chain.mine(STUCK_TX_POLICY["tx"]["replace_after_blocks"])
        assert keeper_pool(chain) == {}  # the spiked base fee made anvil evict it
        await step(engine)
        offered = keeper_pool(chain)
    finally:
        chain.set_automine(True)
        await engine.close()
    (reviewed,) = log.events("tx_reviewed")
    assert reviewed["action"] == "keep" and "replacement_unprofitable" in reviewed["reason"]
    assert log.events("replacement_kept") and not log.events("tx_replaced") and not log.events("tx_cancel_sent")
    # nothing new was signed: at most the original bytes are offered again (its nonce must not become a gap)
    assert [tx["hash"] for tx in offered.values()] in ([], [sent["tx"]]) and chain.nonce(KEEPER) == 0
    assert [a["action"] for a in attempts_of(state)] == ["send"]


def attempts_of(db_path) -> list[dict]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM tx_attempts ORDER BY id")]


async def step_through_new_history(engine, chain: DevChain) -> None:
    """The keeper's step on the rewritten head, then four more blocks: it detects the reorg, rewinds,
    re-simulates the liquidation whose block vanished and replaces it at its nonce."""
    await step(engine)
    await mine_and_step_until(engine, chain, lambda: False, blocks=4)


def assert_liquidated_once_after_reorg(perp, trader: str, chain: DevChain, tmp_path: Path) -> None:
    # replaced at the same nonce: exactly one liquidation on the canonical chain …
    assert [e["liquidator"] for e in keeper_liquidations(perp, trader)] == [KEEPER]
    assert chain.nonce(KEEPER) == 1
    # … and one row in the journal, mined under a new hash: nothing double-counted
    rows = engine_journal(tmp_path)
    assert len(rows) == 1 and rows[0]["status"] == "mined" and len(json.loads(rows[0]["hashes"])) >= 2


async def test_reorg_rewinds_the_index_and_counts_the_liquidation_once(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    trader, bob = traders["ETH"], chain.accounts[6]
    chain.mine(3)  # the crash is buried below the blocks the reorg will replace
    cfg = keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    adapter = engine.adapters[0]
    try:
        await step(engine)  # liquidation sent and mined (automine)
        perp.fund_trader(bob, 101 * E)
        perp.open_position(bob, "BTC", BUY, 100 * E, 2 * E)  # a position the reorg will erase
        await step(engine)  # settles the liquidation, indexes bob
        assert len(log.events("liquidation_landed")) == 1
        assert (perp.amm("BTC").address, bob) in adapter.positions
        (landed,) = log.events("liquidation_landed")
        liq_block = chain.w3.eth.get_transaction_receipt(landed["tx"]).blockNumber
        chain.rpc("anvil_reorg", [chain.block_number() - liq_block + 1, []])  # the liquidation and bob's position vanish
        assert keeper_liquidations(perp, trader) == [] and chain.nonce(KEEPER) == 0
        await step_through_new_history(engine, chain)
    finally:
        await engine.close()
    assert log.events("reorg_detected") and log.events("tx_unmined_by_reorg")
    assert (perp.amm("BTC").address, bob) not in adapter.positions  # index rewound
    assert_liquidated_once_after_reorg(perp, trader, chain, tmp_path)
    summary = engine_summary(tmp_path)
    assert summary["landed"] == 1
    assert engine.metrics.registry.get_sample_value("keeper_reorgs_total") == 1


def engine_summary(tmp_path) -> dict:
    from keeper.store import Store  # noqa: PLC0415

    s = Store(tmp_path / "k.sqlite")
    try:
        return s.summary()
    finally:
        s.close()


async def test_several_liquidations_in_one_block_use_consecutive_nonces(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain, markets=("ETH", "BTC"))
    cfg = keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    try:
        chain.set_automine(False)
        await step(engine)
        sent = log.events("liquidation_sent")
        assert sorted(r["nonce"] for r in sent) == [0, 1]
        chain.mine()
        chain.set_automine(True)
        await step(engine)
    finally:
        chain.set_automine(True)
        await engine.close()
    receipts = [chain.w3.eth.get_transaction_receipt(r["tx"]) for r in sent]
    assert all(r.status == 1 for r in receipts) and receipts[0].blockNumber == receipts[1].blockNumber
    assert len(log.events("liquidation_landed")) == 2


async def test_nonce_used_elsewhere_is_resynced_not_reused(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    cfg = keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)], tx={"failure_cooldown_blocks": 1})
    engine, log = await start_engine(cfg)
    try:
        # Another process with the same key sends a transaction: the keeper's local nonce is stale.
        chain.w3.eth.send_transaction({"from": KEEPER, "to": chain.accounts[7], "value": 1})
        await step(engine)
        (rejected,) = log.events("liquidation_send_rejected")
        assert "nonce too low" in rejected["reason"].lower()
        for _ in range(3):
            chain.mine()
            await step(engine)
    finally:
        await engine.close()
    (sent,) = log.events("liquidation_sent")
    assert sent["nonce"] == 1 and len(log.events("liquidation_landed")) == 1
    rows = engine_journal(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "mined"]
    assert rows[0]["nonce"] == 0 and rows[1]["nonce"] == 1


async def test_reorg_deeper_than_tracked_reindexes_from_start_and_reopens_lost_transactions(anvil, tmp_path):
    """A reorg deeper than the 64 blocks the keeper tracks (history replaced): the index is rebuilt
    from the start block (a position opened only in the new history is found, one that vanished is
    dropped), and the liquidation whose block vanished is re-opened from the journal and replaced at
    its nonce: one liquidation on chain, one journal row."""
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    trader, bob, carol = traders["ETH"], chain.accounts[5], chain.accounts[6]
    perp.fund_trader(carol, 101 * E)
    carol_open = perp.clearing_house.functions.openPosition(perp.amm("BTC").address, BUY, (100 * E,), (2 * E,), (0,))
    carol_tx = {
        "from": carol,
        "to": perp.clearing_house.address,
        "data": carol_open._encode_transaction_data(),
        "gas": hex(2_000_000),
    }
    fork_base = chain.block_number()
    engine, log = await start_engine(keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
    adapter = engine.adapters[0]
    btc = perp.amm("BTC").address
    try:
        await step(engine)  # the liquidation is sent and mined
        perp.fund_trader(bob, 101 * E)
        perp.open_position(bob, "BTC", BUY, 100 * E, 2 * E)
        for _ in range(70):
            chain.mine()
            await step(engine)
        assert len(log.events("liquidation_landed")) == 1 and (btc, bob) in adapter.positions
        depth = chain.block_number() - fork_base
        assert depth > 64
        chain.rpc("anvil_reorg", [depth, [[carol_tx, 0]]])  # the new history: carol's position, no liquidation, no bob
        assert keeper_liquidations(perp, trader) == [] and chain.nonce(KEEPER) == 0
        await step_through_new_history(engine, chain)
    finally:
        await engine.close()
    assert log.events("history_replaced") and log.events("tx_unmined_by_reorg")
    assert (btc, bob) not in adapter.positions and (btc, carol) in adapter.positions
    assert_liquidated_once_after_reorg(perp, trader, chain, tmp_path)
