"""Property: for randomised positions, trades, time and funding, the keeper's local margin ratios,
notionals and PnLs equal the ClearingHouse's views bit for bit at the same block, and the on-chain
confirmation decides exactly what `liquidate` does (liquidatable or not, partial or full, the fee)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError

from keeper.devtools.chain import TxFailed
from keeper.devtools.perp_env import BUY, ORACLE, SELL, SPOT_PRICE, TWAP
from keeper.risk import perp as pm
from keeper.types import Block
from tests.harness import KEEPER, open_adapter, perp_protocol

pytestmark = pytest.mark.chain
E = 10**18

position_st = st.tuples(st.sampled_from(["ETH", "BTC"]), st.sampled_from([BUY, SELL]), st.integers(50, 5000), st.integers(1, 10))
action_st = st.one_of(
    st.tuples(st.just("trade"), st.sampled_from(["ETH", "BTC"]), st.sampled_from([BUY, SELL]), st.integers(1_000, 400_000)),
    st.tuples(st.just("wait"), st.integers(1, 1500)),
    st.tuples(st.just("oracle"), st.sampled_from(["ETH", "BTC"]), st.integers(-150, 150)),  # per-mille move
    st.tuples(st.just("funding"), st.sampled_from(["ETH", "BTC"])),
)


async def compare(perp) -> int:
    # lockout off: the reference contract's own switch is off, so `liquidate` ignores the deviation too
    adapter, rpc, head = await open_adapter(perp.chain.url, perp_protocol(perp, lockout="off"))
    try:
        evals = adapter.evaluate(head, full=True)
        checked = 0
        for e in evals:
            market, trader = e.key.market, e.key.account
            f = e.fields
            block = head.number
            ch = perp.clearing_house.functions
            assert ch.getMarginRatio(market, trader).call(block_identifier=block)[0] == f["margin_ratio"]
            pos = adapter.positions[(market, trader)]
            state = adapter.states[market]
            for option, name in ((SPOT_PRICE, pm.PnlOption.SPOT), (TWAP, pm.PnlOption.TWAP), (ORACLE, pm.PnlOption.ORACLE)):
                (n,), (pnl,) = ch.getPositionNotionalAndUnrealizedPnl(market, trader, option).call(block_identifier=block)
                local_n = pm.notional(pos, state, name)
                assert local_n == n, (option, local_n, n)
                assert pm.unrealized_pnl(pos, local_n) == pnl
            amm = perp.amm(market).functions
            assert amm.isOverSpreadLimit().call(block_identifier=block) == f["over_spread"]
            # confirmation (as if every position were a candidate) == an eth_call of liquidate by the keeper
            try:
                (quote,), partial = ch.liquidate(market, trader).call({"from": KEEPER}, block_identifier=block)
                fee = pm.token_floor(pm.mul_d(quote, adapter.params.lfr) // 2, adapter.info[market].quote_decimals)
                want = ("partial" if partial else "full", fee)
            except ContractLogicError:  # not liquidatable, or bad debt for a non-backstop keeper
                want = None
            plans = await adapter.confirm([dataclasses.replace(e, candidate=True)], head)
            assert ((plans[0].kind, plans[0].expected_reward) if plans else None) == want
            event(f"liquidate: {want[0] if want else 'reverts'}")
            checked += 1
        return checked
    finally:
        await rpc.close()


def apply(perp, accounts, action) -> None:
    chain = perp.chain
    kind = action[0]
    try:
        if kind == "trade":
            _, market, side, quote = action
            perp.fund_trader(accounts["whale"], quote * E + E)
            perp.open_position(accounts["whale"], market, side, quote * E, E)
        elif kind == "wait":
            chain.advance(action[1])
        elif kind == "oracle":
            _, market, permille = action
            perp.set_oracle_price(market, perp.oracle_price(market) * (1000 + permille) // 1000)
        elif kind == "funding":
            chain.advance(3600)
            perp.pay_funding(action[1])
    except TxFailed:  # a step the contract refuses (trade limits, margin checks) is skipped
        pass


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(positions=st.lists(position_st, min_size=1, max_size=5), actions=st.lists(action_st, min_size=1, max_size=6))
def test_local_margin_ratio_equals_contract(perp_deployment, accounts, positions, actions):
    chain = perp_deployment.chain
    with chain.reverted():
        traders = [accounts[n] for n in ("alice", "carol", "dave", "backstop")]
        opened = 0
        for i, (market, side, margin, lev) in enumerate(positions):
            trader = traders[i % len(traders)]
            try:
                perp_deployment.fund_trader(trader, margin * E + E)
                perp_deployment.open_position(trader, market, side, margin * E, lev * E)
                opened += 1
            except TxFailed:  # e.g. a second position of the same trader the contract refuses
                continue
        for action in actions:
            apply(perp_deployment, accounts, action)
        checked = asyncio.run(compare(perp_deployment))
        assert checked >= min(opened, 1)


async def test_incremental_twap_equals_contract_block_after_block(perp_deployment, accounts):
    """One adapter kept across 40 blocks of trades (its TWAP memo warm, the 900 s window sliding,
    a position resized midway): every TWAP notional and margin ratio equals the contract's."""
    perp, chain = perp_deployment, perp_deployment.chain
    with chain.reverted():
        adapter, rpc, _head = await open_adapter(chain.url, perp_protocol(perp))
        try:
            traders = [accounts[n] for n in ("alice", "carol", "dave")]
            for i, t in enumerate(traders):
                perp.fund_trader(t, 2000 * E)
                perp.open_position(t, "ETH", BUY if i % 2 == 0 else SELL, (300 + 100 * i) * E, (2 + 3 * i) * E)
            checked = 0
            for n in range(40):
                side = BUY if n % 3 else SELL
                perp.fund_trader(accounts["whale"], 20_000 * E)
                perp.open_position(accounts["whale"], "ETH", side, (2_000 + 500 * (n % 7)) * E, E)
                if n == 20:
                    perp.open_position(traders[0], "ETH", BUY, 100 * E, 2 * E)  # a new size: a new memo run
                chain.advance(12 + 37 * (n % 5))
                chain.mine()
                head = Block.from_rpc(await rpc.get_block("latest"))
                await adapter.sync(head)
                evals = {e.key.account: e for e in adapter.evaluate(head, full=True)}
                market = perp.amm("ETH").address
                for t in traders:
                    pos, state = adapter.positions[(market, t)], adapter.states[market]
                    ch = perp.clearing_house.functions
                    (want,), _pnl = ch.getPositionNotionalAndUnrealizedPnl(market, t, TWAP).call(block_identifier=head.number)
                    assert pm.notional(pos, state, pm.PnlOption.TWAP) == want
                    assert pm.twap_output(pos.close_dir, abs(pos.size), state.twap) == want
                    assert evals[t].fields["margin_ratio"] == ch.getMarginRatio(market, t).call(block_identifier=head.number)[0]
                    checked += 1
            memo = adapter.twap_memos[perp.amm("ETH").address]
            assert checked == 120 and len(memo.runs) >= len(traders)
        finally:
            await rpc.close()
