"""The L1 part of the cost on an L2 (keeper/l2.py) in the pure policy (keeper/execution.py): the fixed
L1 data fee (OP stack) comes off the budget before break-even spreads it over the gas; L1 gas
(Arbitrum) is inside the gas limit and priced at the fee per gas. No max fee per L2 gas is ever above
break-even with the L1 fee included."""

from __future__ import annotations

from decimal import Decimal

import rlp
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from keeper.config import GasConfig
from keeper.execution import UNPROFITABLE, break_even_fee_per_gas, decide_plan, review_replacement
from keeper.gas import FeePolicy, FeeQuote
from keeper.l2 import NO_L1, PLACEHOLDER_NONCE, L1Cost, placeholder_tx, unsigned_tx
from keeper.risk.profit import cost_in_quote, gas_cost_in_quote
from keeper.types import Plan, PositionKey

E = 10**18
GWEI = 10**9
KEY = PositionKey("perp", "0x" + "11" * 20, "0x" + "22" * 20)
POLICY = FeePolicy(GasConfig(max_fee_per_gas_gwei=Decimal(500), max_gas_limit=3_000_000))
SHARE = FeePolicy(GasConfig(max_fee_per_gas_gwei=Decimal(500), tip_policy="share", tip_share=Decimal("0.5")))
PRICE = 2_000 * E


def plan(reward: int) -> Plan:
    return Plan(KEY, "0x" + "44" * 20, b"\x01" * 100, "full", reward)


