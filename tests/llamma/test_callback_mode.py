"""The LLAMMA keeper in callback mode (issue 9): no stablecoin inventory at all; every liquidation goes
through the keeper's liquidator contract, which sells the collateral along the market's route in the
same transaction. The keeper decides on a live quote of that route, and what it realises equals what it
estimated. Real anvil, real controllers (M2 and V3 ABIs), real pools, real signed transactions."""

from __future__ import annotations

import os

import pytest

from keeper.config import parse_config
from keeper.daemon import ReadOnlyKeeper
from keeper.devtools.pools import deploy_liquidator
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, keeper_config, run_engine
from tests.llamma.conftest import make_partly_converted_rekt
from tests.llamma.test_liquidator_contract import bal, hop_for, pool_at_price

pytestmark = pytest.mark.chain
KINDS = {0: "curve", 1: "curve_crypto", 2: "univ2"}


def callback_config(m, tmp_path, liquidator: str, hops: list) -> dict:
    route = [
        {"pool": h.pool, "kind": KINDS[h.kind], "i": h.i, "j": h.j, "token_in": h.token_in, "token_out": h.token_out}
        for h in hops
    ]
    protocol = {
        "kind": "llamma",
        "name": "crv",
        "factory": m.factory.address,
        "start_block": 0,
        "mode": "callback",
        "liquidator": liquidator,
        "routes": {m.controller.address: {"hops": route}},
    }
    return keeper_config(m.chain.url, tmp_path / "k.sqlite", [protocol])


@pytest.mark.parametrize(("name", "pool_kind"), [("m2-8dec", "stable"), ("v3-8dec", "univ2")])
async def test_callback_mode_liquidates_with_zero_inventory_and_realises_the_estimate(
    name, pool_kind, deployments, fresh, accounts, tmp_path
):
    m = deployments[name]
    alice = accounts["alice"]
    make_partly_converted_rekt(m, alice, accounts["arb"])
    assert m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER}) > 0  # it needs paying
    pool = pool_at_price(m.chain, m, pool_kind, m.units("1000"))
    liquidator = deploy_liquidator(m.chain, KEEPER)
    stable0, coll0 = bal(m.stablecoin, KEEPER), bal(m.collateral, KEEPER)
    assert stable0 < 10**12  # no inventory (dust at most)
    cfg = callback_config(m, tmp_path, liquidator.address, [hop_for(m.chain, pool, m.collateral, m.stablecoin)])
    # scan shows the route, its quote at the head and the profit, priced as the daemon will
    os.environ[KEY_ENV] = KEEPER_KEY
    keeper = await ReadOnlyKeeper.open(parse_config(cfg, environ={}))
    try:
        (row,) = [r for r in await keeper.scan() if r["account"] == alice]
    finally:
        await keeper.close()
    assert row["mode"] == "callback" and row["route"].startswith(("curve:", "univ2:")) and row["quoted_proceeds"] > 0
    _engine, log = await run_engine(cfg, 2)
    assert not log.events("approval_sent") and not log.events("setup_sent")
    (sent,) = [r for r in log.events("liquidation_sent") if r["account"] == alice]
    (landed,) = [r for r in log.events("liquidation_landed") if r["account"] == alice]
    assert landed["mode"] == "callback" and landed["tx"] == sent["tx"]
    # realised = estimated, to the wei, and it is what the keeper's balance gained
    assert landed["reward"] == landed["expected_reward"] == sent["expected_reward"] == row["est_reward"] > 0
    assert bal(m.stablecoin, KEEPER) - stable0 == landed["reward"]
    assert landed["proceeds"] == landed["estimated_proceeds"]
    # no collateral left anywhere on the keeper's side; the loan is gone
    assert bal(m.collateral, KEEPER) == coll0 and bal(m.collateral, liquidator.address) == 0
    assert bal(m.stablecoin, liquidator.address) == 0
    assert m.controller.functions.debt(alice).call() == 0


async def test_a_route_too_thin_to_pay_is_skipped_with_its_numbers(deployments, fresh, accounts, tmp_path):
    m = deployments["v3-8dec"]
    alice = accounts["alice"]
    make_partly_converted_rekt(m, alice, accounts["arb"])
    pool = pool_at_price(m.chain, m, "stable", m.units("0.05"))  # a sliver of liquidity
    liquidator = deploy_liquidator(m.chain, KEEPER)
    nonce0 = m.chain.nonce(KEEPER)
    _engine, log = await run_engine(
        callback_config(m, tmp_path, liquidator.address, [hop_for(m.chain, pool, m.collateral, m.stablecoin)]), 2
    )
    assert m.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    skipped = [r for r in log.events("liquidation_route_unprofitable") if r["account"] == alice]
    assert skipped and all(r["route_profit"] < r["min_profit"] for r in skipped)
    assert all(r["quoted_proceeds"] < r["pay"] for r in skipped)  # the route cannot even repay the debt share
    assert m.controller.functions.debt(alice).call() > 0


async def test_auto_mode_takes_the_route_when_it_pays_and_inventory_when_it_does_not(deployments, fresh, accounts, tmp_path):
    m = deployments["v3-8dec"]
    alice = accounts["alice"]
    make_partly_converted_rekt(m, alice, accounts["arb"])
    pay = m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER})
    m.fund_stablecoin(KEEPER, pay * 3)  # inventory for the fallback
    thin = pool_at_price(m.chain, m, "stable", m.units("0.05"))
    liquidator = deploy_liquidator(m.chain, KEEPER)
    cfg = callback_config(m, tmp_path, liquidator.address, [hop_for(m.chain, thin, m.collateral, m.stablecoin)])
    cfg["protocols"][0]["mode"] = "auto"
    _engine, log = await run_engine(cfg, 2)
    assert [r["account"] for r in log.events("liquidation_route_unprofitable")][:1] == [alice]
    (landed,) = [r for r in log.events("liquidation_landed") if r["account"] == alice]
    assert "mode" not in landed and landed["stable_paid"] > 0  # the inventory way: the keeper paid d − x
    assert bal(m.collateral, KEEPER) > 0 and m.controller.functions.debt(alice).call() == 0
