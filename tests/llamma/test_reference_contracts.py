"""Behaviour of the reference LLAMMA contracts on a real anvil: band grid, deposits, exchange,
soft liquidation, health, scanning views and hard liquidation (both ABI variants, 18- and
8-decimal collateral, the M2 native-ETH payout and the callback path)."""

from __future__ import annotations

import random

import pytest
from web3 import Web3

from keeper.devtools.chain import TxFailed
from tests.llamma.conftest import (
    N_BANDS,
    WAD,
    band_price_inside,
    events,
    make_fully_converted_rekt,
    make_partly_converted_rekt,
    open_max_loan,
    soft_liquidate_to_band,
)

pytestmark = pytest.mark.chain

MAX_UINT256 = 2**256 - 1
TOPICS = {
    "Withdraw": "0xf279e6a1f5e320cca91135676d9cb6e44ca8a08c0b88342bcdb1144f6511b568",
    "Repay": "0x77c6871227e5d2dec8dadd5354f78453203e22e669cd0ec4c19d9a8c5edb31d0",
    "Liquidate": "0x642dd4d37ddd32036b9797cec464c0045dd2118c549066ae6b0f88e32240c2d0",
    "UserState": "0xeec6b7095a637e006c79c1819d696e353a8f703db2c49fc0219e17a8fd04f7f2",
}


