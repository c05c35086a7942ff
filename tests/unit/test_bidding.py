"""Fee bidding (keeper/bidding.py): the tip follows the configured share of what is left of the reward after
the base fee, a rival's tip is beaten by exactly 1 wei while there is room, and no bid ever passes
break-even, max_fee_per_gas_gwei or max_priority_fee_gwei. Worked examples first, then properties
checked against an independent rational-number formula."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.bidding import OUTBID_UNPROFITABLE, UNPROFITABLE, Bid, bid_fees, outbid_replacement
from keeper.config import ConfigError, GasConfig, parse_config
from keeper.execution import break_even_fee_per_gas
from keeper.gas import FeePolicy, FeeQuote
from keeper.risk.profit import gas_cost_in_quote
from keeper.txs import _room_to_replace

GWEI = 10**9
E = 10**18
USDC = 10**18  # value-token units (18 decimals)
ETH_PRICE = 3000 * E  # 3000 USDC per ETH


def quote(nb: int, tip: int, cap_fee: int, mult: int = 2) -> FeeQuote:
    """What FeePolicy.quote gives for a next base fee `nb` and a configured tip (under cap_fee)."""
    max_fee = min(cap_fee, nb * mult + tip)
    return FeeQuote(max_fee, tip, nb + tip, nb)


def bid(q: FeeQuote, **kw) -> Bid:
    args = dict(
        policy="fixed",
        share=Decimal(0),
        reward=100 * USDC,
        min_profit=0,
        gas=500_000,
        native_price=ETH_PRICE,
        break_even_fee=None,
        cap_fee=200 * GWEI,
        cap_tip=50 * GWEI,
    )
    args.update(kw)
    return bid_fees(q, **args)


# ---- worked examples ------------------------------------------------------------------------------
def test_fixed_policy_is_the_quote():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    b = bid(q)
    assert b.send and b.reason == "" and b.outbids_rival is None
    assert b.fees == q and b.tip == GWEI


def test_share_policy_worked_example():
    # 100 USDC reward, 500k gas at 10 gwei base and 3000 USDC/ETH: the base fee costs 15 USDC, 85 are
    # left; half of it is 42.5 USDC = 0.0141666… ETH over 500k gas = 28.333333333… gwei → floor.
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    b = bid(q, policy="share", share=Decimal("0.5"))
    assert b.fees.max_priority_fee_per_gas == 28_333_333_333
    assert b.fees.max_fee_per_gas == 20 * GWEI + 28_333_333_333  # the quote's base-fee headroom, new tip
    assert b.fees.expected_fee_per_gas == 10 * GWEI + 28_333_333_333
    assert b.send
    # the same share as a (num, den) pair
    assert bid(q, policy="share", share=(1, 2)).fees == b.fees


def test_share_policy_never_below_the_fixed_tip_and_capped():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    small = bid(q, policy="share", share=Decimal("0.0001"))  # 0.0085 USDC / 500k gas: far below 1 gwei
    assert small.fees.max_priority_fee_per_gas == GWEI
    big = bid(q, policy="share", share=Decimal(1), cap_tip=30 * GWEI)  # 56.67 gwei wanted
    assert big.fees.max_priority_fee_per_gas == 30 * GWEI and big.send


def test_break_even_limits_the_max_fee_and_the_tip():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    be = break_even_fee_per_gas(100 * USDC, 40 * USDC, 500_000, ETH_PRICE)  # 60 USDC → 40 gwei
    assert be == 40 * GWEI
    b = bid(q, policy="share", share=Decimal(1), min_profit=40 * USDC, break_even_fee=be)
    assert b.fees.max_fee_per_gas == 40 * GWEI
    assert b.fees.expected_fee_per_gas == 40 * GWEI  # 10 base + 30 effective tip
    assert b.send
    assert 100 * USDC - gas_cost_in_quote(500_000, b.fees.expected_fee_per_gas, ETH_PRICE) >= 40 * USDC


def test_break_even_below_base_fee_plus_the_fixed_tip_is_unprofitable():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    b = bid(q, break_even_fee=10 * GWEI + 5)
    assert not b.send and b.reason == UNPROFITABLE
    assert b.fees.max_fee_per_gas == 10 * GWEI + 5


def test_rival_is_outbid_by_one_wei():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    b = bid(q, rival_tip=3 * GWEI)
    assert b.send and b.outbids_rival is True and b.tip == 3 * GWEI + 1
    # a rival already below our tip changes nothing
    b = bid(q, rival_tip=GWEI // 2)
    assert b.send and b.outbids_rival is True and b.fees == q


def test_rival_above_break_even_or_cap_is_not_outbid():
    q = quote(10 * GWEI, 1 * GWEI, 200 * GWEI)
    be = 12 * GWEI  # room for a 2 gwei tip only
    b = bid(q, rival_tip=2 * GWEI, break_even_fee=be)
    assert not b.send and b.outbids_rival is False and b.reason == OUTBID_UNPROFITABLE
    assert b.fees.max_fee_per_gas == be and b.tip == 2 * GWEI
    b = bid(q, rival_tip=2 * GWEI - 1, break_even_fee=be)  # exactly enough room
    assert b.send and b.tip == 2 * GWEI
    b = bid(q, rival_tip=50 * GWEI)  # the tip cap
    assert not b.send and b.reason == OUTBID_UNPROFITABLE and b.fees.max_priority_fee_per_gas == 50 * GWEI


def test_tip_zero_preset_quote():
    """A first-come-first-served L2 (tip 0): the fixed policy offers nothing above the base fee."""
    pol = FeePolicy(GasConfig(priority_fee_gwei="0", max_priority_fee_gwei="0.1", max_fee_per_gas_gwei="1"))
    q = pol.quote(10_000_000, 15_000_000, 30_000_000)
    b = bid(q, cap_fee=pol.cap_fee, cap_tip=pol.cap_tip)
    assert b.send and b.tip == 0 and b.fees.expected_fee_per_gas == 10_000_000


def test_legacy_chain_raises_the_gas_price():
    q = FeeQuote(20 * GWEI, 0, 20 * GWEI, 0, legacy=True)
    assert bid(q).fees == q
    # share: the gas price costs 30 USDC, 70 left, half = 35 USDC = 23.333… gwei over 500k gas on top
    b = bid(q, policy="share", share=Decimal("0.5"))
    assert b.fees.legacy and b.fees.max_fee_per_gas == 20 * GWEI + 23_333_333_333 == b.fees.expected_fee_per_gas
    b = bid(q, rival_tip=25 * GWEI)  # a rival's gasPrice (no base fee)
    assert b.send and b.fees.max_fee_per_gas == 25 * GWEI + 1 and b.outbids_rival
    b = bid(q, rival_tip=25 * GWEI, break_even_fee=25 * GWEI)
    assert not b.send and b.reason == OUTBID_UNPROFITABLE
    b = bid(q, break_even_fee=19 * GWEI)
    assert not b.send and b.reason == UNPROFITABLE


def test_bad_arguments():
    q = quote(10 * GWEI, GWEI, 200 * GWEI)
    with pytest.raises(ValueError, match="tip policy"):
        bid(q, policy="auction")
    with pytest.raises(ValueError, match="between 0 and 1"):
        bid(q, policy="share", share=Decimal("1.5"))
    with pytest.raises(ValueError, match="gas > 0"):
        bid(q, policy="share", share=Decimal("0.1"), gas=0)


def test_outbid_replacement_worked_example():
    old = FeeQuote(21 * GWEI, GWEI, 11 * GWEI, 10 * GWEI)
    new = outbid_replacement(old, 3 * GWEI, None, 200 * GWEI, 50 * GWEI)
    assert new is not None and _room_to_replace(old, new)
    assert new.max_priority_fee_per_gas == 3 * GWEI + 1
    assert new.max_fee_per_gas == 23_100_000_000  # +10 % is more than the old headroom + new tip (23 gwei + 1)
    new = outbid_replacement(old, 5 * GWEI, None, 200 * GWEI, 50 * GWEI)
    assert new is not None and new.max_fee_per_gas == 25 * GWEI + 1  # the old 20 gwei base-fee headroom kept
    # a rival below our tip: still +10 % on both fields
    new = outbid_replacement(old, 0, None, 200 * GWEI, 50 * GWEI)
    assert new is not None and new.max_priority_fee_per_gas == 1_100_000_000 and new.max_fee_per_gas == 23_100_000_000
    # break-even or the caps too low → None
    assert outbid_replacement(old, 3 * GWEI, 13 * GWEI, 200 * GWEI, 50 * GWEI) is None
    assert outbid_replacement(old, 3 * GWEI, None, 200 * GWEI, 3 * GWEI) is None
    # under break-even the max fee shrinks toward it while the rule still holds
    new = outbid_replacement(old, 5 * GWEI, 24 * GWEI, 200 * GWEI, 50 * GWEI)
    assert new is not None and new.max_fee_per_gas == 24 * GWEI and new.max_priority_fee_per_gas == 5 * GWEI + 1
    # a rising base fee: the effective tip must still beat the rival
    new = outbid_replacement(old, 3 * GWEI, 30 * GWEI, 200 * GWEI, 50 * GWEI, next_base_fee=27 * GWEI)
    assert new is None  # 27 + 3 + 1 wei > 30
    legacy = FeeQuote(20 * GWEI, 0, 20 * GWEI, 0, legacy=True)
    new = outbid_replacement(legacy, 25 * GWEI, None, 200 * GWEI, 0)
    assert new is not None and new.legacy and new.max_fee_per_gas == 25 * GWEI + 1


def test_gas_config_bidding_fields():
    cfg = GasConfig()
    assert (cfg.tip_policy, cfg.tip_share, cfg.outbid) == ("fixed", 0, True)
    cfg = GasConfig(tip_policy="share", tip_share="0.25")
    assert cfg.tip_share == Decimal("0.25")
    base = {"chain": {"rpc_urls": ["http://127.0.0.1:8545"], "chain_id": 31337}, "state": {"path": ":memory:"}}
    proto = [{"kind": "perp_v1", "clearing_house": "0x" + "11" * 20, "native_price": {"source": "fixed", "value": "1"}}]
    for gas, field in (({"tip_share": "1.5"}, "gas.tip_share"), ({"tip_policy": "auction"}, "gas.tip_policy")):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "gas": gas, "protocols": proto}, environ={})
        assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "gas": {"tip_policy": "share"}, "protocols": proto}, environ={})
    assert "tip_share" in info.value.message


# ---- properties -----------------------------------------------------------------------------------
@st.composite
def market(draw):
    nb = draw(st.integers(0, 500 * GWEI))
    cap_tip = draw(st.integers(0, 100 * GWEI))
    tip = draw(st.integers(0, cap_tip))
    cap_fee = draw(st.integers(max(nb + tip, cap_tip), nb + tip + 1000 * GWEI))
    q = quote(nb, tip, cap_fee, mult=draw(st.integers(1, 3)))
    gas = draw(st.integers(21_000, 3_000_000))
    price = draw(st.integers(1, 10**6 * E))  # up to 1M value units per native token
    reward = draw(st.integers(0, 10**6 * USDC))
    min_profit = draw(st.integers(0, reward))
    share = draw(st.fractions(min_value=0, max_value=1, max_denominator=10**6))
    rival = draw(st.none() | st.integers(0, 200 * GWEI))
    policy = draw(st.sampled_from(["fixed", "share"]))
    profit_aware = draw(st.booleans())
    return q, dict(
        policy=policy,
        share=(share.numerator, share.denominator),
        reward=reward,
        min_profit=min_profit,
        gas=gas,
        native_price=price,
        break_even_fee=break_even_fee_per_gas(reward, min_profit, gas, price) if profit_aware else None,
        cap_fee=cap_fee,
        cap_tip=cap_tip,
        rival_tip=rival,
    )


def share_reference(q: FeeQuote, kw: dict) -> int:
    """⌊share × (reward − gas·base·price/1e18) · 1e18 / (gas·price)⌋ in exact rationals, ≥ the fixed tip."""
    share = Fraction(*kw["share"])
    left = Fraction(kw["reward"]) - Fraction(kw["gas"] * q.next_base_fee * kw["native_price"], E)
    tip = share * left * E / (kw["gas"] * kw["native_price"]) if left > 0 else 0
    return max(q.max_priority_fee_per_gas, int(tip // 1))


@given(market())
def test_bid_never_passes_break_even_or_the_caps(args):
    q, kw = args
    b = bid_fees(q, **kw)
    f = b.fees
    assert f.max_priority_fee_per_gas <= kw["cap_tip"]
    assert f.max_fee_per_gas <= kw["cap_fee"]
    assert f.max_priority_fee_per_gas <= f.max_fee_per_gas
    assert f.expected_fee_per_gas == min(f.max_fee_per_gas, f.next_base_fee + f.max_priority_fee_per_gas)
    if kw["break_even_fee"] is not None:
        assert f.max_fee_per_gas <= kw["break_even_fee"]
        if b.send:  # what it expects to pay leaves min_profit
            cost = gas_cost_in_quote(kw["gas"], f.expected_fee_per_gas, kw["native_price"])
            assert kw["reward"] - cost >= kw["min_profit"]
    if b.send:  # at least the next base fee and the configured tip
        assert f.expected_fee_per_gas >= q.expected_fee_per_gas
    if kw["rival_tip"] is None:
        assert b.outbids_rival is None
    else:
        assert b.outbids_rival == (b.tip > kw["rival_tip"])
        if b.outbids_rival is False:
            assert not b.send


@given(market())
def test_tip_follows_the_share_exactly_when_uncapped(args):
    q, kw = args
    kw.update(policy="share", break_even_fee=None, cap_tip=10**60, cap_fee=10**61, rival_tip=None)
    b = bid_fees(q, **kw)
    want = share_reference(q, kw)
    assert b.fees.max_priority_fee_per_gas == want
    assert b.fees.max_fee_per_gas == q.max_fee_per_gas - q.max_priority_fee_per_gas + want
    assert b.tip == want and b.send


@given(market(), st.integers(1, 10**6))
def test_a_larger_share_never_bids_less(args, extra):
    q, kw = args
    kw.update(policy="share", rival_tip=None)
    num, den = kw["share"]
    more = (min(den, num + extra * den // 10**6), den)
    assert bid_fees(q, **{**kw, "share": more}).tip >= bid_fees(q, **kw).tip


@given(market(), st.integers(0, 100 * GWEI), st.integers(0, 100 * GWEI), st.none() | st.integers(0, 100 * GWEI))
def test_rival_outbid_by_exactly_one_wei_when_there_is_room(args, above_tip, tip_room, fee_room):
    q, kw = args
    r = q.max_priority_fee_per_gas + above_tip  # a rival at or above our fixed tip
    need = q.next_base_fee + r + 1
    kw.update(
        policy="fixed",
        rival_tip=r,
        cap_tip=max(kw["cap_tip"], r + 1 + tip_room),
        cap_fee=max(kw["cap_fee"], need + (fee_room or 0)),
        break_even_fee=None if fee_room is None else need + fee_room,
    )
    b = bid_fees(q, **kw)
    assert b.tip == r + 1 and b.fees.max_priority_fee_per_gas == r + 1
    assert b.outbids_rival is True and b.send


@st.composite
def legacy_market(draw):
    gp = draw(st.integers(0, 500 * GWEI))
    cap_fee = draw(st.integers(gp, gp + 1000 * GWEI))
    gas = draw(st.integers(21_000, 3_000_000))
    price = draw(st.integers(1, 10**6 * E))
    reward = draw(st.integers(0, 10**6 * USDC))
    min_profit = draw(st.integers(0, reward))
    share = draw(st.fractions(min_value=0, max_value=1, max_denominator=10**6))
    return FeeQuote(gp, 0, gp, 0, legacy=True), dict(
        policy=draw(st.sampled_from(["fixed", "share"])),
        share=(share.numerator, share.denominator),
        reward=reward,
        min_profit=min_profit,
        gas=gas,
        native_price=price,
        break_even_fee=break_even_fee_per_gas(reward, min_profit, gas, price) if draw(st.booleans()) else None,
        cap_fee=cap_fee,
        cap_tip=0,
        rival_tip=draw(st.none() | st.integers(0, 600 * GWEI)),
    )


@given(legacy_market())
def test_legacy_bid_under_caps_and_break_even(args):
    q, kw = args
    b = bid_fees(q, **kw)
    f = b.fees
    assert f.legacy and f.max_priority_fee_per_gas == 0 and f.expected_fee_per_gas == f.max_fee_per_gas
    assert f.max_fee_per_gas <= kw["cap_fee"]
    if kw["break_even_fee"] is not None:
        assert f.max_fee_per_gas <= kw["break_even_fee"]
        if b.send:
            assert kw["reward"] - gas_cost_in_quote(kw["gas"], f.max_fee_per_gas, kw["native_price"]) >= kw["min_profit"]
    if b.send:
        assert f.max_fee_per_gas >= q.max_fee_per_gas
        if kw["rival_tip"] is not None:
            assert f.max_fee_per_gas > kw["rival_tip"]
    if kw["policy"] == "share" and kw["break_even_fee"] is None and kw["rival_tip"] is None:
        share = Fraction(*kw["share"])
        left = Fraction(kw["reward"]) - Fraction(kw["gas"] * q.max_fee_per_gas * kw["native_price"], E)
        extra = int(share * left * E / (kw["gas"] * kw["native_price"]) // 1) if left > 0 else 0
        assert f.max_fee_per_gas == min(kw["cap_fee"], q.max_fee_per_gas + extra)


@given(
    st.integers(0, 500 * GWEI),  # next base fee when old was sent
    st.integers(0, 50 * GWEI),  # old tip
    st.integers(0, 500 * GWEI),  # old headroom above base
    st.integers(0, 100 * GWEI),  # rival tip
    st.integers(0, 2000 * GWEI),  # cap fee
    st.integers(0, 100 * GWEI),  # cap tip
    st.none() | st.integers(0, 2000 * GWEI),  # break-even
    st.none() | st.integers(0, 600 * GWEI),  # next base fee now
)
def test_outbid_replacement_properties(nb, tip, headroom, rival, cap_fee, cap_tip, be, nb_now):
    old = FeeQuote(nb + headroom + tip, tip, nb + tip, nb)
    new = outbid_replacement(old, rival, be, cap_fee, cap_tip, next_base_fee=nb_now)
    base = nb if nb_now is None else nb_now
    limit = cap_fee if be is None else min(cap_fee, be)
    if new is None:  # the least acceptable replacement that beats the rival does not fit
        least_tip = max(-(-tip * 11 // 10), tip + 1, rival + 1)
        least_fee = max(-(-old.max_fee_per_gas * 11 // 10), old.max_fee_per_gas + 1, base + rival + 1, least_tip)
        assert least_tip > cap_tip or least_fee > limit
        return
    assert _room_to_replace(old, new)
    assert new.max_priority_fee_per_gas > old.max_priority_fee_per_gas and new.max_fee_per_gas > old.max_fee_per_gas
    assert new.max_priority_fee_per_gas <= cap_tip and new.max_fee_per_gas <= limit
    assert min(new.max_priority_fee_per_gas, new.max_fee_per_gas - base) > rival  # beats the rival at the next block
    assert new.expected_fee_per_gas == min(new.max_fee_per_gas, base + new.max_priority_fee_per_gas)
