"""Liquidation prices (`keeper scan`) and `keeper whatif` against the reference Perp v1 contracts on anvil.

The contracts decide: after a price move is applied on a snapshot (index set with the PriceFeed, the vAMM
traded to it, the price held over the 900 s TWAP window: the sustained model the keeper reports under),
each position is asked of the ClearingHouse with `eth_call liquidateWithSlippage` from a backstop LP
(succeeds iff liquidatable, and says whether the close is partial) and `getMarginRatio`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from web3.exceptions import ContractLogicError

from keeper.devtools.chain import revert_reason
from keeper.devtools.perp_env import BUY, SELL, PerpDeployment, to_wei_dec
from keeper.risk import perp_liq as pl
from keeper.types import Evaluation
from tests.harness import KEEPER_KEY, KEY_ENV, keeper_config, open_adapter, perp_protocol, write_config

pytestmark = [pytest.mark.chain]
E = 10**18
MMR = 625 * E // 10_000
NOT_MET = "Margin ratio not meet criteria"

# (market, side, margin, leverage) per trader index of the anvil accounts
BOOK = {
    1: [("ETH", BUY, 1000, 10), ("BTC", SELL, 1000, 9)],
    3: [("ETH", BUY, 1000, 7), ("BTC", SELL, 1000, 5)],
    6: [("ETH", BUY, 2000, 4), ("BTC", BUY, 800, 9)],
    7: [("ETH", SELL, 1000, 8), ("BTC", BUY, 1000, 6)],
    8: [("ETH", SELL, 1500, 3), ("BTC", BUY, 2000, 2)],
}
WHALE, BACKSTOP = 2, 5


def open_book(perp: PerpDeployment) -> list[tuple[str, str]]:
    """Open BOOK; returns (market name, trader) of every position."""
    a = perp.chain.accounts
    out = []
    for i, rows in BOOK.items():
        perp.fund_trader(a[i], sum(m for _, _, m, _ in rows) * E + E)
        for market, side, margin, lev in rows:
            perp.open_position(a[i], market, side, margin * E, lev * E)
            out.append((market, a[i]))
    perp.advance_twap(900)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, KEY_ENV: KEEPER_KEY},
    )


def config(perp: PerpDeployment, tmp_path: Path) -> Path:
    url = perp.chain.url
    return write_config(tmp_path / "keeper.toml", keeper_config(url, tmp_path / "state.sqlite", [perp_protocol(perp)]))


def move(perp: PerpDeployment, market: str, index: int, spot: int | None = None) -> None:
    """Index to `index`, the vAMM traded (whole USDC units) to within 1e-9 of `spot` (default: the index),
    then 900 s in one block: spot, TWAP and index all there (the sustained model)."""
    perp.set_oracle_price(market, index)
    perp.move_spot_price(market, index if spot is None else spot, perp.chain.accounts[WHALE])
    perp.advance_twap(900)


def contract_view(perp: PerpDeployment, market: str, trader: str) -> str:
    """The ClearingHouse's answer: "partial" / "full" (liquidateWithSlippage from a backstop LP succeeds) or
    "healthy" (it reverts because the margin ratio is not below maintenance)."""
    amm = perp.amm(market).address
    try:
        _quote, is_partial = perp.clearing_house.functions.liquidateWithSlippage(amm, trader, (0,)).call(
            {"from": perp.chain.accounts[BACKSTOP]}
        )
    except ContractLogicError as exc:
        assert revert_reason(exc) == NOT_MET, revert_reason(exc)  # nothing else may stop it
        assert perp.margin_ratio(market, trader) >= MMR
        return "healthy"
    assert not perp.amm(market).functions.isOverSpreadLimit().call() and perp.margin_ratio(market, trader) < MMR
    return "partial" if is_partial else "full"


def scaled(price: int, ppb: int) -> int:
    """price × (1 + ppb·1e-9)."""
    return price * (10**9 + ppb) // 10**9


# ---- liquidation price ------------------------------------------------------------------------------


def test_scan_reports_liquidation_prices_the_contracts_agree_with(perp, tmp_path):
    """A long and a short: at the reported liquidation price (index there, the vAMM there to 1e-8 on the
    liquidation side, held 900 s) the ClearingHouse liquidates it; 0.1 % short of it, it does not. The same
    for the partial → full boundary (liquidateWithSlippage's isPartialClose). scan also shows risk usage."""
    a = perp.chain.accounts
    perp.set_backstop(a[BACKSTOP])
    for trader, side in ((a[1], BUY), (a[7], SELL)):
        perp.fund_trader(trader, 1001 * E)
        perp.open_position(trader, "ETH", side, 1000 * E, 9 * E)
    perp.advance_twap(900)
    proc = cli("-c", str(config(perp, tmp_path)), "scan", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["account"]: r for r in json.loads(proc.stdout)["positions"] if r["market"] == "ETH"}
    table = cli("-c", str(config(perp, tmp_path)), "scan")
    assert "LIQ PRICE" in table.stdout and "FULL LIQ PRICE" in table.stdout and "RISK USAGE" in table.stdout
    for trader, long in ((a[1], True), (a[7], False)):
        row = rows[trader]
        liq, full = to_wei_dec(row["liq_price"]), to_wei_dec(row["full_liq_price"])
        usage = to_wei_dec(row["risk_usage"])
        assert usage == MMR * E // to_wei_dec(row["effective_mr"])  # maintenance ÷ effective margin ratio
        assert E // 2 < usage < E  # 9x: 6.25 % required of a ~11 % margin ratio
        assert (full < liq < 3000 * E) if long else (3000 * E < liq < full)
        beyond = -5 if long else 5  # ppb past the price, on the liquidation side
        safe = 1_000_000 if long else -1_000_000  # 0.1 % towards safety
        for price, want_at, want_before in ((liq, "partial", "healthy"), (full, "full", "partial")):
            with perp.chain.reverted():
                move(perp, "ETH", price, scaled(price, beyond))
                assert contract_view(perp, "ETH", trader) == want_at, (row, price)
            with perp.chain.reverted():
                move(perp, "ETH", scaled(price, safe))
                assert contract_view(perp, "ETH", trader) == want_before, (row, price)


# ---- what-if ----------------------------------------------------------------------------------------


SHOCKS = [("ETH=-5%", "BTC=+5%"), ("ETH=-9%", "BTC=+8%")]


async def _liquidation_prices(perp: PerpDeployment) -> dict[tuple[str, str], tuple[bool, pl.LiquidationPrices]]:
    """(market name, trader) → (long?, liquidation prices) of every indexed position, as scan computes them."""
    adapter, rpc, head = await open_adapter(perp.chain.url, perp_protocol(perp))
    try:
        out = {}
        for (market, trader), pos in adapter.positions.items():
            m = adapter.states[market]
            out[(perp.market_name(market), trader)] = (pos.size > 0, pl.liquidation_prices(pos, m, adapter.params))
        return out
    finally:
        await rpc.close()


@pytest.mark.parametrize("shock", SHOCKS, ids=["small", "large"])
def test_whatif_predicts_the_set_the_contracts_report(perp, tmp_path, shock):
    """`keeper whatif --json` for a shock, then the same shock applied on a snapshot: the positions (and
    kinds) it predicts liquidatable are exactly those the ClearingHouse liquidates."""
    import asyncio  # noqa: PLC0415

    a = perp.chain.accounts
    perp.set_backstop(a[BACKSTOP])
    book = open_book(perp)
    cfg = config(perp, tmp_path)
    proc = cli("-c", str(cfg), "whatif", *[x for s in shock for x in ("--shock", s)], "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] == "sustained" and doc["shocks"] == {s.split("=")[0]: s.split("=")[1].strip("%+") for s in shock}
    # bad debt is a full close only a backstop LP may make (our contract view asks as one)
    predicted = {(h["market"], h["account"]): h["status"].replace("bad-debt", "full") for h in doc["liquidatable"]}
    for h in doc["liquidatable"]:  # profit after the estimated gas of a typical liquidation at the head's fees
        assert Decimal(h["est_profit"]) == Decimal(h["reward"]) - Decimal(h["est_cost"]) and Decimal(h["est_cost"]) > 0
    factors = {s.split("=")[0]: 100 + int(s.split("=")[1].strip("%")) for s in shock}
    # the test means something only if no position sits on its boundary (the trade lands within 1e-9)
    prices = asyncio.run(_liquidation_prices(perp))
    for (market, _trader), (_long, lp) in prices.items():
        target = perp.oracle_price(market) * factors[market] // 100
        for p in (lp.liq_price, lp.full_liq_price):
            assert p is None or abs(p - target) * 1000 > target, (market, p, target)
    with perp.chain.reverted():
        for market, pct in factors.items():
            move(perp, market, perp.oracle_price(market) * pct // 100)
        onchain = {(m, t): contract_view(perp, m, t) for m, t in book}
    actual = {k: v for k, v in onchain.items() if v != "healthy"}
    assert predicted == actual
    assert 2 <= len(actual) < len(book)  # both markets move someone, not everyone
    kinds = set(actual.values())
    if shock == SHOCKS[1]:
        assert kinds == {"partial", "full"}


def test_whatif_map_table_csv_png_and_usage_errors(perp, tmp_path):
    import asyncio  # noqa: PLC0415

    open_book(perp)
    cfg = config(perp, tmp_path)
    out = tmp_path / "map"
    proc = cli("-c", str(cfg), "whatif", "--shock", "weth=-9%", "--steps", "-1%..-12%", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "liquidation map" in proc.stdout and "-12%" in proc.stdout
    for name in ("liquidation_map.csv", "liquidation_map_reward.png", "liquidation_map_notional.png"):
        assert (out / name).stat().st_size > 0 and str(out / name) in proc.stdout
    lines = (out / "liquidation_map.csv").read_text().splitlines()
    assert lines[0].startswith("step_pct,value_symbol,new_positions") and len(lines) == 1 + 13
    rows = [line.split(",") for line in lines[1:]]
    # per step, the ETH positions liquidatable are those whose liquidation price the step reaches (longs
    # only: ETH falls), as `scan` reports them; nothing comes back as ETH keeps falling
    prices = asyncio.run(_liquidation_prices(perp))
    index = perp.oracle_price("ETH")
    expected = []
    for r in rows:
        at = index * (100 + int(r[0])) // 100
        expected.append(
            sum(1 for (m, _t), (long, lp) in prices.items() if m == "ETH" and long and lp.liq_price and lp.liq_price >= at)
        )
    totals = [int(r[5]) for r in rows]
    assert totals == expected and totals == sorted(totals) and totals[0] == 0 and totals[-1] >= 2
    assert sum(int(r[2]) for r in rows) == totals[-1]
    assert all(Decimal(r[4]) > 0 and Decimal(r[3]) > 0 for r in rows if int(r[2]) > 0)
    # the --json map equals the CSV
    doc = json.loads(cli("-c", str(cfg), "whatif", "--steps=-1%..-12%", "--shock", "ETH=-9%", "--json", "--out", str(out)).stdout)
    assert [m["new_positions"] for m in doc["map"]] == [int(r[2]) for r in rows]
    # an unknown symbol is a usage error naming it; so is a bad percentage
    bad = cli("-c", str(cfg), "whatif", "--shock", "DOGE=-10%")
    assert bad.returncode == 2 and "DOGE" in bad.stderr and "BTC, ETH" in bad.stderr and not bad.stdout
    assert cli("-c", str(cfg), "whatif", "--shock", "ETH=-100%").returncode == 2
    assert perp.chain.nonce(a := perp.chain.accounts[9]) == 0, a  # the keeper's key never sent anything


async def _shocked(perp: PerpDeployment, factors: dict[str, int], twap: str) -> list[Evaluation]:
    adapter, rpc, head = await open_adapter(perp.chain.url, perp_protocol(perp))
    try:
        return await adapter.evaluate_shocked(head, {perp.amm(m).address: v for m, v in factors.items()}, twap=twap)
    finally:
        await rpc.close()


def test_instant_model_keeps_the_twap_so_fewer_positions_fall(perp):
    """--instant: the TWAP is still today's and getMarginRatio takes the better of the spot and TWAP PnL, so
    right after a crash fewer positions are liquidatable than once it has held for 15 minutes."""
    import asyncio  # noqa: PLC0415

    open_book(perp)
    liq = {"partial", "full", "bad-debt", "lockout"}
    sustained = asyncio.run(_shocked(perp, {"ETH": 91 * E // 100}, "sustained"))
    instant = asyncio.run(_shocked(perp, {"ETH": 91 * E // 100}, "instant"))
    assert {e.key for e in sustained} == {e.key for e in instant}
    n_sustained = sum(1 for e in sustained if e.status in liq)
    n_instant = sum(1 for e in instant if e.status in liq)
    assert n_sustained >= 2 and n_instant < n_sustained
    assert all(isinstance(e.fields["notional"], int) and e.fields["notional"] > 0 for e in sustained)
