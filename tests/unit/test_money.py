"""Units, EIP-1559 fees under caps, gas-cost conversion and the profit decision (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.config import GasConfig
from keeper.gas import FeeCapExceeded, FeePolicy, next_base_fee
from keeper.risk.profit import decide, gas_cost_in_quote
from keeper.units import fmt_ratio, fmt_units, to_units

E = 10**18
GWEI = 10**9


def test_to_units_is_exact_and_rejects_dust():
    assert to_units("0.1") == E // 10
    assert to_units(0.1) == E // 10  # floats go through repr
    assert to_units("1_000.5", 6) == 1_000_500_000
    with pytest.raises(ValueError):
        to_units("0.0000001", 6)
    assert fmt_units(1_234_567 * 10**12, 18, 3) == "1.234"
    assert fmt_ratio(625 * E // 10_000, 2) == "6.25%"


def test_next_base_fee_follows_eip1559():
    assert next_base_fee(1000 * GWEI, 15_000_000, 30_000_000) == 1000 * GWEI  # at target
    assert next_base_fee(1000 * GWEI, 30_000_000, 30_000_000) == 1125 * GWEI  # full block: +12.5 %
    assert next_base_fee(1000 * GWEI, 0, 30_000_000) == 875 * GWEI  # empty block: −12.5 %
    assert next_base_fee(7, 15_000_001, 30_000_000) == 8  # increase is at least 1 wei


def test_fee_quote_respects_caps():
    policy = FeePolicy(GasConfig(max_fee_per_gas_gwei="50", priority_fee_gwei="2", max_priority_fee_gwei="3"))
    q = policy.quote(10 * GWEI, 15_000_000, 30_000_000)
    assert q.max_priority_fee_per_gas == 2 * GWEI
    assert q.max_fee_per_gas == 22 * GWEI  # 2 × base + tip
    assert q.expected_fee_per_gas == 12 * GWEI
    q = policy.quote(30 * GWEI, 15_000_000, 30_000_000)
    assert q.max_fee_per_gas == 50 * GWEI  # capped
    with pytest.raises(FeeCapExceeded):
        policy.quote(49 * GWEI, 15_000_000, 30_000_000)  # base + tip over the cap: wait


def test_replacement_bump_is_at_least_ten_percent_and_capped():
    policy = FeePolicy(GasConfig(max_fee_per_gas_gwei="100", priority_fee_gwei="2", max_priority_fee_gwei="5"))
    q = policy.quote(10 * GWEI, 15_000_000, 30_000_000)
    b = policy.bump(q, Decimal("1.125"))
    assert b.max_fee_per_gas * 100 >= q.max_fee_per_gas * 110
    assert b.max_priority_fee_per_gas * 100 >= q.max_priority_fee_per_gas * 110
    for _ in range(20):
        b = policy.bump(b, Decimal("1.125"))
    assert b.max_fee_per_gas == 100 * GWEI and b.max_priority_fee_per_gas == 5 * GWEI


def test_gas_limit_padding_is_never_clipped_below_the_estimate():
    policy = FeePolicy(GasConfig(gas_limit_multiplier="1.3", gas_limit_extra=30_000, max_gas_limit=1_000_000))
    assert policy.gas_limit(400_000) == 550_000 and policy.fits(550_000)
    # 900k × 1.3 + 30k = 1.2M: above max_gas_limit it is not clipped (that could run out of gas): it does not fit
    assert policy.gas_limit(900_000) == 1_200_000 and not policy.fits(1_200_000)


@given(st.integers(21_000, 10**7), st.integers(1, 10**12), st.integers(1, 10**23))
def test_gas_cost_is_rounded_up(gas, fee, price):
    cost = gas_cost_in_quote(gas, fee, price)
    exact = gas * fee * price
    assert cost * E >= exact > (cost - 1) * E


def test_decide_sends_only_profitable_unless_opted_in():
    assert decide(10 * E, 3 * E, 7 * E).send  # profit == min_profit → send
    d = decide(10 * E, 3 * E + 1, 7 * E)
    assert not d.send and d.reason == "below_min_profit" and d.profit == 7 * E - 1
    assert decide(1 * E, 3 * E, 0, allow_unprofitable=True).reason == "opted_in_unprofitable"
