"""Behaviour of the reference Perp v1 contracts (docs/PROTOCOLS.md §A) on a real anvil.

Expected values come from a tiny independent model of the contracts' integer maths below,
fed with reserves and positions read from the chain just before each action.
"""

from __future__ import annotations

import pytest
from eth_abi import decode as abi_decode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from keeper.devtools.chain import TxFailed
from keeper.devtools.perp_env import (
    ADD_TO_AMM,
    BUY,
    ORACLE,
    REMOVE_FROM_AMM,
    SELL,
    SPOT_PRICE,
    TWAP,
    USDC_UNIT,
    WAD,
    MarketSpec,
    PerpDeployment,
    PerpParams,
    deploy_perp,
    to_wei_dec,
)

# ---- tiny model of the contract maths ---------------------------------------------------------


def mul_d(a: int, b: int) -> int:
    return a * b // WAD


def div_d(a: int, b: int) -> int:
    return a * WAD // b


def tdiv(n: int, d: int) -> int:
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def smul_d(a: int, b: int) -> int:
    return tdiv(a * b, WAD)


def sdiv_d(a: int, b: int) -> int:
    return tdiv(a * WAD, b)


def output_price(dir_base: int, base: int, q: int, b: int) -> int:
    if base == 0:
        return 0
    k = mul_d(q, b)
    after = b + base if dir_base == ADD_TO_AMM else b - base
    sold = abs(div_d(k, after) - q)
    if (k * WAD) % after:
        sold += -1 if dir_base == ADD_TO_AMM else 1
    return sold


def input_price(dir_quote: int, quote: int, q: int, b: int) -> int:
    if quote == 0:
        return 0
    k = mul_d(q, b)
    after = q + quote if dir_quote == ADD_TO_AMM else q - quote
    bought = abs(div_d(k, after) - b)
    if (k * WAD) % after:
        bought += -1 if dir_quote == ADD_TO_AMM else 1
    return bought


# ---- helpers ------------------------------------------------------------------------------------

ETH = "ETH"
LOCKOUT = 5 * 10**16


def events(contract, name: str, receipt) -> list[dict]:
    mine = [lg for lg in receipt.logs if lg.address == contract.address]
    return [dict(e.args) for e in contract.events[name]().process_receipt({**receipt, "logs": mine}, errors=DISCARD)]


def open_long(perp: PerpDeployment, trader: str, margin: str = "1000", leverage: int = 10, market: str = ETH):
    amount = to_wei_dec(margin)
    perp.fund_trader(trader, amount + WAD)
    return perp.open_position(trader, market, BUY, amount, leverage * WAD)


def set_market(perp: PerpDeployment, price: str, whale: str, oracle: str | None = "same", settle: bool = True):
    """Move the vAMM spot to `price` with a whale trade, set the oracle (to the same price by
    default), and with `settle` let 900 s pass so the 15-minute TWAP equals the spot."""
    perp.move_spot_price(ETH, to_wei_dec(price), whale)
    if oracle is not None:
        perp.set_oracle_price(ETH, to_wei_dec(price if oracle == "same" else oracle))
    if settle:
        perp.advance_twap(900)


def expected_ratio(perp: PerpDeployment, trader: str, option: int) -> int:
    """(margin + pnl - funding) / notional at one price source, from the contract's views."""
    pos = perp.position(ETH, trader)
    notional, pnl = perp.notional_and_pnl(ETH, trader, option)
    cpf = perp.clearing_house.functions.getLatestCumulativePremiumFraction(perp.amm(ETH).address).call()[0]
    funding = smul_d(cpf - pos["last_cpf"], pos["size"])
    return sdiv_d(pos["margin"] + pnl - funding, notional)


def revert_reason_of(chain, tx_hash) -> str:
    """Revert string of a mined, failed transaction (debug_traceTransaction's return data)."""
    trace = chain.rpc("debug_traceTransaction", [tx_hash.hex() if not isinstance(tx_hash, str) else tx_hash, {}])
    data = bytes.fromhex(trace["returnValue"].removeprefix("0x"))
    assert data[:4] == bytes.fromhex("08c379a0"), data
    return abi_decode(["string"], data[4:])[0]


# ---- vAMM maths ---------------------------------------------------------------------------------

reserve = st.integers(min_value=10**18, max_value=10**30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=reserve, b=reserve, frac=st.integers(min_value=1, max_value=899), direction=st.sampled_from([0, 1]))
def test_vamm_rounding_matches_model(perp_deployment, q, b, frac, direction):
    amm = perp_deployment.amm(ETH).functions
    base_amount = b * frac // 1000
    quote_amount = q * frac // 1000
    got_out = amm.getOutputPriceWithReserves(direction, (base_amount,), (q,), (b,)).call()[0]
    got_in = amm.getInputPriceWithReserves(direction, (quote_amount,), (q,), (b,)).call()[0]
    assert got_out == output_price(direction, base_amount, q, b)
    assert got_in == input_price(direction, quote_amount, q, b)


def test_vamm_no_rounding_when_divisible(perp_deployment):
    amm = perp_deployment.amm(ETH).functions
    q = b = 100 * WAD  # k = 1e22 (10,000); k * 1e18 is divisible by 125e18 and 80e18
    assert amm.getOutputPriceWithReserves(ADD_TO_AMM, (25 * WAD,), (q,), (b,)).call()[0] == 20 * WAD
    assert amm.getOutputPriceWithReserves(REMOVE_FROM_AMM, (20 * WAD,), (q,), (b,)).call()[0] == 25 * WAD
    assert amm.getInputPriceWithReserves(ADD_TO_AMM, (25 * WAD,), (q,), (b,)).call()[0] == 20 * WAD
    # not divisible: 1 wei in the AMM's favour each way
    assert (
        amm.getOutputPriceWithReserves(ADD_TO_AMM, (50 * WAD,), (q,), (b,)).call()[0] == 100 * WAD - div_d(10**22, 150 * WAD) - 1
    )
    assert (
        amm.getOutputPriceWithReserves(REMOVE_FROM_AMM, (30 * WAD,), (q,), (b,)).call()[0]
        == div_d(10**22, 70 * WAD) - 100 * WAD + 1
    )
    perp_deployment.chain.expect_revert(
        amm.getOutputPriceWithReserves(REMOVE_FROM_AMM, (b,), (q,), (b,)), "base asset after is 0"
    )


