"""Liquidation prices and shocked market states (keeper/risk/perp_liq.py): the constant-product move
equals the Amm's own swap, the solver's bracket (liquidatable at the returned price, not one tick towards
safety), monotonicity, the RULES.md worked example, and the what-if states."""

from __future__ import annotations

from math import isqrt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.risk import perp as pm
from keeper.risk import perp_liq as pl

E = 10**18
MMR, LFR, PLR = 625 * E // 10_000, 25 * E // 1000, 25 * E // 100
PARAMS = pm.PerpParams(MMR, LFR, PLR)
USDC_TICK = pl.price_tick(6)


def market(q: int, b: int, oracle: int | None = None, cpf: int = 0, now: int = 10_000) -> pm.MarketState:
    return pm.MarketState(q, b, oracle if oracle is not None else pm.div_d(q, b), cpf, (pm.Snapshot(q, b, 0, 1),), now)


def opened(m: pm.MarketState, long: bool, margin: int, leverage_x10: int, last_cpf: int = 0) -> pm.Position:
    """A position opened on `m` as openPosition would (notional = margin × leverage, base from getInputPrice)."""
    notional = margin * leverage_x10 // 10
    d = pm.Dir.ADD_TO_AMM if long else pm.Dir.REMOVE_FROM_AMM
    size = pm.input_price(d, notional, m.quote_reserve, m.base_reserve)
    return pm.Position(size if long else -size, margin, notional, last_cpf)


