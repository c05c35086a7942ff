"""The keeper against the reference Perp v1 contracts on anvil: real signed transactions, real
receipts; every test asserts on-chain state, balances, events or log fields."""

from __future__ import annotations

import pytest

from keeper.devtools.perp_env import BUY, SELL, SPOT_PRICE, USDC_UNIT
from keeper.risk import perp as pm
from tests.harness import KEEPER, keeper_config, perp_protocol, run_engine, start_engine, step

pytestmark = pytest.mark.chain
E = 10**18


def liquidations(perp, from_block: int) -> list[dict]:
    ev = perp.clearing_house.events.PositionLiquidated
    return [dict(x["args"]) for x in ev.get_logs(from_block=from_block)]


def assert_liquidated_by_keeper(perp, from_block: int) -> None:
    """At least one liquidation since `from_block`, all by the keeper (a partial close may be
    followed by another one in the next block while the rest is still under water)."""
    liqs = liquidations(perp, from_block)
    assert liqs and {x["liquidator"] for x in liqs} == {KEEPER}


def open_10x_long(perp, trader: str, margin: int = 300 * E) -> None:
    perp.fund_trader(trader, margin + 10 * E)
    perp.open_position(trader, "ETH", BUY, margin=margin, leverage=10 * E)


def crash(perp, whale: str, price: int, oracle: int | None = None) -> None:
    perp.set_oracle_price("ETH", oracle if oracle is not None else price)
    perp.move_spot_price("ETH", price, whale)
    perp.advance_twap(900)  # the 15-minute TWAP follows the spot


async def run_keeper(perp, tmp_path, blocks: int = 2, dry_run: bool = False, **over):
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp, **over.pop("protocol", {}))], **over)
    _engine, log = await run_engine(cfg, blocks, dry_run=dry_run)
    return log