# getInputPriceWithReserves / getOutputPriceWithReserves at Q 1,000 / B 100 (and round trips), from
# Perp v1's own Amm tests ("AmmCalculator"); amounts in whole tokens unless given in wei
ORIGINAL_PRICE_VECTORS = [
    ("in", ADD_TO_AMM, 600, 1000, 100, 375 * WAD // 10),
    ("in", REMOVE_FROM_AMM, 600, 1000, 100, 150 * WAD),
    ("in", ADD_TO_AMM, 200, 1000, 100, 16666666666666666666),
    ("in", REMOVE_FROM_AMM, 100, 1000, 100, 11111111111111111112),
    ("out", ADD_TO_AMM, 60, 1000, 100, 375 * WAD),
    ("out", REMOVE_FROM_AMM, 20, 1000, 100, 250 * WAD),
    ("out", REMOVE_FROM_AMM, 25, 1000, 100, 333333333333333333334),
    ("out", ADD_TO_AMM, 20, 1000, 100, 166666666666666666666),
    ("out", REMOVE_FROM_AMM, 10, 1000, 100, 111111111111111111112),
]


def test_pricing_matches_the_original_perp_test_vectors(perp_deployment):
    f = perp_deployment.amm(ETH).functions

    def price(kind, direction, amount, q, b):
        fn = f.getInputPriceWithReserves if kind == "in" else f.getOutputPriceWithReserves
        return fn(direction, (amount,), (q * WAD,), (b * WAD,)).call()[0]

    for kind, direction, amount, q, b, expected in ORIGINAL_PRICE_VECTORS:
        assert price(kind, direction, amount * WAD, q, b) == expected, (kind, direction, amount)
    # round trips at the post-trade reserves give the amount back
    assert price("out", ADD_TO_AMM, price("in", ADD_TO_AMM, 250 * WAD, 1000, 100), 1250, 80) == 250 * WAD
    assert price("out", REMOVE_FROM_AMM, price("in", REMOVE_FROM_AMM, 200 * WAD, 1000, 100), 800, 125) == 200 * WAD
    assert price("in", ADD_TO_AMM, price("out", ADD_TO_AMM, 60 * WAD, 1000, 100), 625, 160) == 60 * WAD
    assert price("in", REMOVE_FROM_AMM, price("out", REMOVE_FROM_AMM, 60 * WAD, 1000, 100), 2500, 40) == 60 * WAD
    chain = perp_deployment.chain
    nine = (900 * WAD,)
    chain.expect_revert(f.getInputPriceWithReserves(REMOVE_FROM_AMM, nine, nine, nine), "quote asset after is 0")
    chain.expect_revert(f.getOutputPriceWithReserves(REMOVE_FROM_AMM, nine, nine, nine), "base asset after is 0")


def test_swap_round_trips_leave_one_wei_to_the_amm(perp):
    """Perp v1's own Amm tests ("swapInput and swapOutput"): a trade and its reverse never leave
    the AMM with less than it started with."""
    chain = perp.chain
    amm, _t0 = twap_amm(perp)
    f = amm.functions
    ten = (10 * WAD,)
    cases = [
        (
            lambda: f.swapInput(REMOVE_FROM_AMM, ten, (0,), False),
            lambda: f.swapInput(ADD_TO_AMM, ten, (0,), False),
            (1000 * WAD, 100 * WAD + 1),
        ),
        (
            lambda: f.swapInput(ADD_TO_AMM, ten, (0,), False),
            lambda: f.swapInput(REMOVE_FROM_AMM, ten, (0,), False),
            (1000 * WAD, 100 * WAD + 1),
        ),
        (
            lambda: f.swapOutput(REMOVE_FROM_AMM, ten, (0,)),
            lambda: f.swapOutput(ADD_TO_AMM, ten, (0,)),
            (1000 * WAD + 1, 100 * WAD),
        ),
        (
            lambda: f.swapOutput(ADD_TO_AMM, ten, (0,)),
            lambda: f.swapOutput(REMOVE_FROM_AMM, ten, (0,)),
            (1000 * WAD + 1, 100 * WAD),
        ),
    ]
    for first, second, reserves in cases:
        with chain.reverted():
            chain.tx(first())
            chain.tx(second())
            assert (f.quoteAssetReserve().call(), f.baseAssetReserve().call()) == reserves
    received = f.getInputPrice(REMOVE_FROM_AMM, ten).call()[0]
    receipt = chain.tx(f.swapOutput(ADD_TO_AMM, (received,), (0,)))
    (ev,) = events(amm, "SwapOutput", receipt)
    assert ev == {"dir": ADD_TO_AMM, "quoteAssetAmount": 10000000000000000009, "baseAssetAmount": received}


def test_swap_moves_reserves_by_the_quoted_amounts(perp, accounts):
    alice = accounts["alice"]
    q0, b0 = perp.reserves(ETH)
    notional = to_wei_dec("5000")
    receipt = open_long(perp, alice, margin="1000", leverage=5)
    bought = input_price(ADD_TO_AMM, notional, q0, b0)
    assert perp.reserves(ETH) == (q0 + notional, b0 - bought)
    assert perp.position(ETH, alice)["size"] == bought
    (swap,) = events(perp.amm(ETH), "SwapInput", receipt)
    assert swap == {"dir": ADD_TO_AMM, "quoteAssetAmount": notional, "baseAssetAmount": bought}
    (snap,) = events(perp.amm(ETH), "ReserveSnapshotted", receipt)
    assert (snap["quoteAssetReserve"], snap["baseAssetReserve"]) == (q0 + notional, b0 - bought)


# ---- TWAP -----------------------------------------------------------------------------------------


def twap_amm(perp: PerpDeployment):
    """A fresh Amm (quote 1,000 / base 100, spot 10) whose counter party is the admin, so the test
    can swap it directly at chosen timestamps. Returns (contract, deployment timestamp)."""
    chain = perp.chain
    amm = chain.deploy(
        "perp/Amm",
        1000 * WAD,
        100 * WAD,
        9 * 10**17,
        3600,
        perp.price_feed.address,
        perp.price_feed_keys[ETH],
        perp.usdc.address,
        0,
        0,
        0,
    )
    chain.tx(amm.functions.setCounterParty(chain.admin))
    chain.tx(amm.functions.setOpen(True))
    return amm, amm.functions.reserveSnapshots(0).call()[2]


def swap_at(chain, amm, ts: int, quote: int) -> None:
    chain.set_next_timestamp(ts)
    chain.tx(amm.functions.swapInput(ADD_TO_AMM, (quote,), (0,), False))


def mine_at(chain, ts: int) -> int:
    chain.set_next_timestamp(ts)
    chain.mine()
    return chain.block_number()


def snapshot_values(amm, base: int) -> list[tuple[int, int, int]]:
    """(spot, output quote for `base` ADD, timestamp) per snapshot."""
    out = []
    for i in range(amm.functions.getSnapshotLen().call()):
        (q,), (b,), ts, _bn = amm.functions.reserveSnapshots(i).call()
        out.append((div_d(q, b), output_price(ADD_TO_AMM, base, q, b), ts))
    return out


def test_twap_single_snapshot_returns_latest(perp):
    amm, t0 = twap_amm(perp)
    block = mine_at(perp.chain, t0 + 5000)
    f = amm.functions
    assert f.getTwapPrice(900).call(block_identifier=block)[0] == 10 * WAD
    assert f.getOutputTwap(ADD_TO_AMM, (WAD,)).call(block_identifier=block) == f.getOutputPrice(ADD_TO_AMM, (WAD,)).call()


def test_twap_history_shorter_than_window_divides_by_covered_period(perp):
    chain = perp.chain
    amm, t0 = twap_amm(perp)
    swap_at(chain, amm, t0 + 100, 10 * WAD)
    block = mine_at(chain, t0 + 400)
    (s0, o0, _), (s1, o1, _) = snapshot_values(amm, 5 * WAD)
    # snapshot 1 current for 300 s, snapshot 0 weighted by the 100 s until snapshot 1
    assert amm.functions.getTwapPrice(900).call(block_identifier=block)[0] == (s1 * 300 + s0 * 100) // 400
    assert amm.functions.getOutputTwap(ADD_TO_AMM, (5 * WAD,)).call(block_identifier=block)[0] == (o1 * 300 + o0 * 100) // 400


def test_twap_full_window_cuts_oldest_weight(perp):
    chain = perp.chain
    amm, t0 = twap_amm(perp)
    swap_at(chain, amm, t0 + 100, 10 * WAD)
    swap_at(chain, amm, t0 + 500, 30 * WAD)
    block = mine_at(chain, t0 + 1000)
    (_, _, _), (s1, o1, _), (s2, o2, _) = snapshot_values(amm, 5 * WAD)
    # window [t0+100, t0+1000]: snapshot 2 for 500 s, snapshot 1 for 400 s, snapshot 0 cut off
    assert amm.functions.getTwapPrice(900).call(block_identifier=block)[0] == (s2 * 500 + s1 * 400) // 900
    assert amm.functions.getOutputTwap(ADD_TO_AMM, (5 * WAD,)).call(block_identifier=block)[0] == (o2 * 500 + o1 * 400) // 900
    # getInputTwap uses the same weights on getInputPriceWithReserves
    snaps = [amm.functions.reserveSnapshots(i).call() for i in (1, 2)]
    i1, i2 = (input_price(ADD_TO_AMM, 7 * WAD, s[0][0], s[1][0]) for s in snaps)
    assert amm.functions.getInputTwap(ADD_TO_AMM, (7 * WAD,)).call(block_identifier=block)[0] == (i2 * 500 + i1 * 400) // 900


def test_twap_latest_snapshot_older_than_window_returns_latest(perp):
    chain = perp.chain
    amm, t0 = twap_amm(perp)
    swap_at(chain, amm, t0 + 100, 10 * WAD)
    block = mine_at(chain, t0 + 100 + 900)  # latest snapshot exactly at now - 900
    spot = amm.functions.getSpotPrice().call()[0]
    assert amm.functions.getTwapPrice(900).call(block_identifier=block)[0] == spot


def test_twap_matches_the_original_perp_test_vectors(perp):
    """Replays Perp v1's own Amm TWAP tests (test/unit/Amm.test.ts, "twap price"): Q 1,000 / B 100,
    a swap every 14 s alternating REMOVE 100 / ADD 50 / ADD 50 quote; expected values copied from there."""
    chain = perp.chain
    amm, t0 = twap_amm(perp)
    f = amm.functions

    def swaps(first_ts: int, count: int) -> None:
        for i in range(count):
            direction, amount = (REMOVE_FROM_AMM, 100) if i % 3 == 0 else (ADD_TO_AMM, 50)
            chain.set_next_timestamp(first_ts + 14 * i)
            chain.tx(f.swapInput(direction, (amount * WAD,), (0,), False))

    def at(block: int):
        return {"block_identifier": block}

    swaps(t0 + 14, 30)  # 31 snapshots, 14 s apart
    now = t0 + 14 * 31

    with chain.reverted():
        block = mine_at(chain, now)
        assert f.getTwapPrice(210).call(**at(block))[0] == 9041666666666666665
        assert f.getTwapPrice(900).call(**at(block))[0] == 9072580645161290321  # history shorter than 900 s
        assert f.getInputTwap(ADD_TO_AMM, (10 * WAD,)).call(**at(block))[0] == 1098903664504027596
        assert f.getOutputTwap(ADD_TO_AMM, (10 * WAD,)).call(**at(block))[0] == 82816779977324354961
        assert f.getOutputTwap(ADD_TO_AMM, (0,)).call(**at(block))[0] == 0
        assert f.getTwapPrice(0).call(**at(block)) == f.getSpotPrice().call(**at(block))

    with chain.reverted():
        swaps(now, 1)  # a snapshot taken now has no weight yet
        assert f.getTwapPrice(210).call()[0] == 9041666666666666665
        block = mine_at(chain, now + 300)  # the latest snapshot is older than the interval
        assert f.getTwapPrice(210).call(**at(block))[0] == 8099999999999999998

    swaps(now, 34)  # 65 snapshots, 910 s of history
    now = t0 + 14 * 65
    with chain.reverted():
        block = mine_at(chain, now)
        assert f.getInputTwap(ADD_TO_AMM, (10 * WAD,)).call(**at(block))[0] == 1103873668968336329
        assert f.getOutputTwap(ADD_TO_AMM, (10 * WAD,)).call(**at(block))[0] == 82456099260799524707
    swaps(now, 1)
    assert f.getInputTwap(ADD_TO_AMM, (10 * WAD,)).call()[0] == 1103873668968336329


def test_same_block_change_overwrites_the_last_snapshot(perp):
    chain = perp.chain
    amm, t0 = twap_amm(perp)
    chain.set_automine(False)
    f = amm.functions
    hashes = [f.swapInput(ADD_TO_AMM, (x * WAD,), (0,), False).transact({"from": chain.admin, "gas": 500_000}) for x in (3, 4)]
    chain.set_next_timestamp(t0 + 50)
    chain.mine()
    chain.set_automine(True)
    assert all(chain.w3.eth.get_transaction_receipt(h).status == 1 for h in hashes)
    assert f.getSnapshotLen().call() == 2
    (q,), (b,), ts, bn = f.reserveSnapshots(1).call()
    assert (q, b) == (f.quoteAssetReserve().call(), f.baseAssetReserve().call()) and q == 1007 * WAD
    assert (ts, bn) == (t0 + 50, chain.block_number())


# ---- margin ratio -------------------------------------------------------------------------------


def test_margin_ratio_prefers_the_higher_pnl(perp, accounts):
    alice, whale = accounts["alice"], accounts["whale"]
    open_long(perp, alice)
    perp.advance_twap(900)
    # a sudden drop: spot PnL < TWAP PnL, so the ratio uses the TWAP
    set_market(perp, "2850", whale, settle=False)
    spot_mr, twap_mr = expected_ratio(perp, alice, SPOT_PRICE), expected_ratio(perp, alice, TWAP)
    assert spot_mr < twap_mr
    assert perp.margin_ratio(ETH, alice) == twap_mr
    # a sudden rise above the TWAP: the spot is preferred
    set_market(perp, "3100", whale, settle=False)
    spot_mr, twap_mr = expected_ratio(perp, alice, SPOT_PRICE), expected_ratio(perp, alice, TWAP)
    assert spot_mr > twap_mr
    assert perp.margin_ratio(ETH, alice) == spot_mr
    perp.chain.expect_revert(
        perp.clearing_house.functions.getMarginRatio(perp.amm(ETH).address, accounts["dave"]), "positionSize is 0"
    )


def test_liquidation_needs_ratio_strictly_below_maintenance(perp, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2900", accounts["whale"])  # TWAP settled: the ratio no longer moves with time
    mr = perp.margin_ratio(ETH, alice)
    assert 0 < mr < 10**17
    ch = perp.clearing_house.functions
    perp.chain.tx(ch.setMaintenanceMarginRatio((mr,)))
    perp.chain.expect_revert(ch.liquidate(perp.amm(ETH).address, alice), "Margin ratio not meet criteria", sender=keeper)
    perp.chain.tx(ch.setMaintenanceMarginRatio((mr + 1,)))
    perp.liquidate(keeper, ETH, alice)
    assert perp.position(ETH, alice)["size"] != 0  # partial


def test_open_position_requires_initial_margin(perp, accounts):
    alice = accounts["alice"]
    perp.fund_trader(alice, to_wei_dec("1000"))
    ch = perp.clearing_house.functions
    amm = perp.amm(ETH).address
    perp.chain.expect_revert(
        ch.openPosition(amm, BUY, (100 * WAD,), (11 * WAD,), (0,)), "Margin ratio not meet criteria", sender=alice
    )
    perp.chain.expect_revert(ch.openPosition(amm, BUY, (10**12 - 1,), (WAD,), (0,)), "invalid token amount", sender=alice)
    perp.chain.expect_revert(ch.openPosition(amm, BUY, (100 * WAD,), (0,), (0,)), "input is 0", sender=alice)
    # 0.0000015 USDC of dust: the vault pulls whole token units only
    before = perp.usdc_balance(alice)
    perp.open_position(alice, ETH, BUY, 100 * WAD + 15 * 10**11, 10 * WAD)
    assert before - perp.usdc_balance(alice) == 100 * 10**6 + 1


# ---- liquidation ----------------------------------------------------------------------------------


def test_partial_liquidation_exact_amounts(perp, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2880", accounts["whale"])
    pos = perp.position(ETH, alice)
    q, b = perp.reserves(ETH)
    lfr = perp.params.liquidation_fee_ratio
    plr = perp.params.partial_liquidation_ratio
    assert expected_ratio(perp, alice, SPOT_PRICE) > lfr  # SPOT-only ratio gates the partial close

    quote = output_price(ADD_TO_AMM, abs(smul_d(pos["size"], plr)), q, b)
    base_sold = input_price(REMOVE_FROM_AMM, quote, q, b)
    notional = output_price(ADD_TO_AMM, pos["size"], q, b)
    pnl = notional - pos["open_notional"]
    realized = sdiv_d(smul_d(pnl, base_sold), pos["size"])
    penalty = mul_d(quote, lfr)
    fee = penalty // 2

    ch = perp.clearing_house.functions
    assert ch.liquidate(perp.amm(ETH).address, alice).call({"from": keeper}) == [(quote,), True]
    keeper0, fund0 = perp.usdc_balance(keeper), perp.usdc_balance(perp.insurance_fund.address)
    receipt = perp.liquidate(keeper, ETH, alice)

    (liq,) = events(perp.clearing_house, "PositionLiquidated", receipt)
    assert liq == {
        "trader": alice,
        "amm": perp.amm(ETH).address,
        "positionNotional": quote,
        "positionSize": base_sold,
        "liquidationFee": fee,
        "liquidator": keeper,
        "badDebt": 0,
    }
    (changed,) = events(perp.clearing_house, "PositionChanged", receipt)
    assert changed["exchangedPositionSize"] == -base_sold
    assert changed["positionSizeAfter"] == pos["size"] - base_sold
    assert changed["margin"] == pos["margin"] + realized - penalty
    assert changed["realizedPnl"] == realized and changed["unrealizedPnlAfter"] == pnl - realized
    assert (changed["fee"], changed["liquidationPenalty"], changed["badDebt"]) == (0, penalty, 0)
    assert changed["spotPrice"] == perp.spot_price(ETH)

    after = perp.position(ETH, alice)
    assert after["size"] == pos["size"] - base_sold
    assert after["margin"] == pos["margin"] + realized - penalty
    assert after["open_notional"] == notional - quote - (pnl - realized)
    assert after["block_number"] == receipt.blockNumber
    # 6-decimal transfers round down
    assert perp.usdc_balance(keeper) - keeper0 == fee // USDC_UNIT
    assert perp.usdc_balance(perp.insurance_fund.address) - fund0 == (penalty - fee) // USDC_UNIT
    # the event order of A.5: RestrictionModeEntered, PositionLiquidated, PositionChanged
    names = [perp.clearing_house.events[n]().topic for n in ("RestrictionModeEntered", "PositionLiquidated", "PositionChanged")]
    topics = ["0x" + lg.topics[0].hex().removeprefix("0x") for lg in receipt.logs if lg.address == perp.clearing_house.address]
    assert topics == names


# Perp v1's own ClearingHouse tests ("liquidate"): Q 1,000 / B 100 (spot 10), MMR 10 %, fee 2.5 %,
# partial 25 %, a 5,000-token insurance fund, 6-decimal quote. Alice opens 10x, Bob trades against
# her 15 s later, Carol liquidates. Values copied from there (the under-water cases predate the
# backstop rule, so Carol is made a backstop LP here).
ORIGINAL_LIQUIDATION_VECTORS = {
    "partial-long": dict(
        alice=(BUY, 25 * WAD),
        bob=(SELL, 45180722890000000000),
        sync_oracle=False,
        liquidated={
            "positionNotional": 68455640744970299586,
            "positionSize": 5 * WAD,
            "liquidationFee": 855695509312128744,
            "badDebt": 0,
        },
        changed={
            "margin": 19274981656679729691,
            "positionNotional": 68455640744970299586,
            "exchangedPositionSize": -5 * WAD,
            "positionSizeAfter": 15 * WAD,
            "realizedPnl": -4013627324696012820,
            "unrealizedPnlAfter": -12040881974088038460,
            "liquidationPenalty": 1711391018624257489,
            "badDebt": 0,
        },
        margin_ratio_after=43713253015241334,
        carol=855695,
        fund=5000855695,
    ),
    "partial-short": dict(
        alice=(SELL, 20 * WAD),
        bob=(BUY, 19672131150000000000),
        sync_oracle=True,
        liquidated={
            "positionNotional": 44258754381889405651,
            "positionSize": 625 * WAD // 100,
            "liquidationFee": 553234429773617570,
            "badDebt": 0,
        },
        changed={
            "margin": 16079605164093693758,
            "positionNotional": 44258754381889405651,
            "exchangedPositionSize": 625 * WAD // 100,
            "positionSizeAfter": -1875 * WAD // 100,
            "realizedPnl": -2813925976359071101,
            "unrealizedPnlAfter": -8441777929077213306,
            "liquidationPenalty": 1106468859547235141,
            "badDebt": 0,
        },
        margin_ratio_after=45736327859926164,
        carol=553234,
        fund=5000553234,
    ),
    "full-long-under-water": dict(
        alice=(BUY, 25 * WAD),
        bob=(SELL, 73529411760000000000),
        sync_oracle=False,
        liquidated={
            "positionNotional": 224089635855963718818,
            "positionSize": 20 * WAD,
            "liquidationFee": 2801120448199546485,
            "badDebt": 2801120448199546485,
        },
        changed={
            "margin": 0,
            "positionNotional": 224089635855963718818,
            "exchangedPositionSize": -20 * WAD,
            "positionSizeAfter": 0,
            "realizedPnl": -25910364144036281182,
            "unrealizedPnlAfter": 0,
            "liquidationPenalty": 25 * WAD,
            "badDebt": 910364144036281182,
        },
        margin_ratio_after=None,
        carol=2801120,
        fund=4996288516,
    ),
    "full-short-under-water": dict(
        alice=(SELL, 20 * WAD),
        bob=(BUY, 40336134450000000000),
        sync_oracle=True,
        liquidated={
            "positionNotional": 223493652777982118604,
            "positionSize": 25 * WAD,
            "liquidationFee": 2793670659724776482,
            "badDebt": 2793670659724776482,
        },
        changed={
            "margin": 0,
            "positionNotional": 223493652777982118604,
            "exchangedPositionSize": 25 * WAD,
            "positionSizeAfter": 0,
            "realizedPnl": -23493652777982118604,
            "unrealizedPnlAfter": 0,
            "liquidationPenalty": 20 * WAD,
            "badDebt": 3493652777982118604,
        },
        margin_ratio_after=None,
        carol=2793670,
        fund=4993712677,
    ),
}


@pytest.fixture(scope="module")
def small_market_deployment(module_chain, perp_deployment) -> PerpDeployment:
    return deploy_perp(
        module_chain,
        markets=[MarketSpec(ETH, price=10 * WAD, base_reserve=100 * WAD)],
        params=PerpParams(
            maintenance_margin_ratio=10**17,
            liquidation_fee_ratio=25 * 10**15,
            partial_liquidation_ratio=25 * 10**16,
            insurance_fund_balance=5000 * WAD,
        ),
    )


@pytest.mark.parametrize("case", sorted(ORIGINAL_LIQUIDATION_VECTORS))
def test_liquidations_match_the_original_perp_test_vectors(small_market_deployment, accounts, case):
    v = ORIGINAL_LIQUIDATION_VECTORS[case]
    perp = small_market_deployment
    chain = perp.chain
    with chain.reverted():
        alice, bob, carol = accounts["alice"], accounts["whale"], accounts["carol"]
        for who in (alice, bob):
            perp.fund_trader(who, 100 * WAD)
        perp.open_position(alice, ETH, v["alice"][0], v["alice"][1], 10 * WAD)
        chain.increase_time(15)
        perp.open_position(bob, ETH, v["bob"][0], v["bob"][1], WAD)
        if v["sync_oracle"]:
            perp.set_oracle_price(ETH, perp.spot_price(ETH))
        perp.set_backstop(carol)
        receipt = perp.liquidate(carol, ETH, alice)

        (liq,) = events(perp.clearing_house, "PositionLiquidated", receipt)
        assert liq == {"trader": alice, "amm": perp.amm(ETH).address, "liquidator": carol, **v["liquidated"]}
        (changed,) = events(perp.clearing_house, "PositionChanged", receipt)
        assert {k: changed[k] for k in v["changed"]} == v["changed"]
        if v["margin_ratio_after"] is not None:
            assert perp.margin_ratio(ETH, alice) == v["margin_ratio_after"]
        assert perp.usdc_balance(carol) == v["carol"]
        assert perp.usdc_balance(perp.insurance_fund.address) == v["fund"]


def test_full_liquidation_without_bad_debt(perp, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2760", accounts["whale"])
    lfr = perp.params.liquidation_fee_ratio
    assert 0 < expected_ratio(perp, alice, SPOT_PRICE) <= lfr  # too thin for a partial close

    pos = perp.position(ETH, alice)
    q, b = perp.reserves(ETH)
    quote = output_price(ADD_TO_AMM, pos["size"], q, b)
    remain = pos["margin"] + quote - pos["open_notional"]
    fee = mul_d(quote, lfr) // 2
    assert remain > fee
    keeper0, fund0 = perp.usdc_balance(keeper), perp.usdc_balance(perp.insurance_fund.address)
    receipt = perp.liquidate(keeper, ETH, alice)

    (liq,) = events(perp.clearing_house, "PositionLiquidated", receipt)
    assert (liq["positionNotional"], liq["positionSize"], liq["liquidationFee"], liq["badDebt"]) == (quote, pos["size"], fee, 0)
    (changed,) = events(perp.clearing_house, "PositionChanged", receipt)
    assert (changed["margin"], changed["positionSizeAfter"], changed["exchangedPositionSize"]) == (0, 0, -pos["size"])
    assert (changed["liquidationPenalty"], changed["badDebt"], changed["realizedPnl"]) == (
        pos["margin"],
        0,
        quote - pos["open_notional"],
    )
    assert perp.position(ETH, alice)["size"] == 0
    assert perp.usdc_balance(keeper) - keeper0 == fee // USDC_UNIT
    assert perp.usdc_balance(perp.insurance_fund.address) - fund0 == (remain - fee) // USDC_UNIT


def test_bad_debt_needs_backstop_lp(perp, accounts):
    alice, keeper, backstop = accounts["alice"], accounts["keeper"], accounts["backstop"]
    open_long(perp, alice)
    set_market(perp, "2650", accounts["whale"])
    amm = perp.amm(ETH).address
    ch = perp.clearing_house.functions
    perp.chain.expect_revert(ch.liquidate(amm, alice), "not backstop LP", sender=keeper)

    pos = perp.position(ETH, alice)
    q, b = perp.reserves(ETH)
    quote = output_price(ADD_TO_AMM, pos["size"], q, b)
    bad_debt = pos["open_notional"] - quote - pos["margin"]
    fee = mul_d(quote, perp.params.liquidation_fee_ratio) // 2
    assert bad_debt > 0
    perp.set_backstop(backstop)
    assert ch.backstopLiquidityProviderMap(backstop).call()
    fund0, lp0 = perp.usdc_balance(perp.insurance_fund.address), perp.usdc_balance(backstop)
    receipt = perp.liquidate(backstop, ETH, alice)

    (liq,) = events(perp.clearing_house, "PositionLiquidated", receipt)
    assert (liq["liquidationFee"], liq["badDebt"], liq["liquidator"]) == (fee, fee, backstop)  # the fee is all bad debt
    (changed,) = events(perp.clearing_house, "PositionChanged", receipt)
    assert changed["badDebt"] == bad_debt and changed["margin"] == 0
    assert perp.usdc_balance(backstop) - lp0 == fee // USDC_UNIT
    assert fund0 - perp.usdc_balance(perp.insurance_fund.address) == (bad_debt + fee) // USDC_UNIT


def test_over_spread_limit_keeps_an_oracle_healthy_position(perp, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2640", accounts["whale"], oracle=None)  # vAMM crash, index still 3,000 (-12 %)
    amm = perp.amm(ETH)
    assert amm.functions.isOverSpreadLimit().call()
    assert perp.margin_ratio(ETH, alice) < perp.params.maintenance_margin_ratio
    assert expected_ratio(perp, alice, ORACLE) >= perp.params.maintenance_margin_ratio
    ch = perp.clearing_house.functions
    perp.chain.expect_revert(ch.liquidate(amm.address, alice), "Margin ratio not meet criteria", sender=keeper)
    # once the index follows, the oracle ratio no longer helps
    perp.set_oracle_price(ETH, to_wei_dec("2640"))
    assert not amm.functions.isOverSpreadLimit().call()
    perp.set_backstop(keeper)
    perp.liquidate(keeper, ETH, alice)
    assert perp.position(ETH, alice)["size"] == 0


def test_spread_limit_boundary_and_zero_oracle(perp, accounts):
    amm = perp.amm(ETH).functions
    spot = perp.spot_price(ETH)
    perp.set_oracle_price(ETH, div_d(spot, 11 * 10**17) + 1)  # spot just under 10 % above the index
    assert not amm.isOverSpreadLimit().call()
    index = spot * 10 // 11  # (spot - index) / index >= 10 %
    perp.set_oracle_price(ETH, index)
    assert sdiv_d(spot - index, index) >= 10**17 and amm.isOverSpreadLimit().call()
    perp.set_oracle_price(ETH, 0)
    perp.chain.expect_revert(amm.isOverSpreadLimit(), "underlying price is 0")


def test_lockout_blocks_liquidation_until_the_price_converges(perp, accounts):
    alice, keeper, carol = accounts["alice"], accounts["keeper"], accounts["carol"]
    open_long(perp, alice)
    set_market(perp, "2790", accounts["whale"], oracle=None)  # spot 7 % below the index
    amm = perp.amm(ETH).address
    ch = perp.clearing_house.functions
    assert ch.lockoutRatio(amm).call() == 0
    assert ch.liquidate(amm, alice).call({"from": keeper})  # liquidatable without the lockout
    perp.set_lockout(ETH, LOCKOUT)
    assert ch.lockoutRatio(amm).call() == LOCKOUT
    perp.chain.expect_revert(ch.liquidate(amm, alice), "price deviation lockout", sender=keeper)
    perp.chain.expect_revert(ch.liquidateWithSlippage(amm, alice, (0,)), "price deviation lockout", sender=keeper)
    # no opening on the side that widens the gap (spot below index: SELL); BUY narrows it
    perp.fund_trader(carol, to_wei_dec("2000"))
    perp.chain.expect_revert(ch.openPosition(amm, SELL, (100 * WAD,), (2 * WAD,), (0,)), "price deviation lockout", sender=carol)
    perp.open_position(carol, ETH, BUY, 100 * WAD, 2 * WAD)
    # back within 5 % of the index: released
    perp.set_oracle_price(ETH, to_wei_dec("2900"))
    size = perp.position(ETH, alice)["size"]
    receipt = perp.liquidate(keeper, ETH, alice)
    (changed,) = events(perp.clearing_house, "PositionChanged", receipt)
    assert 0 < changed["positionSizeAfter"] < size  # partially liquidated


def test_lockout_switched_off_restores_plain_rules(perp, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2790", accounts["whale"], oracle=None)
    perp.set_lockout(ETH, LOCKOUT)
    perp.set_lockout(ETH, 0)
    receipt = perp.liquidate(keeper, ETH, alice)
    assert events(perp.clearing_house, "PositionLiquidated", receipt)


def test_liquidate_with_slippage_limits(perp, accounts):
    alice, carol, keeper = accounts["alice"], accounts["carol"], accounts["keeper"]
    open_long(perp, alice)
    set_market(perp, "2880", accounts["whale"])
    amm = perp.amm(ETH).address
    ch = perp.clearing_house.functions
    quote, partial = ch.liquidate(amm, alice).call({"from": keeper})
    assert partial
    plr = perp.params.partial_liquidation_ratio
    floor_limit = div_d(quote[0], plr)  # mulD(limit, plr) == quote
    perp.chain.expect_revert(
        ch.liquidateWithSlippage(amm, alice, (floor_limit + 10,)), "Less than minimal quote token", sender=keeper
    )
    assert ch.liquidateWithSlippage(amm, alice, (floor_limit,)).call({"from": keeper}) == [quote, True]

    # a short closed in full: the limit is a ceiling on the quote paid back
    perp.fund_trader(carol, to_wei_dec("2000"))
    perp.open_position(carol, ETH, SELL, to_wei_dec("1000"), 10 * WAD)
    set_market(perp, "3150", accounts["whale"])
    perp.set_backstop(keeper)
    paid, partial = ch.liquidate(amm, carol).call({"from": keeper})
    assert not partial
    perp.chain.expect_revert(ch.liquidateWithSlippage(amm, carol, (paid[0] - 1,)), "More than maximal quote token", sender=keeper)
    assert ch.liquidateWithSlippage(amm, carol, (paid[0],)).call({"from": keeper}) == [paid, False]
    assert ch.liquidateWithSlippage(amm, carol, (0,)).call({"from": keeper}) == [paid, False]


def test_unknown_or_closed_amm(perp, accounts):
    ch = perp.clearing_house.functions
    keeper, alice = accounts["keeper"], accounts["alice"]
    perp.chain.expect_revert(ch.liquidate(accounts["dave"], alice), "amm not found", sender=keeper)
    open_long(perp, alice)
    perp.chain.tx(perp.amm(ETH).functions.setOpen(False))
    perp.chain.expect_revert(ch.liquidate(perp.amm(ETH).address, alice), "amm was closed", sender=keeper)
    perp.chain.expect_revert(ch.closePosition(perp.amm(ETH).address, (0,)), "amm was closed", sender=alice)


def test_restriction_block_allows_one_action(perp, accounts):
    chain = perp.chain
    alice, carol, keeper = accounts["alice"], accounts["carol"], accounts["keeper"]
    open_long(perp, alice)
    open_long(perp, carol, margin="100", leverage=2)
    perp.fund_trader(carol, to_wei_dec("100"))
    perp.fund_trader(keeper, to_wei_dec("100"))
    set_market(perp, "2880", accounts["whale"])
    ch = perp.clearing_house.functions
    amm = perp.amm(ETH).address

    chain.set_automine(False)
    gas = 3_000_000
    sent = [  # one block; ordered by gas price
        ch.openPosition(amm, BUY, (10 * WAD,), (WAD,), (0,)).transact({"from": carol, "gas": gas, "gasPrice": 40 * 10**9}),
        ch.liquidate(amm, alice).transact({"from": keeper, "gas": gas, "gasPrice": 30 * 10**9}),
        ch.closePosition(amm, (0,)).transact({"from": carol, "gas": gas, "gasPrice": 20 * 10**9}),
        ch.closePosition(amm, (0,)).transact({"from": alice, "gas": gas, "gasPrice": 10 * 10**9}),
        ch.openPosition(amm, BUY, (10 * WAD,), (WAD,), (0,)).transact({"from": keeper, "gas": gas, "gasPrice": 5 * 10**9}),
    ]
    chain.mine()
    chain.set_automine(True)
    block = chain.w3.eth.get_block("latest")
    assert [h for h in block.transactions] == sent
    status = [chain.w3.eth.get_transaction_receipt(h).status for h in sent]
    # the liquidator had no position touched in this block, so it may still open one
    assert status == [1, 1, 0, 0, 1]
    assert revert_reason_of(chain, sent[2]) == "only one action allowed"
    assert revert_reason_of(chain, sent[3]) == "only one action allowed"
    # the next block is unrestricted (mine one first: eth_call / eth_estimateGas on "latest" run
    # with the latest block's number, which is still the restricted one)
    chain.mine()
    perp.close_position(carol, ETH)
    assert perp.position(ETH, carol)["size"] == 0


def test_fluctuation_limit_guards(perp, accounts):
    chain = perp.chain
    whale, carol = accounts["whale"], accounts["carol"]
    amm = perp.amm(ETH)
    perp.fund_trader(whale, to_wei_dec("3000000"))
    perp.fund_trader(carol, to_wei_dec("1000"))
    perp.open_position(whale, ETH, BUY, to_wei_dec("1000000"), WAD)  # ~ +6.8 %
    perp.set_fluctuation_limit(ETH, 10**16)  # 1 %
    size = perp.position(ETH, whale)["size"]
    assert amm.functions.isOverFluctuationLimit(ADD_TO_AMM, (size,)).call()
    assert not amm.functions.isOverFluctuationLimit(ADD_TO_AMM, (WAD,)).call()
    ch = perp.clearing_house.functions
    chain.expect_revert(
        ch.openPosition(amm.address, BUY, (to_wei_dec("500000"),), (WAD,), (0,)), "price is over fluctuation limit", sender=whale
    )

    # closing may go over the limit once per block (then only partially), after which the block is closed
    q, b = perp.reserves(ETH)
    quote = output_price(ADD_TO_AMM, abs(smul_d(size, perp.params.partial_liquidation_ratio)), q, b)
    base_sold = input_price(REMOVE_FROM_AMM, quote, q, b)
    chain.set_automine(False)
    sent = [
        ch.closePosition(amm.address, (0,)).transact({"from": whale, "gas": 3_000_000, "gasPrice": 20 * 10**9}),
        ch.openPosition(amm.address, BUY, (10 * WAD,), (WAD,), (0,)).transact(
            {"from": carol, "gas": 3_000_000, "gasPrice": 10 * 10**9}
        ),
    ]
    chain.mine()
    chain.set_automine(True)
    assert [chain.w3.eth.get_transaction_receipt(h).status for h in sent] == [1, 0]
    assert revert_reason_of(chain, sent[1]) == "price is already over fluctuation limit"
    assert perp.position(ETH, whale)["size"] == size - base_sold


def test_trading_limit(perp, accounts):
    carol = accounts["carol"]
    q, _b = perp.reserves(ETH)
    perp.fund_trader(carol, q)
    ch = perp.clearing_house.functions
    too_much = mul_d(q, 9 * 10**17) + WAD
    perp.chain.expect_revert(
        ch.openPosition(perp.amm(ETH).address, SELL, (too_much,), (WAD,), (0,)), "over trading limit", sender=carol
    )


def test_funding_settles_into_margin_ratio(perp, accounts):
    alice = accounts["alice"]
    open_long(perp, alice)
    set_market(perp, "3100", accounts["whale"], oracle="3000")  # longs pay: market above index
    amm = perp.amm(ETH)
    perp.chain.advance(3600)
    receipt = perp.pay_funding(ETH)
    twap = amm.functions.getTwapPrice(3600).call(block_identifier=receipt.blockNumber)[0]
    premium = tdiv((twap - to_wei_dec("3000")) * 3600, 86400)
    cpf = perp.clearing_house.functions.getLatestCumulativePremiumFraction(amm.address).call()[0]
    assert cpf == premium > 0
    pos = perp.position(ETH, alice)
    notional, pnl = perp.notional_and_pnl(ETH, alice, TWAP)
    spot_n, spot_pnl = perp.notional_and_pnl(ETH, alice, SPOT_PRICE)
    if spot_pnl > pnl:
        notional, pnl = spot_n, spot_pnl
    assert perp.margin_ratio(ETH, alice) == sdiv_d(pos["margin"] + pnl - smul_d(cpf, pos["size"]), notional)
    perp.chain.expect_revert(amm.functions.settleFunding(), "caller is not counterParty")
    perp.chain.expect_revert(perp.clearing_house.functions.payFunding(amm.address), "settle funding too early")


def test_remove_margin_checks_free_collateral(perp, accounts):
    alice = accounts["alice"]
    open_long(perp, alice, margin="1000", leverage=5)
    ch = perp.clearing_house.functions
    amm = perp.amm(ETH).address
    perp.chain.expect_revert(ch.removeMargin(amm, (to_wei_dec("600"),)), "free collateral is not enough", sender=alice)
    before = perp.usdc_balance(alice)
    receipt = perp.remove_margin(alice, ETH, to_wei_dec("400"))
    assert perp.usdc_balance(alice) - before == 400 * 10**6
    (ev,) = events(perp.clearing_house, "MarginChanged", receipt)
    assert ev == {"sender": alice, "amm": amm, "amount": -to_wei_dec("400"), "fundingPayment": 0}
    receipt = perp.add_margin(alice, ETH, to_wei_dec("50"))
    (ev,) = events(perp.clearing_house, "MarginChanged", receipt)
    assert ev["amount"] == to_wei_dec("50")
    assert perp.position(ETH, alice)["margin"] == to_wei_dec("650")


# ---- v2.2 variant ---------------------------------------------------------------------------------


def _thin_spot_thick_twap(p: PerpDeployment, accounts) -> str:
    """A long whose combined (TWAP) ratio is between the fee ratio and maintenance while its
    SPOT-only ratio is below the fee ratio (the vAMM just dropped further)."""
    alice = accounts["alice"]
    open_long(p, alice)
    set_market(p, "2850", accounts["whale"])
    set_market(p, "2760", accounts["whale"], oracle="2850", settle=False)
    lfr, mmr = p.params.liquidation_fee_ratio, p.params.maintenance_margin_ratio
    assert lfr < p.margin_ratio(ETH, alice) < mmr
    assert 0 < expected_ratio(p, alice, SPOT_PRICE) <= lfr
    return alice


def test_v23_gates_partial_close_on_spot_ratio(perp, accounts):
    alice = _thin_spot_thick_twap(perp, accounts)
    ch = perp.clearing_house.functions
    assert ch.liquidate(perp.amm(ETH).address, alice).call({"from": accounts["keeper"]})[1] is False


def test_v22_gates_partial_close_on_combined_ratio(perp22, accounts):
    alice = _thin_spot_thick_twap(perp22, accounts)
    size = perp22.position(ETH, alice)["size"]
    receipt = perp22.liquidate(accounts["keeper"], ETH, alice)
    (changed,) = events(perp22.clearing_house, "PositionChanged", receipt)
    assert 0 < changed["positionSizeAfter"] < size


def test_v22_has_no_backstop_rule(perp22, accounts):
    alice, keeper = accounts["alice"], accounts["keeper"]
    open_long(perp22, alice)
    set_market(perp22, "2650", accounts["whale"])
    assert not perp22.clearing_house.functions.backstopLiquidityProviderMap(keeper).call()
    receipt = perp22.liquidate(keeper, ETH, alice)
    (liq,) = events(perp22.clearing_house, "PositionLiquidated", receipt)
    assert liq["badDebt"] == liq["liquidationFee"] > 0
    assert perp22.position(ETH, alice)["size"] == 0


def test_v22_has_no_liquidate_with_slippage(perp22):
    assert not any(e.get("name") == "liquidateWithSlippage" for e in perp22.clearing_house.abi)
    with pytest.raises(ContractLogicError):  # no such entry point and no fallback
        perp22.chain.w3.eth.call({"to": perp22.clearing_house.address, "data": "0x29c44f13" + "00" * 96})


def test_tx_failed_reports_reason(perp, accounts):
    """DevChain.tx surfaces contract revert strings (used by the scenario helpers)."""
    with pytest.raises(TxFailed) as exc:
        perp.liquidate(accounts["keeper"], ETH, accounts["alice"])
    assert exc.value.reason == "positionSize is 0"
