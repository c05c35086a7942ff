"""Perp confirmation: the chain decides. When the local evaluation and the on-chain reads disagree,
the kind and the expected reward come from the chain (or the candidate is skipped with the reason
logged) and the discrepancy is counted in keeper_ratio_discrepancies_total. Also: the 5 % lockout
is on by default, and config naming a market the ClearingHouse does not have is a startup error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from eth_utils import to_checksum_address

from keeper.adapters.perp_v1 import PerpV1Adapter
from keeper.daemon import StartupError
from keeper.devtools.perp_env import BUY, USDC_UNIT
from keeper.risk import perp as pm
from keeper.risk import perp_vec
from tests.harness import KEEPER, keeper_config, perp_protocol, run_engine, start_engine

pytestmark = pytest.mark.chain
E = 10**18
MMR = 625 * E // 10_000


def open_10x_long(perp, trader: str, margin: int = 300 * E) -> None:
    perp.fund_trader(trader, margin + 10 * E)
    perp.open_position(trader, "ETH", BUY, margin=margin, leverage=10 * E)


def crash(perp, whale: str, price: int, oracle: int | None = None) -> None:
    perp.set_oracle_price("ETH", oracle if oracle is not None else price)
    perp.move_spot_price("ETH", price, whale)
    perp.advance_twap(900)


def discrepancies(engine) -> float:
    return engine.metrics.registry.get_sample_value("keeper_ratio_discrepancies_total", {"protocol": "perp"}) or 0.0


def fault_local_ratios(monkeypatch, **change) -> None:
    """Fault injection: the local margin-ratio maths is off (the on-chain views are untouched). The
    vectorised prefilter proves nothing, so every position reaches the (faulty) exact maths."""
    real = pm.ratios
    monkeypatch.setattr(perp_vec, "spot_ratio_at_least", lambda size, *_a: np.zeros(len(size), dtype=bool))
    # the per-block loop's fused maths (the same integers) position by position through pm.ratios
    monkeypatch.setattr(PerpV1Adapter, "_evaluate_unproven", PerpV1Adapter._evaluate_each)

    def faulty(pos, m, *, skip_twap_above=None):
        r = real(pos, m)
        return dataclasses.replace(r, **{k: f(r) for k, f in change.items()})

    monkeypatch.setattr(pm, "ratios", faulty)


async def run(perp, tmp_path, blocks: int = 2, **protocol):
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp, **protocol)])
    return await run_engine(cfg, blocks)


async def test_chain_kind_and_reward_win_over_a_wrong_local_ratio(perp, accounts, tmp_path, monkeypatch):
    """Locally the SPOT ratio is (wrongly) 0, so the local maths says "full close" with a reward on
    the whole notional; on-chain the position gets a 25 % partial close. The plan follows the chain:
    kind partial, expected reward = what the keeper is paid, and the discrepancy is counted."""
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    amm = perp.amm("ETH").address
    quote, is_partial = perp.clearing_house.functions.liquidate(amm, alice).call({"from": KEEPER})
    assert is_partial
    chain_reward = pm.mul_d(quote[0], perp.params.liquidation_fee_ratio) // 2 // USDC_UNIT * USDC_UNIT
    fault_local_ratios(monkeypatch, spot_mr=lambda r: 0, contract_mr=lambda r: r.contract_mr - 10**12)
    start, usdc0 = perp.chain.block_number(), perp.usdc_balance(KEEPER)

    engine, log = await run(perp, tmp_path)

    (mismatch,) = log.events("onchain_local_mismatch")[:1]
    assert mismatch["account"] == alice and "trader" not in mismatch
    assert mismatch["local_kind"] == "full" and mismatch["onchain_kind"] == "partial"
    assert {"kind", "margin_ratio", "reward"} <= set(mismatch["differs"])
    assert mismatch["onchain_margin_ratio"] == mismatch["local_margin_ratio"] + 10**12
    assert mismatch["local_reward"] > 3 * mismatch["onchain_reward"]
    assert discrepancies(engine) >= 1
    (sent,) = log.events("liquidation_sent")
    assert sent["kind"] == "partial" and sent["expected_reward"] == chain_reward
    (landed,) = log.events("liquidation_landed")
    assert landed["kind"] == "partial" and landed["reward"] == chain_reward
    liq = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
    assert [x["args"]["liquidator"] for x in liq] == [KEEPER]
    assert (perp.usdc_balance(KEEPER) - usdc0) * USDC_UNIT == chain_reward


async def test_candidate_healthy_on_chain_is_skipped_with_reason(perp, accounts, tmp_path, monkeypatch):
    """The local maths (wrongly) puts a healthy position under maintenance: nothing is sent, the
    skip is logged with the on-chain ratio, and the discrepancy is counted."""
    alice = accounts["alice"]
    open_10x_long(perp, alice)
    onchain_mr = perp.margin_ratio("ETH", alice)
    assert onchain_mr > MMR
    fault_local_ratios(monkeypatch, contract_mr=lambda r: MMR - 1, effective_mr=lambda r: MMR - 1)
    nonce0 = perp.chain.nonce(KEEPER)

    engine, log = await run(perp, tmp_path)

    assert perp.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    dropped = [r for r in log.events("candidate_dropped") if r["account"] == alice]
    assert dropped and "not liquidatable on-chain" in dropped[0]["reason"] and str(onchain_mr) in dropped[0]["reason"]
    assert "trader" not in dropped[0]
    (mismatch,) = log.events("onchain_local_mismatch")[:1]
    assert mismatch["onchain_kind"] == "none" and mismatch["onchain_margin_ratio"] == onchain_mr
    assert discrepancies(engine) >= 1


async def test_candidate_whose_reward_cannot_be_derived_is_skipped(perp, accounts, tmp_path, monkeypatch):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)

    def underivable(reads, params):
        raise pm.AmmMathError("injected")

    monkeypatch.setattr(pm, "chain_decision", underivable)
    nonce0 = perp.chain.nonce(KEEPER)
    _engine, log = await run(perp, tmp_path)
    assert perp.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    assert any("cannot be derived" in r["reason"] for r in log.events("candidate_dropped") if r["account"] == alice)


async def test_agreeing_chain_counts_no_discrepancy(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2880 * E)
    engine, log = await run(perp, tmp_path)
    assert len(log.events("liquidation_landed")) == 1
    assert not log.events("onchain_local_mismatch") and discrepancies(engine) == 0


# ---- the 5 % lockout is on by default ------------------------------------------------------------


async def test_default_config_honours_the_5_percent_lockout(perp, accounts, tmp_path):
    """Spot 6.7 % under the index (not over the 10 % spread limit), the contract's own switch off:
    with no lockout setting nothing is sent; with lockout = "off" the position is liquidated."""
    alice, whale = accounts["alice"], accounts["whale"]
    open_10x_long(perp, alice)
    crash(perp, whale, 2800 * E, oracle=3000 * E)
    assert perp.clearing_house.functions.lockoutRatio(perp.amm("ETH").address).call() == 0
    assert not perp.amm("ETH").functions.isOverSpreadLimit().call()
    assert perp.margin_ratio("ETH", alice) < MMR
    nonce0 = perp.chain.nonce(KEEPER)

    _engine, log = await run(perp, tmp_path, blocks=3)

    assert perp.chain.nonce(KEEPER) == nonce0 and not log.events("liquidation_sent")
    assert [r["status"] for r in log.events("position_status") if r["account"] == alice][-1] == "lockout"
    (added,) = [r for r in log.events("market_added") if r["market"] == "ETH"]
    assert added["lockout"] == "on" and added["lockout_threshold"] == 5 * E // 100

    _engine, log = await run(perp, tmp_path, lockout="off")
    landed = log.events("liquidation_landed")
    # partial closes of alice only (repeated in one block while she stays below maintenance), never full
    assert landed and {r["account"] for r in landed} == {alice} and {r["kind"] for r in landed} == {"partial"}
    assert perp.position("ETH", alice)["size"] != 0


# ---- config naming markets the ClearingHouse does not have -------------------------------------------

NOT_A_MARKET = to_checksum_address("0x00000000000000000000000000000000deadbeef")


@pytest.mark.parametrize("field", ["market_overrides", "markets"])
async def test_unknown_market_in_config_is_a_startup_error(perp, tmp_path, field):
    over = (
        {"market_overrides": {NOT_A_MARKET: {"enabled": False}}} if field == "market_overrides" else {"markets": [NOT_A_MARKET]}
    )
    cfg = keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp, **over)])
    with pytest.raises(StartupError) as exc:
        await start_engine(cfg)
    assert NOT_A_MARKET in str(exc.value) and field in str(exc.value)


# ---- the on-chain decision is what `liquidate` does ------------------------------------------------


# what liquidate does over the book below (None: reverts for some position)
EXPECTED_KINDS = {
    **{(v, 2950, None, False): {None} for v in ("v2.3", "v2.2")},
    **{(v, 2880, None, False): {None, "partial"} for v in ("v2.3", "v2.2")},
    **{(v, 2760, None, False): {None, "partial", "full"} for v in ("v2.3", "v2.2")},
    ("v2.3", 2600, None, False): {None},  # bad debt: "not backstop LP"
    ("v2.2", 2600, None, False): {None, "full"},  # no backstop rule in v2.2
    **{(v, 2600, None, True): {None, "full"} for v in ("v2.3", "v2.2")},
    **{(v, 2650, 3000, False): {None} for v in ("v2.3", "v2.2")},
    ("v2.3", 2600, 2880, False): {None},
    ("v2.2", 2600, 2880, False): {None, "full"},
}


@pytest.mark.parametrize("variant", ["v2.3", "v2.2"])
@pytest.mark.parametrize(
    ("price", "oracle", "backstop"),
    [
        (2950, None, False),  # healthy
        (2880, None, False),  # partial
        (2760, None, False),  # full, solvent
        (2600, None, False),  # bad debt: v2.3 needs a backstop LP
        (2600, None, True),
        (2650, 3000, False),  # over the spread limit: the oracle ratio counts (healthy on it)
        (2600, 2880, False),  # over the spread limit, under water on the oracle too
    ],
)
async def test_confirmation_equals_an_eth_call_of_liquidate(perp, perp22, accounts, variant, price, oracle, backstop):
    """For longs and shorts of several leverages: the confirmation's plan (kind, expected reward) or
    its absence equals what `liquidate` does when the keeper calls it in the same block."""
    import dataclasses  # noqa: PLC0415

    from web3.exceptions import ContractLogicError  # noqa: PLC0415

    from tests.harness import open_adapter  # noqa: PLC0415

    d = perp if variant == "v2.3" else perp22
    book = [("alice", BUY, 300, 10), ("carol", BUY, 1000, 7), ("dave", 1, 600, 5), ("backstop", BUY, 500, 9)]
    for name, side, margin, lev in book:
        d.fund_trader(accounts[name], margin * E + E)
        d.open_position(accounts[name], "ETH", side, margin * E, lev * E)
    crash(d, accounts["whale"], price * E, oracle=None if oracle is None else oracle * E)
    if backstop:
        d.set_backstop(KEEPER, True)
    adapter, rpc, head = await open_adapter(d.chain.url, perp_protocol(d, lockout="off"))
    try:
        kinds = set()
        for e in adapter.evaluate(head, full=True):
            try:
                (quote,), partial = d.clearing_house.functions.liquidate(e.key.market, e.key.account).call(
                    {"from": KEEPER}, block_identifier=head.number
                )
                want = ("partial" if partial else "full", pm.token_floor(pm.mul_d(quote, adapter.params.lfr) // 2, 6))
            except ContractLogicError:
                want = None
            plans = await adapter.confirm([dataclasses.replace(e, candidate=True)], head)
            assert ((plans[0].kind, plans[0].expected_reward) if plans else None) == want, e.key.account
            kinds.add(want[0] if want else None)
        assert kinds == EXPECTED_KINDS[(variant, price, oracle, backstop)]
    finally:
        await rpc.close()
