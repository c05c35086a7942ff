"""The insurance-fund monitor and the ADL ranking against the reference Perp v1 contracts on anvil
(docs/PROTOCOLS.md §I): a backstop liquidation's bad debt draws the fund past the trigger and the
webhook alert fires; top-ups bring it back, and it clears only at the stop level. `keeper scan --adl
--json` ranks positions by the §I.2 formulas, recomputed here from the contract's own views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keeper.devtools.perp_env import BUY, SELL, SPOT_PRICE, USDC_UNIT, PerpParams, deploy_perp
from keeper.monitors.insurance import ALERT_KIND, CLEAR_KIND
from keeper.risk import insurance as ins
from tests.harness import (
    KEEPER,
    KEEPER_KEY,
    KEY_ENV,
    WebhookReceiver,
    keeper_config,
    perp_protocol,
    settle_pool,
    start_engine,
    step,
    write_config,
)

pytestmark = pytest.mark.chain
E = 10**18


def metric(engine, name: str, **labels: str) -> float | None:
    text = engine.metrics.render().decode()
    found = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


def fund_balance(perp) -> int:
    """The InsuranceFund's USDC balance in 1e18 units."""
    return perp.usdc_balance(perp.insurance_fund.address) * USDC_UNIT


async def test_bad_debt_draws_the_fund_past_the_trigger_alerts_and_the_stop_level_clears(chain, tmp_path):
    perp = deploy_perp(chain, params=PerpParams(insurance_fund_balance=1_000 * E))
    acc = chain.accounts
    alice, carol, whale = acc[1], acc[2], acc[3]
    perp.fund_trader(alice, 1_010 * E)
    perp.open_position(alice, "ETH", BUY, margin=1_000 * E, leverage=10 * E)
    perp.fund_trader(carol, 1_010 * E)
    perp.open_position(carol, "ETH", SELL, margin=1_000 * E, leverage=3 * E)
    perp.set_oracle_price("ETH", 2_600 * E)
    perp.move_spot_price("ETH", 2_600 * E, whale)  # −13 %: alice's loss exceeds her margin
    perp.advance_twap(900)
    perp.set_backstop(KEEPER)  # only a backstop LP may realise bad debt (v2.3)
    peak = fund_balance(perp)
    assert peak == 1_000 * E

    with WebhookReceiver() as hook:
        cfg = keeper_config(
            chain.url,
            tmp_path / "k.sqlite",
            [perp_protocol(perp, insurance_monitor=True)],  # defaults: 8 h window, 30 % trigger, 25 % stop
            alerts={"webhook_url": hook.url, "repeat_after": 0},
        )
        engine, log = await start_engine(cfg)
        try:
            start = chain.block_number()
            await step(engine)  # samples the fund at its peak, then liquidates alice into bad debt
            await settle_pool(engine)
            (liq,) = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
            assert liq["args"]["trader"] == alice and liq["args"]["liquidator"] == KEEPER and liq["args"]["badDebt"] > 0
            (changed,) = [
                x for x in perp.clearing_house.events.PositionChanged.get_logs(from_block=start) if x["args"]["trader"] == alice
            ]
            drawn = peak - fund_balance(perp)
            assert drawn >= changed["args"]["badDebt"] > 0  # the fund paid the bad debt (and the keeper's fee)
            assert drawn * 100 >= 30 * peak  # past the 30 % trigger

            await step(engine)
            await engine.alerts.flush()
            assert hook.kinds() == [ALERT_KIND]
            d = hook.received[0]["json"]["details"]
            current = fund_balance(perp)
            assert d["state"] == "triggered" and d["protocol"] == "perp" and d["symbol"] == "USDC"
            assert (int(d["peak"]), int(d["balance"])) == (peak, current)
            assert int(d["drawdown"]) == ins.drawdown(peak, current) >= 30 * E // 100
            assert int(d["excess_over_trigger"]) == (peak - current) - 300 * E
            assert d["insurance_fund"] == perp.insurance_fund.address
            assert metric(engine, "keeper_insurance_fund_alert", protocol="perp", token="USDC") == 1
            assert metric(engine, "keeper_insurance_fund_peak", protocol="perp", token="USDC") == pytest.approx(1000)
            assert metric(engine, "keeper_insurance_fund_drawdown_ratio", protocol="perp", token="USDC") == pytest.approx(
                (peak - current) / peak
            )
            # carol, the profitable short, tops the ADL ranking in /metrics: (pnl/margin) × (notional/margin)
            n, pnl = perp.notional_and_pnl("ETH", carol, SPOT_PRICE)
            score = ins.adl_score(pnl, perp.position("ETH", carol)["margin"], n)
            assert score is not None and score.score > 0
            got = metric(engine, "keeper_adl_score", protocol="perp", market="ETH", side="short", rank="1", account=carol)
            assert got == pytest.approx(score.score / E)

            # a top-up to a 28 % drawdown: between the stop level and the trigger, the alert stays on
            perp.mint_usdc(perp.insurance_fund.address, peak * 72 // 100 - current)
            await step(engine)
            await engine.alerts.flush()
            assert hook.kinds() == [ALERT_KIND]
            assert metric(engine, "keeper_insurance_fund_alert", protocol="perp", token="USDC") == 1
            # back to exactly 25 % of the window's peak: the stop level clears it
            perp.mint_usdc(perp.insurance_fund.address, peak * 75 // 100 - fund_balance(perp))
            await step(engine)
            await engine.alerts.flush()
            assert hook.kinds() == [ALERT_KIND, CLEAR_KIND]
            cleared = hook.received[1]["json"]["details"]
            assert cleared["state"] == "cleared" and int(cleared["drawdown"]) == 25 * E // 100
            assert metric(engine, "keeper_insurance_fund_alert", protocol="perp", token="USDC") == 0
            assert log.events("insurance_fund_read_failed") == [] and log.events("monitor_failed") == []
        finally:
            await engine.close()


def test_scan_adl_json_ranks_positions_by_the_formula_from_the_contract_views(chain, tmp_path):
    perp = deploy_perp(chain)
    acc = chain.accounts
    book = [  # (trader, market, side, margin, leverage)
        (acc[1], "ETH", BUY, 500, 10),
        (acc[2], "ETH", BUY, 800, 2),
        (acc[3], "ETH", BUY, 300, 5),
        (acc[4], "ETH", SELL, 600, 8),
        (acc[5], "ETH", SELL, 1_000, 3),
        (acc[6], "BTC", BUY, 2_000, 4),
    ]
    for trader, market, side, margin, lev in book:
        perp.fund_trader(trader, (margin + 10) * E)
        perp.open_position(trader, market, side, margin * E, lev * E)
    perp.move_spot_price("ETH", 3_090 * E, acc[7])  # +3 %: longs in profit, shorts losing
    perp.advance_twap(900)

    cfg = write_config(tmp_path / "keeper.toml", keeper_config(chain.url, tmp_path / "s.sqlite", [perp_protocol(perp)]))
    env = {**os.environ, KEY_ENV: KEEPER_KEY}
    run = subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), "scan", "--adl", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    rows = [r for r in out["positions"] if r["protocol"] == "perp"]
    traders = {t for t, *_ in book} | {acc[7]}
    assert {r["account"] for r in rows} == traders

    # the expected ranking, from getPosition and getPositionNotionalAndUnrealizedPnl(SPOT) at the scanned block
    groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for r in rows:
        market = perp.market_name(r["market_address"])
        pos = perp.position(market, r["account"])
        n, pnl = perp.notional_and_pnl(market, r["account"], SPOT_PRICE)
        s = ins.adl_score(pnl, pos["margin"], n)
        assert s is not None
        assert Decimal(r["adl_score"]) * E == s.score
        assert Decimal(r["adl_pnl_pct"]) * E == s.pnl_ratio and Decimal(r["adl_leverage"]) * E == s.leverage
        # the seed's formula: PnL % × leverage when profitable, PnL % ÷ leverage when losing
        exact = (Decimal(pnl) / pos["margin"]) * (Decimal(n) / pos["margin"]) if pnl > 0 else Decimal(pnl) / n
        assert abs(Decimal(r["adl_score"]) - exact) < Decimal("1e-17")
        groups.setdefault((market, "long" if pos["size"] > 0 else "short"), []).append((r["account"], s.score))
    for (market, side), items in groups.items():
        expected = {a: rank for a, rank, _ in ins.adl_ranking(sorted(items))}
        got = {r["account"]: r["adl_rank"] for r in rows if perp.market_name(r["market_address"]) == market and r["side"] == side}
        assert got == expected, (market, side)
    by = {r["account"]: r for r in rows}
    # the 10x ETH long outranks the 5x and the 2x; the losing shorts rank by the smaller loss per notional
    assert [by[acc[i]]["adl_rank"] for i in (1, 3, 2)] == [1, 2, 3]
    assert Decimal(by[acc[1]]["adl_score"]) > Decimal(by[acc[3]]["adl_score"]) > Decimal(by[acc[2]]["adl_score"]) > 0
    assert all(Decimal(by[acc[i]]["adl_score"]) < 0 for i in (4, 5))

    table = subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), "scan", "--adl"], capture_output=True, text=True, env=env, timeout=120
    )
    assert table.returncode == 0, table.stderr
    assert "[perp] ADL ranking" in table.stdout and "Perp v1 has no ADL of its own" in table.stdout
    line = next(ln for ln in table.stdout.splitlines() if acc[1] in ln)
    assert line.split()[:3] == ["ETH", "long", "1"]
    assert chain.nonce(KEEPER) == 0  # scanning never sends
