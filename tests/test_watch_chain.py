"""The watchlist on the reference Perp v1 contracts: a watched position's risk usage crosses 80 % and 90 % as
the price moves and the webhook receives one alert per crossing and one clear; `keeper watch --json` without
any key shows the exact usage; a monitor-only keeper (in-process and `keeper run --monitor-only`) sends nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from keeper.adapters.base import usage
from keeper.config import parse_config
from keeper.daemon import Daemon as KeeperDaemon
from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import deploy_llamma
from keeper.devtools.perp_env import BUY, PerpDeployment, deploy_perp
from tests.conftest import start_anvil
from tests.harness import (
    KEEPER,
    Daemon,
    RecordingLog,
    WebhookReceiver,
    keeper_config,
    perp_protocol,
    settle_pool,
    step,
    write_config,
)

pytestmark = [pytest.mark.chain]
E = 10**18
MMR = 625 * E // 10_000
NO_KEY_ENV = "KEEPER_TEST_WATCH_ABSENT_KEY"  # never set: these keepers have no key at all


class World:
    """The perp reference deployment with one watched 10x ETH long (usage 62.5 % at open)."""

    def __init__(self, url: str):
        self.chain = DevChain(url)
        self.perp: PerpDeployment = deploy_perp(self.chain)
        acc = self.chain.accounts
        self.trader, self.whale = acc[1], acc[8]
        self.perp.fund_trader(self.trader, 301 * E)
        self.perp.open_position(self.trader, "ETH", BUY, 300 * E, 10 * E)

    def move(self, price: int) -> int:
        """ETH index, vAMM and TWAP at `price`; returns the position's usage from the on-chain margin ratio."""
        self.perp.set_oracle_price("ETH", price * E)
        self.perp.move_spot_price("ETH", price * E, self.whale)
        self.perp.advance_twap(900)
        return self.usage()

    def usage(self) -> int:
        mr = self.perp.margin_ratio("ETH", self.trader)
        return MMR * E // mr


@pytest.fixture(scope="module")
def world():
    node = start_anvil()
    try:
        yield World(node.url)
    finally:
        node.stop()


def config(w: World, state, **over) -> dict:
    over.setdefault("key", {"private_key_env": NO_KEY_ENV, "address": KEEPER})
    watch = {"accounts": [w.trader], "thresholds": ["0.8", "0.9"], "hysteresis": "0.02"}
    return keeper_config(w.chain.url, state, [perp_protocol(w.perp)], watch=watch, **over)


async def test_usage_crossing_80_and_90_alerts_once_each_clears_once_and_monitor_only_sends_nothing(world, tmp_path):
    w = world
    assert NO_KEY_ENV not in os.environ
    nonce0 = w.chain.nonce(KEEPER)
    with w.chain.reverted(), WebhookReceiver() as hook:
        cfg = parse_config(config(w, tmp_path / "state.sqlite", alerts={"webhook_url": hook.url}), environ={})
        log = RecordingLog()
        engine = await KeeperDaemon.open(cfg, monitor_only=True, log=log)
        try:
            assert [m.name for m in engine.pipeline.monitors] == ["watch"] and engine.txs is None

            async def at(price: int) -> tuple[int, list[dict]]:
                usage = w.move(price)
                n0 = len(hook.received)
                await step(engine)
                await engine.alerts.flush()
                return usage, [r["json"] for r in hook.received[n0:]]

            steps = [await at(p) for p in (2915, 2920, 2895, 2900, 2930, 2960)]
            usages = [u for u, _ in steps]
            # the scripted prices land where they should: 85 %, 83 %, 93 %, 91 %, 79.8 % (held), 71 %
            assert 80 * E // 100 <= usages[0] < usages[1] + 3 * E // 100 < 93 * E // 100 and usages[1] >= 80 * E // 100
            assert usages[2] >= 90 * E // 100 and usages[3] >= 88 * E // 100
            assert 78 * E // 100 <= usages[4] < 80 * E // 100 and usages[5] < 78 * E // 100
            alerts = [a for _, got in steps for a in got]
            assert [a["details"]["watch_event"] for a in alerts] == [
                "risk_usage_crossed",
                "risk_usage_crossed",
                "risk_usage_cleared",
            ]
            assert all(a["kind"] == "watch" and a["details"]["account"] == w.trader for a in alerts)
            assert [len(got) for _, got in steps] == [1, 0, 1, 0, 0, 1]
            # exact: the alert carries the usage of the on-chain getMarginRatio at that block
            assert int(alerts[0]["details"]["usage"]) == usages[0] and int(alerts[1]["details"]["usage"]) == usages[2]
            assert [Decimal(a["details"]["threshold"]) / E for a in alerts[:2]] == [Decimal("0.8"), Decimal("0.9")]
            assert "80.00%" in alerts[0]["message"] and "90.00%" in alerts[1]["message"]
            metrics = engine.metrics.render().decode()
            assert f'keeper_watch_risk_usage{{account="{w.trader}",market="ETH",protocol="perp"}}' in metrics
            assert 'keeper_watch_alerts_total{event="risk_usage_crossed"} 2.0' in metrics

            # liquidatable now: a monitor-only keeper alerts and sends nothing
            usage, got = await at(2880)
            assert usage > E and [a["details"]["watch_event"] for a in got] == ["risk_usage_crossed"]
            for _ in range(3):
                await step(engine)
            await settle_pool(engine)
            assert w.perp.position("ETH", w.trader)["size"] != 0
            assert w.chain.nonce(KEEPER) == nonce0
            assert not log.events("liquidation_sent") and not log.events("candidate_dropped")
        finally:
            await engine.close()


