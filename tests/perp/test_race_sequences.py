"""The race (issue 8): every profitable liquidation known at a head goes out at that head, best first,
on consecutive nonces, each simulated (eth_simulateV1) on the state the ones before it leave; a
member that fails its simulation is dropped; a rival seen in the mempool is outbid while that pays,
else our transaction is cancelled. Real anvil, real signed transactions, real receipts."""

from __future__ import annotations

import pytest

from keeper.types import Block, Plan, PositionKey
from tests.harness import KEEPER, keeper_config, perp_protocol, settle_pool, start_engine, step
from tests.perp.test_keeper_perp import crash, open_10x_long

pytestmark = pytest.mark.chain
E = 10**18
GWEI = 10**9


def keeper_txs_in(chain, block: int) -> list:
    return [tx for tx in chain.w3.eth.get_block(block, full_transactions=True).transactions if tx["from"] == KEEPER]


async def test_every_liquidation_of_a_market_lands_in_one_block_best_first_with_a_partial_twice(perp, accounts, tmp_path):
    a = accounts
    traders = [a["alice"], a["carol"], a["dave"]]
    for i, t in enumerate(traders):
        open_10x_long(perp, t, margin=(300 + 200 * i) * E)
    crash(perp, a["whale"], 2850 * E)  # partial-close territory for all three
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    try:
        perp.chain.set_automine(False)
        await step(engine)
        sent = log.events("liquidation_sent")
        perp.chain.mine()
        block = perp.chain.block_number()
        perp.chain.set_automine(True)
        await step(engine)
        await settle_pool(engine)
    finally:
        perp.chain.set_automine(True)
        await engine.close()
    # every trader at the first head, several per market, on consecutive nonces in sequence order
    assert {r["account"] for r in sent} == set(traders)
    assert [r["sequence"] for r in sent] == list(range(len(sent)))
    assert [r["nonce"] for r in sent] == list(range(sent[0]["nonce"], sent[0]["nonce"] + len(sent)))
    firsts = [r for r in sent if "repeat" not in r]
    assert [r["expected_reward"] for r in firsts] == sorted((r["expected_reward"] for r in firsts), reverse=True)
    # a partial chain: the same position liquidated again in the same block
    repeats = [r for r in sent if r.get("repeat")]
    assert repeats and all(r["kind"] == "partial" for r in sent)
    # all of it landed in one block, in nonce order, none reverted, each reward exactly as simulated
    mined = keeper_txs_in(perp.chain, block)
    assert [tx["hash"].to_0x_hex() for tx in mined] == [r["tx"] for r in sent]
    assert all(perp.chain.w3.eth.get_transaction_receipt(tx["hash"]).status == 1 for tx in mined)
    landed = {r["tx"]: r for r in log.events("liquidation_landed")}
    assert set(landed) == {r["tx"] for r in sent}
    assert all(landed[r["tx"]]["reward"] == r["expected_reward"] for r in sent)
    assert not log.events("liquidation_reverted")
    # the head-to-broadcast latency is exported on /metrics
    text = engine.metrics.render().decode()
    (count,) = [float(x.split()[-1]) for x in text.splitlines() if x.startswith("keeper_head_to_broadcast_seconds_count")]
    assert count >= 1
    (done,) = [r for r in log.events("head_sends_done") if r["block"] == block - 1]
    assert done["head_to_broadcast_ms"] >= 0