async def test_seed_example_partial_liquidation_earns_1_25_percent(perp, accounts, tmp_path):
    """docs/PROTOCOLS.md §R.1 worked example: 10x long ETH at 3,000, ETH falls to 2,880 → margin ratio ≈ 6 %
    → 25 % is liquidated and the keeper earns 1.25 % of that part's notional (2.5 % fee)."""
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    size0 = perp.position("ETH", alice)["size"]
    crash(perp, whale, 2880 * E)
    mr = perp.margin_ratio("ETH", alice)
    assert 5 * E // 100 < mr < 625 * E // 10_000  # ≈ 6 %
    start, usdc0 = perp.chain.block_number(), perp.usdc_balance(KEEPER)

    log = await run_keeper(perp, tmp_path)

    (liq,) = liquidations(perp, start)
    assert liq["liquidator"] == KEEPER and liq["trader"] == alice
    assert liq["liquidationFee"] == pm.mul_d(liq["positionNotional"], 25 * E // 1000) // 2
    assert abs(liq["liquidationFee"] * 10_000 - liq["positionNotional"] * 125) <= 10_000  # 1.25 % of the closed notional
    size1 = perp.position("ETH", alice)["size"]
    assert abs(size1 - size0 * 3 // 4) * 1000 < size0  # 25 % closed, the rest stays open
    assert perp.usdc_balance(KEEPER) - usdc0 == liq["liquidationFee"] // USDC_UNIT
    (sent,) = log.events("liquidation_sent")
    (landed,) = log.events("liquidation_landed")
    assert sent["kind"] == "partial" and landed["kind"] == "partial"
    assert landed["reward"] == sent["expected_reward"] == liq["liquidationFee"] // USDC_UNIT * USDC_UNIT


async def test_full_liquidation_below_fee_ratio(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice, margin=1000 * E)
    crash(perp, whale, 2760 * E)  # −8 %: ratio ≈ 2 % < 2.5 % fee ratio, still solvent
    n, pnl = perp.notional_and_pnl("ETH", alice, SPOT_PRICE)
    spot_mr = pm.sdiv_d(1000 * E + pnl, n)
    assert 0 < spot_mr <= 25 * E // 1000
    start = perp.chain.block_number()
    log = await run_keeper(perp, tmp_path)
    (liq,) = liquidations(perp, start)
    assert liq["liquidator"] == KEEPER and liq["badDebt"] == 0
    assert perp.position("ETH", alice)["size"] == 0
    assert log.events("liquidation_landed")[0]["kind"] == "full"


async def test_exact_maintenance_boundary_is_not_liquidatable(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2950 * E)
    mr = perp.margin_ratio("ETH", alice)
    ch = perp.clearing_house
    perp.chain.tx(ch.functions.setMaintenanceMarginRatio((mr,)))  # ratio == MMR exactly: not liquidatable
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path)
    assert perp.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    perp.chain.expect_revert(ch.functions.liquidate(perp.amm("ETH").address, alice), "Margin ratio not meet criteria")
    perp.chain.tx(ch.functions.setMaintenanceMarginRatio((mr + 1,)))  # one wei above: liquidatable
    start = perp.chain.block_number()
    await run_keeper(perp, tmp_path)
    assert_liquidated_by_keeper(perp, start)


@pytest.mark.parametrize(("delta", "kind"), [(0, "full"), (-1, "partial")])
async def test_partial_full_boundary_at_fee_ratio(perp, accounts, tmp_path, delta, kind):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    pos = perp.position("ETH", alice)
    n, pnl = perp.notional_and_pnl("ETH", alice, SPOT_PRICE)
    spot_mr = pm.sdiv_d(pos["margin"] + pnl, n)
    assert 0 < spot_mr and perp.margin_ratio("ETH", alice) < 625 * E // 10_000
    # liquidation fee ratio == spot ratio → full close; one wei below → partial (strict >)
    perp.chain.tx(perp.clearing_house.functions.setLiquidationFeeRatio((spot_mr + delta,)))
    log = await run_keeper(perp, tmp_path)
    assert log.events("liquidation_landed")[0]["kind"] == kind
    assert (perp.position("ETH", alice)["size"] == 0) == (kind == "full")


async def test_over_spread_rule_protects_oracle_healthy_position(perp, accounts, tmp_path):
    """vAMM held > 10 % under the index (lockout off) long enough for its TWAP to follow: a position
    under water on spot and TWAP but healthy on the oracle is not liquidated; nonce does not move."""
    alice, whale = accounts["alice"], accounts["whale"]
    perp.fund_trader(alice, 1000 * E)
    perp.open_position(alice, "ETH", BUY, margin=1000 * E, leverage=7 * E)  # solvent even at −11.7 %
    crash(perp, whale, 2650 * E, oracle=3000 * E)  # −11.7 % vs the index
    assert perp.amm("ETH").functions.isOverSpreadLimit().call()
    assert perp.margin_ratio("ETH", alice) < 625 * E // 10_000  # under water on market prices
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path, blocks=3)
    assert perp.chain.nonce(KEEPER) == nonce0
    assert not log.events("liquidation_sent") and not log.events("dry_run_would_send")
    statuses = [r["status"] for r in log.events("position_status") if r["account"] == alice]
    assert statuses[-1] == "over-spread"
    perp.chain.expect_revert(
        perp.clearing_house.functions.liquidate(perp.amm("ETH").address, alice), "Margin ratio not meet criteria"
    )
    # Control: once the index agrees with the market the position is liquidated.
    perp.set_oracle_price("ETH", 2650 * E)
    start = perp.chain.block_number()
    await run_keeper(perp, tmp_path)
    assert_liquidated_by_keeper(perp, start)


async def test_lockout_sends_nothing_until_price_is_back_within_5_percent(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    perp.set_lockout("ETH", 5 * E // 100)
    open_10x_long(perp, alice)
    perp.set_oracle_price("ETH", 3000 * E)
    # The whale's short widens the gap: with the lockout on it must trade before the switch.
    perp.set_lockout("ETH", 0)
    perp.move_spot_price("ETH", 2800 * E, whale)  # −6.7 %: between 5 % and 10 %
    perp.set_lockout("ETH", 5 * E // 100)
    perp.advance_twap(900)
    assert perp.margin_ratio("ETH", alice) < 625 * E // 10_000
    assert not perp.amm("ETH").functions.isOverSpreadLimit().call()
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path, blocks=3)
    assert perp.chain.nonce(KEEPER) == nonce0
    assert [r["status"] for r in log.events("position_status") if r["account"] == alice][-1] == "lockout"
    perp.chain.expect_revert(perp.clearing_house.functions.liquidate(perp.amm("ETH").address, alice), "price deviation lockout")
    perp.set_oracle_price("ETH", 2900 * E)  # back within 5 % (3.4 %)
    start = perp.chain.block_number()
    await run_keeper(perp, tmp_path)
    assert_liquidated_by_keeper(perp, start)


async def test_keeper_policy_lockout_on_real_contract_without_switch(perp, accounts, tmp_path):
    """lockout = 'on' in config applies the rule even where the contract has no switch."""
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2800 * E, oracle=3000 * E)
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path, protocol={"lockout": "on"})
    assert perp.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    log = await run_keeper(perp, tmp_path, protocol={"lockout": "off"})
    landed = log.events("liquidation_landed")
    assert landed and {r["account"] for r in landed} == {alice}
    assert not log.events("liquidation_reverted")


