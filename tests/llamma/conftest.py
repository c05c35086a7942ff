"""LLAMMA reference-contract fixtures: four markets deployed once per module on the module's own
anvil (two M2, two V3; 18- and 8-decimal collateral; the M2 18-decimal one is the WETH market),
restored with evm_snapshot / evm_revert around every test; plus scenario helpers."""

from __future__ import annotations

from math import isqrt

import pytest
from web3.logs import DISCARD

from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import LlammaDeployment, deploy_llamma, lower_price_in_steps

WAD = 10**18
N_BANDS = 10

MARKETS = {
    "m2-weth": dict(variant="m2", weth_collateral=True),
    "m2-8dec": dict(variant="m2", collateral_decimals=8),
    "v3-18dec": dict(variant="v3", collateral_decimals=18),
    "v3-8dec": dict(variant="v3", collateral_decimals=8),
}


@pytest.fixture(scope="module")
def module_chain(module_anvil) -> DevChain:
    return DevChain(module_anvil.url)


@pytest.fixture(scope="module")
def deployments(module_chain) -> dict[str, LlammaDeployment]:
    out: dict[str, LlammaDeployment] = {}
    mint_factory = lending_factory = crvusd = borrowed = None
    for key, kw in MARKETS.items():
        if kw["variant"] == "m2":
            m = deploy_llamma(module_chain, factory=mint_factory, stablecoin=crvusd, **kw)
            mint_factory, crvusd = m.factory, m.stablecoin
        else:
            m = deploy_llamma(module_chain, factory=lending_factory, stablecoin=borrowed, **kw)
            lending_factory, borrowed = m.factory, m.stablecoin
        out[key] = m
    return out


@pytest.fixture
def fresh(module_chain):
    """Every state change of the test is reverted afterwards."""
    with module_chain.reverted():
        yield module_chain


@pytest.fixture(params=list(MARKETS))
def market(request, deployments, fresh) -> LlammaDeployment:
    """Each of the four markets in turn, on a reverted chain."""
    return deployments[request.param]


@pytest.fixture(params=["m2-weth", "v3-8dec"])
def market2(request, deployments, fresh) -> LlammaDeployment:
    """One M2 (18-decimal WETH) and one V3 (8-decimal) market, for the cheaper checks."""
    return deployments[request.param]


@pytest.fixture(scope="module")
def accounts(module_chain) -> dict[str, str]:
    a = module_chain.accounts
    return {"alice": a[1], "bob": a[2], "carol": a[3], "dave": a[4], "liquidator": a[7], "other": a[8], "arb": a[9]}


# ---- scenario helpers ------------------------------------------------------------------------


def events(contract, name: str, receipt) -> list:
    return [e["args"] for e in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)]


def open_max_loan(m: LlammaDeployment, user: str, amount: str = "10", n_bands: int = N_BANDS, ltv: int = WAD) -> int:
    """Loan with `amount` collateral tokens at `ltv` x max_borrowable; returns the debt."""
    return m.create_max_loan(user, m.units(amount), n_bands, ltv)


def band_price_inside(m: LlammaDeployment, n: int) -> int:
    """An oracle price in the middle of band n (geometric middle of p_oracle_down(n) .. p_oracle_up(n))."""
    return isqrt(m.amm.functions.p_oracle_up(n).call() * m.amm.functions.p_oracle_down(n).call())


def soft_liquidate_to_band(m: LlammaDeployment, n: int, arb: str, steps: int = 6) -> list[int]:
    """Lower the oracle into band n in steps, arbitraging after each one."""
    return lower_price_in_steps(m, band_price_inside(m, n), steps, arb)


def make_partly_converted_rekt(m: LlammaDeployment, user: str, arb: str) -> None:
    """Max loan, soft-liquidated to its 4th band, then a 12 % crash that arbitrage does not follow:
    the bands hold both coins and full health < 0."""
    open_max_loan(m, user)
    n1, _ = m.user_bands(user)
    soft_liquidate_to_band(m, n1 + 3, arb)
    m.set_oracle_price(m.oracle_price() * 88 // 100)
    assert m.health(user, True) < 0


def make_fully_converted_rekt(m: LlammaDeployment, user: str, arb: str) -> None:
    """Max loan, price moved below its last band with arbitrage (all borrowed token), then interest
    grows the debt until health < 0 while the bands still hold more than the debt."""
    open_max_loan(m, user)
    _, n2 = m.user_bands(user)
    soft_liquidate_to_band(m, n2 + 2, arb, steps=12)
    x, y = m.amm.functions.get_sum_xy(user).call()
    assert y == 0
    debt = m.controller.functions.debt(user).call()
    # grow debt to the middle of (x * (1 - ld), x): liquidatable, yet fully covered by x
    ld = m.controller.functions.liquidation_discounts(user).call()
    target = (x * (WAD - ld) // WAD + x) // 2
    rate = 10**10
    seconds = (target * WAD // debt - WAD) // rate + 1
    m.accrue_interest(rate, seconds)
    assert m.health(user, True) < 0
    assert m.controller.functions.debt(user).call() < m.amm.functions.get_sum_xy(user).call()[0]
