"""The real `keeper` processes against anvil: the daemon through a scripted crash (then SIGTERM →
exit 0), a keeper on an anvil fork (origin unchanged), and the `scan` / `check` commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from keeper.devtools.anvil import AnvilProcess
from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import BUY, SELL, deploy_perp
from tests.conftest import start_anvil
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, Daemon, keeper_config, perp_protocol, start_engine, step, write_config

pytestmark = [pytest.mark.chain, pytest.mark.slow]
E = 10**18
MMR = 625 * E // 10_000


def open_book(perp, accounts: list[str]) -> list[tuple[str, str]]:
    """Positions of various leverage and side in both markets; returns (market, trader)."""
    book = [
        ("ETH", BUY, 300, 10),
        ("ETH", BUY, 500, 8),
        ("ETH", SELL, 400, 9),
        ("ETH", BUY, 2000, 2),
        ("BTC", BUY, 3000, 10),
        ("BTC", SELL, 1500, 5),
        ("BTC", BUY, 800, 9),
    ]
    out = []
    for (market, side, margin, lev), trader in zip(book, accounts, strict=False):
        perp.fund_trader(trader, margin * E + E)
        perp.open_position(trader, market, side, margin * E, lev * E)
        out.append((market, trader))
    return out


def crash(perp, whale: str) -> None:
    for market, price in (("ETH", 2870 * E), ("BTC", 57_400 * E)):
        perp.set_oracle_price(market, price)
        perp.move_spot_price(market, price, whale)
    perp.advance_twap(900)


def keeper_liquidations(perp, from_block: int) -> list[dict]:
    return [
        dict(x["args"])
        for x in perp.clearing_house.events.PositionLiquidated.get_logs(from_block=from_block)
        if x["args"]["liquidator"] == KEEPER
    ]


def test_daemon_liquidates_through_a_crash_and_exits_0_on_sigterm(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    book = open_book(perp, list(chain.accounts[1:8]))
    whale = chain.accounts[8]
    cfg = write_config(tmp_path / "keeper.toml", keeper_config(anvil.url, tmp_path / "state.sqlite", [perp_protocol(perp)]))
    daemon = Daemon(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("keeper_started"), what="keeper_started")
        start = chain.block_number()
        crash(perp, whale)
        under = [(m, t) for m, t in book if perp.position(m, t)["size"] != 0 and perp.margin_ratio(m, t) < MMR]

        def settled() -> bool:
            chain.mine()  # the daemon works on new blocks
            liquidated = {(x["amm"], x["trader"]) for x in keeper_liquidations(perp, start)}
            still_under = [(m, t) for m, t in book if perp.position(m, t)["size"] != 0 and perp.margin_ratio(m, t) < MMR]
            return not still_under and all((perp.amm(m).address, t) in liquidated for m, t in under)

        daemon.wait_for(settled, timeout=90, what="every under-margined position liquidated")
        assert under, "the scripted crash must put positions under water"
        on_chain = keeper_liquidations(perp, start)

        def all_receipts_read() -> bool:  # the daemon reads the last receipts on its next block
            chain.mine()
            return len(daemon.events("liquidation_landed")) >= len(on_chain)

        daemon.wait_for(all_receipts_read, timeout=60, what="a liquidation_landed line per on-chain liquidation")
        landed = daemon.events("liquidation_landed")
        assert len(landed) == len(on_chain) == len(keeper_liquidations(perp, start))
        ch = perp.clearing_house.events.PositionLiquidated
        hashes = {x["transactionHash"].to_0x_hex() for x in ch.get_logs(from_block=start)}
        assert {r["tx"] for r in landed} == hashes
        assert all(Decimal(r["reward"]) > 0 and r["account"] in {t for _, t in book} for r in landed)
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    assert daemon.events("keeper_stopped")
    assert not [r for r in daemon.events() if r.get("level") == "error"]


async def test_keeper_on_a_fork_leaves_the_origin_unchanged(tmp_path):
    origin = start_anvil()
    fork = None
    try:
        ochain = DevChain(origin.url)
        perp = deploy_perp(ochain)
        alice, whale = ochain.accounts[1], ochain.accounts[2]
        perp.fund_trader(alice, 310 * E)
        perp.open_position(alice, "ETH", BUY, 300 * E, 10 * E)
        perp.set_oracle_price("ETH", 2880 * E)
        perp.move_spot_price("ETH", 2880 * E, whale)
        perp.advance_twap(900)
        origin_block, origin_pos = ochain.block_number(), perp.position("ETH", alice)
        fork = AnvilProcess(fork_url=origin.url).start()
        fchain = DevChain(fork.url)
        engine, log = await start_engine(keeper_config(fork.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
        try:
            await step(engine)
            await step(engine)
        finally:
            await engine.close()
        fork_ch = fchain.at("perp/ClearingHouse", perp.clearing_house.address)
        liqs = fork_ch.events.PositionLiquidated.get_logs(from_block=origin_block + 1)
        assert liqs and liqs[0]["args"]["liquidator"] == KEEPER
        fork_size = fork_ch.functions.getPosition(perp.amm("ETH").address, alice).call()[0][0]
        assert 0 < fork_size < origin_pos["size"]
        assert len(log.events("liquidation_landed")) >= 1
        # The origin never saw any of it.
        assert ochain.block_number() == origin_block
        assert perp.position("ETH", alice) == origin_pos
        assert ochain.nonce(KEEPER) == 0
    finally:
        if fork:
            fork.stop()
        origin.stop()


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os  # noqa: PLC0415

    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, KEY_ENV: KEEPER_KEY, **(env or {})},
    )


def test_scan_json_and_table_report_every_status(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    a = chain.accounts
    # ETH: vAMM 11.7 % under the index → a 7x long is under water on market prices only (over-spread).
    perp.fund_trader(a[1], 1000 * E)
    perp.open_position(a[1], "ETH", BUY, 1000 * E, 7 * E)
    perp.move_spot_price("ETH", 2650 * E, a[8])
    # BTC at −4 %: 10x long → partial, 20x-ish (margin thin) → full, 2x long → healthy.
    for trader, margin, lev in ((a[2], 300, 10), (a[3], 1000, 10), (a[4], 2000, 2)):
        perp.fund_trader(trader, margin * E + E)
        perp.open_position(trader, "BTC", BUY, margin * E, lev * E)
    perp.set_oracle_price("BTC", 57_600 * E)
    perp.move_spot_price("BTC", 57_600 * E, a[8])
    perp.advance_twap(900)
    cfg = write_config(tmp_path / "keeper.toml", keeper_config(anvil.url, tmp_path / "s.sqlite", [perp_protocol(perp)]))
    proc = cli("-c", str(cfg), "scan", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["account"]: r for r in json.loads(proc.stdout)["positions"]}
    assert rows[a[1]]["status"] == "over-spread"
    assert rows[a[2]]["status"] == "partial" and rows[a[4]]["status"] == "healthy"
    for key in (
        "market",
        "side",
        "size",
        "spot_mr",
        "twap_mr",
        "oracle_mr",
        "effective_mr",
        "status",
        "est_reward",
        "est_cost",
        "est_profit",
    ):
        assert key in rows[a[2]]
    assert rows[a[2]]["side"] == "long" and rows[a[2]]["market"] == "BTC"
    assert float(rows[a[2]]["est_profit"]) == pytest.approx(float(rows[a[2]]["est_reward"]) - float(rows[a[2]]["est_cost"]))
    assert float(rows[a[2]]["effective_mr"]) < 0.0625
    # unprofitable with a high min_profit
    cfg2 = write_config(
        tmp_path / "k2.toml",
        keeper_config(anvil.url, tmp_path / "s2.sqlite", [perp_protocol(perp)], profit={"min_profit": "100000"}),
    )
    rows2 = {r["account"]: r for r in json.loads(cli("-c", str(cfg2), "scan", "--json").stdout)["positions"]}
    assert rows2[a[2]]["status"] == "unprofitable"
    table = cli("-c", str(cfg), "scan")
    assert table.returncode == 0 and "EFF MR" in table.stdout and "over-spread" in table.stdout
    assert chain.nonce(KEEPER) == 0  # scanning never sends


def test_check_passes_and_fails_clearly(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    good = write_config(tmp_path / "ok.toml", keeper_config(anvil.url, tmp_path / "s.sqlite", [perp_protocol(perp)]))
    proc = cli("-c", str(good), "check")
    assert proc.returncode == 0, proc.stderr
    assert "all checks passed" in proc.stdout and KEEPER in proc.stdout and KEEPER_KEY[2:] not in proc.stdout
    wrong_chain = write_config(
        tmp_path / "c.toml", keeper_config(anvil.url, tmp_path / "s.sqlite", [perp_protocol(perp)], chain={"chain_id": 1})
    )
    proc = cli("-c", str(wrong_chain), "check")
    assert proc.returncode == 1 and "chain id mismatch" in proc.stderr and "Traceback" not in proc.stderr
    no_code = write_config(
        tmp_path / "n.toml",
        keeper_config(anvil.url, tmp_path / "s.sqlite", [perp_protocol(perp, clearing_house="0x" + "12" * 20)]),
    )
    proc = cli("-c", str(no_code), "check")
    assert proc.returncode == 1 and "no contract code" in proc.stderr
    down = write_config(
        tmp_path / "d.toml",
        keeper_config(
            "http://127.0.0.1:9", tmp_path / "s.sqlite", [perp_protocol(perp)], chain={"request_timeout": 1, "max_retries": 1}
        ),
    )
    proc = cli("-c", str(down), "check")
    assert proc.returncode == 1 and "RPC unreachable" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("-c", str(good), "check", env={KEY_ENV: ""})
    assert proc.returncode == 2 and KEY_ENV in proc.stderr