def quote(base: int = GWEI // 100, tip: int = GWEI // 1000) -> FeeQuote:
    return FeeQuote(2 * base + tip, tip, base + tip, base)


@given(
    reward=st.integers(0, 10**24),
    min_profit=st.integers(0, 10**21),
    gas=st.integers(1, 10**8),
    price=st.integers(1, 10**24),
    l1_fee=st.integers(0, 10**18),
)
def test_break_even_with_the_l1_fee_is_the_highest_fee_that_still_pays(reward, min_profit, gas, price, l1_fee):
    be = break_even_fee_per_gas(reward, min_profit, gas, price, l1_fee)
    budget = reward - min_profit
    assert be >= 0
    if be > 0:
        assert cost_in_quote(gas, be, price, l1_fee) <= budget  # never above break-even
    if budget > 0:
        assert cost_in_quote(gas, be + 1, price, l1_fee) > budget  # and not below it either (tight)
    assert be <= break_even_fee_per_gas(reward, min_profit, gas, price)  # the L1 fee only lowers it


@given(
    reward=st.integers(0, 10**22),
    min_profit=st.integers(0, 10**20),
    gas=st.integers(21_000, 2_000_000),
    l1_fee=st.integers(0, 10**17),
    l1_gas=st.integers(0, 500_000),
    base=st.integers(1, 50 * GWEI),
    tip=st.integers(0, 2 * GWEI),
    share=st.booleans(),
)
def test_a_sent_plan_never_carries_a_max_fee_above_break_even_with_the_l1_part(
    reward, min_profit, gas, l1_fee, l1_gas, base, tip, share
):
    policy = SHARE if share else POLICY
    l1 = L1Cost(fee_wei=l1_fee, gas=l1_gas)
    d = decide_plan(plan(reward), gas, quote(base, tip), PRICE, min_profit, False, policy, l1=l1)
    if not d.send:
        return
    assert d.fees is not None and d.gas_limit is not None and d.cost is not None
    priced_gas = gas + l1_gas
    assert d.fees.max_fee_per_gas <= break_even_fee_per_gas(reward, min_profit, priced_gas, PRICE, l1_fee)
    # even paying its whole max fee on every gas unit (L1 gas included) plus the L1 fee leaves min_profit
    assert cost_in_quote(priced_gas, d.fees.max_fee_per_gas, PRICE, l1_fee) <= reward - min_profit
    assert d.cost == cost_in_quote(priced_gas, d.fees.expected_fee_per_gas, PRICE, l1_fee)
    assert d.gas_limit >= gas + l1_gas  # Arbitrum: the L1 gas is charged inside the gas limit
    assert d.l1_fee_wei == l1_fee + l1_gas * d.fees.expected_fee_per_gas


def test_profitable_on_l2_gas_alone_but_the_l1_fee_eats_it_is_skipped():
    fees = quote()
    gas = 300_000
    l2_cost = gas_cost_in_quote(gas, fees.expected_fee_per_gas, PRICE)
    reward = l2_cost + E  # one token of profit on L2 gas alone
    alone = decide_plan(plan(reward), gas, fees, PRICE, 0, False, POLICY, l1=NO_L1)
    assert alone.send and alone.cost == l2_cost
    l1_fee = 2 * E * E // PRICE  # two tokens' worth of L1 data fee
    d = decide_plan(plan(reward), gas, fees, PRICE, 0, False, POLICY, l1=L1Cost(fee_wei=l1_fee))
    assert not d.send and d.reason == UNPROFITABLE
    assert d.cost == cost_in_quote(gas, fees.expected_fee_per_gas, PRICE, l1_fee)
    assert d.l1_fee_wei == l1_fee and d.numbers()["l1_fee_wei"] == l1_fee
    small = decide_plan(plan(reward), gas, fees, PRICE, 0, False, POLICY, l1=L1Cost(fee_wei=l1_fee // 100))
    assert small.send and small.l1_cost == E // 50


def test_arbitrum_l1_gas_is_in_the_gas_limit_and_priced_at_the_fee_per_gas():
    fees = quote()
    d = decide_plan(plan(1_000 * E), 300_000, fees, PRICE, 0, False, POLICY, l1=L1Cost(gas=120_000))
    assert d.send and d.gas_limit == POLICY.gas_limit(420_000)
    assert d.cost == cost_in_quote(420_000, d.fees.expected_fee_per_gas if d.fees else 0, PRICE)
    assert d.numbers()["l1_gas"] == 120_000
    # without an L2 model nothing about L1 is logged
    assert "l1_fee_wei" not in decide_plan(plan(1_000 * E), 300_000, fees, PRICE, 0, False, POLICY).numbers()


def test_a_replacement_is_re_decided_with_the_l1_part():
    bumped = FeeQuote(40 * GWEI, GWEI, 20 * GWEI, 19 * GWEI)
    reward = cost_in_quote(300_000, 40 * GWEI, PRICE) + E
    ok = review_replacement(reward, 0, 300_000, bumped, PRICE, 0, False, POLICY, l1=NO_L1)
    assert ok.action == "replace"
    eaten = review_replacement(reward, 0, 300_000, bumped, PRICE, 0, False, POLICY, l1=L1Cost(fee_wei=E * E // PRICE * 2))
    assert eaten.action == "keep" and "replacement_unprofitable" in eaten.reason
    arb = review_replacement(10**6 * E, 0, 300_000, bumped, PRICE, 0, False, POLICY, l1=L1Cost(gas=50_000))
    assert arb.action == "replace" and arb.gas_limit == POLICY.gas_limit(350_000)
    unknown = review_replacement(10**6 * E, 0, 300_000, bumped, PRICE, 0, False, POLICY, l1=RuntimeError("no answer"))
    assert unknown.action == "keep" and "l1_fee_unavailable" in unknown.reason


@given(
    data=st.binary(max_size=600),
    value=st.integers(0, 10**24),
    nonce=st.integers(0, PLACEHOLDER_NONCE),
    gas=st.integers(21_000, 3_000_000),
    fee=st.integers(0, 500 * GWEI),
)
def test_the_unsigned_encoding_is_the_signed_transaction_without_its_signature_and_never_shorter(data, value, nonce, gas, fee):
    to = to_checksum_address("0x" + "ab" * 20)
    tip = fee // 2
    acct = Account.from_key("0x" + "01" * 32)  # TEST KEY ONLY
    signed = acct.sign_transaction(
        {
            "type": 2,
            "chainId": 10,
            "nonce": nonce,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": fee,
            "gas": gas,
            "to": to,
            "value": value,
            "data": data,
            "accessList": [],
        }
    )
    raw = bytes(signed.raw_transaction)
    mine = unsigned_tx(10, to, data, value, nonce=nonce, max_fee=fee, tip=tip, gas=gas)
    assert raw[:1] == mine[:1] == b"\x02"
    assert rlp.decode(raw[1:])[:9] == rlp.decode(mine[1:])  # the signed one is it plus (yParity, r, s)
    # the keeper asks the oracle about the placeholders (largest nonce, fee caps, max gas limit): never shorter
    placeholder = placeholder_tx(10, to, data, value, max_fee=500 * GWEI, max_gas=3_000_000)
    assert len(placeholder) >= len(mine)
    assert sum(b != 0 for b in placeholder) >= sum(b != 0 for b in mine)