async def test_unprofitable_is_skipped_with_numbers_then_sent_when_profitable(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path, profit={"min_profit": "1000"})  # reward ≈ 9 USDC
    assert perp.chain.nonce(KEEPER) == nonce0
    (skip,) = [r for r in log.events("liquidation_skipped") if r["reason"] == "unprofitable"][:1]
    assert skip["min_profit"] == 1000 * E and skip["est_profit"] == skip["expected_reward"] - skip["est_cost"]
    assert skip["est_cost"] > 0 and skip["gas"] > 100_000
    # High gas: the base fee spikes, the same reward no longer covers the cost.
    perp.chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(2000 * 10**9)])
    perp.chain.mine()
    log = await run_keeper(perp, tmp_path, gas={"max_fee_per_gas_gwei": "10000", "priority_fee_gwei": "1"})
    assert perp.chain.nonce(KEEPER) == nonce0
    assert any(r["reason"] == "unprofitable" for r in log.events("liquidation_skipped"))
    # Above the fee cap the keeper waits instead of overpaying.
    log = await run_keeper(perp, tmp_path, gas={"max_fee_per_gas_gwei": "100"})
    assert any(r["reason"] == "fee_cap" for r in log.events("liquidation_skipped"))
    assert perp.chain.nonce(KEEPER) == nonce0
    # Base fee back to normal: profitable → sent and landed.
    perp.chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(10**9)])
    perp.chain.mine()
    log = await run_keeper(perp, tmp_path)
    assert perp.chain.nonce(KEEPER) == nonce0 + 1 and len(log.events("liquidation_landed")) == 1


async def test_dry_run_simulates_but_never_sends(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path, dry_run=True)
    assert perp.chain.nonce(KEEPER) == nonce0
    (would,) = log.events("dry_run_would_send")[:1]
    assert would["kind"] == "partial" and would["gas"] > 0 and would["expected_reward"] > 0


async def test_race_lost_to_another_liquidator_is_logged_and_not_resent(perp, accounts, tmp_path):
    alice, whale, rival = accounts["alice"], accounts["whale"], accounts["carol"]
    open_10x_long(perp, alice, margin=1000 * E)
    crash(perp, whale, 2760 * E)  # full-close territory
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    try:
        perp.chain.set_automine(False)
        await step(engine)  # keeper simulates and sends; the tx waits in the mempool
        (sent,) = log.events("liquidation_sent")
        # A rival liquidates in the same block with a higher tip: it is ordered first.
        ch = perp.clearing_house
        perp.chain.w3.eth.send_transaction(
            {
                "from": rival,
                "to": ch.address,
                "data": ch.functions.liquidate(perp.amm("ETH").address, alice)._encode_transaction_data(),
                "gas": 1_500_000,
                "maxPriorityFeePerGas": 50 * 10**9,
                "maxFeePerGas": 200 * 10**9,
            }
        )
        perp.chain.mine()
        perp.chain.set_automine(True)
        for _ in range(4):
            await step(engine)
            perp.chain.mine()
    finally:
        perp.chain.set_automine(True)
        await engine.close()
    receipt = perp.chain.w3.eth.get_transaction_receipt(sent["tx"])
    assert receipt.status == 0
    (raced,) = log.events("liquidation_raced")
    assert rival in raced["reason"]
    assert len(log.events("liquidation_sent")) == 1  # never resent
    assert perp.chain.nonce(KEEPER) == sent["nonce"] + 1


async def test_position_in_flight_is_never_sent_twice(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp)])
    engine, log = await start_engine(cfg)
    try:
        perp.chain.set_automine(False)
        for _ in range(3):
            await step(engine)  # same head, then still pending
        assert len(log.events("liquidation_sent")) == 1
        assert perp.chain.w3.eth.get_transaction_count(KEEPER, "pending") == perp.chain.nonce(KEEPER) + 1
        perp.chain.mine()
        perp.chain.set_automine(True)
        await step(engine)
    finally:
        perp.chain.set_automine(True)
        await engine.close()
    assert len(log.events("liquidation_landed")) == 1


