"""The LLAMMA liquidator contract (contracts/llamma/Liquidator.vy, issue 9 §1) on anvil, with real
reference controllers (M2 and V3 ABIs, built by Vyper 0.4 and behind Vyper 0.3.10 dispatchers) and
the reference swap pools (contracts/pools/: Curve stableswap / cryptoswap ABIs, Uniswap V2 pair).

Every liquidation starts with the contract and its owner holding no stablecoin. The expected gain is
computed before the transaction from the pre-state alone: (x, y) = what AMM.withdraw returns for the
user's f_remove (eth_call from the Controller), d from the Controller's debt and rounding, and the
route's quote of y (get_dy / the Uniswap V2 formula, by eth_call). It must equal the owner's balance
delta and the event's profit exactly: proceeds − (d − x), or x − d + proceeds when x ≥ d.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_abi import decode as abi_decode
from web3 import Web3
from web3.contract import Contract

from keeper.devtools.chain import DevChain, TxFailed
from keeper.devtools.llamma_env import LlammaDeployment, deploy_llamma
from keeper.devtools.pools import (
    KIND_CRYPTOSWAP,
    KIND_STABLESWAP,
    KIND_UNIV2,
    Hop,
    add_curve_liquidity,
    curve_hop,
    deploy_curve_pool,
    deploy_liquidator,
    deploy_univ2_pair,
    quote_route,
    route_tuples,
    univ2_hop,
)
from tests.llamma.conftest import (
    WAD,
    events,
    make_fully_converted_rekt,
    make_partly_converted_rekt,
    open_max_loan,
    soft_liquidate_to_band,
)

pytestmark = pytest.mark.chain

# one market per controller form: M2 and V3 built by Vyper 0.4, V3 and LlamaLend 0–7 behind 0.3.10 dispatchers
MARKETS: dict[str, dict] = {
    "m2-8dec": dict(variant="m2", collateral_decimals=8),
    "v3-8dec": dict(variant="v3", collateral_decimals=8),
    "v3-0310": dict(variant="v3", collateral_decimals=8, compiler="0.3.10"),
    "l0-0310": dict(variant="l0-7", collateral_decimals=8, compiler="0.3.10"),
}
FULL = WAD
HALF = WAD // 2
DEEP_COLLATERAL = "1000"  # collateral tokens on each side of a deep pool (~2.5 million stablecoin)
GAS = 3_000_000  # explicit gas: a reverting transaction is mined (status 0) instead of failing estimation


@pytest.fixture(scope="module")
def chain(module_anvil) -> DevChain:
    return DevChain(module_anvil.url)


@pytest.fixture(scope="module")
def markets(chain) -> dict[str, LlammaDeployment]:
    return {name: deploy_llamma(chain, **kw) for name, kw in MARKETS.items()}


@pytest.fixture(scope="module")
def usdx(chain) -> Contract:
    """An intermediate token for multi-hop routes (6 decimals, like USDC)."""
    return chain.deploy("common/ERC20", "Test USD X", "USDX", 6)


@pytest.fixture(scope="module")
def usdy(chain) -> Contract:
    return chain.deploy("common/ERC20", "Test USD Y", "USDY", 18)


@pytest.fixture
def fresh(chain):
    with chain.reverted():
        yield chain


@pytest.fixture(scope="module")
def who(chain) -> dict[str, str]:
    a = chain.accounts
    return {"alice": a[1], "owner": a[7], "attacker": a[8], "arb": a[9]}


# ---- helpers ---------------------------------------------------------------------------------


def bal(token: Contract, holder: str) -> int:
    return token.functions.balanceOf(Web3.to_checksum_address(holder)).call()


def stable_amount(m: LlammaDeployment, collateral: int, price: int, borrowed_decimals: int | None = None) -> int:
    """`collateral` native units at `price` (1e18 stable per collateral) in native units of a token
    with `borrowed_decimals` (default: the market's stablecoin)."""
    dec = m.borrowed_decimals if borrowed_decimals is None else borrowed_decimals
    return collateral * price * 10**dec // (WAD * 10**m.collateral_decimals)


def pool_at_price(chain: DevChain, m: LlammaDeployment, kind: str, collateral: int, price: int | None = None) -> Contract:
    """A collateral/stablecoin pool of `kind` ("stable", "crypto", "univ2") holding `collateral` and its
    value in stablecoin at `price` (default: the oracle). The stable pool lists the stablecoin first."""
    price = m.oracle_price() if price is None else price
    stable = stable_amount(m, collateral, price)
    if kind == "stable":
        return deploy_curve_pool(chain, m.stablecoin, m.collateral, "stable", (stable, collateral))
    if kind == "crypto":
        return deploy_curve_pool(chain, m.collateral, m.stablecoin, "crypto", (collateral, stable))
    return deploy_univ2_pair(chain, m.collateral, m.stablecoin, (collateral, stable))


def hop_for(chain: DevChain, pool: Contract, token_in, token_out) -> Hop:
    if any(e.get("name") == "getReserves" for e in pool.abi):
        return univ2_hop(pool, token_in, token_out)
    return curve_hop(chain, pool, token_in, token_out)


def direct_route(chain: DevChain, m: LlammaDeployment, kind: str, collateral: int | None = None) -> list[Hop]:
    pool = pool_at_price(chain, m, kind, collateral if collateral is not None else m.units(DEEP_COLLATERAL))
    return [hop_for(chain, pool, m.collateral, m.stablecoin)]


@dataclass
class Preview:
    """What a liquidation will do, from the pre-state only."""

    x: int
    y: int
    d: int
    debt: int
    quote: int  # the route's output for y

    @property
    def paid(self) -> int:  # stable the Controller keeps
        return max(self.d - self.x, 0)

    @property
    def profit(self) -> int:
        return self.quote + self.x - self.d


def f_remove(frac: int, h: int) -> int:
    """The Controller's share of the bands withdrawn for `frac` (h: the liquidation discount)."""
    if frac >= WAD:
        return WAD
    f = (WAD + h // 2) * (WAD - frac) // (WAD + h)
    return (f + frac) * frac // WAD


def preview(chain: DevChain, m: LlammaDeployment, user: str, frac: int, route: list[Hop]) -> Preview:
    h = m.controller.functions.liquidation_discounts(user).call()
    x, y = m.amm.functions.withdraw(user, f_remove(frac, h)).call({"from": m.controller.address})
    debt = m.controller.functions.debt(user).call()
    d = -(-debt * frac // WAD) if m.variant == "v3" else debt * frac // WAD
    return Preview(x=x, y=y, d=d, debt=debt, quote=quote_route(chain, route, y) if y else 0)


def abi_kind(m: LlammaDeployment) -> int:
    """0: liquidate_extended(…, use_eth, callbacker, args) (M1/M2/LlamaLend 0–7); 1: without use_eth."""
    return 0 if m.variant in ("m2", "l0-7") else 1


def liquidate_call(
    liq: Contract, m: LlammaDeployment, user: str, frac: int, route: list[Hop], min_out: int, min_profit: int, min_x: int = 0
):
    return liq.functions.liquidate(m.controller.address, user, min_x, frac, route_tuples(route), min_out, min_profit, abi_kind(m))


def assert_liquidated_as_previewed(
    chain: DevChain, m: LlammaDeployment, liq: Contract, owner: str, user: str, frac: int, route: list[Hop]
):
    """Run the liquidation through the contract with min_out = the quote and min_profit = the
    previewed gain; check everything against the preview. Returns (receipt, preview)."""
    assert bal(m.stablecoin, liq.address) == bal(m.stablecoin, owner) == 0
    p = preview(chain, m, user, frac, route)
    assert p.profit > 0
    receipt = chain.tx(liquidate_call(liq, m, user, frac, route, p.quote, p.profit, min_x=p.x), sender=owner)
    (ev,) = events(liq, "Liquidation", receipt)
    assert (ev["controller"], ev["user"], ev["frac"]) == (m.controller.address, user, frac)
    assert ev["collateral_sold"] == p.y
    assert ev["proceeds"] == p.quote
    assert ev["stable_paid"] == p.paid
    assert ev["profit"] == p.profit == bal(m.stablecoin, owner)
    (lq,) = events(m.controller, "Liquidate", receipt)
    assert (lq["liquidator"], lq["collateral_received"], lq["stablecoin_received"], lq["debt"]) == (liq.address, p.y, p.x, p.d)
    # nothing left behind, nothing but stablecoin reaches the owner
    for token in {m.collateral.address, *(h.token_in for h in route), *(h.token_out for h in route)}:
        t = chain.at("common/ERC20", token)
        assert bal(t, liq.address) == 0
        if token != m.stablecoin.address:
            assert bal(t, owner) == 0
    assert m.stablecoin.functions.allowance(liq.address, m.controller.address).call() == 0
    assert m.controller.functions.debt(user).call() == p.debt - p.d
    if frac == FULL:
        assert not m.controller.functions.loan_exists(user).call()
    return receipt, p


# ---- full and partial, every controller form, every pool kind ----------------------------------------

CASES = [
    ("m2-8dec", FULL, "stable"),
    ("m2-8dec", HALF, "univ2"),
    ("v3-8dec", FULL, "crypto"),
    ("v3-8dec", HALF, "stable"),
    ("v3-0310", FULL, "univ2"),
    ("v3-0310", HALF, "crypto"),
    ("l0-0310", FULL, "crypto"),
    ("l0-0310", HALF, "univ2"),
]


@pytest.mark.parametrize(
    ("name", "frac", "pool_kind"), CASES, ids=[f"{n}-{'full' if f == FULL else 'half'}-{k}" for n, f, k in CASES]
)
def test_liquidation_sells_the_collateral_in_the_same_transaction(name, frac, pool_kind, markets, fresh, who):
    m = markets[name]
    make_partly_converted_rekt(m, who["alice"], who["arb"])
    route = direct_route(fresh, m, pool_kind)
    assert route[0].kind == {"stable": KIND_STABLESWAP, "crypto": KIND_CRYPTOSWAP, "univ2": KIND_UNIV2}[pool_kind]
    liq = deploy_liquidator(fresh, who["owner"])
    _receipt, p = assert_liquidated_as_previewed(fresh, m, liq, who["owner"], who["alice"], frac, route)
    assert p.d > p.x and p.y > 0  # the callback path: the Controller kept d − x out of the proceeds


@pytest.mark.parametrize("name", ["m2-8dec", "v3-8dec"])
def test_two_hop_route_mixing_pool_kinds(name, markets, usdx, fresh, who):
    """collateral → USDX (Uniswap V2 pair) → stablecoin (Curve stableswap, USDX at index 1)."""
    m = markets[name]
    make_partly_converted_rekt(m, who["alice"], who["arb"])
    coll = m.units(DEEP_COLLATERAL)
    price = m.oracle_price()
    pair = deploy_univ2_pair(fresh, m.collateral, usdx, (coll, stable_amount(m, coll, price, 6)))
    dollars = 3_000_000
    pool = deploy_curve_pool(fresh, m.stablecoin, usdx, "stable", (m.usd(dollars), dollars * 10**6))
    route = [univ2_hop(pair, m.collateral, usdx), curve_hop(fresh, pool, usdx, m.stablecoin)]
    assert route[1].i == 1 and route[1].j == 0
    liq = deploy_liquidator(fresh, who["owner"])
    assert_liquidated_as_previewed(fresh, m, liq, who["owner"], who["alice"], FULL, route)


def test_three_hop_route(markets, usdx, usdy, fresh, who):
    """collateral → USDX (Curve cryptoswap) → USDY (Uniswap V2) → stablecoin (Curve stableswap), half."""
    m = markets["v3-0310"]
    make_partly_converted_rekt(m, who["alice"], who["arb"])
    coll = m.units(DEEP_COLLATERAL)
    price = m.oracle_price()
    crypto = deploy_curve_pool(fresh, m.collateral, usdx, "crypto", (coll, stable_amount(m, coll, price, 6)))
    dollars = 3_000_000
    pair = deploy_univ2_pair(fresh, usdx, usdy, (dollars * 10**6, dollars * 10**18))
    stable = deploy_curve_pool(fresh, usdy, m.stablecoin, "stable", (dollars * 10**18, m.usd(dollars)))
    route = [
        curve_hop(fresh, crypto, m.collateral, usdx),
        univ2_hop(pair, usdx, usdy),
        curve_hop(fresh, stable, usdy, m.stablecoin),
    ]
    liq = deploy_liquidator(fresh, who["owner"])
    assert_liquidated_as_previewed(fresh, m, liq, who["owner"], who["alice"], HALF, route)


# ---- x ≥ d: no callback ---------------------------------------------------------------------------


def make_x_ge_d_with_collateral(m: LlammaDeployment, user: str, arb: str) -> None:
    """Max loan soft-liquidated into the middle of its last band (some collateral left, x large),
    then interest until health < 0 with x still ≥ debt: x_down·(1 − ld) < debt ≤ x."""
    open_max_loan(m, user)
    _, n2 = m.user_bands(user)
    soft_liquidate_to_band(m, n2, arb, steps=12)
    x, y = m.amm.functions.get_sum_xy(user).call()
    x_down = m.amm.functions.get_x_down(user).call()
    ld = m.controller.functions.liquidation_discounts(user).call()
    low = x_down * (WAD - ld) // WAD
    assert y > 0 and low < x
    target = (low + x) // 2
    debt = m.controller.functions.debt(user).call()
    rate = 10**10
    m.accrue_interest(rate, (target * WAD // debt - WAD) // rate + 1)
    assert m.health(user, True) < 0
    assert m.controller.functions.debt(user).call() <= m.amm.functions.get_sum_xy(user).call()[0]


@pytest.mark.parametrize("name", ["m2-8dec", "v3-0310"])
def test_x_ge_d_without_callback_sells_the_collateral_itself(name, markets, fresh, who):
    m = markets[name]
    make_x_ge_d_with_collateral(m, who["alice"], who["arb"])
    route = direct_route(fresh, m, "crypto")
    liq = deploy_liquidator(fresh, who["owner"])
    _receipt, p = assert_liquidated_as_previewed(fresh, m, liq, who["owner"], who["alice"], FULL, route)
    assert p.x >= p.d and p.y > 0 and p.paid == 0


@pytest.mark.parametrize("name", ["v3-8dec", "l0-0310"])
def test_x_ge_d_all_stablecoin_loan(name, markets, fresh, who):
    """Fully converted loan (y = 0): the gain is x − d, nothing to sell."""
    m = markets[name]
    make_fully_converted_rekt(m, who["alice"], who["arb"])
    route = direct_route(fresh, m, "stable")
    liq = deploy_liquidator(fresh, who["owner"])
    p = preview(fresh, m, who["alice"], FULL, route)
    assert p.y == 0 and p.x > p.d
    receipt = fresh.tx(liquidate_call(liq, m, who["alice"], FULL, route, 0, p.x - p.d), sender=who["owner"])
    (ev,) = events(liq, "Liquidation", receipt)
    assert (ev["collateral_sold"], ev["proceeds"], ev["stable_paid"]) == (0, 0, 0)
    assert ev["profit"] == p.x - p.d == bal(m.stablecoin, who["owner"])
    assert bal(m.stablecoin, liq.address) == 0
    assert not m.controller.functions.loan_exists(who["alice"]).call()


# ---- thin routes and sandwiches: gas only ------------------------------------------------------------


def snapshot_balances(m: LlammaDeployment, liq: Contract, owner: str, pools: list[str], user: str) -> dict:
    out: dict = {"debt": m.controller.functions.debt(user).call(), "xy": tuple(m.amm.functions.get_sum_xy(user).call())}
    for holder in (liq.address, owner, *pools):
        out[holder] = (bal(m.stablecoin, holder), bal(m.collateral, holder))
    return out


def mined_revert(chain: DevChain, call, sender: str) -> tuple[str, int]:
    """Send `call` with a fixed gas limit so it is mined even though it reverts; return the revert
    reason (by replaying it as an eth_call on the pre-state) and the ETH the sender paid."""
    reason = chain.expect_revert(call, sender=sender)
    eth_before = chain.w3.eth.get_balance(Web3.to_checksum_address(sender))
    with pytest.raises(TxFailed) as exc:
        chain.tx(call, sender=sender, gas=GAS)
    receipt = exc.value.receipt
    assert receipt is not None and receipt["status"] == 0
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert eth_before - chain.w3.eth.get_balance(Web3.to_checksum_address(sender)) == gas_cost
    return reason, gas_cost


@pytest.mark.parametrize("name", ["m2-8dec", "v3-8dec"])
def test_thin_route_reverts_on_the_profit_assertion_and_costs_only_gas(name, markets, fresh, who):
    m = markets[name]
    owner, alice = who["owner"], who["alice"]
    make_partly_converted_rekt(m, alice, who["arb"])
    deep = direct_route(fresh, m, "stable")
    believed = preview(fresh, m, alice, FULL, deep)  # the keeper's estimate on a deep route
    # a shallow pool at the same price: it pays d − x plus half the deep route's gain for y
    value = believed.quote
    target = believed.paid + believed.profit // 2
    thin_collateral = believed.y * target // (value - target)
    thin = direct_route(fresh, m, "stable", collateral=thin_collateral)
    p = preview(fresh, m, alice, FULL, thin)
    assert p.paid < p.quote < p.paid + believed.profit
    liq = deploy_liquidator(fresh, owner)
    before = snapshot_balances(m, liq, owner, [thin[0].pool], alice)
    reason, gas_cost = mined_revert(fresh, liquidate_call(liq, m, alice, FULL, thin, 0, believed.profit), owner)
    assert reason == "profit below min" and gas_cost > 0
    assert snapshot_balances(m, liq, owner, [thin[0].pool], alice) == before
    # thinner still: the route cannot even pay d − x; the Controller refuses the proceeds
    thinner = direct_route(fresh, m, "univ2", collateral=believed.y // 4)
    p2 = preview(fresh, m, alice, FULL, thinner)
    assert p2.quote < p2.paid
    reason2, _ = mined_revert(fresh, liquidate_call(liq, m, alice, FULL, thinner, 0, 0), owner)
    assert reason2 == "not enough proceeds"
    assert snapshot_balances(m, liq, owner, [thin[0].pool], alice) == before


def test_sandwich_between_quote_and_execution(markets, fresh, who):
    """The keeper quotes; an attacker sells collateral into the pool in the same block, ahead of the
    liquidation (higher priority fee). With min_out = the quote, "min_out" reverts it; with min_out
    waived, the profit assertion does. No principal moves: gas only."""
    m = markets["v3-8dec"]
    owner, alice, attacker = who["owner"], who["alice"], who["attacker"]
    make_partly_converted_rekt(m, alice, who["arb"])
    route = direct_route(fresh, m, "crypto")
    pool = fresh.at("pools/CurveCryptoPool", route[0].pool)
    liq = deploy_liquidator(fresh, owner)
    quoted = preview(fresh, m, alice, FULL, route)
    assert quoted.profit > 0
    dump = m.units(2)  # 0.2 % of the pool: the route pays less, still more than d − x
    m.fund_collateral(attacker, 2 * dump)
    fresh.tx(m.collateral.functions.approve(pool.address, 2 * dump), sender=attacker)
    before = snapshot_balances(m, liq, owner, [], alice)
    w3 = fresh.w3
    for min_out, min_profit, expected in ((quoted.quote, quoted.profit, "min_out"), (0, quoted.profit, "profit below min")):
        fresh.set_automine(False)
        try:
            base = w3.eth.get_block("latest")["baseFeePerGas"]
            front = pool.functions.exchange(0, 1, dump, 0).transact(
                {"from": attacker, "gas": 300_000, "maxPriorityFeePerGas": 10**10, "maxFeePerGas": 2 * base + 10**10}
            )
            ours = liquidate_call(liq, m, alice, FULL, route, min_out, min_profit).transact(
                {"from": owner, "gas": GAS, "maxPriorityFeePerGas": 10**9, "maxFeePerGas": 2 * base + 10**9}
            )
            fresh.mine()
        finally:
            fresh.set_automine(True)
        r_front, r_ours = w3.eth.get_transaction_receipt(front), w3.eth.get_transaction_receipt(ours)
        assert r_front["blockNumber"] == r_ours["blockNumber"] and r_front["transactionIndex"] < r_ours["transactionIndex"]
        assert r_front["status"] == 1 and r_ours["status"] == 0
        # the reason, replayed on the state the liquidation met
        fresh.expect_revert(liquidate_call(liq, m, alice, FULL, route, min_out, min_profit), expected, sender=owner)
        assert snapshot_balances(m, liq, owner, [], alice) == before
    # the same liquidation re-quoted on the moved pool still lands, for what the pool now pays
    assert_liquidated_as_previewed(fresh, m, liq, owner, alice, FULL, route)


# ---- access control, malicious controllers and pools -------------------------------------------------


def test_only_the_owner_liquidates_and_sweeps(markets, fresh, who):
    m = markets["m2-8dec"]
    owner, attacker, alice = who["owner"], who["attacker"], who["alice"]
    make_partly_converted_rekt(m, alice, who["arb"])
    route = direct_route(fresh, m, "stable")
    liq = deploy_liquidator(fresh, owner, keep_proceeds=True)
    assert liq.functions.owner().call() == owner and liq.functions.keep_proceeds().call() is True
    fresh.expect_revert(liquidate_call(liq, m, alice, FULL, route, 0, 0), "not owner", sender=attacker)
    # keep_proceeds: the gain stays in the contract; only the owner can sweep it
    receipt = fresh.tx(liquidate_call(liq, m, alice, FULL, route, 0, 1), sender=owner)
    (ev,) = events(liq, "Liquidation", receipt)
    assert ev["profit"] > 0 and bal(m.stablecoin, liq.address) == ev["profit"] and bal(m.stablecoin, owner) == 0
    fresh.expect_revert(liq.functions.sweep(m.stablecoin.address), "not owner", sender=attacker)
    fresh.tx(liq.functions.sweep(m.stablecoin.address), sender=owner)
    assert bal(m.stablecoin, liq.address) == 0 and bal(m.stablecoin, owner) == ev["profit"]


def test_a_bad_route_is_refused(markets, usdx, fresh, who):
    m = markets["v3-8dec"]
    owner = who["owner"]
    route = direct_route(fresh, m, "stable")
    liq = deploy_liquidator(fresh, owner)
    alice = who["alice"]
    reversed_hop = Hop(route[0].pool, route[0].kind, route[0].j, route[0].i, route[0].token_out, route[0].token_in)
    fresh.expect_revert(
        liquidate_call(liq, m, alice, FULL, [reversed_hop], 0, 0), "route must start at the collateral", sender=owner
    )
    to_usdx = Hop(route[0].pool, route[0].kind, route[0].i, route[0].j, m.collateral.address, usdx.address)
    fresh.expect_revert(liquidate_call(liq, m, alice, FULL, [to_usdx], 0, 0), "route must end at the stablecoin", sender=owner)
    gap = Hop(route[0].pool, route[0].kind, route[0].i, route[0].j, usdx.address, m.stablecoin.address)
    fresh.expect_revert(liquidate_call(liq, m, alice, FULL, [to_usdx, route[0], gap], 0, 0), "route does not chain", sender=owner)
    fresh.expect_revert(liquidate_call(liq, m, alice, FULL, [], 0, 0), "empty route", sender=owner)


def test_callback_refuses_eoas_other_controllers_and_calls_outside_a_liquidation(markets, fresh, who):
    """Anyone may call a real Controller's liquidate_extended naming our contract as the callbacker:
    the Controller hands it collateral and calls back; the callback refuses, so the whole call reverts."""
    m, other = markets["v3-8dec"], markets["m2-8dec"]
    owner, attacker, alice = who["owner"], who["attacker"], who["alice"]
    liq = deploy_liquidator(fresh, owner, keep_proceeds=True)
    m.fund_stablecoin(liq.address, m.usd(1000))  # something to steal
    fresh.expect_revert(liq.functions.callback_liquidate(alice, 0, 0, 0, []), "not the controller", sender=attacker)
    fresh.expect_revert(liq.functions.callback_liquidate(alice, 0, 0, 0, []), "not the controller", sender=owner)
    make_partly_converted_rekt(m, alice, who["arb"])
    make_partly_converted_rekt(other, alice, who["arb"])
    fresh.expect_revert(
        m.controller.functions.liquidate_extended(alice, 0, FULL, liq.address, []), "not the controller", sender=attacker
    )
    fresh.expect_revert(
        other.controller.functions.liquidate_extended(alice, 0, FULL, False, liq.address, []),
        "not the controller",
        sender=attacker,
    )
    fake = fresh.deploy("llamma/FakeController", m.amm.address, sender=attacker)
    fresh.expect_revert(
        fake.functions.call_callback(liq.address, alice, 0, m.units(1), m.usd(1)), "not the controller", sender=attacker
    )
    assert bal(m.stablecoin, liq.address) == m.usd(1000)


def test_a_malicious_controller_cannot_drain_the_contract(markets, fresh, who):
    """The owner is tricked into liquidating on a fake controller (the real market's AMM, so the
    tokens resolve). Whatever it makes up, the contract's stablecoin never goes down."""
    m = markets["v3-8dec"]
    owner, attacker, alice = who["owner"], who["attacker"], who["alice"]
    route = direct_route(fresh, m, "stable")
    liq = deploy_liquidator(fresh, owner, keep_proceeds=True)
    held = m.usd(1000)
    m.fund_stablecoin(liq.address, held)
    fake = fresh.deploy("llamma/FakeController", m.amm.address, sender=attacker)
    m.fund_collateral(fake.address, m.units(1))
    fake_route = route_tuples(route)

    def attempt(do_callback, send, s, c, debt, pull, min_profit=0):
        fresh.tx(fake.functions.script(do_callback, send, s, c, debt, pull), sender=attacker)
        return liq.functions.liquidate(fake.address, alice, 0, FULL, fake_route, 0, min_profit, 1)

    # inflated collateral the contract does not have: the sale cannot even start
    assert bal(m.collateral, liq.address) == 0
    fresh.expect_revert(attempt(True, 0, 0, m.units(100), m.usd(10**6), 0), "callback failed", sender=owner)
    # real collateral, honest callback, then pulls more than it was approved for (the sale's proceeds)
    fresh.expect_revert(attempt(True, m.units(1), 0, m.units(1), m.usd(10**6), 10 * held), "pull refused", sender=owner)
    # no callback, pulls the contract's holdings: no allowance was ever given
    fresh.expect_revert(attempt(False, 0, 0, 0, 0, held), "pull refused", sender=owner)
    # pulls exactly the proceeds it was approved for: the contract is no richer → profit assertion
    fresh.expect_revert(attempt(True, m.units(1), 0, m.units(1), m.usd(10**6), 0, min_profit=1), "profit below min", sender=owner)
    # calls back for another user than the one being liquidated
    fresh.tx(fake.functions.set_callback_user(who["arb"]), sender=attacker)
    fresh.expect_revert(attempt(True, m.units(1), 0, m.units(1), 0, 0), "not the controller", sender=owner)
    assert bal(m.stablecoin, liq.address) == held


def test_reentrancy_from_a_pool_is_refused(markets, fresh, who):
    """A pool on the route re-enters the contract during the sale. It is even the contract's owner
    (it forwards the owner's call), so only the reentrancy lock and the callback's caller check
    stand in its way: sweep, liquidate and callback_liquidate all fail, the liquidation itself lands."""
    m = markets["m2-8dec"]
    admin, alice = who["owner"], who["alice"]
    make_partly_converted_rekt(m, alice, who["arb"])
    pool = fresh.deploy("pools/ReentrantPool", m.stablecoin.address, m.collateral.address, 4 * 10**6, sender=admin)
    coll = m.units(DEEP_COLLATERAL)
    price = m.oracle_price()
    fund_and_add = (stable_amount(m, coll, price), coll)
    add_curve_liquidity(fresh, pool, fund_and_add)
    route = [curve_hop(fresh, pool, m.collateral, m.stablecoin)]
    liq = deploy_liquidator(fresh, pool.address, keep_proceeds=True)  # the pool owns it
    m.fund_stablecoin(liq.address, m.usd(1000))
    cb = liq.functions.callback_liquidate(alice, 0, m.units(1), 0, [])
    reentries = [
        liq.functions.sweep(m.stablecoin.address),
        liquidate_call(liq, m, alice, FULL, route, 0, 0),
        cb,
    ]
    for k, reentry in enumerate(reentries):
        with fresh.reverted():
            fresh.tx(pool.functions.set_reentry(liq.address, reentry._encode_transaction_data()), sender=admin)
            call = liquidate_call(liq, m, alice, FULL, route, 0, 1)
            receipt = fresh.tx(pool.functions.execute(liq.address, call._encode_transaction_data()), sender=admin)
            (ev,) = events(liq, "Liquidation", receipt)
            assert ev["profit"] > 0
            assert pool.functions.reentry_attempts().call() == 1 and pool.functions.reentry_succeeded().call() == 0
            response = pool.functions.last_response().call()
            if k == 2:  # the callback's own check (Error(string) payload)
                assert abi_decode(["string"], response[4:])[0] == "not the controller"
            else:  # the lock's bare revert (the owner check would have said "not owner")
                assert response == b""
            assert bal(m.stablecoin, liq.address) == m.usd(1000) + ev["profit"]
            assert bal(m.collateral, liq.address) == 0


# ---- gas: callback route vs inventory ------------------------------------------------------------


@pytest.mark.parametrize("name", ["m2-8dec", "v3-8dec"])
def test_gas_callback_vs_inventory(name, markets, fresh, who, record_property):
    """The same loan liquidated twice from the same state: through the contract (Curve stableswap
    route) and directly by an EOA paying d − x from inventory (controller.liquidate with an approval)."""
    m = markets[name]
    owner, alice, inventory = who["owner"], who["alice"], who["attacker"]
    make_partly_converted_rekt(m, alice, who["arb"])
    route = direct_route(fresh, m, "stable")
    liq = deploy_liquidator(fresh, owner)
    with fresh.reverted():
        receipt, _p = assert_liquidated_as_previewed(fresh, m, liq, owner, alice, FULL, route)
        via_contract = receipt["gasUsed"]
    pay = m.controller.functions.tokens_to_liquidate(alice).call({"from": inventory})
    m.fund_stablecoin(inventory, pay)
    fresh.tx(m.stablecoin.functions.approve(m.controller.address, pay), sender=inventory)
    direct = fresh.tx(m.controller.functions.liquidate(alice, 0), sender=inventory)["gasUsed"]
    assert not m.controller.functions.loan_exists(alice).call()
    print(f"\ngas {name}: callback via Liquidator {via_contract}, inventory (EOA) {direct}, extra {via_contract - direct}")
    record_property(f"gas_{name}", {"callback": via_contract, "inventory": direct})
    assert direct < via_contract < direct + 250_000
