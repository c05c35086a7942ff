"""`keeper backtest` and `keeper scan --block N` against a real anvil (the real CLI as a subprocess).

The world: the reference Perp v1 deployment with a book of positions, a crash, a RIVAL key liquidating
two positions by direct contract calls, then the keeper daemon (in-process engine, real signed
transactions) liquidating the rest. The backtest over that range must report every liquidation exactly as
the chain recorded it (block, tx, liquidator, effective gas price, reward), with the first block and the
blocks it stayed available as the contract itself says (eth_call `liquidate` at each past block), agree
with what the daemon logged it did, and its sweep rows must follow from its opportunity rows.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from web3.logs import DISCARD

from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import BUY, SELL, deploy_perp
from keeper.store import Store
from tests.conftest import start_anvil
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, keeper_config, perp_protocol, settle_pool, start_engine, step, write_config
from tests.perp.test_daemon_and_cli import MMR, crash, open_book

E = 10**18
# (market, side, margin, leverage): after an 8 % fall the 10x longs are closed in full, the 8x–9x ones partially
DEEP_BOOK = [("ETH", BUY, 300, 10), ("ETH", BUY, 500, 9), ("ETH", BUY, 400, 8), ("BTC", BUY, 3000, 10), ("BTC", BUY, 800, 9)]
DEEP_BOOK += [("ETH", SELL, 400, 5), ("BTC", BUY, 2000, 8)]


def deep_crash(perp, whale: str) -> None:
    for market, price in (("ETH", 2760 * E), ("BTC", 55_200 * E)):
        perp.set_oracle_price(market, price)
        perp.move_spot_price(market, price, whale)
    perp.advance_twap(900)


pytestmark = [pytest.mark.chain, pytest.mark.slow]
PRICE = 3000 * 10**18  # pricing.value in keeper_config: 3000 quote per ETH
TIP = 10**9  # gas.priority_fee_gwei default: 1 gwei
USDC_UNIT = 10**12  # 6-decimal USDC in 1e18 units


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: KEEPER_KEY}
    return subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), *args], capture_output=True, text=True, env=env, timeout=300
    )


def under_water(perp, book) -> list[tuple[str, str]]:
    return [(m, t) for m, t in book if perp.position(m, t)["size"] != 0 and perp.margin_ratio(m, t) < MMR]


async def keeper_takes_the_rest(cfg: dict, perp, book, chain: DevChain):
    engine, log = await start_engine(cfg)
    try:
        for _ in range(20):
            await step(engine)
            await settle_pool(engine)
            mine = [
                x
                for x in perp.clearing_house.events.PositionLiquidated.get_logs(from_block=0)
                if x["args"]["liquidator"] == KEEPER
            ]
            if not under_water(perp, book) and len(log.events("liquidation_landed")) == len(mine):
                break
            chain.mine()  # a new head for the daemon (its receipts are read on the next one)
    finally:
        await engine.close()
    return log


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    node = start_anvil(accounts=11)  # 1–7 traders, 8 the whale, 9 the keeper, 10 the rival
    try:
        chain = DevChain(node.url)
        perp = deploy_perp(chain)
        book = []
        for (market, side, margin, lev), trader in zip(DEEP_BOOK, chain.accounts[1:8], strict=True):
            perp.fund_trader(trader, margin * E + E)
            perp.open_position(trader, market, side, margin * E, lev * E)
            book.append((market, trader))
        rival, whale = chain.w3.eth.accounts[10], chain.accounts[8]
        start = chain.block_number()
        deep_crash(perp, whale)
        under = under_water(perp, book)
        assert len(under) >= 4, "the scripted crash must put several positions under water"
        for m, t in under[:2]:  # the rival takes two; the keeper the rest (and what the rival leaves)
            perp.liquidate(rival, m, t)
        tmp = tmp_path_factory.mktemp("backtest")
        log = asyncio.run(
            keeper_takes_the_rest(keeper_config(node.url, tmp / "state.sqlite", [perp_protocol(perp)]), perp, book, chain)
        )
        assert not under_water(perp, book)
        end = chain.block_number()
        cfg = write_config(tmp / "keeper.toml", keeper_config(node.url, tmp / "bt-state.sqlite", [perp_protocol(perp)]))
        out = tmp / "out"
        run = cli(
            cfg, "backtest", "--from", str(start), "--to", str(end), "--sweep", "min_profit=0,10,1000000", "--out", str(out)
        )
        assert run.returncode == 0, run.stderr
        yield SimpleNamespace(
            chain=chain,
            perp=perp,
            book=book,
            rival=rival,
            under=under,
            start=start,
            end=end,
            cfg=cfg,
            out=out,
            run=run,
            log=log,
            tmp=tmp,
        )
    finally:
        node.stop()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def dec18(text: str) -> int:
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 10**18 + int((frac or "0").ljust(18, "0")))


def chain_liquidations(w) -> list[dict]:
    """Every PositionLiquidated in the range with its receipt (the chain's own record)."""
    out = []
    w3 = w.chain.w3
    for x in w.perp.clearing_house.events.PositionLiquidated.get_logs(from_block=w.start, to_block=w.end):
        rc = w3.eth.get_transaction_receipt(x["transactionHash"])
        a = x["args"]
        out.append(
            {
                "account": a["trader"],
                "market": a["amm"],
                "block": x["blockNumber"],
                "tx": x["transactionHash"].to_0x_hex(),
                "liquidator": a["liquidator"],
                "effective_gas_price": rc["effectiveGasPrice"],
                "reward": a["liquidationFee"] // USDC_UNIT * USDC_UNIT,
            }
        )
    return out


def liquidatable_at(w, market: str, trader: str, block: int) -> bool:
    """The contract's own answer: does `liquidate(amm, trader)` from the keeper succeed on top of `block`?"""
    call = w.perp.clearing_house.functions.liquidate(market, trader)
    try:
        call.call({"from": KEEPER}, block_identifier=block)
    except Exception:  # noqa: BLE001 - any revert means not liquidatable there
        return False
    return True


def test_backtest_reports_every_liquidation_as_the_chain_recorded_it(world):
    w = world
    opps = rows(w.out / "opportunities.csv")
    on_chain = chain_liquidations(w)
    assert {x["liquidator"] for x in on_chain} == {w.rival, KEEPER}, "both the rival and the keeper liquidated"
    got = {
        (
            r["account"],
            r["market"],
            int(r["liquidated_block"]),
            r["tx"],
            r["liquidator"],
            int(r["effective_gas_price"]),
            dec18(r["actual_reward"]),
        )
        for r in opps
        if r["liquidated_block"]
    }
    want = {
        (x["account"], x["market"], x["block"], x["tx"], x["liquidator"], x["effective_gas_price"], x["reward"]) for x in on_chain
    }
    assert got == want
    assert len([r for r in opps if r["liquidated_block"]]) == len(on_chain)
    # first block and blocks available, from the contract: the run of past heads, back from the block
    # before the liquidation, at which liquidate() succeeds (not before the range, nor before the
    # position's previous liquidation)
    by_tx = {r["tx"]: r for r in opps if r["tx"]}
    previous: dict[tuple[str, str], int] = {}
    for x in sorted(on_chain, key=lambda x: x["block"]):
        k = (x["market"], x["account"])
        low = previous.get(k, w.start)
        b = x["block"] - 1
        first = None
        while b >= low and liquidatable_at(w, x["market"], x["account"], b):
            first, b = b, b - 1
        previous[k] = x["block"]
        r = by_tx[x["tx"]]
        assert (r["first_block"] or None) == (str(first) if first is not None else None), x
        if first is not None:
            assert int(r["blocks_available"]) == x["block"] - first
            assert r["kind"] in ("partial", "full")
    # nothing liquidatable is left open at the end; the rival's one liquidation is attributed to it
    assert not [r for r in opps if r["ended"] == "open"]
    assert {r["account"] for r in opps if r["liquidator"] == w.rival} == {t for _, t in w.under[:2]}
    assert {r["kind"] for r in opps} == {"partial", "full"}


def test_backtest_agrees_with_what_the_daemon_did(world):
    w = world
    opps = rows(w.out / "opportunities.csv")
    ours = {(r["tx"], r["account"], dec18(r["actual_reward"])) for r in opps if r["liquidator"] == KEEPER}
    landed = w.log.events("liquidation_landed")
    assert landed
    assert ours == {(r["tx"], r["account"], r["reward"]) for r in landed}
    assert all(r["liquidator_is_keeper"] == "yes" for r in opps if r["liquidator"] == KEEPER)
    # the daemon's journal (its state file): the same transactions, blocks, rewards and gas prices
    journal = Store(w.tmp / "state.sqlite")
    try:
        landed_rows = [t for t in journal.txs() if t.status == "mined" and not t.step]
    finally:
        journal.close()
    assert {(t.tx_hash, t.account, t.mined_block, t.reward, t.effective_gas_price) for t in landed_rows} == {
        (r["tx"], r["account"], int(r["liquidated_block"]), dec18(r["actual_reward"]), int(r["effective_gas_price"]))
        for r in opps
        if r["liquidator"] == KEEPER
    }
    # the keeper liquidated them after seeing them at an earlier head: the model takes them (min_profit 0)
    assert all(r["taken"] == "yes" for r in opps if r["liquidator"] == KEEPER)


def test_sweep_rows_follow_from_the_opportunities_at_each_blocks_fees(world):
    w = world
    w3 = w.chain.w3
    opps = rows(w.out / "opportunities.csv")
    sweep = {r["min_profit"]: r for r in rows(w.out / "sweep.csv")}
    assert set(sweep) == {"0", "10", "1000000"}
    in_time = [
        r for r in opps if r["first_block"] and (not r["liquidated_block"] or int(r["first_block"]) < int(r["liquidated_block"]))
    ]
    assert in_time
    simulated = [r for r in in_time if r["gas"]]  # the rest reverted in simulation: never taken
    costs = []
    for r in simulated:
        first = int(r["first_block"])
        assert int(r["base_fee"]) == w3.eth.get_block(first)["baseFeePerGas"]
        # the fee we would pay: the next block's base fee (the chain's own) + our tip
        fee = w3.eth.get_block(first + 1)["baseFeePerGas"] + TIP
        c = -(-int(r["gas"]) * fee * PRICE // 10**18)
        assert dec18(r["gas_cost"]) == c
        assert dec18(r["profit"]) == dec18(r["reward"]) - c
        costs.append((dec18(r["reward"]), c))
    for threshold in (0, 10):
        kept = [(rw, c) for rw, c in costs if rw - c >= threshold * 10**18]
        reward, cost = sum(rw for rw, _ in kept), sum(c for _, c in kept)
        row = sweep[str(threshold)]
        assert (int(row["opportunities"]), int(row["taken"])) == (len(opps), len(kept))
        assert (dec18(row["reward"]), dec18(row["gas_cost"]), dec18(row["profit"])) == (reward, cost, reward - cost)
        assert int(row["missed_by_threshold"]) == len(simulated) - len(kept)
        assert int(row["missed_late"]) == len([r for r in opps if not r["first_block"]])
    assert int(sweep["0"]["taken"]) > int(sweep["10"]["taken"]) > 0, "the scenario has opportunities on both sides of 10"
    huge = sweep["1000000"]
    assert (int(huge["taken"]), dec18(huge["profit"]), int(huge["missed_by_threshold"])) == (0, 0, len(simulated))
    for name in ("opportunities.csv", "sweep.csv", "profit_vs_threshold.png", "opportunities_over_time.png"):
        assert f"wrote {w.out / name}" in w.run.stdout
        assert (w.out / name).stat().st_size > 0


def test_backtest_rerun_reads_from_its_cache_and_bad_ranges_exit_2(world):
    w = world
    before = (w.out / "opportunities.csv").read_text()
    again = cli(
        w.cfg, "backtest", "--from", str(w.start), "--to", str(w.end), "--sweep", "min_profit=0,10,1000000", "--out", str(w.out)
    )
    assert again.returncode == 0, again.stderr
    assert "replayed 0 blocks" in again.stdout
    assert (w.out / "opportunities.csv").read_text() == before
    # a run that stopped half-way (the cache holds [start, mid]) resumes at mid + 1 and reports what a cold run does
    mid = (w.start + w.end) // 2
    half = cli(w.cfg, "backtest", "--from", str(w.start), "--to", str(mid), "--out", str(w.tmp / "resumed"))
    assert half.returncode == 0 and f"replayed {mid - w.start + 1} blocks" in half.stdout, half.stderr
    resumed = cli(w.cfg, "backtest", "--from", str(w.start), "--to", str(w.end), "--out", str(w.tmp / "resumed"))
    assert f"replayed {w.end - mid} blocks" in resumed.stdout, resumed.stderr
    cold = cli(w.cfg, "backtest", "--from", str(w.start), "--to", str(w.end), "--out", str(w.tmp / "cold"))
    assert f"replayed {w.end - w.start + 1} blocks" in cold.stdout
    assert (w.tmp / "resumed" / "opportunities.csv").read_text() == (w.tmp / "cold" / "opportunities.csv").read_text()
    assert (w.tmp / "cold" / "opportunities.csv").read_text() == before
    for args, option in (
        (("--from", "10", "--to", "5"), "--to"),
        (("--from", "-1", "--to", "5"), "--from"),
        (("--from", "1", "--to", str(w.end + 1000)), "--to"),
        (("--from", "1", "--to", "5", "--sweep", "gas=1"), "--sweep"),
    ):
        bad = cli(w.cfg, "backtest", *args, "--out", str(w.tmp / "bad"))
        assert bad.returncode == 2, (args, bad.stderr)
        assert bad.stderr.startswith(f"keeper: {option}") or f"{option} " in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_scan_at_a_past_block_shows_healthy_what_the_head_shows_liquidatable(anvil, tmp_path):
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain)
    book = open_book(perp, list(chain.accounts[1:7]))
    before = chain.block_number()
    crash(perp, chain.accounts[8])
    cfg = write_config(tmp_path / "keeper.toml", keeper_config(anvil.url, tmp_path / "state.sqlite", [perp_protocol(perp)]))
    head = json.loads(cli(cfg, "scan", "--json").stdout)
    past_run = cli(cfg, "scan", "--json", "--block", str(before))
    assert past_run.returncode == 0, past_run.stderr
    past = json.loads(past_run.stdout)
    assert (head["block"], past["block"]) == (chain.block_number(), before)
    now = {p["account"]: p["status"] for p in head["positions"]}
    then = {p["account"]: p["status"] for p in past["positions"]}
    # the whale's vAMM trades of the crash opened a position after `before`: indexed at the head only
    assert set(then) == {t for _, t in book}
    assert set(now) == {t for _, t in book} | {chain.accounts[8]}
    liquidatable = {a for a, s in now.items() if s != "healthy"}
    assert liquidatable == {t for _, t in under_water(perp, book)}
    assert {now[a] for a in liquidatable} & {"partial", "full"}, now
    assert liquidatable and all(then[a] == "healthy" for a in liquidatable)
    table = cli(cfg, "scan", "--block", str(before))
    assert table.returncode == 0 and table.stdout.startswith(f"block {before}:")
    assert not tmp_path.joinpath("state.sqlite").exists(), "a read-only tool creates no state file"
    beyond = cli(cfg, "scan", "--block", str(chain.block_number() + 100))
    assert beyond.returncode == 2 and beyond.stderr.startswith("keeper: --block:"), beyond.stderr


def test_backtest_attributes_a_llamma_liquidation(tmp_path):
    """LLAMMA: loans in soft liquidation, an oracle step down puts some below health 0, a rival liquidates
    one through the controller; the backtest attributes it from the controller's `Liquidate` event (reward:
    collateral at the AMM oracle price of that block less the haircut + stablecoin received − debt), and
    the first block of each opportunity is where `users_to_liquidate()` first lists the loan."""
    from keeper.devtools.llamma_env import deploy_llamma  # noqa: PLC0415

    node = start_anvil(accounts=30)
    try:
        chain = DevChain(node.url)
        accts = chain.w3.eth.accounts
        m = deploy_llamma(chain, variant="m2", collateral_decimals=18)
        users, arb, rival = list(accts[10:26]), accts[27], accts[28]
        for i, u in enumerate(users):
            n, col = 4 + i % 8, m.units(5 + i)
            m.create_loan(u, col, m.max_borrowable(col, n) * (80 + i) // 100, n)
        m.lower_price_in_steps(m.oracle_price() * 88 // 100, 6, arb)
        m.fund_stablecoin(KEEPER, m.usd(10**6))
        m.fund_stablecoin(rival, m.usd(10**6))
        m.approve_all(rival)
        start = chain.block_number()
        m.set_oracle_price(m.oracle_price() * 95 // 100)
        chain.mine()

        def utl(block: int | str = "latest") -> set[str]:
            return {r[0] for r in m.controller.functions.users_to_liquidate().call(block_identifier=block)}

        victims = sorted(utl())
        assert victims
        rc = chain.tx(m.controller.functions.liquidate(victims[0], 0), sender=rival)
        chain.mine(3)
        end = chain.block_number()
        protocol = {"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0, "collateral_haircut": "0.01"}
        cfg = write_config(tmp_path / "keeper.toml", keeper_config(node.url, tmp_path / "s.sqlite", [protocol]))
        run = cli(cfg, "backtest", "--from", str(start), "--to", str(end), "--out", str(tmp_path / "out"))
        assert run.returncode == 0, run.stderr
        opps = rows(tmp_path / "out" / "opportunities.csv")
        ev = m.controller.events.Liquidate().process_receipt(rc, errors=DISCARD)[0]["args"]
        blk = rc["blockNumber"]
        price = m.amm.functions.price_oracle().call(block_identifier=blk)
        value = ev["collateral_received"] * price // 10**18 * (10**18 - 10**16) // 10**18
        taken = [r for r in opps if r["liquidated_block"]]
        assert [(r["account"], int(r["liquidated_block"]), r["tx"], r["liquidator"]) for r in taken] == [
            (victims[0], blk, rc["transactionHash"].to_0x_hex(), rival)
        ]
        assert int(taken[0]["effective_gas_price"]) == rc["effectiveGasPrice"]
        assert dec18(taken[0]["actual_reward"]) == value + ev["stablecoin_received"] - ev["debt"]
        for r in opps:
            first = next(b for b in range(start, end + 1) if r["account"] in utl(b))
            assert int(r["first_block"]) == first
            last = int(r["liquidated_block"]) if r["liquidated_block"] else end + 1
            assert int(r["blocks_available"]) == last - first
        assert {r["account"] for r in opps} == set(victims)
        assert all(r["ended"] == "open" for r in opps if r["account"] != victims[0])
    finally:
        node.stop()