def f_remove(frac: int, h: int) -> int:
    if frac >= WAD:
        return WAD
    f = (WAD + h // 2) * (WAD - frac) // (WAD + h)
    return (f + frac) * frac // WAD


def liquidate_call(
    m, user: str, min_x: int = 0, frac: int = WAD, callbacker: str | None = None, args=(), data: bytes | None = None
):
    """The liquidation entry point of the market's ABI variant (2-arg liquidate when possible)."""
    c = m.controller.functions
    if frac == WAD and callbacker is None:
        return c.liquidate(user, min_x)
    cb = callbacker or "0x" + "00" * 20
    if m.variant == "m2":
        return c.liquidate_extended(user, min_x, frac, False, cb, list(args))
    if data is None:
        return c.liquidate_extended(user, min_x, frac, cb, list(args))
    return c.liquidate_extended(user, min_x, frac, cb, list(args), data)


def balances(m, who: str) -> tuple[int, int]:
    return m.stablecoin.functions.balanceOf(who).call(), m.collateral.functions.balanceOf(who).call()


# ---------------------------------------------------------------------------------------------
# Band grid and deposits
# ---------------------------------------------------------------------------------------------


def test_band_grid_is_geometric_and_contiguous(market2):
    amm = market2.amm.functions
    A = amm.A().call()
    assert amm.p_oracle_up(0).call() == market2.oracle_price() == 3000 * WAD
    for n in range(-40, 41, 5):
        up, down, up_next = amm.p_oracle_up(n).call(), amm.p_oracle_down(n).call(), amm.p_oracle_up(n + 1).call()
        assert down == up_next
        # p_up(n+1) / p_up(n) = (A-1)/A up to the 1-wei floor of each price
        assert abs(up_next * A - up * (A - 1)) <= A
    assert amm.p_oracle_up(-100).call() > amm.p_oracle_up(100).call()


def test_deposit_spreads_collateral_over_n_bands(market, accounts):
    m, alice = market, accounts["alice"]
    amm = m.amm.functions
    collateral = m.units("7.5")
    debt = m.max_borrowable(collateral, N_BANDS) // 2
    receipt = m.create_loan(alice, collateral, debt, N_BANDS)

    n1, n2 = m.user_bands(alice)
    assert n2 - n1 + 1 == N_BANDS
    assert n1 > amm.active_band().call()
    assert amm.p_oracle_up(n1).call() < amm.price_oracle().call()
    dep = events(m.amm, "Deposit", receipt)
    assert [(d["provider"], d["amount"], d["n1"], d["n2"]) for d in dep] == [(alice, collateral, n1, n2)]
    state = events(m.controller, "UserState", receipt)[0]
    assert (state["collateral"], state["debt"], state["n1"], state["n2"]) == (collateral, debt, n1, n2)
    borrow = events(m.controller, "Borrow", receipt)[0]
    assert (borrow["collateral_increase"], borrow["loan_increase"]) == (collateral, debt)

    precision = 10 ** (18 - m.collateral_decimals)
    ys = [amm.bands_y(n).call() for n in range(n1, n2 + 1)]
    assert sum(ys) == collateral * precision  # normalised to 18 decimals
    per_band = collateral * precision // N_BANDS
    assert ys[1:] == [per_band] * (N_BANDS - 1)  # the remainder goes to n1
    assert all(amm.bands_x(n).call() == 0 for n in range(n1, n2 + 1))
    assert amm.min_band().call() <= n1 and amm.max_band().call() >= n2
    assert amm.has_liquidity(alice).call()
    assert amm.get_sum_xy(alice).call() == [0, collateral]
    ctl = m.controller.functions
    assert ctl.user_state(alice).call() == [collateral, 0, debt, N_BANDS]
    assert ctl.user_prices(alice).call() == [amm.p_oracle_up(n1).call(), amm.p_oracle_down(n2).call()]
    assert ctl.loan_exists(alice).call() and ctl.n_loans().call() == 1 and ctl.loans(0).call() == alice
    assert ctl.total_debt().call() == debt
    assert m.stablecoin.functions.balanceOf(alice).call() == debt


def test_create_loan_limits(market2, accounts):
    m, alice = market2, accounts["alice"]
    c = m.units(10)
    m.fund_collateral(alice, c)
    m.approve_all(alice)
    ctl = m.controller.functions
    mb = m.max_borrowable(c, N_BANDS)
    m.chain.expect_revert(ctl.create_loan(c, mb * 101 // 100, N_BANDS), "Debt too high", sender=alice)
    m.chain.expect_revert(ctl.create_loan(c, mb, 3), "Need more ticks", sender=alice)
    m.chain.expect_revert(ctl.create_loan(c, mb, 51), "Need less ticks", sender=alice)
    m.chain.expect_revert(ctl.create_loan(c, 0, N_BANDS), "No loan", sender=alice)
    m.create_loan(alice, c, mb, N_BANDS, fund=False)
    # at max LTV the loan starts with health ~ (1 - ld) / (1 - loan_discount) - 1 = 3.3 %
    h = m.health(alice)
    assert 3 * 10**16 < h < 34 * 10**15
    m.fund_collateral(alice, c)
    m.chain.expect_revert(ctl.create_loan(c, mb // 2, N_BANDS), "Loan already created", sender=alice)


# ---------------------------------------------------------------------------------------------
# Exchange
# ---------------------------------------------------------------------------------------------


def test_exchange_moves_active_band_with_partial_fills(market2, accounts):
    m, alice, trader, other = market2, accounts["alice"], accounts["arb"], accounts["other"]
    amm = m.amm.functions
    open_max_loan(m, alice)
    n1, n2 = m.user_bands(alice)
    m.set_oracle_price(band_price_inside(m, n1 + 2))  # no arbitrage yet: AMM sells collateral cheap
    m.fund_stablecoin(trader, m.usd(10**6))
    m.approve_all(trader, m.amm.address)

    # a small buy converts band n1 partly or crosses a few bands
    small = m.usd(3000)
    used, out = amm.get_dxdy(0, 1, small).call()
    assert used == small and out > 0 and amm.get_dy(0, 1, small).call() == out
    m.chain.expect_revert(amm.exchange(0, 1, small, out + 1), "Slippage", sender=trader)
    before = balances(m, trader)
    receipt = m.chain.tx(amm.exchange(0, 1, small, out), sender=trader)
    assert balances(m, trader) == (before[0] - small, before[1] + out)
    ev = events(m.amm, "TokenExchange", receipt)[0]
    assert (ev["buyer"], ev["sold_id"], ev["tokens_sold"], ev["bought_id"], ev["tokens_bought"]) == (trader, 0, small, 1, out)
    active = amm.active_band().call()
    assert n1 <= active <= n2
    for n in range(n1, active):  # crossed bands hold only borrowed tokens
        assert amm.bands_y(n).call() == 0 and amm.bands_x(n).call() > 0
    for n in range(active + 1, n2 + 1):
        assert amm.bands_x(n).call() == 0 and amm.bands_y(n).call() > 0

    # a huge buy is only partly filled: it stops when the AMM's collateral runs out (or ~50 bands
    # away from the oracle) and takes only the input it needs
    huge = m.usd(10**6)
    used, out = amm.get_dxdy(0, 1, huge).call()
    assert 0 < used < huge
    assert amm.exchange(0, 1, huge, 0, other).call({"from": trader}) == [used, out]
    before_trader, before_other = balances(m, trader), balances(m, other)
    receipt = m.chain.tx(amm.exchange(0, 1, huge, 0, other), sender=trader)
    assert balances(m, trader)[0] == before_trader[0] - used
    assert balances(m, other)[1] == before_other[1] + out  # output goes to _for
    assert events(m.amm, "TokenExchange", receipt)[0]["buyer"] == other
    assert amm.active_band().call() == n2
    assert all(amm.bands_y(n).call() == 0 for n in range(n1, n2 + 1))
    assert amm.get_sum_xy(alice).call()[1] == 0

    # and back: selling collateral converts the bands back from the bottom
    sell = m.units(1)
    m.fund_collateral(trader, sell)
    got = amm.get_dy(1, 0, sell).call()
    m.chain.tx(amm.exchange(1, 0, sell, got), sender=trader)
    assert amm.active_band().call() < n2 or amm.bands_y(n2).call() > 0

    # exact-output swaps and their slippage guard
    want = m.usd(100)
    need = amm.get_dx(1, 0, want).call()
    m.fund_collateral(trader, need)
    m.chain.expect_revert(amm.exchange_dy(1, 0, want, need - 1), "Slippage", sender=trader)
    before = balances(m, trader)
    m.chain.tx(amm.exchange_dy(1, 0, want, need), sender=trader)
    assert balances(m, trader) == (before[0] + want, before[1] - need)


def test_exchange_index_and_zero_amount(market2, accounts):
    m, trader = market2, accounts["arb"]
    amm = m.amm.functions
    for i, j in ((0, 0), (1, 1), (0, 2), (2, 0)):
        m.chain.expect_revert(amm.get_dy(i, j, 10), "Wrong index")
        m.chain.expect_revert(amm.exchange(i, j, 10, 0), "Wrong index", sender=trader)
    assert amm.exchange(0, 1, 0, 0).call({"from": trader}) == [0, 0]
    receipt = m.chain.tx(amm.exchange(0, 1, 0, 0), sender=trader)
    assert events(m.amm, "TokenExchange", receipt) == []
    # no liquidity at all: nothing trades, nothing moves
    m.fund_stablecoin(trader, m.usd(10))
    m.approve_all(trader, m.amm.address)
    assert amm.exchange(0, 1, m.usd(10), 0).call({"from": trader}) == [0, 0]
    m.chain.expect_revert(amm.withdraw(trader, WAD), sender=trader)  # admin only
    m.chain.expect_revert(amm.deposit_range(trader, 10**18, 5, 8), sender=trader)


def test_random_trades_keep_bands_consistent(market2, accounts):
    """Quotes equal fills, bands left of the active band hold only x and right of it only y, and
    the AMM always holds at least what its bands account for."""
    m, trader = market2, accounts["arb"]
    amm = m.amm.functions
    open_max_loan(m, accounts["alice"])
    open_max_loan(m, accounts["bob"], amount="4", n_bands=5, ltv=8 * 10**17)
    lo, hi = amm.min_band().call(), amm.max_band().call()
    m.set_oracle_price(band_price_inside(m, (lo + hi) // 2))
    m.fund_stablecoin(trader, m.usd(10**6))
    m.fund_collateral(trader, m.units(100))
    m.approve_all(trader, m.amm.address)
    bp, cp = 10 ** (18 - m.borrowed_decimals), 10 ** (18 - m.collateral_decimals)
    rng = random.Random(1234)
    for _ in range(12):
        i = rng.randint(0, 1)
        amount = m.usd(rng.randint(10, 20000)) if i == 0 else m.units(rng.randint(1, 8000)) // 1000
        quote = amm.get_dxdy(i, 1 - i, amount).call()
        before = balances(m, trader)
        m.chain.tx(amm.exchange(i, 1 - i, amount, 0), sender=trader)
        after = balances(m, trader)
        if i == 0:
            assert (before[0] - after[0], after[1] - before[1]) == tuple(quote)
        else:
            assert (after[0] - before[0], before[1] - after[1]) == (quote[1], quote[0])
        active = amm.active_band().call()
        with m.chain.w3.batch_requests() as batch:
            for n in range(lo, hi + 1):
                batch.add(amm.bands_x(n))
                batch.add(amm.bands_y(n))
            flat = batch.execute()
        xs = dict(zip(range(lo, hi + 1), flat[0::2], strict=True))
        ys = dict(zip(range(lo, hi + 1), flat[1::2], strict=True))
        assert all(ys[n] == 0 for n in xs if n < active) and all(xs[n] == 0 for n in xs if n > active)
        assert m.stablecoin.functions.balanceOf(m.amm.address).call() * bp >= sum(xs.values())
        assert m.collateral.functions.balanceOf(m.amm.address).call() * cp >= sum(ys.values())


# ---------------------------------------------------------------------------------------------
# Soft liquidation and health
# ---------------------------------------------------------------------------------------------


def test_soft_liquidation_converts_top_bands_first(market, accounts):
    m, alice, arb, keeper = market, accounts["alice"], accounts["arb"], accounts["liquidator"]
    amm, ctl = m.amm.functions, m.controller.functions
    open_max_loan(m, alice)
    n1, n2 = m.user_bands(alice)
    assert amm.active_band().call() < n1

    actives = []
    for k in range(1, 6):
        soft_liquidate_to_band(m, n1 + k, arb, steps=2)
        active = amm.active_band().call()
        actives.append(active)
        assert active == n1 + k
        # arbitrage left the AMM price at the oracle price (up to the fee kept in the band)
        p_amm, p_o = amm.get_p().call(), amm.price_oracle().call()
        assert abs(p_amm - p_o) * 1000 < p_o
        xs = [amm.bands_x(n).call() for n in range(n1, n2 + 1)]
        ys = [amm.bands_y(n).call() for n in range(n1, n2 + 1)]
        i_act = active - n1
        assert all(y == 0 and x > 0 for x, y in zip(xs[:i_act], ys[:i_act], strict=True))  # top bands: converted
        assert all(x == 0 and y > 0 for x, y in zip(xs[i_act + 1 :], ys[i_act + 1 :], strict=True))  # lower: untouched
        # in soft liquidation (n1 <= active_band) yet healthy: not liquidatable by anyone else
        h, h_full = m.health(alice), m.health(alice, True)
        assert h > 0 and h_full == h  # no bonus while in soft liquidation
        assert ctl.users_to_liquidate().call() == []
        m.chain.expect_revert(ctl.liquidate(alice, 0), "Not enough rekt", sender=keeper)
        x, y = amm.get_sum_xy(alice).call()
        assert x > 0 and y > 0
        assert ctl.user_state(alice).call()[:2] == [y, x]
    assert actives == sorted(actives)

    # x_down (what health is built on) stays close to the initial value: ideal arbitrage only
    # costs the AMM fee on the converted part
    x_down = amm.get_x_down(alice).call()
    debt = ctl.debt(alice).call()
    assert x_down * (WAD - 6 * 10**16) // debt - WAD == m.health(alice)

    # price back up: bands convert back to collateral, from the bottom of the converted range.
    # Arbitrage that exactly empties band n1 is filled as a partial fill there, which leaves dust
    # worth about one collateral wei in it (as on mainnet)
    m.lower_price_in_steps(3000 * WAD, 6, arb)
    assert amm.active_band().call() <= n1
    x, y = amm.get_sum_xy(alice).call()
    assert x < 10**9 and y > m.units(10) * 98 // 100


def test_health_formula_and_full_bonus(market2, accounts):
    m, alice = market2, accounts["alice"]
    amm, ctl = m.amm.functions, m.controller.functions
    open_max_loan(m, alice)
    n1, _ = m.user_bands(alice)
    debt = ctl.debt(alice).call()
    ld = ctl.liquidation_discounts(alice).call()
    assert ld == ctl.liquidation_discount().call() == 6 * 10**16
    precision = 10 ** (18 - m.collateral_decimals)

    def expected(full: bool) -> int:
        h = amm.get_x_down(alice).call() * (WAD - ld) // debt - WAD
        p_o, p_up = amm.price_oracle().call(), amm.p_oracle_up(n1).call()
        if full and n1 > amm.active_band().call() and p_o > p_up:
            h += (p_o - p_up) * amm.get_sum_xy(alice).call()[1] * precision // debt
        return h

    # above the bands: the bonus credits the collateral's value above the top band
    h, h_full = m.health(alice), m.health(alice, True)
    assert (h, h_full) == (expected(False), expected(True))
    assert h_full > h
    # the oracle drops into band n1 without arbitrage: n1 > active_band still, but p_o < p_up(n1)
    m.set_oracle_price(band_price_inside(m, n1))
    assert amm.active_band().call() < n1
    assert m.health(alice, True) == m.health(alice) == expected(False)
    # x_down of untouched bands, price above them: y * sqrt(p_up * p_down) per band
    m.set_oracle_price(3000 * WAD)
    ys = [amm.bands_y(n).call() for n in range(n1, n1 + N_BANDS)]
    ideal = sum(
        y * ((amm.p_oracle_up(n).call() * amm.p_oracle_down(n).call()) ** 0.5) / 1e18
        for n, y in zip(range(n1, n1 + N_BANDS), ys, strict=True)
    )
    assert abs(amm.get_x_down(alice).call() - ideal) / ideal < 1e-9
    m.chain.expect_revert(ctl.health(accounts["bob"]), "Loan doesn't exist")


def test_users_to_liquidate_is_the_set_with_negative_full_health(market, accounts):
    m = market
    ctl = m.controller.functions
    users = [accounts[k] for k in ("alice", "bob", "carol", "dave")]
    open_max_loan(m, users[0])  # max LTV, 10 bands
    open_max_loan(m, users[1], ltv=5 * 10**17)  # half LTV: far below the price
    open_max_loan(m, users[2], n_bands=4)  # max LTV, 4 bands
    open_max_loan(m, users[3], amount="3", ltv=9 * 10**17)
    assert ctl.users_to_liquidate().call() == []

    m.set_oracle_price(m.oracle_price() * 90 // 100)  # a crash the arbitrageurs do not follow
    healths = {u: m.health(u, True) for u in users}
    expected = [u for u in users if healths[u] < 0]
    assert 0 < len(expected) < len(users)
    rows = ctl.users_to_liquidate().call()
    assert [r[0] for r in rows] == expected
    for user, x, y, debt, health in rows:
        assert [x, y] == m.amm.functions.get_sum_xy(user).call()
        assert debt == ctl.debt(user).call() and health == healths[user]
    # the paging arities scan loans[_from : _from + _limit]
    assert ctl.users_to_liquidate(0).call() == rows
    for start in range(4):
        page = ctl.users_to_liquidate(start, 1).call()
        assert [r[0] for r in page] == [u for u in [ctl.loans(start).call()] if healths[u] < 0]
    assert ctl.users_to_liquidate(4).call() == []


# ---------------------------------------------------------------------------------------------
# Hard liquidation
# ---------------------------------------------------------------------------------------------


def test_tokens_to_liquidate_depends_on_caller(market, accounts):
    m, alice, keeper, arb = market, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    make_partly_converted_rekt(m, alice, arb)
    x = m.amm.functions.get_sum_xy(alice).call()[0]
    debt = ctl.debt(alice).call()
    ld = ctl.liquidation_discounts(alice).call()
    frac = WAD // 2

    def expected(h: int, fr: int) -> int:
        return max(debt * fr // WAD - x * f_remove(fr, h) // WAD, 0)

    as_keeper = ctl.tokens_to_liquidate(alice, frac).call({"from": keeper})
    as_owner = ctl.tokens_to_liquidate(alice, frac).call({"from": alice})
    assert as_keeper == expected(ld, frac) and as_owner == expected(0, frac)
    assert as_keeper > as_owner  # a third party withdraws a smaller share of the bands
    # for frac = 1 both withdraw everything
    assert (
        ctl.tokens_to_liquidate(alice).call({"from": keeper}) == ctl.tokens_to_liquidate(alice).call({"from": alice}) == debt - x
    )


def test_liquidate_partly_converted_loan(market, accounts):
    m, alice, keeper, arb = market, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    make_partly_converted_rekt(m, alice, arb)
    x, y = m.amm.functions.get_sum_xy(alice).call()
    debt = ctl.debt(alice).call()
    to_pay = ctl.tokens_to_liquidate(alice).call({"from": keeper})
    assert to_pay == debt - x > 0
    assert [r[0] for r in ctl.users_to_liquidate().call()] == [alice]

    m.fund_stablecoin(keeper, to_pay)
    m.chain.expect_revert(ctl.liquidate(alice, 0), sender=keeper)  # no approval for d - x yet
    m.approve_all(keeper)
    m.chain.expect_revert(ctl.liquidate(alice, x + 1), "Slippage", sender=keeper)
    before_keeper, before_alice = balances(m, keeper), balances(m, alice)
    eth_before = m.chain.w3.eth.get_balance(keeper)
    receipt = m.chain.tx(ctl.liquidate(alice, x), sender=keeper)

    after = balances(m, keeper)
    assert after[0] == before_keeper[0] - to_pay == 0
    if m.collateral_is_weth:  # M2 WETH market: liquidate(user, min_x) defaults to use_eth=True
        gas = receipt.gasUsed * receipt.effectiveGasPrice
        assert m.chain.w3.eth.get_balance(keeper) == eth_before - gas + y
        assert after[1] == before_keeper[1]
    else:
        assert after[1] == before_keeper[1] + y
    assert balances(m, alice) == before_alice  # the borrower keeps the borrowed coins, nothing more
    liq = events(m.controller, "Liquidate", receipt)[0]
    assert (liq["liquidator"], liq["user"], liq["collateral_received"], liq["stablecoin_received"], liq["debt"]) == (
        keeper,
        alice,
        y,
        x,
        debt,
    )
    assert not ctl.loan_exists(alice).call() and ctl.n_loans().call() == 0
    assert ctl.total_debt().call() == 0
    assert not m.amm.functions.has_liquidity(alice).call()

    # event order: AMM Withdraw -> Repay -> Liquidate -> UserState(user, 0, 0, 0, 0, 0)
    logs = [lg for lg in receipt.logs if lg["address"] in (m.amm.address, m.controller.address)]
    assert ["0x" + lg["topics"][0].hex().removeprefix("0x") for lg in logs] == [
        TOPICS["Withdraw"],
        TOPICS["Repay"],
        TOPICS["Liquidate"],
        TOPICS["UserState"],
    ]
    state = events(m.controller, "UserState", receipt)[0]
    assert (state["user"], state["collateral"], state["debt"], state["n1"], state["n2"], state["liquidation_discount"]) == (
        alice,
        0,
        0,
        0,
        0,
        0,
    )
    repay = events(m.controller, "Repay", receipt)[0]
    assert (repay["collateral_decrease"], repay["loan_decrease"]) == (y, debt)
    withdraw = events(m.amm, "Withdraw", receipt)[0]
    assert (withdraw["provider"], withdraw["amount_borrowed"], withdraw["amount_collateral"]) == (alice, x, y)


def test_liquidate_fully_converted_loan_pays_nothing(market2, accounts):
    m, alice, keeper, arb = market2, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    make_fully_converted_rekt(m, alice, arb)
    x, y = m.amm.functions.get_sum_xy(alice).call()
    debt = ctl.debt(alice).call()
    assert ctl.tokens_to_liquidate(alice).call({"from": keeper}) == 0
    before = balances(m, keeper)
    receipt = m.chain.tx(ctl.liquidate(alice, x), sender=keeper)  # no approval or balance needed
    assert balances(m, keeper) == (before[0] + x - debt, before[1] + y)
    liq = events(m.controller, "Liquidate", receipt)[0]
    assert (liq["stablecoin_received"], liq["collateral_received"], liq["debt"]) == (x, y, debt)
    assert not ctl.loan_exists(alice).call()


def test_partial_liquidation_frac(market, accounts):
    m, alice, keeper, arb = market, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl, amm = m.controller.functions, m.amm.functions
    make_partly_converted_rekt(m, alice, arb)
    frac = 3 * 10**17
    debt = ctl.debt(alice).call()
    ld = ctl.liquidation_discounts(alice).call()
    x, y = amm.get_sum_xy(alice).call()
    d = -(-debt * frac // WAD) if m.variant == "v3" else debt * frac // WAD  # V3 ceils, M2 floors
    m.fund_stablecoin(keeper, debt)
    m.approve_all(keeper)
    before = balances(m, keeper)
    receipt = m.chain.tx(liquidate_call(m, alice, frac=frac), sender=keeper)
    liq = events(m.controller, "Liquidate", receipt)[0]
    assert liq["debt"] == d
    fr = f_remove(frac, ld)
    assert abs(liq["stablecoin_received"] - x * fr // WAD) <= N_BANDS
    assert abs(liq["collateral_received"] - y * fr // WAD) <= N_BANDS
    paid = before[0] - balances(m, keeper)[0]
    assert paid == d - liq["stablecoin_received"]
    assert ctl.loan_exists(alice).call() and ctl.n_loans().call() == 1
    assert ctl.debt(alice).call() == debt - d
    assert events(m.controller, "UserState", receipt) == []  # only a full repayment logs it
    assert amm.has_liquidity(alice).call()


def test_not_enough_rekt_and_self_liquidation(market2, accounts):
    m, alice, keeper, arb = market2, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    open_max_loan(m, alice)
    n1, _ = m.user_bands(alice)
    soft_liquidate_to_band(m, n1 + 2, arb, steps=3)
    assert m.health(alice, True) > 0
    m.fund_stablecoin(keeper, m.usd(10**5))
    m.approve_all(keeper)
    m.chain.expect_revert(ctl.liquidate(alice, 0), "Not enough rekt", sender=keeper)
    m.chain.expect_revert(liquidate_call(m, alice, frac=WAD // 2), "Not enough rekt", sender=keeper)
    # no loan: its liquidation discount is 0, so there is no health check and `assert d > 0` fails bare
    assert m.chain.expect_revert(ctl.liquidate(accounts["bob"], 0), sender=keeper) == "execution reverted"

    # the borrower may always liquidate itself: no health check, h = 0
    x, y = m.amm.functions.get_sum_xy(alice).call()
    debt = ctl.debt(alice).call()
    assert ctl.tokens_to_liquidate(alice).call({"from": alice}) == debt - x
    m.approve_all(alice)
    before = m.stablecoin.functions.balanceOf(alice).call()
    m.chain.tx(ctl.liquidate(alice, 0), sender=alice)
    assert before - m.stablecoin.functions.balanceOf(alice).call() == debt - x
    assert not ctl.loan_exists(alice).call()


def test_v3_approved_caller_liquidates_like_the_user(deployments, fresh, accounts):
    m = deployments["v3-8dec"]
    alice, bob, arb = accounts["alice"], accounts["bob"], accounts["arb"]
    ctl = m.controller.functions
    open_max_loan(m, alice)
    n1, _ = m.user_bands(alice)
    soft_liquidate_to_band(m, n1 + 2, arb, steps=3)
    m.fund_stablecoin(bob, m.usd(10**5))
    m.approve_all(bob)
    m.chain.expect_revert(ctl.liquidate(alice, 0), "Not enough rekt", sender=bob)
    frac = WAD // 2
    assert ctl.tokens_to_liquidate(alice, frac).call({"from": bob}) > ctl.tokens_to_liquidate(alice, frac).call({"from": alice})
    receipt = m.chain.tx(ctl.approve(bob, True), sender=alice)
    assert ctl.approval(alice, bob).call() and not ctl.approval(bob, alice).call()
    assert events(m.controller, "Approval", receipt)[0]["allow"] is True
    assert ctl.tokens_to_liquidate(alice, frac).call({"from": bob}) == ctl.tokens_to_liquidate(alice, frac).call({"from": alice})
    y = m.amm.functions.get_sum_xy(alice).call()[1]
    before = balances(m, bob)
    m.chain.tx(ctl.liquidate(alice, 0), sender=bob)  # healthy, but approved: no health check
    assert balances(m, bob)[1] == before[1] + y
    assert not ctl.loan_exists(alice).call()


def test_swap_and_pop_removal(market2, accounts):
    m, keeper, arb = market2, accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    alice, bob, carol = accounts["alice"], accounts["bob"], accounts["carol"]
    make_partly_converted_rekt(m, alice, arb)  # index 0
    open_max_loan(m, bob, ltv=3 * 10**17)  # index 1
    open_max_loan(m, carol, ltv=3 * 10**17)  # index 2
    assert [ctl.loans(i).call() for i in range(3)] == [alice, bob, carol]
    m.fund_stablecoin(keeper, ctl.debt(alice).call())
    m.approve_all(keeper)
    m.chain.tx(ctl.liquidate(alice, 0), sender=keeper)
    assert ctl.n_loans().call() == 2
    assert [ctl.loans(i).call() for i in range(2)] == [carol, bob]  # the last loan filled the gap
    assert ctl.loan_ix(carol).call() == 0 and ctl.loan_ix(bob).call() == 1
    # repaying the last loan in full pops it
    m.fund_stablecoin(bob, m.usd(10**5))
    m.approve_all(bob)
    receipt = m.chain.tx(ctl.repay(ctl.debt(bob).call()), sender=bob)
    assert [r["loan_decrease"] > 0 for r in events(m.controller, "Repay", receipt)] == [True]
    assert ctl.n_loans().call() == 1 and ctl.loans(0).call() == carol


def test_borrow_more_repay_and_collateral_events(market2, accounts):
    m, alice = market2, accounts["alice"]
    ctl = m.controller.functions
    debt = open_max_loan(m, alice, ltv=5 * 10**17)
    n1_before, _ = m.user_bands(alice)
    receipt = m.chain.tx(ctl.borrow_more(0, debt // 2), sender=alice)
    assert events(m.controller, "Borrow", receipt)[0]["loan_increase"] == debt // 2
    state = events(m.controller, "UserState", receipt)[0]
    assert state["debt"] == ctl.debt(alice).call() and state["n1"] < n1_before  # closer to the price
    m.fund_collateral(alice, m.units(1))
    receipt = m.chain.tx(ctl.add_collateral(m.units(1)), sender=alice)
    assert events(m.controller, "Borrow", receipt)[0]["collateral_increase"] == m.units(1)
    receipt = m.chain.tx(
        ctl.remove_collateral(m.units(1)) if m.variant == "v3" else ctl.remove_collateral(m.units(1), False), sender=alice
    )
    assert events(m.controller, "RemoveCollateral", receipt)[0]["collateral_decrease"] == m.units(1)
    # partial repay above the bands re-deposits (UserState with the real collateral)
    receipt = m.chain.tx(ctl.repay(debt // 4), sender=alice)
    assert events(m.controller, "Repay", receipt)[0]["loan_decrease"] == debt // 4
    assert events(m.controller, "UserState", receipt)[0]["collateral"] == m.units(10)
    # in soft liquidation a partial repay cannot move the bands: collateral logged as 2**256 - 1
    n1, _ = m.user_bands(alice)
    soft_liquidate_to_band(m, n1 + 1, accounts["arb"], steps=8)
    receipt = m.chain.tx(ctl.repay(m.usd(10)), sender=alice)
    assert events(m.controller, "UserState", receipt)[0]["collateral"] == MAX_UINT256


# ---------------------------------------------------------------------------------------------
# Callback path and the M2 native-ETH payout
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def callbacker(market2):
    m = market2
    return m.chain.deploy(
        "llamma/TestLiquidator", m.controller.address, m.amm.address, m.stablecoin.address, m.collateral.address
    )


def test_callback_liquidation(market2, callbacker, accounts):
    m, alice, keeper, arb = market2, accounts["alice"], accounts["liquidator"], accounts["arb"]
    ctl = m.controller.functions
    open_max_loan(m, accounts["bob"])  # liquidity left in the AMM after alice's bands are withdrawn
    make_partly_converted_rekt(m, alice, arb)
    x, y = m.amm.functions.get_sum_xy(alice).call()
    debt = ctl.debt(alice).call()
    shortfall = debt - x
    # the callbacker "sells" the collateral: it holds stablecoins and returns (s, c)
    m.fund_stablecoin(callbacker.address, shortfall + m.usd(50))
    m.fund_collateral(callbacker.address, m.units("0.1"))
    cb = callbacker.address

    m.chain.expect_revert(
        liquidate_call(m, alice, frac=WAD, callbacker=cb, args=[shortfall - 1, 0]), "not enough proceeds", sender=keeper
    )
    # trading on the AMM inside the callback breaks the band-invariance check
    m.chain.expect_revert(liquidate_call(m, alice, frac=WAD, callbacker=cb, args=[shortfall, 0, 1, 0, m.usd(100)]), sender=keeper)

    s, c = shortfall + m.usd(50), m.units("0.1")
    before = balances(m, keeper)
    data = b"route:1inch" if m.variant == "v3" else None
    receipt = m.chain.tx(liquidate_call(m, alice, frac=WAD, callbacker=cb, args=[s, c], data=data), sender=keeper)
    tl = callbacker.functions
    assert tl.calls().call() == 1
    assert (tl.last_user().call(), tl.last_stablecoins().call(), tl.last_collateral().call(), tl.last_debt().call()) == (
        alice,
        x,
        y,
        debt,
    )
    assert [tl.last_args(0).call(), tl.last_args(1).call()] == [s, c]
    if data is None:
        assert tl.last_selector().call().hex().removeprefix("0x") == "4ea696bb"
    else:
        assert tl.last_selector().call().hex().removeprefix("0x") == "750abc51"
        assert tl.last_bytes_hash().call() == Web3.keccak(data)
    # the liquidator pays nothing and receives the surplus s - (d - x) and c
    assert balances(m, keeper) == (before[0] + s - shortfall, before[1] + c)
    assert m.collateral.functions.balanceOf(cb).call() == y  # the liquidated collateral went to the callbacker
    assert events(m.controller, "Liquidate", receipt)[0]["debt"] == debt
    assert not ctl.loan_exists(alice).call()


def test_m2_eth_payout_needs_a_payable_liquidator(deployments, fresh, accounts):
    m = deployments["m2-weth"]
    alice, arb, keeper = accounts["alice"], accounts["arb"], accounts["liquidator"]
    ctl = m.controller.functions
    make_partly_converted_rekt(m, alice, arb)
    x, y = m.amm.functions.get_sum_xy(alice).call()
    shortfall = ctl.debt(alice).call() - x
    bot = m.chain.deploy(
        "llamma/TestLiquidator", m.controller.address, m.amm.address, m.stablecoin.address, m.collateral.address, sender=keeper
    )
    m.fund_stablecoin(bot.address, shortfall)

    def via_bot(call):
        return bot.functions.execute(m.controller.address, call._encode_transaction_data())

    # use_eth defaults to True: a contract that refuses ETH cannot liquidate the WETH market ...
    with pytest.raises(TxFailed):
        m.chain.tx(via_bot(ctl.liquidate(alice, 0)), sender=keeper, gas=3_000_000)
    # ... unless it passes use_eth=False (gets WETH) or accepts ETH
    with m.chain.reverted():
        m.chain.tx(via_bot(ctl.liquidate(alice, 0, False)), sender=keeper)
        assert m.collateral.functions.balanceOf(bot.address).call() == y
    m.chain.tx(bot.functions.set_accept_eth(True), sender=keeper)
    m.chain.tx(via_bot(ctl.liquidate(alice, 0)), sender=keeper)
    assert m.chain.w3.eth.get_balance(bot.address) == y
    assert m.collateral.functions.balanceOf(bot.address).call() == 0


def test_factories_register_markets(deployments, fresh):
    mint = deployments["m2-weth"].factory.functions
    assert mint.n_collaterals().call() == 2
    assert [mint.controllers(i).call() for i in range(2)] == [deployments[k].controller.address for k in ("m2-weth", "m2-8dec")]
    assert [mint.amms(i).call() for i in range(2)] == [deployments[k].amm.address for k in ("m2-weth", "m2-8dec")]
    assert mint.stablecoin().call() == deployments["m2-weth"].stablecoin.address
    assert mint.WETH().call() == deployments["m2-weth"].collateral.address
    lend = deployments["v3-8dec"].factory.functions
    assert lend.market_count().call() == 2
    assert [lend.controllers(i).call() for i in range(2)] == [deployments[k].controller.address for k in ("v3-18dec", "v3-8dec")]
    for m in deployments.values():
        ctl = m.controller.functions
        assert ctl.factory().call() == m.factory.address and ctl.amm().call() == m.amm.address
        assert ctl.collateral_token().call() == m.collateral.address
        assert m.amm.functions.coins(0).call() == m.stablecoin.address and m.amm.functions.coins(1).call() == m.collateral.address
        assert ctl.amm_price().call() == m.amm.functions.get_p().call()