@pytest.mark.parametrize("carol_reward", [20 * E, 5 * E], ids=["failing-first", "failing-second"])
async def test_a_sequence_member_that_fails_its_simulation_is_dropped_and_the_rest_sent(carol_reward, perp, accounts, tmp_path):
    """Two plans at one head, one for a healthy position (its call reverts), ranked first or second: only
    the good one is sent, as the sequence's first transaction."""
    alice, carol, whale = accounts["alice"], accounts["carol"], accounts["whale"]
    open_10x_long(perp, alice, margin=1000 * E)
    perp.fund_trader(carol, 1010 * E)
    perp.open_position(carol, "ETH", 0, margin=1000 * E, leverage=2 * E)  # carol: a healthy 2x long
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    try:
        await step(engine)  # indexes both; nothing to do yet
        crash(perp, whale, 2760 * E)  # alice: full close; carol stays healthy
        a = engine.adapters[0]
        ch, amm = perp.clearing_house, perp.amm("ETH").address

        def plan(trader: str, reward: int) -> Plan:
            data = bytes.fromhex(ch.functions.liquidate(amm, trader)._encode_transaction_data()[2:])
            return Plan(PositionKey(a.name, amm, trader), ch.address, data, "full", reward)

        head = Block.from_rpc(await engine.rpc.get_block("latest"))
        nonce0 = perp.chain.nonce(KEEPER)
        perp.chain.set_automine(False)
        # wherever carol ranks, her failure neither stops alice's liquidation nor is sent
        await engine.executor.execute(a, [plan(carol, carol_reward), plan(alice, 10 * E)], head)
        sent = log.events("liquidation_sent")
        perp.chain.mine()
        perp.chain.set_automine(True)
        await settle_pool(engine)
    finally:
        perp.chain.set_automine(True)
        await engine.close()
    assert [r["account"] for r in sent] == [alice] and sent[0]["sequence"] == 0
    skipped = [r for r in log.events("liquidation_skipped") if r["account"] == carol]
    assert skipped and skipped[-1]["reason"] == "simulation_reverted" and "Margin ratio" in skipped[-1]["revert"]
    assert perp.chain.nonce(KEEPER) == nonce0 + 1
    assert perp.position("ETH", alice)["size"] == 0 and perp.position("ETH", carol)["size"] != 0


async def test_rival_in_the_mempool_is_outbid_while_it_pays_then_ours_is_dropped(perp, accounts, tmp_path):
    alice, whale, rival = accounts["alice"], accounts["whale"], accounts["carol"]
    open_10x_long(perp, alice, margin=1000 * E)
    crash(perp, whale, 2760 * E)  # full close: one liquidation, whoever lands first takes it
    cfg = keeper_config(
        perp.chain.url,
        tmp_path / "k.sqlite",
        [perp_protocol(perp)],
        tx={"mempool_watch": "txpool", "max_repeats_per_position": 0},
        gas={"priority_fee_gwei": "1", "max_priority_fee_gwei": "3", "max_fee_per_gas_gwei": "50"},
    )
    engine, log = await start_engine(cfg)
    ch, amm = perp.clearing_house, perp.amm("ETH").address
    call = ch.functions.liquidate(amm, alice)._encode_transaction_data()
    w3 = perp.chain.w3

    def rival_send(tip_gwei: float, nonce: int, max_fee_gwei: int) -> str:
        return w3.eth.send_transaction(
            {
                "from": rival,
                "to": ch.address,
                "data": call,
                "gas": 1_500_000,
                "nonce": nonce,
                "maxPriorityFeePerGas": int(tip_gwei * GWEI),
                "maxFeePerGas": max_fee_gwei * GWEI,
            }
        ).to_0x_hex()

    try:
        perp.chain.set_automine(False)
        await step(engine)
        (ours,) = log.events("liquidation_sent")
        rn = w3.eth.get_transaction_count(rival, "pending")
        r1 = rival_send(2, rn, 40)  # a rival for the same position, higher tip
        await step(engine)  # same head: the keeper sees it and outbids at the same nonce
        (outbid,) = log.events("rival_outbid")
        assert outbid["rival_tx"] == r1 and outbid["tip"] > 2 * GWEI
        replaced = log.events("tx_replaced")[-1]
        assert replaced["nonce"] == ours["nonce"]
        r2 = rival_send(4, rn, 45)  # the rival raises above our tip cap (3 gwei): ours is dropped
        await step(engine)
        (gave_up,) = log.events("rival_not_outbid")
        assert gave_up["rival_tx"] == r2 and gave_up["cancelled"] is True
        perp.chain.mine()
        perp.chain.set_automine(True)
        await step(engine)
        await settle_pool(engine)
    finally:
        perp.chain.set_automine(True)
        await engine.close()
    assert w3.eth.get_transaction_receipt(r2).status == 1  # the rival took it
    assert perp.position("ETH", alice)["size"] == 0
    settled = [r for r in log.events("tx_settled") if r["account"] == alice]
    assert settled and settled[-1]["status"] == "cancelled"  # ours never ran: 21,000 gas, no revert
    assert not log.events("liquidation_reverted")
