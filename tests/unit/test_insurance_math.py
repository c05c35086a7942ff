"""Insurance-fund drawdown, its alarm and the ADL ranking (keeper/risk/insurance.py): the docs/PROTOCOLS.md
§I worked example to the unit, window and hysteresis boundaries, and properties against exact rationals."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.risk import insurance as ins

E = 10**18
H = 3600


# ---- §I.1 worked example (seed 002) --------------------------------------------------------------------


def test_seed_example_peak_20000_losses_8000_margin_1000_is_a_35_percent_drawdown_over_the_30_percent_trigger():
    peak, losses, margin = 20_000 * E, 8_000 * E, 1_000 * E
    trigger, stop = 30 * E // 100, 25 * E // 100
    # (8,000 − 1,000) / 20,000 = 35 %, as the seed computes it …
    assert ins.drawdown_from_losses(peak, losses, margin) == 35 * E // 100
    # … which is the balance view: the fund paid the 7,000 the margin did not cover, 13,000 is left
    current = peak - (losses - margin)
    assert current == 13_000 * E
    assert ins.drawdown(peak, current) == 35 * E // 100
    assert ins.reached(peak, current, trigger)
    # the allowance at the trigger is 30 % of 20,000 = 6,000; the seed's 2,000 compensated by the traders
    # is the gross losses over it (8,000 − 6,000); with the 1,000 margin credited the excess is 1,000
    assert ins.allowance(peak, trigger) == 6_000 * E
    assert losses - ins.allowance(peak, trigger) == 2_000 * E
    assert ins.excess_over(peak, current, trigger) == 1_000 * E == 2_000 * E - margin

    # the alarm, fed with the window: 20,000 then 13,000 within 8 h → triggered
    w, alarm = ins.RollingPeak(8 * H), ins.DrawdownAlarm(trigger, stop)
    w.add(0, peak)
    assert alarm.update(w.peak, w.current) is None
    w.add(3 * H, current)
    assert (w.peak, w.current, w.drawdown) == (peak, current, 35 * E // 100)
    assert alarm.update(w.peak, w.current) == ins.Transition.TRIGGERED and alarm.active
    # ADL would bring it back to 30 % (14,000): still active, deleveraging only pauses at the stop level
    w.add(3 * H + 60, 14_000 * E)
    assert w.drawdown == 30 * E // 100
    assert alarm.update(w.peak, w.current) is None and alarm.active
    w.add(3 * H + 120, 14_999 * E)  # 25.005 %: above the stop level
    assert alarm.update(w.peak, w.current) is None and alarm.active
    w.add(3 * H + 180, 15_000 * E)  # 25 %: "until the drawdown drops to 25 % or lower"
    assert w.drawdown == 25 * E // 100
    assert alarm.update(w.peak, w.current) == ins.Transition.CLEARED and not alarm.active


# ---- drawdown and thresholds ----------------------------------------------------------------------------


def test_drawdown_edges():
    assert ins.drawdown(0, 0) == 0
    assert ins.drawdown(0, -5) == 0
    assert ins.drawdown(100, 100) == 0
    assert ins.drawdown(100, 150) == 0
    assert ins.drawdown(100, 0) == E
    assert ins.drawdown(100, -50) == 3 * E // 2  # a negative balance (never on an ERC20) reads as > 100 %
    assert ins.drawdown(3, 2) == E // 3  # floored
    assert ins.drawdown_from_losses(100, 10, 20) == 0  # the margin covered the losses


def test_threshold_comparisons_are_exact_not_on_the_floored_ratio():
    peak = 3 * E
    trigger = E // 3  # 0.333…3: floor(1/3·1e18)
    current = 2 * E  # exactly 1/3 drawn
    assert ins.drawdown(peak, current) == E // 3
    assert ins.reached(peak, current, trigger)  # 1/3 ≥ 0.333…3
    # a drawdown a hair above the stop level floors to it but is not at or below it
    peak, stop = 10**20 + 7, 25 * E // 100
    current = peak - (peak * stop // E) - 1
    assert ins.drawdown(peak, current) == stop
    assert not ins.at_or_below(peak, current, stop)
    assert ins.at_or_below(peak, current + 1, stop)  # drawn = the floored allowance: 25 % or lower
    assert ins.at_or_below(0, 0, 0) and not ins.reached(0, -1, 1)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=10**30),
    st.integers(min_value=0, max_value=10**30),
    st.integers(min_value=1, max_value=E),
)
def test_reached_and_at_or_below_match_exact_rationals(peak, current, ratio):
    exact = Fraction(max(peak - current, 0), peak) if current < peak else Fraction(0)
    raw = Fraction(peak - current, peak)
    assert ins.reached(peak, current, ratio) == (raw >= Fraction(ratio, E))
    assert ins.at_or_below(peak, current, ratio) == (raw <= Fraction(ratio, E))
    assert ins.drawdown(peak, current) == int(exact * E)  # floor of the exact value


# ---- the rolling window -----------------------------------------------------------------------------------


def test_window_peak_rolls_off_after_the_window():
    w = ins.RollingPeak(8 * H)
    w.add(1_000, 100 * E)
    w.add(1_000 + 4 * H, 60 * E)
    assert (w.peak, w.drawdown) == (100 * E, 40 * E // 100)
    w.add(1_000 + 8 * H, 60 * E)  # exactly 8 h after the peak: still in the window (now − ts ≤ window)
    assert w.peak == 100 * E
    w.add(1_000 + 8 * H + 1, 60 * E)  # one second later it is gone; the highest left is 60
    assert (w.peak, w.drawdown) == (60 * E, 0)
    assert [s.balance for s in w.samples] == [60 * E] * 3


def test_window_rewinds_on_a_reorg_and_restores_an_earlier_peak():
    w = ins.RollingPeak(100)
    w.add(10, 50, block=1)
    w.add(20, 80, block=2)
    w.add(30, 90, block=3)  # pops 80 and 50 from the monotonic queue
    assert w.peak == 90
    w.add(30, 40, block=3)  # block 3 replaced (reorg): 90 is gone, 80 is the peak again
    assert (w.peak, w.current) == (80, 40)
    assert [s.block for s in w.samples] == [1, 2, 3]
    w.add(15, 10)  # an earlier timestamp drops every later sample
    assert [s.timestamp for s in w.samples] == [10, 15] and w.peak == 50


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=500),
    st.lists(st.tuples(st.integers(min_value=0, max_value=120), st.integers(min_value=0, max_value=10**6)), max_size=60),
)
def test_window_peak_equals_the_max_over_the_window(window, steps):
    w = ins.RollingPeak(window)
    ts, seen = 0, []
    for dt, bal in steps:
        ts += dt
        w.add(ts, bal)
        seen.append((ts, bal))
        assert w.peak == max(b for t, b in seen if ts - t <= window)
        assert w.current == bal


def test_alarm_hysteresis_fires_once_per_crossing():
    alarm = ins.DrawdownAlarm(30 * E // 100, 25 * E // 100)
    peak = 100 * E
    seq = [80, 70, 60, 72, 74, 75, 76, 69, 80]  # balances: 30 % → fire, back to 25 % → clear, 31 % → fire
    out = [alarm.update(peak, b * E) for b in seq]
    assert out == [None, "triggered", None, None, None, "cleared", None, "triggered", "cleared"]
    with pytest.raises(ValueError):
        ins.DrawdownAlarm(25 * E // 100, 30 * E // 100)
    with pytest.raises(ValueError):
        ins.DrawdownAlarm(0, 0)
    with pytest.raises(ValueError):
        ins.RollingPeak(0)


# ---- §I.2 ADL ranking ------------------------------------------------------------------------------------


def test_adl_scores_worked_example():
    # 10x long, +50 % on its margin: 0.5 × 10 = 5; the same loss: −0.5 ÷ 10 = −0.05
    win = ins.adl_score(500 * E, 1_000 * E, 10_000 * E)
    assert win is not None and (win.pnl_ratio, win.leverage, win.score) == (E // 2, 10 * E, 5 * E)
    lose = ins.adl_score(-500 * E, 1_000 * E, 10_000 * E)
    assert lose is not None and (lose.pnl_ratio, lose.leverage, lose.score) == (-E // 2, 10 * E, -5 * E // 100)
    # a 2x position with the same +50 % ranks below the 10x one; any winner ranks above every loser
    low = ins.adl_score(500 * E, 1_000 * E, 2_000 * E)
    assert low is not None and low.score == E
    flat = ins.adl_score(0, 1_000 * E, 10_000 * E)
    assert flat is not None and flat.score == 0
    ranked = ins.adl_ranking([("lose", lose.score), ("low", low.score), ("flat", 0), ("win", win.score)])
    assert ranked == [("win", 1, 5 * E), ("low", 2, E), ("flat", 3, 0), ("lose", 4, -5 * E // 100)]
    assert ins.adl_score(1, 0, 10) is None and ins.adl_score(1, 10, 0) is None


def test_adl_ranking_keeps_input_order_on_ties():
    assert ins.adl_ranking([("b", 1), ("a", 1), ("c", 2)]) == [("c", 1, 2), ("b", 2, 1), ("a", 3, 1)]
    assert ins.adl_ranking([]) == []


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=1, max_value=10**30),
    st.integers(min_value=1, max_value=10**31),
)
def test_adl_score_is_the_seed_formula_rounded_once(pnl, margin, notional):
    s = ins.adl_score(pnl, margin, notional)
    assert s is not None
    pct, lev = Fraction(pnl, margin), Fraction(notional, margin)
    exact = pct * lev if pnl > 0 else pct / lev
    assert abs(Fraction(s.score, E) - exact) < Fraction(1, E)  # one rounding, less than one unit off
    assert (s.score > 0) == (pnl > 0) or s.score == 0
    assert s.leverage == notional * E // margin
    assert abs(Fraction(s.pnl_ratio, E) - pct) < Fraction(1, E)