def test_keeper_watch_json_without_a_key_and_run_monitor_only(world, tmp_path):
    w = world
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER")}
    with w.chain.reverted():
        usage = w.move(2905)
        path = write_config(tmp_path / "keeper.toml", config(w, tmp_path / "state.sqlite", key={"private_key_env": NO_KEY_ENV}))
        r = subprocess.run(
            [sys.executable, "-m", "keeper", "-c", str(path), "watch", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        (row,) = doc["positions"]
        assert row["account"] == w.trader and row["market"] == "ETH" and row["status"] == "healthy"
        assert Decimal(row["risk_usage"]) * E == usage  # exact, = MMR / getMarginRatio
        assert row["thresholds_crossed"] == (["0.8", "0.9"] if usage >= 9 * E // 10 else ["0.8"])
        assert doc["accounts_without_positions"] == []
        table = subprocess.run(
            [sys.executable, "-m", "keeper", "-c", str(path), "watch"], capture_output=True, text=True, env=env, timeout=120
        )
        assert table.returncode == 0 and w.trader in table.stdout and "usage ≥ 80%" in table.stdout

        # `keeper run --monitor-only`, no key anywhere: the position is liquidatable and stays so
        assert w.move(2880) > E
        nonce0 = w.chain.nonce(KEEPER)
        daemon = Daemon(path, tmp_path / "daemon.log", env=env, args=("--monitor-only",))
        daemon.env.pop("KEEPER_TEST_PRIVATE_KEY", None)
        daemon.start()
        try:
            daemon.wait_for(lambda: daemon.events("keeper_started"), what="keeper_started")
            started = daemon.events("keeper_started")[0]
            assert started["monitor_only"] is True and started["monitors"] == ["watch"]

            def alerted() -> bool:
                w.chain.mine()
                return any(e.get("kind") == "watch" for e in daemon.events("alert"))

            daemon.wait_for(alerted, what="the watch alert")
            for _ in range(3):
                w.chain.mine()
        finally:
            code = daemon.stop(signal.SIGTERM)
        assert code == 0
        assert w.perp.position("ETH", w.trader)["size"] != 0 and w.chain.nonce(KEEPER) == nonce0
        assert not daemon.events("liquidation_sent")


async def test_llamma_usage_is_exact_and_soft_liquidation_and_conversion_alert_and_clear(tmp_path):
    node = start_anvil()
    try:
        chain = DevChain(node.url)
        m = deploy_llamma(chain, variant="m2")
        user, arb = chain.accounts[1], chain.accounts[7]
        col = m.units(10)
        m.create_loan(user, col, m.max_borrowable(col, 4) * 95 // 100, 4)  # full health ≈ 10 %: usage ≈ 91 %
        protocol = {"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0}
        with WebhookReceiver() as hook:
            cfg = keeper_config(
                chain.url,
                tmp_path / "state.sqlite",
                [protocol],
                key={"private_key_env": NO_KEY_ENV},
                watch={"accounts": [user], "converted_share": "0.25"},
                alerts={"webhook_url": hook.url},
            )
            engine = await KeeperDaemon.open(parse_config(cfg, environ={}), monitor_only=True, log=RecordingLog())
            try:

                async def at(percent: int | None) -> list[dict]:
                    if percent is not None:
                        m.lower_price_in_steps(3000 * E * percent // 100, 1, arb)
                    n0 = len(hook.received)
                    await step(engine)
                    await engine.alerts.flush()
                    return [r["json"]["details"] for r in hook.received[n0:]]

                first = await at(None)
                assert [d["watch_event"] for d in first] == ["risk_usage_crossed"] and int(first[0]["threshold"]) == 9 * E // 10
                assert int(first[0]["usage"]) == usage(E, E + m.health(user, True))  # 1/(1 + health), exact
                assert [d["watch_event"] for d in await at(94)] == ["soft_liquidation_entered"]
                assert m.user_bands(user)[0] <= m.amm.functions.active_band().call()
                assert [d["watch_event"] for d in await at(92)] == ["converted_share_crossed"]
                assert all(r["json"]["details"]["account"] == user for r in hook.received)
                assert 'keeper_watch_health{account="' + user in engine.metrics.render().decode()
                back = [d["watch_event"] for d in await at(100)]
                assert sorted(back) == ["converted_share_cleared", "soft_liquidation_left"]
            finally:
                await engine.close()
    finally:
        node.stop()