def eth_market(price: int = 3000 * E, depth: int = 10_000 * E, oracle: int | None = None, cpf: int = 0) -> pm.MarketState:
    return market(depth * price // E, depth, oracle, cpf)


# ---- the move ------------------------------------------------------------------------------------


@given(st.integers(10**20, 10**28), st.integers(10**19, 10**26), st.integers(10**15, 10**24))
def test_reserves_at_is_what_the_amm_swap_leaves(q, b, price):
    """Q' = ⌊√(price·k)⌋ and B' is the base reserve swapInput leaves after trading Q' − Q of quote (in
    either direction), with k = mulD(Q, B): the Amm's own trade, to the wei."""
    try:
        q2, b2 = pl.reserves_at(q, b, price)
    except pm.AmmMathError:
        return
    k = pm.mul_d(q, b)
    assert q2 == isqrt(price * k)
    if q2 > q:
        assert b2 == b - pm.input_price(pm.Dir.ADD_TO_AMM, q2 - q, q, b)
    elif q2 < q:
        assert b2 == b + pm.input_price(pm.Dir.REMOVE_FROM_AMM, q - q2, q, b)
    # the spot lands on the price to the rounding of the two square-root halves
    spot = pm.spot_price(q2, b2)
    assert abs(spot - price) * 10**6 <= price or q2 < 10**12


def test_shocked_market_moves_index_spot_and_twap():
    m = eth_market()
    s = pl.shocked_market(m, 9 * E // 10)
    assert s.oracle_price == 2700 * E
    assert abs(s.spot - 2700 * E) <= 10**6  # wei of price
    pos = opened(m, True, 1000 * E, 50)
    r = pm.ratios(pos, s)
    assert r.twap_notional == r.spot_notional and r.contract_mr == r.spot_mr  # sustained: TWAP = spot
    assert not r.over_spread
    # instant: the TWAP is still the old market's
    inst = pl.shocked_market(m, 9 * E // 10, sustained=False)
    assert pm.ratios(pos, inst).twap_notional == pm.ratios(pos, m).twap_notional
    assert pm.ratios(pos, inst).over_spread is False
    with pytest.raises(pm.AmmMathError):
        pl.shocked_market(m, 0)


def test_instant_shock_can_trip_the_oracle_rule_not_the_sustained_one():
    """A vAMM 12 % off the index (oracle rule) stays off only in the instant model's TWAP, not its spot."""
    m = eth_market(oracle=3000 * E)
    pos = opened(m, True, 1000 * E, 70)
    inst = pm.ratios(pos, pl.shocked_market(m, 88 * E // 100, sustained=False))
    sust = pm.ratios(pos, pl.shocked_market(m, 88 * E // 100))
    assert inst.twap_mr > inst.spot_mr  # the old TWAP still prices it at 3000
    assert sust.twap_mr == sust.spot_mr


# ---- the solver ------------------------------------------------------------------------------------


def test_worked_example_10x_long_at_3000_liquidates_near_2880():
    """docs RULES §1: a 10x long opened at 3,000 is liquidatable at about 2,880 (6 % < 6.25 %)."""
    m = eth_market()
    pos = opened(m, True, 1000 * E, 100)
    lp = pl.liquidation_prices(pos, m, PARAMS, tick=USDC_TICK)
    assert lp.liq_price is not None and lp.full_liq_price is not None
    assert 2875 * E < lp.liq_price < 2890 * E
    assert lp.full_liq_price < lp.liq_price  # a long's full-liquidation price is further down
    assert pl.liquidatable_at(pos, m, PARAMS, lp.liq_price) == (True, False)  # partial there
    assert pl.liquidatable_at(pos, m, PARAMS, lp.liq_price + USDC_TICK) == (False, False)
    assert pl.liquidatable_at(pos, m, PARAMS, lp.full_liq_price) == (True, True)
    assert pl.liquidatable_at(pos, m, PARAMS, lp.full_liq_price + USDC_TICK) == (True, False)


def test_unlevered_long_has_no_liquidation_price_short_always_has_one():
    m = eth_market()
    assert pl.liquidation_prices(opened(m, True, 1000 * E, 9), m, PARAMS) == pl.LiquidationPrices(None, None)
    short = pl.liquidation_prices(opened(m, False, 1000 * E, 9), m, PARAMS, tick=USDC_TICK)
    assert short.liq_price is not None and short.liq_price > 3000 * E * 19 // 10  # a 0.9x short: about +99 %


def test_no_partial_ratio_means_full_at_the_liquidation_price():
    m = eth_market()
    pos = opened(m, False, 1000 * E, 80)
    lp = pl.liquidation_prices(pos, m, pm.PerpParams(MMR, LFR, 0), tick=USDC_TICK)
    assert lp.liq_price is not None and lp.full_liq_price == lp.liq_price


def test_already_liquidatable_positions_get_the_price_they_recover_at():
    m = eth_market()
    pos = opened(m, True, 1000 * E, 100)
    crashed = pl.market_at(m, 2800 * E)
    lp = pl.liquidation_prices(pos, crashed, PARAMS, tick=USDC_TICK)
    assert pl.liquidatable_at(pos, crashed, PARAMS, 2800 * E)[0]
    assert lp.liq_price is not None and lp.liq_price > 2800 * E
    assert pl.liquidatable_at(pos, crashed, PARAMS, lp.liq_price)[0]
    assert not pl.liquidatable_at(pos, crashed, PARAMS, lp.liq_price + USDC_TICK)[0]


def test_funding_owed_raises_a_longs_liquidation_price():
    m = eth_market()
    pos = opened(m, True, 1000 * E, 100)
    plain = pl.liquidation_prices(pos, m, PARAMS, tick=USDC_TICK).liq_price
    owing = pl.liquidation_prices(pos, eth_market(cpf=10 * E), PARAMS, tick=USDC_TICK).liq_price  # 10 quote per base owed
    assert plain is not None and owing is not None and owing > plain


positions = st.tuples(
    st.booleans(),  # long?
    st.integers(10, 100_000),  # margin, whole quote
    st.integers(11, 200),  # leverage × 10: 1.1x … 20x
    st.integers(-(10**19), 10**19),  # CPF now − at open (funding)
    st.integers(2_000, 50_000),  # vAMM depth, base
    st.integers(-15, 15),  # index vs spot, %
    st.sampled_from([1, USDC_TICK, 10**15]),
)


@given(positions, st.booleans())
def test_bracket_liquidatable_at_the_price_not_one_tick_towards_safety(p, v22):
    long, margin, lev, dcpf, depth, dev, tick = p
    m0 = eth_market(depth=depth * E)
    pos = opened(m0, long, margin * E, lev)
    m = eth_market(depth=depth * E, oracle=3000 * E * (100 + dev) // 100, cpf=dcpf)
    params = pm.PerpParams(MMR, LFR, PLR, partial_on_spot_ratio=not v22, backstop_rule=not v22)
    lp = pl.liquidation_prices(pos, m, params, tick=tick)
    safer = tick if long else -tick
    if lp.liq_price is None:
        assert long  # only a long can be safe at every price (unlevered enough)
        return
    assert lp.liq_price % tick == 0
    assert pl.liquidatable_at(pos, m, params, lp.liq_price)[0]
    if lp.liq_price + safer > 0:
        assert not pl.liquidatable_at(pos, m, params, lp.liq_price + safer)[0]
    if lp.full_liq_price is not None:
        assert lp.full_liq_price % tick == 0
        assert pl.liquidatable_at(pos, m, params, lp.full_liq_price)[1]
        assert not pl.liquidatable_at(pos, m, params, lp.full_liq_price + safer)[1]
        assert (lp.full_liq_price <= lp.liq_price) if long else (lp.full_liq_price >= lp.liq_price)


@given(positions, st.integers(1, 10**22))
def test_more_margin_never_moves_the_liquidation_price_towards_the_market(p, extra):
    """Monotone: adding margin lowers a long's liquidation price and raises a short's (or keeps it)."""
    long, margin, lev, dcpf, depth, _dev, _tick = p
    m = eth_market(depth=depth * E, cpf=dcpf)
    pos = opened(eth_market(depth=depth * E), long, margin * E, lev)
    richer = pm.Position(pos.size, pos.margin + extra, pos.open_notional, pos.last_cpf)
    a = pl.liquidation_prices(pos, m, PARAMS, tick=USDC_TICK).liq_price
    b = pl.liquidation_prices(richer, m, PARAMS, tick=USDC_TICK).liq_price
    if long:
        assert a is not None or b is None
        if a is not None and b is not None:
            assert b <= a
    else:
        assert a is not None and b is not None and b >= a


@given(positions, st.lists(st.integers(1, 10_000), min_size=2, max_size=8, unique=True))
def test_liquidatable_is_monotone_in_the_price(p, grid):
    """On the USDC grid a long is liquidatable below its boundary and not above it (short: mirrored)."""
    long, margin, lev, dcpf, depth, _dev, _tick = p
    m = eth_market(depth=depth * E, cpf=dcpf)
    pos = opened(eth_market(depth=depth * E), long, margin * E, lev)
    prices = sorted(g * E // 2 for g in grid)  # 0.5 … 5,000 quote per base
    flags = [pl.liquidatable_at(pos, m, PARAMS, x)[0] for x in prices]
    if not long:
        flags.reverse()
    assert flags == sorted(flags, reverse=True)  # True… then False…


def test_price_tick():
    assert pl.price_tick(6) == 10**12 and pl.price_tick(18) == 1 and pl.price_tick(24) == 1
    with pytest.raises(ValueError):
        pl.liquidation_prices(pm.Position(E, E, E, 0), eth_market(), PARAMS, tick=0)


@given(positions)
def test_the_float_guess_only_speeds_the_search_up(p):
    """With or without the starting guess the exact search returns the same grid point, and the guess is
    within the 1 ppm window it tries first (funding and rounding included)."""
    long, margin, lev, dcpf, depth, dev, _tick = p
    m0 = eth_market(depth=depth * E)
    pos = opened(m0, long, margin * E, lev)
    m = eth_market(depth=depth * E, oracle=3000 * E * (100 + dev) // 100, cpf=dcpf)
    fast = pl.liquidation_prices(pos, m, PARAMS, tick=USDC_TICK)
    assert fast == pl.liquidation_prices(pos, m, PARAMS, tick=USDC_TICK, hints=False)
    for price, threshold in ((fast.liq_price, MMR), (fast.full_liq_price, LFR)):
        guess = pl.estimate(pos, m, threshold)
        if price is not None and price > 10**15:
            assert guess is not None and abs(guess - price) * pl.HINT_WINDOW <= price
