"""Issue 7's safety promises against a real anvil: read-only tools cannot send or write, a reorg is
seen across skipped heads, `check` prints its whole table, a second keeper on one state file is
refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import BUY, deploy_perp
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, Daemon, keeper_config, perp_protocol, start_engine, step, write_config

pytestmark = pytest.mark.chain
E = 10**18


def cli(*args: str, env: dict | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full = {**os.environ, KEY_ENV: KEEPER_KEY, **(env or {})}
    for name in drop:
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=120, env=full)


def liquidatable_perp(chain: DevChain):
    perp = deploy_perp(chain)
    trader = chain.accounts[1]
    price = perp.oracle_price("ETH")
    perp.fund_trader(trader, 1001 * E)
    perp.open_position(trader, "ETH", BUY, 1000 * E, 10 * E)
    perp.set_oracle_price("ETH", price * 92 // 100)
    perp.move_spot_price("ETH", price * 92 // 100, chain.accounts[8])
    perp.advance_twap(900)
    return perp, trader


def tree(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `folder` with its size, mtime (ns) and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


async def test_a_reorg_is_seen_when_the_keeper_next_sees_a_later_head(anvil, tmp_path):
    """Block N (bob's position) is replaced while the keeper next sees N+3: it walks back to the
    common ancestor N−1 and rewinds its index (before: only head−1 was compared, the reorg was missed)."""
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    bob = chain.accounts[6]
    perp.fund_trader(bob, 101 * E)
    engine, log = await start_engine(keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
    adapter = engine.adapters[0]
    try:
        await step(engine)
        perp.open_position(bob, "BTC", BUY, 100 * E, 2 * E)  # block N
        n = chain.block_number()
        await step(engine)
        assert (perp.amm("BTC").address, bob) in adapter.positions
        chain.rpc("anvil_reorg", [1, []])  # N replaced by an empty block
        chain.mine(3)
        assert chain.block_number() == n + 3
        await step(engine)  # the keeper's next head is N+3
    finally:
        await engine.close()
    (reorg,) = log.events("reorg_detected")
    assert reorg["common_ancestor"] == n - 1 and reorg["block"] == n + 3 and reorg["depth"] == 1
    assert (perp.amm("BTC").address, bob) not in adapter.positions
    assert engine.metrics.registry.get_sample_value("keeper_reorgs_total") == 1


async def test_skipped_heads_without_a_reorg_rewind_nothing(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    engine, log = await start_engine(keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
    try:
        await step(engine)
        chain.mine(5)
        await step(engine)
    finally:
        await engine.close()
    assert not log.events("reorg_detected") and not log.events("history_replaced")


async def test_dry_run_with_a_pending_journalled_transaction_sends_nothing(anvil, tmp_path):
    """A live keeper sent a liquidation that the node then lost; a dry run on the same state file,
    through a base-fee spike that would make the live keeper replace it, sends nothing and writes nothing."""
    chain = DevChain(anvil.url)
    perp, _trader = liquidatable_perp(chain)
    state = tmp_path / "state" / "k.sqlite"
    cfg = keeper_config(anvil.url, state, [perp_protocol(perp)], tx={"replace_after_blocks": 1})
    chain.set_automine(False)
    live, log = await start_engine(cfg)
    try:
        await step(live)
        (sent,) = log.events("liquidation_sent")
    finally:
        await live.close()
    chain.rpc("anvil_dropTransaction", [sent["tx"]])  # the node forgot it; the journal still has it pending
    assert chain.w3.eth.get_transaction_count(KEEPER, "pending") == 0
    before = tree(state.parent)
    dry, dlog = await start_engine(cfg, dry_run=True)
    try:
        for _ in range(4):
            chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(chain.w3.eth.get_block("latest").baseFeePerGas * 3)])
            chain.mine()
            await step(dry)
    finally:
        await dry.close()
    assert dry.txs is None
    assert chain.w3.eth.get_transaction_count(KEEPER, "pending") == 0  # nothing rebroadcast, replaced or cancelled
    assert int(chain.rpc("txpool_status")["pending"], 16) == 0
    assert dlog.events("dry_run_would_send")  # it did evaluate and decide
    assert tree(state.parent) == before  # the state file untouched


def test_check_and_scan_create_no_file_and_check_prints_every_row_before_failing(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, _trader = liquidatable_perp(chain)
    state_dir = tmp_path / "nothing-here"
    cfg = write_config(
        tmp_path / "k.toml",
        keeper_config(
            anvil.url,
            state_dir / "k.sqlite",
            [perp_protocol(perp)],
            key={"private_key_env": KEY_ENV, "address": KEEPER},
            alerts={"min_balance_eth": "1000000"},
        ),
    )
    listing = sorted(p.name for p in tmp_path.iterdir())
    scan = cli("-c", str(cfg), "scan", "--json")
    assert scan.returncode == 0, scan.stderr
    check = cli("-c", str(cfg), "check")
    assert check.returncode == 1, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert any(line.startswith("ok") and "key" in line and KEEPER in line for line in lines)
    assert any(line.startswith("FAIL") and "native balance" in line for line in lines)  # the floor is 1M ETH
    assert any(line.startswith("ok") and "chain id" in line for line in lines)
    assert any(line.startswith("ok") and "code at" in line for line in lines)
    assert lines[-1] == "some checks failed" and "native balance" in check.stderr
    no_key = cli("-c", str(cfg), "check", drop=(KEY_ENV,))  # the key cannot be loaded: a configuration error, exit 2
    assert no_key.returncode == 2 and "FAIL  key" in no_key.stdout and "chain id" in no_key.stdout  # the table goes on
    assert not state_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == listing


def test_scan_evaluates_as_the_keeper_and_shows_what_the_daemon_would_do(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp, trader = liquidatable_perp(chain)
    cfg = write_config(tmp_path / "k.toml", keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
    import json  # noqa: PLC0415

    out = json.loads(cli("-c", str(cfg), "scan", "--json").stdout)
    assert out["keeper"] == KEEPER
    (row,) = [r for r in out["positions"] if r["account"] == trader]
    assert row["status"] in ("partial", "full") and row["action"] == row["status"]
    assert isinstance(row["est_reward"], str) and isinstance(row["est_cost"], str) and row["min_profit"] == "0"
    assert (
        row["margin"] == "1000" and isinstance(row["quote"], str) and isinstance(row["margin_ratio"], str)
    )  # token units, exact
    assert out["positions"][0]["account"] == trader  # the liquidatable position first


def test_a_second_keeper_on_the_same_state_file_exits_2_naming_the_holder(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    cfg = write_config(tmp_path / "k.toml", keeper_config(anvil.url, tmp_path / "k.sqlite", [perp_protocol(perp)]))
    first = Daemon(cfg, tmp_path / "first.log").start()
    try:
        first.wait_for(lambda: first.events("keeper_started"), what="the first keeper to start")
        second = cli("-c", str(cfg), "run")
    finally:
        assert first.stop() == 0
    assert second.returncode == 2, second.stderr
    assert "state.path" in second.stderr and str(first.proc.pid) in second.stderr
