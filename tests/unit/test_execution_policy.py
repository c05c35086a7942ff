"""The one execution policy (keeper/execution.py), pure: gas limits are never clipped below the
padded estimate, no fee above break-even, replacements re-decided at their bumped fees."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from keeper.config import GasConfig
from keeper.execution import (
    GAS_LIMIT_EXCEEDED,
    SIMULATION_FAILED,
    SIMULATION_REVERTED,
    UNPROFITABLE,
    break_even_fee_per_gas,
    decide_plan,
    review_replacement,
)
from keeper.gas import FeePolicy, FeeQuote
from keeper.risk.profit import gas_cost_in_quote
from keeper.rpc import ExecutionReverted, RpcError
from keeper.types import Plan, PositionKey

E = 10**18
GWEI = 10**9
KEY = PositionKey("perp", "0x" + "11" * 20, "0x" + "22" * 20)
POLICY = FeePolicy(GasConfig(max_fee_per_gas_gwei=Decimal(500), max_gas_limit=3_000_000))
PRICE = 2_000 * E  # quote per native token


def plan(reward: int, *, prerequisite: bool = False) -> Plan:
    pre = Plan(KEY, "0x" + "33" * 20, b"\x09", "approval", 0) if prerequisite else None
    return Plan(KEY, "0x" + "44" * 20, b"\x01", "full", reward, prerequisite=pre, typical_gas=400_000 if prerequisite else 0)


def quote(base: int = 10 * GWEI, tip: int = GWEI) -> FeeQuote:
    return FeeQuote(
        max_fee_per_gas=2 * base + tip, max_priority_fee_per_gas=tip, expected_fee_per_gas=base + tip, next_base_fee=base
    )


def test_an_estimate_whose_padded_limit_exceeds_max_gas_limit_is_skipped_not_clipped():
    # estimate 3.5M → padded 4.23M > max 3M: the old code clipped it to 3M (below the estimate) and sent
    d = decide_plan(plan(1_000 * E), 3_500_000, quote(), PRICE, E, False, POLICY)
    assert not d.send and d.reason == GAS_LIMIT_EXCEEDED
    assert d.gas_limit is not None and d.gas_limit >= 3_500_000


@given(st.integers(21_000, 30_000_000))
def test_the_gas_limit_is_never_below_the_estimate(estimate):
    limit = POLICY.gas_limit(estimate)
    assert limit >= estimate * 12 // 10  # the default multiplier 1.2, plus the extra
    d = decide_plan(plan(10**9 * E), estimate, quote(), PRICE, 0, False, POLICY)
    assert d.reason == GAS_LIMIT_EXCEEDED or (d.send and d.gas_limit is not None and d.gas_limit >= estimate)


def test_reverts_and_rpc_errors_are_skips_with_their_reason():
    d = decide_plan(plan(E), ExecutionReverted("Margin ratio not meet criteria"), quote(), PRICE, 0, False, POLICY)
    assert (d.send, d.reason, d.detail) == (False, SIMULATION_REVERTED, "Margin ratio not meet criteria")
    d = decide_plan(plan(E), RpcError(-32000, "header not found"), quote(), PRICE, 0, False, POLICY)
    assert (d.send, d.reason) == (False, SIMULATION_FAILED)


@given(
    reward=st.integers(0, 10_000 * E),
    min_profit=st.integers(0, 100 * E),
    gas=st.integers(21_000, 2_000_000),
    base=st.integers(1, 1_000 * GWEI),
    price=st.integers(1, 100_000 * E),
)
def test_no_send_carries_a_max_fee_above_break_even(reward, min_profit, gas, base, price):
    fees = quote(base)
    d = decide_plan(plan(reward), gas, fees, price, min_profit, False, POLICY)
    if not d.send:
        return
    assert d.fees is not None and d.profit is not None
    assert d.profit >= min_profit
    # the worst case it can pay: every simulated gas at its max fee, still ≥ min_profit
    assert reward - gas_cost_in_quote(gas, d.fees.max_fee_per_gas, price) >= min_profit
    assert d.fees.max_fee_per_gas <= break_even_fee_per_gas(reward, min_profit, gas, price)
    assert d.fees.max_priority_fee_per_gas <= d.fees.max_fee_per_gas
    assert d.fees.expected_fee_per_gas == fees.expected_fee_per_gas  # inclusion is not traded away


def test_a_plan_behind_an_approval_prices_both_and_sends_the_approval():
    d = decide_plan(plan(50 * E, prerequisite=True), 46_000, quote(), PRICE, E, False, POLICY)
    assert d.send and d.needs_approval and d.send_plan.kind == "approval"
    assert d.total_gas == 46_000 + 400_000
    assert d.cost == gas_cost_in_quote(446_000, quote().expected_fee_per_gas, PRICE)


def test_unprofitable_unless_the_operator_opted_in():
    reward = gas_cost_in_quote(500_000, quote().expected_fee_per_gas, PRICE)  # exactly break-even before min_profit
    d = decide_plan(plan(reward), 500_000, quote(), PRICE, E, False, POLICY)
    assert not d.send and d.reason == UNPROFITABLE
    d = decide_plan(plan(reward), 500_000, quote(), PRICE, E, True, POLICY)
    assert d.send and d.break_even_fee is None


def test_a_replacement_whose_bumped_fee_breaks_even_is_not_sent():
    gas, reward, min_profit = 500_000, 30 * E, E
    be = break_even_fee_per_gas(reward, min_profit, gas, PRICE)
    under = FeeQuote(be, GWEI, be, be - GWEI)
    over = FeeQuote(be + 1, GWEI, be, be - GWEI)
    assert review_replacement(reward, 0, gas, under, PRICE, min_profit, False, POLICY).action == "replace"
    r = review_replacement(reward, 0, gas, over, PRICE, min_profit, False, POLICY)
    assert r.action == "keep" and "replacement_unprofitable" in r.reason


def test_a_replacement_needs_a_fresh_successful_simulation():
    fees = quote()
    assert review_replacement(30 * E, 0, RpcError(-32000, "timeout"), fees, PRICE, 0, False, POLICY).action == "keep"
    assert review_replacement(30 * E, 0, ExecutionReverted("not backstop LP"), fees, PRICE, 0, False, POLICY).action == "cancel"
    assert review_replacement(30 * E, 0, 3_500_000, fees, PRICE, 0, False, POLICY).action == "keep"  # limit would exceed max
    assert review_replacement(30 * E, 0, 300_000, fees, None, 0, False, POLICY).action == "keep"  # no price: cannot re-decide
    r = review_replacement(30 * E, 0, 300_000, fees, PRICE, 0, False, POLICY)
    assert r.action == "replace" and r.gas_limit == POLICY.gas_limit(300_000)
