"""LLAMMA risk figures against the contracts themselves (real anvil, reference contracts): the scan's
soft-liquidation range and liquidation price, and `evaluate_shocked` (what-if) — each prediction checked
by doing the move on a snapshot (set the oracle, arbitrage the AMM with `exchange` as
keeper/devtools/llamma_env.arbitrage does, read the controller's own views) and reverting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keeper.devtools.llamma_env import LlammaDeployment, arbitrage, lower_price_in_steps
from keeper.risk import llamma as lm
from keeper.risk import llamma_bands as lb
from keeper.types import Status
from tests.harness import KEEPER, open_adapter
from tests.llamma.conftest import N_BANDS, band_price_inside, open_max_loan

pytestmark = pytest.mark.chain
WAD = 10**18
LIQUIDATABLE = {Status.FULL, Status.PARTIAL, Status.UNAFFORDABLE}


def populate(m: LlammaDeployment, accounts: dict[str, str]) -> list[str]:
    """Four loans with overlapping bands (shared bands: shares prorated), then the price lowered into the
    first one's bands in steps with arbitrage: some loans part converted, some untouched."""
    users = [accounts[k] for k in ("alice", "bob", "carol", "dave")]
    open_max_loan(m, users[0], "10", N_BANDS)
    open_max_loan(m, users[1], "4", 4, ltv=95 * WAD // 100)
    n1, _ = m.user_bands(users[0])
    lower_price_in_steps(m, band_price_inside(m, n1 - 2), 3, accounts["arb"])
    open_max_loan(m, users[2], "20", 20, ltv=80 * WAD // 100)
    open_max_loan(m, users[3], "3", 6, ltv=99 * WAD // 100)
    lower_price_in_steps(m, band_price_inside(m, n1 + 1), 4, accounts["arb"])
    return users


def arbitrage_fully(m: LlammaDeployment, arb: str) -> None:
    """llamma_env.arbitrage, repeated while it trades (one exchange crosses at most 50 bands)."""
    for _ in range(lb.ARBITRAGE_ROUNDS):
        if arbitrage(m, arb) is None:
            return


def health_after_move(m: LlammaDeployment, user: str, price: int, arb: str) -> int:
    with m.chain.reverted():
        m.set_oracle_price(price)
        arbitrage_fully(m, arb)
        return m.health(user, True)


def protocol(m: LlammaDeployment) -> dict:
    return {"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0}


async def scan_evaluations(m: LlammaDeployment):
    adapter, rpc, head = await open_adapter(m.chain.url, protocol(m))
    try:
        await adapter.prepare_scan(head)
        evals = adapter.evaluate(head, full=True)
    finally:
        await rpc.close()
    return adapter, {e.key.account: e for e in evals if e.key.market == m.controller.address}


async def test_band_range_and_liquidation_price_match_the_contracts(market2, accounts):
    m = market2
    users = populate(m, accounts)
    adapter, evals = await scan_evaluations(m)
    checked = 0
    for u in users:
        f = evals[u].fields
        # the soft-liquidation range is the controller's own user_prices
        assert [f["soft_liq_from"], f["soft_liq_to"]] == m.controller.functions.user_prices(u).call()
        lp = f["liq_price"]
        assert lp is not None and lp < m.oracle_price()
        # at the reported price the loan is hard-liquidatable, 0.1 % above it it is not
        assert health_after_move(m, u, lp, accounts["arb"]) < 0
        assert health_after_move(m, u, lp * 1001 // 1000, accounts["arb"]) >= 0
        # risk usage works on full-scan rows: > 100 % exactly when health < 0
        usage = adapter.risk_usage(evals[u])
        assert usage is not None and (usage > WAD) == (f["health_full"] < 0)
        checked += 1
    assert checked == 4
    assert evals[users[0]].fields["soft"]  # the price is inside alice's bands: part converted
    assert not evals[users[2]].fields["soft"]


@pytest.mark.parametrize("shocks", [(97 * WAD // 100, 92 * WAD // 100, 85 * WAD // 100)])
async def test_whatif_predicts_the_contracts_liquidatable_set(market2, accounts, shocks):
    m = market2
    users = populate(m, accounts)
    m.fund_stablecoin(KEEPER, m.usd(10**6))  # the keeper can fund full liquidations: statuses `full`
    adapter, rpc, head = await open_adapter(m.chain.url, protocol(m))
    p_now = m.oracle_price()
    # The model's one inexact input is each band's share of the user, from get_xy's amounts (rounded down to
    # native units, taken at the middle of their rounding interval): a band's value is off by at most
    # 1 / (2 × the user's native amount in it), so health by at most (1 + health) / (2 × the smallest).
    tolerance = {}
    for u in users:
        xs, ys = m.amm.functions.get_xy(u).call()
        tolerance[u] = 2 * WAD // min(max(x, y) for x, y in zip(xs, ys, strict=True) if max(x, y) > 0)
    sizes = []
    try:
        for factor in shocks:
            shocked = await adapter.evaluate_shocked(head, {m.controller.address: factor})
            assert m.chain.block_number() == head.number  # what-if reads, never writes
            mine = {e.key.account: e for e in shocked if e.key.market == m.controller.address}
            assert set(mine) == set(users)
            predicted = {u for u, e in mine.items() if e.status in LIQUIDATABLE}
            assert predicted == {u for u, e in mine.items() if e.fields["health_full"] < 0}
            with m.chain.reverted():
                m.set_oracle_price(p_now * factor // WAD)
                arbitrage_fully(m, accounts["arb"])
                onchain = {r[0] for r in m.controller.functions.users_to_liquidate().call()}
                healths = {u: m.health(u, True) for u in users}
                bands = {u: m.amm.functions.get_sum_xy(u).call() for u in users}
            assert predicted == onchain == {u for u, h in healths.items() if h < 0}
            for u in users:
                e = mine[u]
                assert e.fields["notional"] == m.controller.functions.debt(u).call()
                # the local health is the contract's, up to the per-band share taken from get_xy
                assert abs(e.fields["health_full"] - healths[u]) <= tolerance[u], (u, e.fields["health_full"], healths[u])
                # what the bands hold after the move (what a liquidation withdraws), to the same rounding
                for got, want in zip((e.fields["x"], e.fields["y"]), bands[u], strict=True):
                    assert abs(got - want) <= want * tolerance[u] // WAD + 1
                if e.status in LIQUIDATABLE:
                    assert e.status == Status.FULL and e.candidate
                    assert (
                        e.est_reward
                        == lm.payout(
                            debt=e.fields["debt"],
                            x=e.fields["x"],
                            y=e.fields["y"],
                            frac=WAD,
                            health_limit=m.controller.functions.liquidation_discounts(u).call(),
                            price_oracle=p_now * factor // WAD,
                            haircut=WAD // 100,
                            collateral_precision=10 ** (18 - m.collateral_decimals),
                        ).value
                    )
            sizes.append(len(predicted))
    finally:
        await rpc.close()
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # deeper shocks liquidate more, and some do


def test_scan_json_shows_band_range_liquidation_price_and_risk_usage(deployments, fresh, accounts, tmp_path):
    """`keeper scan --json`: the three prices as exact decimal strings (1e18 → stablecoin per collateral)
    and the risk usage column filled for every loan."""
    from decimal import Decimal  # noqa: PLC0415

    from tests.harness import KEEPER_KEY, KEY_ENV, keeper_config, write_config  # noqa: PLC0415

    m = deployments["v3-8dec"]
    users = populate(m, accounts)
    cfg = write_config(tmp_path / "k.toml", keeper_config(m.chain.url, tmp_path / "s.sqlite", [protocol(m)]))
    proc = subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), "scan", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, KEY_ENV: KEEPER_KEY},
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["account"]: r for r in json.loads(proc.stdout)["positions"]}
    for u in users:
        r = rows[u]
        top, bottom = m.controller.functions.user_prices(u).call()
        assert Decimal(r["soft_liq_from"]) * WAD == top and Decimal(r["soft_liq_to"]) * WAD == bottom
        assert isinstance(r["liq_price"], str) and Decimal(r["liq_price"]) * WAD < m.oracle_price()
        usage, health = Decimal(r["risk_usage"]), Decimal(r["health_full"])
        assert (usage > 1) == (health < 0) and usage == Decimal(WAD * WAD // (WAD + int(health * WAD))) / WAD
