"""The watchlist's hysteresis state machine, risk-usage arithmetic and monitor (no chain)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.adapters.base import USAGE_CAP, usage
from keeper.config import ConfigError, parse_config
from keeper.metrics import Metrics
from keeper.monitors.watch import Levels, WatchMonitor
from keeper.types import Block, Evaluation, PositionKey, Status
from tests.harness import RecordingLog

E = 10**18
P = E // 100  # 1 %


def run(levels: Levels, values: list[int]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        t = levels.update(v)
        if t is not None:
            out.append(("crossed" if t.crossed else "cleared", t.level))
    return out


def test_crossing_80_then_90_then_back_below_fires_two_alerts_and_one_clear():
    lv = Levels([80 * P, 90 * P], 2 * P)
    got = run(lv, [50 * P, 81 * P, 85 * P, 91 * P, 95 * P, 70 * P])
    assert got == [("crossed", 80 * P), ("crossed", 90 * P), ("cleared", 80 * P)]
    assert not lv.active


def test_no_flapping_around_a_level():
    lv = Levels([80 * P, 90 * P], 2 * P)
    # wobbling around 80 % (never below 78 %) alerts once
    assert run(lv, [79 * P, 80 * P, 795 * P // 10, 801 * P // 10, 785 * P // 10, 80 * P, 781 * P // 10]) == [("crossed", 80 * P)]
    # 78 % exactly still holds; below it clears; reaching 80 % again is a new crossing
    assert run(lv, [78 * P, 78 * P - 1, 80 * P - 1, 80 * P]) == [("cleared", 80 * P), ("crossed", 80 * P)]


def test_a_jump_over_levels_is_one_alert_and_a_partial_drop_is_silent():
    lv = Levels([80 * P, 90 * P], 2 * P)
    assert run(lv, [95 * P]) == [("crossed", 90 * P)]
    assert lv.crossed == [80 * P, 90 * P]
    assert run(lv, [89 * P, 88 * P]) == []  # within the hysteresis of 90 %
    assert run(lv, [87 * P]) == [] and lv.crossed == [80 * P]  # down to the 80 % level, silently
    assert run(lv, [90 * P]) == [("crossed", 90 * P)]  # 90 % again: alerts again
    assert run(lv, [10 * P]) == [("cleared", 80 * P)]


@given(st.lists(st.integers(0, 120), min_size=1, max_size=60))
def test_alerts_and_clears_alternate_and_match_the_state(values):
    lv = Levels([80 * P, 90 * P], 2 * P)
    active = False
    for v in values:
        t = lv.update(v * P)
        if t is not None and not t.crossed:
            assert active
            active = False
        elif t is not None:
            active = True
        assert lv.active == active
        if v >= 80:
            assert lv.active
        if v < 78:
            assert not lv.active


@pytest.mark.parametrize("required", [E, 625 * E // 10_000, 1, 7])
def test_usage_is_above_100_percent_exactly_when_available_is_below_required(required):
    for available in range(max(1, required - 3), required + 4):
        assert (usage(required, available) > E) == (available < required)
    assert usage(required, required) == E
    assert usage(required, 0) == usage(required, -5) == USAGE_CAP


def test_usage_of_health():
    # LLAMMA: 1/(1 + health): health 25 % → 80 %, 0 → 100 %, −100 % → capped
    assert usage(E, E + 25 * P) == 80 * P
    assert usage(E, E) == E
    assert usage(E, E - E) == USAGE_CAP


# ---- the monitor over stub adapters -----------------------------------------------------------------


class Alerts:
    def __init__(self):
        self.sent: list[tuple[str, str, dict]] = []

    def alert(self, kind, message, *, dedupe="", **details):
        self.sent.append((kind, message, details))


class StubAdapter:
    kind = "llamma"
    name = "lend"

    def __init__(self):
        self.evals: dict[PositionKey, Evaluation] = {}
        self.asked: list[list[PositionKey]] = []

    def market_label(self, market):
        return "WETH"

    def risk_usage(self, e):
        h = e.fields.get("health_full")
        return usage(E, E + h) if isinstance(h, int) else None

    async def evaluate_positions(self, keys, head):
        self.asked.append(list(keys))
        return [self.evals[k] for k in keys if k in self.evals]


def watch_cfg(**w):
    base = {
        "chain": {"rpc_urls": ["http://127.0.0.1:1"], "chain_id": 31337},
        "pricing": {"source": "fixed", "value": "1"},
        "protocols": [{"kind": "llamma", "name": "lend", "controllers": ["0x" + "11" * 20]}],
        "watch": w,
    }
    return parse_config(base, environ={})


ALICE = "0x" + "aa" * 20
BOB = "0x" + "bb" * 20


def test_monitor_alerts_per_crossing_llamma_events_and_a_closed_position():
    cfg = watch_cfg(accounts=[ALICE.upper().replace("0X", "0x")], converted_share="0.5", health_below="0.05")
    alerts = Alerts()
    metrics = Metrics()
    mon = WatchMonitor(cfg.watch, alerts=alerts, metrics=metrics, log=RecordingLog())
    a = StubAdapter()
    alice, bob = (PositionKey("lend", "0x" + "11" * 20, x) for x in (cfg.watch.accounts[0], BOB))

    def block(n):
        return Block(n, "0x", "0x", 0, None, 0, 0)

    def step(n, health, soft=False, converted=0):
        for k in (alice, bob):
            a.evals[k] = Evaluation(
                k,
                Status.SOFT if soft else Status.HEALTHY,
                False,
                fields={"health_full": health, "soft": soft, "converted": converted},
            )
        asyncio.run(mon.observe(a, list(a.evals.values()), block(n)))

    seen = []

    def events_after(fn):
        n0 = len(alerts.sent)
        fn()
        return [d["watch_event"] for _, _, d in alerts.sent[n0:]]

    seen.append(events_after(lambda: step(1, 50 * P)))  # usage 66.7 %
    seen.append(events_after(lambda: step(2, 20 * P)))  # 83.3 %
    seen.append(events_after(lambda: step(3, 4 * P, soft=True, converted=60 * P)))  # 96.2 %, soft, converted, health ≤ 5 %
    seen.append(events_after(lambda: step(4, 5 * P, soft=True, converted=49 * P)))  # within every hysteresis
    seen.append(events_after(lambda: step(5, 40 * P, soft=False, converted=0)))  # 71.4 %: everything clears
    assert seen == [
        [],
        ["risk_usage_crossed"],
        ["risk_usage_crossed", "soft_liquidation_entered", "converted_share_crossed", "health_below"],
        [],
        ["risk_usage_cleared", "soft_liquidation_left", "converted_share_cleared", "health_recovered"],
    ]
    assert all(d["account"] == alice.account and d["market"] == "WETH" for _, _, d in alerts.sent)
    assert all(k == "watch" for k, _, _ in alerts.sent)
    assert all(k == [alice] for k in a.asked)  # only the watched account is re-evaluated
    crossed = [d for _, _, d in alerts.sent if d["watch_event"] == "risk_usage_crossed"]
    assert [d["threshold"] for d in crossed] == [80 * P, 90 * P] and crossed[1]["usage"] == usage(E, E + 4 * P)
    text = metrics.render().decode()
    assert f'keeper_watch_risk_usage{{account="{alice.account}",market="WETH",protocol="lend"}}' in text
    assert "keeper_watch_health{" in text and BOB.lower() not in text.lower()

    # the position crosses again, then disappears (closed or liquidated): its alert is cleared, its gauges go
    n0 = len(alerts.sent)
    step(6, 10 * P)
    del a.evals[alice]
    asyncio.run(mon.observe(a, list(a.evals.values()), block(7)))
    assert [d["watch_event"] for _, _, d in alerts.sent[n0:]] == ["risk_usage_crossed", "position_gone"]
    assert "keeper_watch_risk_usage{" not in metrics.render().decode()


@pytest.mark.parametrize(
    ("watch", "field"),
    [
        ({"accounts": ["0x1234"]}, "watch.accounts"),
        ({"accounts": "everyone"}, "watch.accounts"),
        ({"accounts": "all", "thresholds": [0.9, 0.8]}, "watch.thresholds"),
        ({"accounts": "all", "thresholds": [0.8, 1.2]}, "watch.thresholds[1]"),
        ({"accounts": "all", "hysteresis": 0.85}, "watch.hysteresis"),
        ({"accounts": "all", "converted_share": 2}, "watch.converted_share"),
        ({"accounts": "all", "health_below": -1}, "watch.health_below"),
        ({"accounts": "all", "treshold": 1}, "watch.treshold"),
    ],
)
def test_invalid_watch_settings_name_the_field(watch, field):
    with pytest.raises(ConfigError) as exc:
        watch_cfg(**watch)
    assert exc.value.field == field


def test_keeper_watch_exits_2_naming_the_field_or_argument(tmp_path: Path):
    cfg = tmp_path / "k.toml"
    base = (
        '[chain]\nrpc_urls = ["http://127.0.0.1:1"]\nchain_id = 31337\n[pricing]\nsource = "fixed"\nvalue = "1"\n'
        '[[protocols]]\nkind = "llamma"\nname = "lend"\ncontrollers = ["0x' + "11" * 20 + '"]\n'
    )

    def keeper(*args, extra=""):
        cfg.write_text(base + extra)
        return subprocess.run(
            [sys.executable, "-m", "keeper", "-c", str(cfg), "watch", *args], capture_output=True, text=True, timeout=60
        )

    r = keeper(extra='[watch]\nthresholds = [0.8, 0.7]\naccounts = "all"\n')
    assert r.returncode == 2 and "watch.thresholds" in r.stderr and "Traceback" not in r.stderr
    r = keeper()
    assert r.returncode == 2 and "watch.accounts: nothing to watch" in r.stderr
    r = keeper("--account", "0xnot-an-address")
    assert r.returncode == 2 and "--account" in r.stderr and "Traceback" not in r.stderr