async def test_bad_debt_is_not_sent_by_a_non_backstop_keeper(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice, margin=1000 * E)
    crash(perp, whale, 2600 * E)  # −13 %: loss > margin
    nonce0 = perp.chain.nonce(KEEPER)
    log = await run_keeper(perp, tmp_path)
    assert perp.chain.nonce(KEEPER) == nonce0
    assert [r["status"] for r in log.events("position_status") if r["account"] == alice][-1] == "bad-debt"
    perp.chain.expect_revert(
        perp.clearing_house.functions.liquidate(perp.amm("ETH").address, alice), "not backstop LP", sender=KEEPER
    )
    perp.set_backstop(KEEPER, True)
    start = perp.chain.block_number()
    await run_keeper(perp, tmp_path)
    (liq,) = liquidations(perp, start)
    assert liq["liquidator"] == KEEPER and perp.position("ETH", alice)["size"] == 0


async def test_v22_variant_is_detected_and_liquidated(perp22, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    perp = perp22
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    start = perp.chain.block_number()
    log = await run_keeper(perp, tmp_path)
    (started,) = [r for r in log.records if r["event"] == "perp_started"]
    assert started["variant"] == "v2.2"
    assert_liquidated_by_keeper(perp, start)


async def test_short_positions_and_second_market(perp, accounts, tmp_path):
    carol, whale = accounts["carol"], accounts["whale"]
    perp.fund_trader(carol, 3000 * E)
    perp.open_position(carol, "BTC", SELL, margin=2000 * E, leverage=8 * E)
    perp.set_oracle_price("BTC", 64_500 * E)
    perp.move_spot_price("BTC", 64_500 * E, whale)
    perp.advance_twap(900)
    start = perp.chain.block_number()
    log = await run_keeper(perp, tmp_path)
    liqs = liquidations(perp, start)
    assert liqs and all(x["trader"] == carol and x["amm"] == perp.amm("BTC").address for x in liqs)
    assert_liquidated_by_keeper(perp, start)
    assert {r["market"] for r in log.events("liquidation_landed")} == {"BTC"}


async def test_clearly_healthy_positions_never_reach_the_exact_maths_and_a_move_reprices_them(perp, accounts, tmp_path):
    """The vectorised prefilter proves a clearly healthy position's spot ratio above the band with
    float bounds, block after block, so only the others go through the exact maths; a trade or a
    funding payment is seen by both (the verdicts equal the exact maths' for every position)."""
    from keeper.types import Block, Evaluation, PositionKey, Status  # noqa: PLC0415
    from tests.harness import open_adapter  # noqa: PLC0415

    alice, carol, whale = accounts["alice"], accounts["carol"], accounts["whale"]
    open_10x_long(perp, alice)
    perp.fund_trader(carol, 1010 * E)
    perp.open_position(carol, "ETH", SELL, 1000 * E, 2 * E)
    adapter, rpc, head = await open_adapter(perp.chain.url, perp_protocol(perp))
    priced: list = []
    real = adapter._evaluate_one
    fused = adapter._evaluate_unproven  # the per-block exact maths of the positions the prefilter did not clear

    def spy(evals, positions, unproven, *a):
        priced.extend(evals[i].key.account for i in unproven)
        return fused(evals, positions, unproven, *a)

    adapter._evaluate_unproven = spy

    def exact() -> dict:
        skip = adapter.params.mmr + 2 * 10**16  # the default prefilter_margin
        out = {}
        for (amm, t), pos in adapter.positions.items():
            key = PositionKey(adapter.name, amm, t)
            e = real(key, pos, adapter.states[amm], adapter.info[amm], skip)
            out[t] = e or Evaluation(key, Status.HEALTHY, False)
        return out

    async def block() -> dict:
        priced.clear()
        perp.chain.mine()
        h = Block.from_rpc(await rpc.get_block("latest"))
        await adapter.sync(h)
        got = {e.key.account: e for e in adapter.evaluate(h)}
        assert got == exact()
        return got

    try:
        adapter.evaluate(head)
        quiet = await block()  # an empty block: nothing priced exactly, same verdicts
        assert priced == [] and {a: e.status for a, e in quiet.items()} == {alice: Status.HEALTHY, carol: Status.HEALTHY}
        crash(perp, whale, 2880 * E)  # a trade moves the reserves: alice falls under maintenance
        moved = await block()
        assert priced == [alice] and moved[alice].candidate and not moved[carol].candidate
        await block()
        assert priced == [alice]  # carol is still clearly healthy; alice, a candidate, is priced each block
        perp.chain.advance(3600)
        perp.pay_funding("ETH")  # funding moves the premium fraction: the bound follows it
        assert (await block())[alice].candidate and priced == [alice]
    finally:
        await rpc.close()


def pm_status(name: str):
    from keeper.types import Status  # noqa: PLC0415

    return Status(name)
