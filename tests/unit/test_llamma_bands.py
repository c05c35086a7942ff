"""The LLAMMA band/health solver (keeper/risk/llamma_bands.py): pure integer maths, unit and property
tests. Its agreement with the contracts themselves is tested on anvil in tests/llamma/test_llamma_risk.py."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.risk import llamma as lm
from keeper.risk import llamma_bands as lb

WAD = 10**18
RAY = 10**36
DEAD = 1000


def deposit(state: lb.BandState, shares: dict[int, int], n1: int, n2: int, amount: int) -> lb.UserBands:
    """AMM.deposit_range for one more depositor into all-collateral bands (normalised amount): the same
    share arithmetic; `shares` holds each band's total shares and is updated. Returns the user's bands."""
    n = n2 - n1 + 1
    per = amount // n
    out = []
    for i in range(n):
        band = n1 + i
        y = amount - per * (n - 1) if i == 0 else per
        x0, y0 = state.bands.get(band, (0, 0))
        assert x0 == 0
        s = shares.get(band, 0)
        ds = (s + DEAD) * y // (y0 + 1)
        shares[band] = s + ds
        state.bands[band] = (0, y0 + y)
        out.append(ds)
    state.min_band = min(state.min_band, n1)
    state.max_band = max(state.max_band, n2)
    return lb.UserBands(n1, n2, tuple((ds, shares[n1 + i] + DEAD) for i, ds in enumerate(out)))


def market(a: int = 100, fee: int = 6 * 10**15, price: int = 3000 * WAD) -> lb.BandState:
    return lb.BandState(a, fee, price, 0, 0, 0, {}, 1, 1, price)


def loan(*, a: int = 100, n1: int = 5, n_bands: int = 10, collateral: int = 10 * WAD, ltv: int = 90 * WAD // 100):
    """A market at 3,000 with a loan of `collateral` in bands n1 .. n1+n_bands-1 and a debt of `ltv` ×
    what its bands yield when converted gradually (x_down at the current price)."""
    state = market(a)
    shares: dict[int, int] = {}
    user = deposit(state, shares, n1, n1 + n_bands - 1, collateral)
    debt = lb.x_down(state, user, state.price_oracle) * ltv // WAD
    return state, user, debt


def test_ratio_pow_matches_the_grid():
    a = 100
    assert lb.ratio_pow(a, 0) == RAY
    assert lb.ratio_pow(a, 1) == (a - 1) * RAY // a
    for n in (1, 7, 50, 1000):
        prod = lb.ratio_pow(a, n) * lb.ratio_pow(a, -n) // RAY
        assert abs(prod - RAY) <= RAY // 10**15
    state = market(a)
    assert state.p_oracle_up(0) == 3000 * WAD
    assert [state.p_oracle_down(n) for n in range(5)] == [state.p_oracle_up(n + 1) for n in range(5)]
    assert all(state.p_oracle_up(n) > state.p_oracle_up(n + 1) for n in range(-20, 20))


def test_soft_liquidation_range_is_the_top_of_n1_and_the_bottom_of_n2():
    state, user, _debt = loan(n1=5, n_bands=10)
    top, bottom = lb.soft_liquidation_range(state, user.n1, user.n2)
    assert top == state.p_oracle_up(5) and bottom == state.p_oracle_up(15)
    assert 3000 * WAD > top > bottom


def test_health_full_is_the_controllers_formula():
    """Above its bands (not in soft liquidation, oracle above p_up(n1)) the bonus term is added, exactly as
    keeper.risk.llamma.health computes it from the same x_down and y."""
    state, user, debt = loan()
    p = state.price_oracle
    xd = lb.x_down(state, user, p)
    _x, y = lb.user_xy(state, user)
    expected = lm.health(
        xd,
        debt,
        6 * 10**16,
        full=True,
        n1=user.n1,
        active_band=state.active_band,
        price_oracle=p,
        p_up_n1=state.p_oracle_up(user.n1),
        y=y,
        divisor_has_borrowed_precision=True,
    )
    assert lb.health_full(state, user, debt, 6 * 10**16, p) == expected
    assert expected > lm.health(xd, debt, 6 * 10**16)  # the bonus counts


def test_arbitrage_converts_the_bands_above_the_price():
    state, user, _debt = loan(n1=5, n_bands=10)
    inside = (state.p_oracle_up(9) + state.p_oracle_down(9)) // 2
    after = state.arbitraged(inside)
    assert after.active_band == 9
    assert all(after.y(n) == 0 and after.x(n) > 0 for n in range(5, 9))  # above the price: all stablecoin
    assert all(after.x(n) == 0 and after.y(n) > 0 for n in range(10, 15))  # below it: all collateral
    assert after.x(9) > 0 and after.y(9) > 0
    below = state.arbitraged(state.p_oracle_down(14) * 99 // 100)
    assert all(below.y(n) == 0 for n in range(5, 15))
    assert state.active_band == 0 and state.y(9) > 0  # the original state is untouched


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.integers(20, 200),
    n1=st.integers(1, 20),
    n_bands=st.integers(4, 30),
    collateral=st.integers(10**15, 10**24),
    ltv=st.integers(50, 99),
    fee=st.integers(0, 10**16),
    other=st.integers(0, 10**24),
)
def test_exchange_conserves_and_arbitrage_is_idempotent(a, n1, n_bands, collateral, ltv, fee, other):
    state = market(a, fee)
    shares: dict[int, int] = {}
    if other:
        deposit(state, shares, n1 + 1, n1 + n_bands + 2, max(other, 10**6 * n_bands))
    deposit(state, shares, n1, n1 + n_bands - 1, collateral)
    p = state.p_oracle_down(n1 + n_bands // 2) * (100 - ltv % 7) // 100
    amount, pump = state.amount_for_price(p, p)
    assert pump  # the oracle fell: the arbitrageur buys collateral with stablecoin
    after = state.copy()
    used, out = after.exchange(pump, amount, p)
    assert used <= amount
    sum_x = sum(x for x, _y in after.bands.values())
    sum_y0 = sum(y for _x, y in state.bands.values())
    sum_y1 = sum(y for _x, y in after.bands.values())
    assert sum_x == used  # every stablecoin paid in (fee included) stays in the bands
    assert sum_y0 - sum_y1 >= out  # and at least what was paid out left them
    again = state.arbitraged(p)
    assert again.arbitraged(p).bands == again.bands  # at the oracle price nothing more trades


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.integers(30, 150),
    n1=st.integers(1, 15),
    n_bands=st.integers(4, 25),
    collateral=st.integers(10**17, 10**23),
    ltv=st.integers(60, 99),
    steps=st.lists(st.integers(1, 10**6), min_size=2, max_size=6),
)
def test_health_after_a_move_rises_with_the_price(a, n1, n_bands, collateral, ltv, steps):
    state, user, debt = loan(a=a, n1=n1, n_bands=n_bands, collateral=collateral, ltv=ltv * WAD // 100)
    lo, hi = state.p_oracle_down(user.n2) * 8 // 10, state.price_oracle * 11 // 10
    prices = sorted({lo + (hi - lo) * s // 10**6 for s in steps})
    healths = [lb.health_at(state, user, debt, 6 * 10**16, p) for p in prices]
    assert healths == sorted(healths)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.integers(30, 150),
    n1=st.integers(1, 15),
    n_bands=st.integers(4, 25),
    collateral=st.integers(10**17, 10**23),
    ltv=st.integers(80, 99),
    ld=st.integers(10**16, 10**17),
)
def test_liquidation_price_is_where_health_crosses_zero(a, n1, n_bands, collateral, ltv, ld):
    state, user, debt = loan(a=a, n1=n1, n_bands=n_bands, collateral=collateral, ltv=ltv * WAD // 100)
    p_now = state.price_oracle
    lp = lb.liquidation_price(state, user, debt, ld, p_now)
    if lp is None:  # no crossing: healthy even at p_now / 2**20
        assert lb.health_at(state, user, debt, ld, p_now >> 20) >= 0
        return
    assert lb.health_at(state, user, debt, ld, lp) < 0
    assert lb.health_at(state, user, debt, ld, lp + max(lp // 10**9, 1)) >= 0
    assert lb.health_at(state, user, debt, ld, lp * 1001 // 1000) >= 0
    if lb.health_at(state, user, debt, ld, p_now) >= 0:
        assert lp < p_now
    else:  # under water already: where it would recover
        assert lp >= p_now


def test_liquidation_price_of_a_loan_already_under_water_is_above_the_oracle():
    state, user, debt = loan(ltv=WAD)
    ld = 6 * 10**16
    hurt = state.arbitraged(state.p_oracle_down(user.n1 + 3))  # crashed into its 4th band
    hurt.price_oracle = state.p_oracle_down(user.n1 + 3)
    debt = lb.x_down(hurt, user, hurt.price_oracle) * (WAD - ld) // WAD * 101 // 100  # health just below 0
    assert lb.health_full(hurt, user, debt, ld, hurt.price_oracle) < 0
    lp = lb.liquidation_price(hurt, user, debt, ld, hurt.price_oracle)
    assert lp is not None and lp > hurt.price_oracle
    assert lb.health_at(hurt, user, debt, ld, lp) < 0 <= lb.health_at(hurt, user, debt, ld, lp + max(lp // 10**9, 1))


def test_a_sudden_move_hurts_more_than_the_same_move_in_steps():
    """The model is one oracle move then arbitrage: converting bands at a depressed oracle price loses more
    than following the price down band by band (which health's x_down already assumes)."""
    state, user, debt = loan()
    target = state.p_oracle_down(user.n2) * 95 // 100
    jump = state.arbitraged(target)
    steps = state
    p = state.price_oracle
    while p > target:
        p = max(p * 99 // 100, target)
        steps = steps.arbitraged(p)
    assert lb.user_xy(jump, user)[0] < lb.user_xy(steps, user)[0]
    assert lb.health_full(jump, user, debt, 6 * 10**16, target) < lb.health_full(steps, user, debt, 6 * 10**16, target)
