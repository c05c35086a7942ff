"""Pure perp risk maths: hand-computed cases, the docs/PROTOCOLS.md §R.1 worked example, strict boundaries,
and properties against exact rational arithmetic."""

from __future__ import annotations

from fractions import Fraction
from math import isqrt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.risk import perp as pm

E = 10**18


def market(q: int, b: int, oracle: int | None = None, cpf: int = 0, snaps=None, now: int = 10_000) -> pm.MarketState:
    snaps = snaps or (pm.Snapshot(q, b, 0, 1),)
    return pm.MarketState(q, b, oracle if oracle is not None else pm.div_d(q, b), cpf, tuple(snaps), now)


def reserves_at(price: int, k_quote: int, k_base: int) -> tuple[int, int]:
    """Reserves with (about) the same invariant k = Q·B but spot `price` (1e18)."""
    k = k_quote * k_base
    base = isqrt(k * E // price)
    return k // base, base


# ---- fixed point -------------------------------------------------------------------------------


def test_signed_ops_truncate_toward_zero():
    assert pm.smul_d(-3, E // 2) == -1  # -1.5 → -1
    assert pm.sdiv_d(-1, 3) == -333333333333333333
    assert pm.sdiv_d(1, -3) == -333333333333333333
    assert pm.mul_d(3, E // 2) == 1


@given(st.integers(-(10**40), 10**40), st.integers(1, 10**40))
def test_sdiv_matches_rational_truncation(a, b):
    exact = Fraction(a * E, b)
    expected = int(exact)  # int() truncates toward zero
    assert pm.sdiv_d(a, b) == expected
    assert pm.sdiv_d(a, -b) == -expected


# ---- vAMM --------------------------------------------------------------------------------------


def test_output_price_hand_example():
    # Q = 1000, B = 100, k = 100000; closing a long of 10 base: quote_after = 100000/110 = 909.0909…
    q, b = 1000 * E, 100 * E
    out = pm.output_price(pm.Dir.ADD_TO_AMM, 10 * E, q, b)
    k = pm.mul_d(q, b)
    assert out == q - (k * E // (110 * E)) - 1  # not divisible → 1 wei less for the trader
    # closing a short of 10 base: quote_after = 100000/90 = 1111.11…, +1 wei for the AMM
    out = pm.output_price(pm.Dir.REMOVE_FROM_AMM, 10 * E, q, b)
    assert out == (k * E // (90 * E)) - q + 1


def test_output_price_divisible_has_no_rounding_term():
    q, b = 1000 * E, 100 * E  # k·1e18 divisible by 125e18
    k = pm.mul_d(q, b)
    assert (k * E) % (125 * E) == 0
    assert pm.output_price(pm.Dir.ADD_TO_AMM, 25 * E, q, b) == q - k * E // (125 * E)


def test_output_price_reverts_like_contract():
    with pytest.raises(pm.AmmMathError, match="base asset after is 0"):
        pm.output_price(pm.Dir.REMOVE_FROM_AMM, 100 * E, 1000 * E, 100 * E)
    assert pm.output_price(pm.Dir.ADD_TO_AMM, 0, 1000 * E, 100 * E) == 0


@settings(max_examples=300)
@given(st.integers(10**18, 10**30), st.integers(10**18, 10**30), st.integers(1, 10**28), st.sampled_from(list(pm.Dir)))
def test_output_price_brackets_the_exact_value(q, b, amount, direction):
    if direction == pm.Dir.REMOVE_FROM_AMM and amount >= b:
        return
    k = pm.mul_d(q, b)
    after = b + amount if direction == pm.Dir.ADD_TO_AMM else b - amount
    exact = abs(Fraction(k * E, after) - q)  # in 1e18 units
    out = pm.output_price(direction, amount, q, b)
    if direction == pm.Dir.ADD_TO_AMM:
        assert exact - 2 < out <= exact  # trader never gets more than the exact quote
    else:
        assert exact <= out < exact + 2  # trader never pays less than the exact quote


def test_input_output_are_consistent():
    q, b = 30_000_000 * E, 10_000 * E
    base = pm.input_price(pm.Dir.ADD_TO_AMM, 3000 * E, q, b)  # open a 3000 long
    assert 0.999 * E < base < E
    # Closing it right away on the moved reserves returns (almost) the same quote.
    q2, b2 = q + 3000 * E, b - base
    back = pm.output_price(pm.Dir.ADD_TO_AMM, base, q2, b2)
    assert 3000 * E - 10**6 <= back <= 3000 * E  # k is re-rounded on the new reserves


# ---- TWAP ---------------------------------------------------------------------------------------


def test_twap_weights_snapshots_and_cuts_at_window_start():
    s0 = pm.Snapshot(1000 * E, 100 * E, 0, 1)
    s1 = pm.Snapshot(1210 * E, 90 * E, 600, 2)
    now = 1000
    p0 = pm.output_price(pm.Dir.ADD_TO_AMM, E, s0.quote_reserve, s0.base_reserve)
    p1 = pm.output_price(pm.Dir.ADD_TO_AMM, E, s1.quote_reserve, s1.base_reserve)
    # window starts at 100: s1 for 400 s, s0 for 500 s (cut at 100, not 600 s)
    assert pm.output_twap(pm.Dir.ADD_TO_AMM, E, [s0, s1], now) == (p1 * 400 + p0 * 500) // 900


def test_twap_short_history_divides_by_covered_period():
    s0 = pm.Snapshot(1000 * E, 100 * E, 500, 1)
    s1 = pm.Snapshot(1210 * E, 90 * E, 800, 2)
    p0 = pm.output_price(pm.Dir.ADD_TO_AMM, E, s0.quote_reserve, s0.base_reserve)
    p1 = pm.output_price(pm.Dir.ADD_TO_AMM, E, s1.quote_reserve, s1.base_reserve)
    assert pm.output_twap(pm.Dir.ADD_TO_AMM, E, [s0, s1], 1000) == (p1 * 200 + p0 * 300) // 500


def test_twap_returns_latest_when_single_or_old_snapshot():
    s0 = pm.Snapshot(1000 * E, 100 * E, 0, 1)
    s1 = pm.Snapshot(1210 * E, 90 * E, 50, 2)
    p1 = pm.output_price(pm.Dir.ADD_TO_AMM, E, s1.quote_reserve, s1.base_reserve)
    assert pm.output_twap(pm.Dir.ADD_TO_AMM, E, [s0, s1], 950) == p1  # latest at/before now−900
    assert pm.output_twap(pm.Dir.ADD_TO_AMM, E, [s1], 100) == p1  # single snapshot


def contract_twap(dir_base: pm.Dir, base: int, snaps: list[pm.Snapshot], now: int, interval: int = 900) -> int:
    """Amm._twap transcribed loop for loop (the reference for the precomputed-terms version)."""
    idx = len(snaps) - 1
    price = pm.output_price(dir_base, base, snaps[idx].quote_reserve, snaps[idx].base_reserve)
    if interval == 0 or idx == 0 or snaps[idx].timestamp <= now - interval:
        return price
    prev_ts, period = snaps[idx].timestamp, now - snaps[idx].timestamp
    weighted = price * period
    while idx > 0:
        idx -= 1
        s = snaps[idx]
        price = pm.output_price(dir_base, base, s.quote_reserve, s.base_reserve)
        if s.timestamp <= now - interval:
            return (weighted + price * (prev_ts - (now - interval))) // interval
        weighted += price * (prev_ts - s.timestamp)
        period += prev_ts - s.timestamp
        prev_ts = s.timestamp
    if period == 0:
        raise pm.AmmMathError("division by zero")
    return weighted // period


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(1, 10**27), st.integers(1, 10**24), st.integers(0, 400)), min_size=1, max_size=12),
    st.integers(0, 2 * 10**23),
    st.sampled_from(list(pm.Dir)),
    st.integers(0, 3000),
    st.sampled_from([900, 0, 1]),
)
def test_twap_terms_match_the_contract_walk(raw, base, direction, after_last, interval):
    snaps, ts = [], 0
    for i, (q, b, gap) in enumerate(raw):
        ts += gap  # equal timestamps too (several snapshots in one second)
        snaps.append(pm.Snapshot(q, b, ts, i))
    now = ts + after_last
    try:
        expected = contract_twap(direction, base, snaps, now, interval)
    except pm.AmmMathError as exc:
        with pytest.raises(pm.AmmMathError, match=str(exc)):
            pm.output_twap(direction, base, snaps, now, interval)
        return
    assert pm.output_twap(direction, base, snaps, now, interval) == expected


# ---- margin ratio and rules -----------------------------------------------------------------


def test_worked_example_10x_long_3000_to_2880_is_partial_with_1_25pct_reward():
    """docs/PROTOCOLS.md §R.1: 10x long ETH at 3,000 → ETH at 2,880 → ratio ≈ 6 % → partial 25 %, keeper gets
    1.25 % of the closed notional with a 2.5 % liquidation fee."""
    q, b = 30_000_000 * E, 10_000 * E  # spot 3,000
    size = pm.input_price(pm.Dir.ADD_TO_AMM, 3000 * E, q, b)
    q, b = q + 3000 * E, b - size
    pos = pm.Position(size=size, margin=300 * E, open_notional=3000 * E, last_cpf=0)
    q2, b2 = reserves_at(2880 * E, q, b)  # the market (and the oracle) fall to 2,880
    m = market(q2, b2, oracle=2880 * E, snaps=(pm.Snapshot(q2, b2, 0, 5),), now=2000)
    params = pm.PerpParams(mmr=625 * E // 10_000, lfr=25 * E // 1000, plr=E // 4)
    r = pm.ratios(pos, m)
    assert 5 * E // 100 < r.effective_mr < params.mmr  # ≈ 6 %, below 6.25 %
    liq = pm.liquidation(pos, m, params, r)
    assert liq.liquidatable and liq.partial
    closed_notional = liq.quote
    assert abs(closed_notional - 720 * E) < 2 * E  # 25 % of ≈ 2,880
    assert liq.fee_to_liquidator == pm.mul_d(closed_notional, params.lfr) // 2
    assert abs(Fraction(liq.fee_to_liquidator, closed_notional) - Fraction(125, 10_000)) < Fraction(1, 10**12)
    # The rest stays open; at a ratio ≤ 2.5 % it is closed in full.
    q3, b3 = reserves_at(2750 * E, q, b)
    m3 = market(q3, b3, oracle=2750 * E, snaps=(pm.Snapshot(q3, b3, 0, 5),), now=2000)
    r3 = pm.ratios(pos, m3)
    assert r3.spot_mr <= params.lfr
    liq3 = pm.liquidation(pos, m3, params, r3)
    assert liq3.liquidatable and not liq3.partial


def ratios_with(effective: int, spot: int) -> pm.Ratios:
    return pm.Ratios(100 * E, 0, spot, 100 * E, 0, effective, effective, None, effective, False)


def test_exactly_at_maintenance_is_not_liquidatable():
    params = pm.PerpParams(mmr=625 * E // 10_000, lfr=25 * E // 1000, plr=E // 4)
    pos = pm.Position(E, 10 * E, 100 * E, 0)
    m = market(1000 * E, 10 * E)
    assert not pm.liquidation(pos, m, params, ratios_with(params.mmr, params.mmr)).liquidatable
    assert pm.liquidation(pos, m, params, ratios_with(params.mmr - 1, params.mmr - 1)).liquidatable


def test_partial_full_boundary_at_fee_ratio():
    params = pm.PerpParams(mmr=625 * E // 10_000, lfr=25 * E // 1000, plr=E // 4)
    pos = pm.Position(E, 10 * E, 100 * E, 0)
    m = market(1000 * E, 10 * E)
    assert not pm.liquidation(pos, m, params, ratios_with(params.lfr, params.lfr)).partial  # = fee ratio → full
    assert pm.liquidation(pos, m, params, ratios_with(params.lfr, params.lfr + 1)).partial  # strictly above → partial
    # plr = 0 or 1 disables partial closes
    for plr in (0, E):
        p2 = pm.PerpParams(params.mmr, params.lfr, plr)
        assert not pm.liquidation(pos, m, p2, ratios_with(params.lfr, params.lfr * 2)).partial
    # v2.2 gates the partial close on the combined (effective) ratio instead of the spot one
    v22 = pm.PerpParams(params.mmr, params.lfr, params.plr, partial_on_spot_ratio=False, backstop_rule=False)
    assert pm.liquidation(pos, m, v22, ratios_with(params.lfr + 1, params.lfr)).partial
    assert not pm.liquidation(pos, m, params, ratios_with(params.lfr + 1, params.lfr)).partial


def test_max_pnl_preference_ties_take_twap():
    q, b = 30_000_000 * E, 10_000 * E
    pos = pm.Position(size=E, margin=300 * E, open_notional=3000 * E, last_cpf=0)
    m = market(q, b, snaps=(pm.Snapshot(q, b, 0, 1),), now=5000)
    r = pm.ratios(pos, m)
    assert r.spot_pnl == r.twap_pnl and r.contract_mr == r.twap_mr
    # TWAP above spot (price just fell): the TWAP pair has the higher PnL for a long and is used.
    q2, b2 = reserves_at(2700 * E, q, b)
    m2 = market(q2, b2, snaps=(pm.Snapshot(q, b, 0, 1), pm.Snapshot(q2, b2, 4900, 2)), now=5000)
    r2 = pm.ratios(pos, m2)
    assert r2.twap_pnl > r2.spot_pnl and r2.contract_mr == r2.twap_mr > r2.spot_mr


def test_over_spread_rule_uses_oracle_ratio_when_higher():
    q, b = 30_000_000 * E, 10_000 * E
    pos = pm.Position(size=10 * E, margin=3000 * E, open_notional=30_000 * E, last_cpf=0)
    q2, b2 = reserves_at(2600 * E, q, b)  # vAMM crashed 13 % below an oracle still at 3,000
    m = market(q2, b2, oracle=3000 * E, snaps=(pm.Snapshot(q2, b2, 0, 2),), now=5000)
    assert pm.over_spread(m)
    r = pm.ratios(pos, m)
    assert r.contract_mr < 0  # under water on market prices
    assert r.oracle_mr == r.effective_mr == pm.sdiv_d(3000 * E, 30_000 * E)
    params = pm.PerpParams(mmr=625 * E // 10_000, lfr=25 * E // 1000, plr=E // 4)
    assert not pm.liquidation(pos, m, params, r).liquidatable


def test_over_spread_threshold_is_inclusive():
    m = market(110 * E, E, oracle=100 * E)  # spot exactly 10 % above
    assert pm.over_spread(m)
    m = market(110 * E - 1, E, oracle=100 * E)
    assert not pm.over_spread(m)


def test_funding_payment_and_bad_debt():
    pos = pm.Position(size=-2 * E, margin=100 * E, open_notional=6000 * E, last_cpf=E // 100)
    # CPF rose from 0.01 to 0.03: FP = 0.02 × (−2) = −0.04 → the short receives
    assert pm.funding_payment(pos, 3 * E // 100) == -4 * E // 100
    remain, bad = pm.remaining_margin(pos, -150 * E, E // 100)
    assert (remain, bad) == (0, 50 * E)


def test_full_close_with_bad_debt_needs_backstop():
    q, b = 30_000_000 * E, 10_000 * E
    pos = pm.Position(size=10 * E, margin=1000 * E, open_notional=30_000 * E, last_cpf=0)
    q2, b2 = reserves_at(2880 * E, q, b)  # −4 %: loss 1,200 > margin 1,000
    m = market(q2, b2, oracle=2880 * E, snaps=(pm.Snapshot(q2, b2, 0, 2),), now=5000)
    params = pm.PerpParams(mmr=625 * E // 10_000, lfr=25 * E // 1000, plr=E // 4)
    r = pm.ratios(pos, m)
    liq = pm.liquidation(pos, m, params, r)
    assert liq.liquidatable and not liq.partial and liq.bad_debt > 0 and liq.needs_backstop
    backstop = pm.PerpParams(params.mmr, params.lfr, params.plr, keeper_is_backstop=True)
    assert not pm.liquidation(pos, m, backstop, r).needs_backstop
    v22 = pm.PerpParams(params.mmr, params.lfr, params.plr, partial_on_spot_ratio=False, backstop_rule=False)
    assert not pm.liquidation(pos, m, v22, r).needs_backstop


@settings(max_examples=200)
@given(st.integers(1, 10**30), st.sampled_from([6, 8, 18]))
def test_token_floor(amount, decimals):
    got = pm.token_floor(amount, decimals)
    assert got <= amount and amount - got < 10 ** (18 - decimals) + (decimals == 18)
    assert got % 10 ** (18 - decimals) == 0


# ---- incremental TWAP memo ---------------------------------------------------------------------


def _twap_or_error(fn):
    try:
        return fn()
    except pm.AmmMathError as exc:
        return ("error", str(exc))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # seconds to the block
            st.sampled_from(["trade", "trade", "trade", "none", "overwrite", "reorg"]),
            st.integers(9 * 10**23, 11 * 10**23),  # quote reserve
            st.integers(9 * 10**20, 11 * 10**20),  # base reserve
            st.lists(st.sampled_from([0, 10**15, 3 * 10**18, 10**20, 7 * 10**20, 2 * 10**21]), min_size=1, max_size=4),
            st.integers(0, 5),  # how far back the tail handed over starts (the adapter may pass more)
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0, 60, 300, 900]),
)
def test_twap_memo_equals_the_full_walk_block_after_block(blocks, interval):
    """Over a history that grows, gets its last snapshot overwritten or its tail reorganised, the
    memo's TWAP is the full walk's to the wei, with the same reverts, for every size and side."""
    snaps = [pm.Snapshot(10**24, 10**21, 0, 0)]
    memo, now = pm.TwapMemo(), 0
    for number, (gap, event, q, b, sizes, extra) in enumerate(blocks, start=1):
        now += gap
        if event == "trade":
            snaps.append(pm.Snapshot(q, b, now, number))
        elif event == "overwrite":
            last = snaps[-1]
            snaps[-1] = pm.Snapshot(q, b, last.timestamp, last.block_number)
        elif event == "reorg" and len(snaps) > 2:
            del snaps[-2:]
            snaps.append(pm.Snapshot(q, b, now, number))
        twap = pm.twap_terms(snaps, now, interval)
        tail = tuple(snaps[max(0, twap.first - extra) :])
        m = pm.MarketState(q, b, E, 0, tail, now, twap_memo=memo)
        m.__dict__["twap"] = pm.twap_terms(tail, now, interval)  # the interval under test
        for size in sizes:
            for d in (pm.Dir.ADD_TO_AMM, pm.Dir.REMOVE_FROM_AMM):
                want = _twap_or_error(lambda: pm.twap_output(d, size, m.twap))  # noqa: B023
                got = _twap_or_error(lambda: memo.output(d, size, m))  # noqa: B023
                assert got == want, (number, event, size, d)


def test_twap_memo_forgets_sizes_not_evaluated_and_stays_short():
    memo, now = pm.TwapMemo(), 0
    snaps = [pm.Snapshot(10**24, 10**21, 0, 0)]
    for number in range(1, 400):
        now += 12
        snaps.append(pm.Snapshot(10**24 + number * 10**18, 10**21 - number * 10**15, now, number))
        m = pm.MarketState(1, 1, E, 0, tuple(snaps[-100:]), now, twap_memo=memo)
        assert memo.output(pm.Dir.ADD_TO_AMM, E, m) == pm.twap_output(pm.Dir.ADD_TO_AMM, E, m.twap)
        if number < 10:
            memo.output(pm.Dir.ADD_TO_AMM, 2 * E, m)
    assert set(memo.runs) == {(True, E)}  # 2·1e18 was last evaluated long ago
    (run,) = memo.runs.values()
    assert len(run.solds) <= 900 // 12 + 18 and len(memo.chain) <= 900 // 12 + 18
