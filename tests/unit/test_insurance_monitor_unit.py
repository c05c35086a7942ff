"""The insurance monitor's bookkeeping without a chain: its config fields and their validation, one
batched read every `insurance_every` blocks, a re-sampled head after a reorg, a new InsuranceFund
starting a new window, and the bounded ADL series in /metrics (docs/PROTOCOLS.md §I)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from eth_utils import to_checksum_address

from keeper.adapters.perp_v1 import MarketInfo, PerpMarketPolicy, PerpV1Adapter, PerpV1Config
from keeper.config import ConfigError, parse_config
from keeper.metrics import Metrics
from keeper.monitors import build_monitors
from keeper.monitors.insurance import ALERT_KIND, CLEAR_KIND, InsuranceMonitor, adl_rows
from keeper.multicall import CallFailed
from keeper.risk import perp as pm
from keeper.types import Block
from tests.harness import RecordingLog, keeper_config

E = 10**18
CH_ADDR = "0x" + "11" * 20
FUND = "0x" + "22" * 20
FUND2 = "0x" + "33" * 20
USDC = "0x" + "44" * 20
AMM = "0x" + "55" * 20


def cfg(**kw) -> dict:
    return keeper_config("http://127.0.0.1:1", ":memory:", [{"kind": "perp_v1", "name": "perp", "clearing_house": CH_ADDR, **kw}])


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_defaults_and_overrides():
    p = parse_config(cfg(), environ={}).protocols[0]
    assert (p.insurance_monitor, p.insurance_window_hours, p.insurance_trigger, p.insurance_stop) == (
        False,
        Decimal(8),
        Decimal("0.3"),
        Decimal("0.25"),
    )
    assert (p.insurance_every, p.adl_metrics_top) == (1, 20)
    p = parse_config(
        cfg(insurance_monitor=True, insurance_trigger="0.5", insurance_stop="0.5", insurance_window_hours="0.25"), environ={}
    )
    assert p.protocols[0].insurance_stop == p.protocols[0].insurance_trigger


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"insurance_stop": "0.4"}, "protocols[0]", "insurance_stop (0.4) exceeds insurance_trigger (0.30)"),
        ({"insurance_trigger": "0"}, "protocols[0]", "insurance_trigger must be > 0"),
        ({"insurance_trigger": "1.5"}, "protocols[0].insurance_trigger", ""),
        ({"insurance_window_hours": "0"}, "protocols[0].insurance_window_hours", "> 0"),
        ({"insurance_every": 0}, "protocols[0].insurance_every", ""),
        ({"adl_metrics_top": -1}, "protocols[0].adl_metrics_top", ""),
    ],
)
def test_bad_insurance_settings_name_the_field(over, field, words):
    with pytest.raises(ConfigError) as info:
        parse_config(cfg(**over), environ={})
    assert info.value.field == field and words in str(info.value)


def test_build_monitors_only_when_asked():
    metrics, log = Metrics(), RecordingLog()
    off = parse_config(cfg(), environ={})
    on = parse_config(cfg(insurance_monitor=True), environ={})
    assert build_monitors(off, rpc=None, adapters=[fake_adapter(off)], alerts=None, metrics=metrics, log=log) == []
    (m,) = build_monitors(on, rpc=None, adapters=[fake_adapter(on)], alerts=None, metrics=metrics, log=log)
    assert isinstance(m, InsuranceMonitor)


# ---- a PerpV1Adapter shell with a scripted batch reader ------------------------------------------------------------


class ScriptedCalls:
    """Answers ClearingHouse.insuranceFund() with `fund` and balanceOf with `balances[fund]` (6 decimals)."""

    def __init__(self) -> None:
        self.fund = FUND
        self.balances = {FUND: 1_000 * 10**6, FUND2: 10 * 10**6}
        self.batches: list[tuple[int, int]] = []  # (block, calls)

    async def run(self, calls, block="latest", *, sender=None):
        self.batches.append((block, len(calls)))
        out = []
        for c in calls:
            if c.to == CH_ADDR:
                out.append((self.fund,))
            elif c.to == USDC:
                holder = "0x" + c.data[-20:].hex()
                bal = next((v for k, v in self.balances.items() if k.lower() == holder), None)
                out.append(CallFailed(c, "no such holder") if bal is None else (bal,))
        return out


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def alert(self, kind: str, message: str, *, dedupe: str = "", **details) -> None:
        self.sent.append((kind, details))


def fake_adapter(config=None) -> PerpV1Adapter:
    config = config or parse_config(cfg(insurance_monitor=True), environ={})
    a = PerpV1Adapter.__new__(PerpV1Adapter)
    a.config = a.cfg = config.protocols[0]
    a.ch, a.insurance_fund = CH_ADDR, FUND.lower()
    a.ctx = SimpleNamespace(calls=ScriptedCalls())
    a.info = {AMM: MarketInfo(AMM, "ETH", USDC, 6, "USDC", 0, False, PerpMarketPolicy())}
    a.positions, a.states = {}, {}
    return a


def block(n: int, ts: int) -> Block:
    return Block(n, f"0x{n:064x}", f"0x{n - 1:064x}", ts, None, 0, 0)


def with_protocol(a: PerpV1Adapter, **kw) -> PerpV1Adapter:
    a.config = a.cfg = PerpV1Config(**{**a.cfg.model_dump(), **kw})
    return a


async def test_samples_every_n_blocks_in_one_batch_and_alerts_once_per_crossing():
    a = with_protocol(fake_adapter(), insurance_every=3)
    calls, alerts, metrics = a.ctx.calls, Alerts(), Metrics()
    mon = InsuranceMonitor(alerts=alerts, metrics=metrics, log=RecordingLog())
    for n in range(10, 17):
        if n == 13:
            calls.balances[FUND] = 690 * 10**6  # −31 %
        await mon.observe(a, [], block(n, 1_000 + 12 * n))
    assert calls.batches == [(10, 2), (13, 2), (16, 2)]  # insuranceFund() + balanceOf, every 3 blocks
    assert [k for k, _ in alerts.sent] == [ALERT_KIND]
    d = alerts.sent[0][1]
    assert (d["peak"], d["balance"], d["drawdown"]) == (1_000 * E, 690 * E, 31 * E // 100)
    assert d["insurance_fund"] == to_checksum_address(FUND) and d["token"] == USDC and d["excess_over_trigger"] == 10 * E
    assert metrics.insurance_alert.labels("perp", "USDC")._value.get() == 1
    calls.balances[FUND] = 760 * 10**6
    await mon.observe(a, [], block(19, 2_000))
    assert [k for k, _ in alerts.sent] == [ALERT_KIND, CLEAR_KIND]
    assert metrics.insurance_drawdown.labels("perp", "USDC")._value.get() == pytest.approx(0.24)


async def test_a_reorged_head_is_sampled_again_and_replaces_its_sample():
    a = fake_adapter()
    calls, alerts = a.ctx.calls, Alerts()
    mon = InsuranceMonitor(alerts=alerts, metrics=Metrics(), log=RecordingLog())
    await mon.observe(a, [], block(10, 100))
    calls.balances[FUND] = 2_000 * 10**6
    await mon.observe(a, [], block(11, 112))  # peak 2,000 in block 11 …
    calls.balances[FUND] = 1_300 * 10**6
    await mon.observe(a, [], block(11, 113))  # … which a reorg replaces: the peak is 1,300 again, no alert
    win = mon.watched["perp"].windows[USDC]
    assert (win.peak, win.current, [s.block for s in win.samples]) == (1_300 * E, 1_300 * E, [10, 11])
    assert alerts.sent == []


async def test_a_new_insurance_fund_starts_a_new_window():
    a = fake_adapter()
    calls, alerts, log = a.ctx.calls, Alerts(), RecordingLog()
    mon = InsuranceMonitor(alerts=alerts, metrics=Metrics(), log=log)
    await mon.observe(a, [], block(10, 100))
    calls.fund = FUND2  # setInsuranceFund: 10 USDC there, not a 99 % drawdown of the old fund
    await mon.observe(a, [], block(11, 112))
    assert alerts.sent == []
    (changed,) = log.events("insurance_fund_changed")
    assert changed["insurance_fund"] == FUND2 and mon.watched["perp"].windows[USDC].peak == 10 * E
    assert calls.batches == [(10, 2), (11, 2), (11, 2)]


async def test_adl_series_are_bounded_to_the_top_n_and_removed_when_they_leave_it():
    a = with_protocol(fake_adapter(), adl_metrics_top=2)
    q, b = 3_000_000 * E, 1_000 * E  # spot 3,000
    a.states = {AMM: pm.MarketState(q, b, 3_000 * E, 0, (pm.Snapshot(q, b, 0, 1),), 10_000)}
    traders = ["0x" + f"{i:040x}" for i in range(1, 5)]
    # longs opened at 2,700..3,000 on 1 ETH with margins 100..400: all in profit except the last
    for i, t in enumerate(traders):
        a.positions[(AMM, t)] = pm.Position(E, (i + 1) * 100 * E, (2_700 + 100 * i) * E, 0)
    metrics = Metrics()
    mon = InsuranceMonitor(alerts=None, metrics=metrics, log=RecordingLog())
    await mon.observe(a, [], block(10, 100))
    rows = adl_rows(a)
    assert [r.rank for r in rows] == [1, 2, 3, 4] and rows[0].account == traders[0]
    series = {s.labels["account"]: s.value for fam in metrics.adl_score.collect() for s in fam.samples}
    assert set(series) == {rows[0].account, rows[1].account}  # top 2 only
    assert series[rows[0].account] == pytest.approx(rows[0].score / E)
    del a.positions[(AMM, traders[0])]
    await mon.observe(a, [], block(11, 112))
    series = {s.labels["account"]: s.labels["rank"] for fam in metrics.adl_score.collect() for s in fam.samples}
    assert series == {traders[1]: "1", traders[2]: "2"}  # the closed position's series is gone
