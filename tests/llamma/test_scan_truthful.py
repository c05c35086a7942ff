"""`keeper scan` tells what `keeper run` would do in this block, for this keeper: it evaluates as the
keeper's address with its real balance and allowance, through the daemon's own execution policy."""

from __future__ import annotations

import os

import pytest

from keeper.config import parse_config
from keeper.daemon import ReadOnlyKeeper
from keeper.risk.profit import gas_cost_in_quote
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, keeper_config, start_engine, step
from tests.llamma.conftest import make_fully_converted_rekt, make_partly_converted_rekt

pytestmark = pytest.mark.chain
E = 10**18


def config(m, tmp_path) -> dict:
    protocol = {"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0}
    return keeper_config(m.chain.url, tmp_path / "k.sqlite", [protocol])


async def scan_rows(cfg: dict) -> dict[str, dict]:
    os.environ[KEY_ENV] = KEEPER_KEY
    keeper = await ReadOnlyKeeper.open(parse_config(cfg, environ={}))
    try:
        assert keeper.keeper_address == KEEPER
        return {r["account"]: r for r in await keeper.scan()}
    finally:
        await keeper.close()


async def dry_run_lines(cfg: dict) -> list[dict]:
    """The daemon's sends in the same block, in order (dry run: logged, not sent)."""
    daemon, log = await start_engine(cfg, dry_run=True)
    try:
        await step(daemon)
    finally:
        await daemon.close()
    return log.events("dry_run_would_send")


async def dry_run_decisions(cfg: dict) -> dict[str, dict]:
    """The daemon's liquidation decision per account in the same block."""
    return {r["account"]: r for r in await dry_run_lines(cfg) if r["kind"] != "approval"}


@pytest.mark.parametrize("name", ["m2-8dec", "v3-8dec"])
async def test_scan_of_a_zero_pay_loan_matches_the_daemons_decision(name, deployments, fresh, accounts, tmp_path):
    """Before: scan evaluated as 0x0…0 and showed `simulation-reverted` (collateral to the zero address)."""
    m = deployments[name]
    alice = accounts["alice"]
    make_fully_converted_rekt(m, alice, accounts["arb"])
    assert m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER}) == 0
    cfg = config(m, tmp_path)
    block = m.chain.block_number()
    row = (await scan_rows(cfg))[alice]
    decided = (await dry_run_decisions(cfg))[alice]
    assert m.chain.block_number() == block  # both looked at the same block
    assert row["status"] == "full" and row["action"] == decided["kind"] == "full"
    assert row["est_reward"] == decided["expected_reward"] > 0
    assert row["est_cost"] == decided["est_cost"] and row["gas"] == decided["gas"]
    assert row["min_profit"] == decided["min_profit"] == 0


async def test_scan_shows_needs_approval_with_the_approval_priced(deployments, fresh, accounts, tmp_path):
    """Before: `unaffordable … budget 0` (the zero address's balance) for a keeper holding stablecoin."""
    m = deployments["v3-8dec"]
    alice = accounts["alice"]
    make_partly_converted_rekt(m, alice, accounts["arb"])
    pay = m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER})
    assert pay > 0
    m.fund_stablecoin(KEEPER, pay * 3)
    assert m.stablecoin.functions.allowance(KEEPER, m.controller.address).call() == 0
    cfg = config(m, tmp_path)
    row = (await scan_rows(cfg))[alice]
    approval, decided = [r for r in await dry_run_lines(cfg) if r["account"] == alice]
    # the approval goes out right before the liquidation, at the same head, and its gas is priced in
    assert approval["kind"] == "approval" and decided["kind"] == "full"
    assert approval["sequence"] + 1 == decided["sequence"]
    assert row["status"] == "needs-approval" and row["action"] == "full"
    assert 21_000 < approval["gas"] < 100_000
    assert row["gas"] == decided["gas"] > approval["gas"] and row["est_cost"] == decided["est_cost"]
    assert row["est_cost"] == gas_cost_in_quote(row["gas"], decided["fee_per_gas"], decided["native_price"])
