"""The L1 part of the cost on an L2 (keeper/l2.py, chain.l2) against the reference oracles placed at the
real predeploy addresses on anvil (contracts/l2/*.vy, runtime code via anvil_setCode): detection by
eth_call probes, the L1 fee in the decision and in `keeper scan` exactly as the contract computes it, a
liquidation skipped when the L1 fee eats its profit (nonce unchanged) and sent when it does not, and on
Arbitrum a gas limit that carries the L1 gas. Real signed transactions, no mocked web3."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from keeper.config import parse_config
from keeper.daemon import ReadOnlyKeeper, run_checks
from keeper.devtools.compile import compile_contract
from keeper.devtools.perp_env import BUY
from keeper.gas import FeePolicy
from keeper.l2 import ARB_NODE_INTERFACE, OP_GAS_PRICE_ORACLE, L2DetectionError, detect_l2, placeholder_tx, unsigned_tx
from keeper.risk.profit import ceil_div
from keeper.rpc import RpcClient
from keeper.txs import CANCEL_GAS
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, keeper_config, perp_protocol, run_engine, start_engine, write_config

pytestmark = pytest.mark.chain
E = 10**18
GWEI = 10**9


def install(chain, name: str, address: str):
    """The reference contract's runtime code at `address` (no constructor runs), ownership claimed by admin."""
    chain.rpc("anvil_setCode", [address, compile_contract(name).bytecode_runtime])
    c = chain.at(name, address)
    chain.tx(c.functions.initialize())
    return c


def install_op(chain, l1_base_fee: int, *, fjord: bool = True, scalar: int = 10**6):
    oracle = install(chain, "l2/GasPriceOracle", OP_GAS_PRICE_ORACLE)
    chain.tx(oracle.functions.set_params(l1_base_fee, 0, scalar, 0))
    chain.tx(oracle.functions.set_fjord(fjord))
    return oracle


def install_arbitrum(chain, l1_base_fee_estimate: int, l2_base_fee: int, overhead: int = 140):
    ni = install(chain, "l2/NodeInterface", ARB_NODE_INTERFACE)
    chain.tx(ni.functions.set_params(l1_base_fee_estimate, l2_base_fee, overhead))
    return ni


def crash_alice(perp, accounts) -> None:
    """docs/PROTOCOLS.md §R.1: a 10x long ETH at 3,000, ETH to 2,880: a partial liquidation (~9.4 USDC)."""
    alice, whale = accounts["alice"], accounts["whale"]
    perp.fund_trader(alice, 310 * E)
    perp.open_position(alice, "ETH", BUY, margin=300 * E, leverage=10 * E)
    perp.set_oracle_price("ETH", 2880 * E)
    perp.move_spot_price("ETH", 2880 * E, whale)
    perp.advance_twap(900)


def config(perp, tmp_path, **over):
    # one liquidation per position per block: one transaction to look at
    return keeper_config(perp.chain.url, tmp_path / "k.sqlite", [perp_protocol(perp)], tx={"max_repeats_per_position": 0}, **over)


def sent_tx(perp, tx_hash: str) -> dict:
    return perp.chain.w3.eth.get_transaction(tx_hash)


async def test_auto_detection_picks_op_arbitrum_or_none_by_eth_call(perp):
    chain = perp.chain
    async with RpcClient([chain.url]) as rpc:
        assert (await detect_l2(rpc, "auto")).kind == "none"
        with pytest.raises(L2DetectionError):
            await detect_l2(rpc, "op")
        with pytest.raises(L2DetectionError):
            await detect_l2(rpc, "arbitrum")
        with chain.reverted():
            install_arbitrum(chain, GWEI, 10**8)
            assert (await detect_l2(rpc, "auto")).kind == "arbitrum"
            assert (await detect_l2(rpc, "none")).kind == "none"  # configured: nothing asked
        with chain.reverted():
            oracle = install_op(chain, GWEI, fjord=False)  # Ecotone: getL1Fee and l1BaseFee, no upper bound
            m = await detect_l2(rpc, "auto")
            assert (m.kind, m.upper_bound) == ("op", False)
            chain.tx(oracle.functions.set_fjord(True))
            m = await detect_l2(rpc, "auto")
            assert (m.kind, m.upper_bound, m.source) == ("op", True, "detected")
        assert (await detect_l2(rpc, "auto")).kind == "none"  # reverted: no code at the predeploys again


async def test_op_l1_fee_is_in_the_decision_scan_and_check_exactly_as_the_oracle_computes_it(perp, accounts, tmp_path):
    crash_alice(perp, accounts)
    oracle = install_op(perp.chain, 20 * GWEI)
    cfg = config(perp, tmp_path)
    os.environ[KEY_ENV] = KEEPER_KEY
    parsed = parse_config(cfg, environ={})
    rows = {name: (ok, detail) for name, ok, detail in await run_checks(parsed)}
    assert rows["L2 fee model"][0] and rows["L2 fee model"][1].startswith("op (detected)")
    assert "getL1FeeUpperBound" in rows["L2 fee model"][1]

    keeper = await ReadOnlyKeeper.open(parsed)
    try:
        (row,) = [r for r in await keeper.scan() if r["account"] == accounts["alice"]]
    finally:
        await keeper.close()
    none_keeper = await ReadOnlyKeeper.open(parse_config(config(perp, tmp_path, chain={"l2": "none"}), environ={}))
    try:
        (row_none,) = [r for r in await none_keeper.scan() if r["account"] == accounts["alice"]]
    finally:
        await none_keeper.close()
    assert "l1_fee_wei" not in row_none

    start, nonce0 = perp.chain.block_number(), perp.chain.nonce(KEEPER)
    _engine, log = await run_engine(cfg, 1)
    (started,) = log.events("keeper_started")
    assert started["l2"] == "op"
    (detected,) = log.events("l2_fee_model")
    assert detected["l2"] == "op" and detected["upper_bound"] is True
    (sent,) = log.events("liquidation_sent")
    assert perp.chain.nonce(KEEPER) == nonce0 + 1
    tx = sent_tx(perp, sent["tx"])
    # the keeper asked the oracle about the placeholder transaction of what it sent
    cap = FeePolicy(parsed.gas).cap_fee
    asked = placeholder_tx(31337, tx["to"], bytes(tx["input"]), tx["value"], max_fee=cap, max_gas=parsed.gas.max_gas_limit)
    expected = oracle.functions.getL1FeeUpperBound(len(asked)).call(block_identifier=start)
    assert sent["l1_fee_wei"] == expected > 0
    # ... which is never below what the oracle charges for the transaction actually signed
    real = unsigned_tx(
        31337,
        tx["to"],
        bytes(tx["input"]),
        tx["value"],
        nonce=tx["nonce"],
        max_fee=tx["maxFeePerGas"],
        tip=tx["maxPriorityFeePerGas"],
        gas=tx["gas"],
    )
    assert sent["l1_fee_wei"] >= oracle.functions.getL1FeeUpperBound(len(real)).call()
    assert sent["l1_fee_wei"] >= oracle.functions.getL1Fee(real).call()
    # est_cost = (L2 gas × fee per gas + the L1 fee) at the native price, rounded up once
    assert sent["est_cost"] == ceil_div((sent["gas"] * sent["fee_per_gas"] + sent["l1_fee_wei"]) * sent["native_price"], E)
    # the scan (same head, same oracle) shows the same L1 fee inside its est_cost
    assert row["l1_fee_wei"] == expected
    assert row["l1_fee"] == ceil_div(expected * sent["native_price"], E)
    assert abs((row["est_cost"] - row_none["est_cost"]) - expected * sent["native_price"] // E) <= 1
    (liq,) = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
    assert liq["args"]["liquidator"] == KEEPER


async def test_a_liquidation_the_l1_fee_makes_unprofitable_is_skipped_and_sent_when_it_is_small(perp, accounts, tmp_path):
    crash_alice(perp, accounts)
    oracle = install_op(perp.chain, GWEI)
    cfg = config(perp, tmp_path)
    _engine, dry = await run_engine(cfg, 1, dry_run=True)
    (would,) = dry.events("dry_run_would_send")
    reward, price, small = would["expected_reward"], would["native_price"], would["l1_fee_wei"]
    l2_cost = would["est_cost"] - ceil_div(small * price, E)
    assert reward - l2_cost > 0  # profitable on L2 gas alone
    # an L1 fee worth more than the whole reward: the same liquidation no longer pays
    factor = reward * E // (small * price) + 2
    perp.chain.tx(oracle.functions.set_params(GWEI * factor, 0, 10**6, 0))
    nonce0, start = perp.chain.nonce(KEEPER), perp.chain.block_number()
    _engine, log = await run_engine(cfg, 2)
    assert not log.events("liquidation_sent")
    assert perp.chain.nonce(KEEPER) == nonce0
    assert not perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
    skips = log.events("liquidation_skipped")
    assert skips and {s["reason"] for s in skips} == {"unprofitable"}
    assert skips[0]["l1_fee_wei"] >= small * factor > 0
    assert skips[0]["est_cost"] > skips[0]["expected_reward"]
    assert skips[0]["expected_reward"] - (skips[0]["est_cost"] - ceil_div(skips[0]["l1_fee_wei"] * price, E)) > 0
    # the L1 fee back to small: sent
    perp.chain.tx(oracle.functions.set_params(GWEI, 0, 10**6, 0))
    _engine, log = await run_engine(cfg, 1)
    (sent,) = log.events("liquidation_sent")
    assert sent["l1_fee_wei"] == small and perp.chain.nonce(KEEPER) == nonce0 + 1
    (liq,) = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
    assert liq["args"]["liquidator"] == KEEPER


async def test_arbitrum_gas_limit_carries_the_l1_gas(perp, accounts, tmp_path):
    crash_alice(perp, accounts)
    ni = install_arbitrum(perp.chain, 3 * GWEI, 10**8)
    cfg = config(perp, tmp_path)
    start = perp.chain.block_number()
    _engine, log = await run_engine(cfg, 1)
    assert log.events("l2_fee_model")[0]["l2"] == "arbitrum"
    (sent,) = log.events("liquidation_sent")
    tx = sent_tx(perp, sent["tx"])
    l1_gas, base_fee, _ = ni.functions.gasEstimateL1Component(tx["to"], False, bytes(tx["input"])).call()
    assert base_fee == 10**8 and l1_gas > 50_000  # 3 gwei × 16 × (calldata + 140 bytes) / 0.1 gwei
    assert sent["l1_gas"] == l1_gas
    assert tx["gas"] == sent["gas_limit"] >= sent["gas"] + l1_gas
    assert sent["l1_fee_wei"] == l1_gas * sent["fee_per_gas"]
    assert sent["est_cost"] == ceil_div((sent["gas"] + l1_gas) * sent["fee_per_gas"] * sent["native_price"], E)
    receipt = perp.chain.w3.eth.get_transaction_receipt(sent["tx"])
    assert receipt["status"] == 1
    (liq,) = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
    assert liq["args"]["liquidator"] == KEEPER


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: KEEPER_KEY}
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, env=env, timeout=120)


def test_scan_and_check_show_the_l1_fee_to_the_user(perp, accounts, tmp_path):
    crash_alice(perp, accounts)
    oracle = install_op(perp.chain, 20 * GWEI)
    cfg = config(perp, tmp_path)
    path = write_config(tmp_path / "keeper.toml", cfg)
    nonce0 = perp.chain.nonce(KEEPER)
    check = cli("-c", str(path), "check")
    assert check.returncode == 0, check.stderr
    assert any(line.startswith("ok") and "L2 fee model" in line and "op (detected)" in line for line in check.stdout.splitlines())
    out = cli("-c", str(path), "scan", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout)["positions"] if r["account"] == accounts["alice"]]
    assert isinstance(row["l1_fee_wei"], int) and row["l1_fee_wei"] > 0
    assert Decimal(row["l1_fee"]) > 0 and Decimal(row["est_cost"]) >= Decimal(row["l1_fee"])
    # the oracle's own answer for the placeholder of the liquidation the keeper would send
    ch = perp.clearing_house
    data = bytes.fromhex(ch.functions.liquidate(perp.amm("ETH").address, accounts["alice"])._encode_transaction_data()[2:])
    gas = parse_config(cfg, environ={}).gas
    asked = placeholder_tx(31337, ch.address, data, 0, max_fee=FeePolicy(gas).cap_fee, max_gas=gas.max_gas_limit)
    assert row["l1_fee_wei"] == oracle.functions.getL1FeeUpperBound(len(asked)).call()
    table = cli("-c", str(path), "scan")
    assert table.returncode == 0 and "L1 FEE" in table.stdout
    assert perp.chain.nonce(KEEPER) == nonce0  # scanning never sends


def test_backtest_prices_the_l1_fee_of_each_block(perp, accounts, tmp_path):
    """`keeper backtest` on an OP-stack chain: each opportunity carries the L1 fee the oracle charged at
    its own block, its cost includes it, and an L1 fee that eats the reward makes it not taken."""
    crash_alice(perp, accounts)
    oracle = install_op(perp.chain, GWEI)
    cfg = config(perp, tmp_path)
    path = write_config(tmp_path / "keeper.toml", cfg)
    chain = perp.chain
    chain.mine(1)
    small_from = chain.block_number()
    chain.mine(2)
    ch = perp.clearing_house
    data = bytes.fromhex(ch.functions.liquidate(perp.amm("ETH").address, accounts["alice"])._encode_transaction_data()[2:])
    gas = parse_config(cfg, environ={}).gas
    asked = placeholder_tx(31337, ch.address, data, 0, max_fee=FeePolicy(gas).cap_fee, max_gas=gas.max_gas_limit)
    small = oracle.functions.getL1FeeUpperBound(len(asked)).call()
    assert small > 0
    chain.tx(oracle.functions.set_params(GWEI * 10**9, 0, 10**6, 0))  # an L1 fee far above any reward
    big_from = chain.block_number() + 1
    chain.mine(2)
    big = oracle.functions.getL1FeeUpperBound(len(asked)).call()
    assert big > small * 10**8
    nonce0 = chain.nonce(KEEPER)

    def opportunity(start: int, out: str) -> dict[str, str]:
        run = cli("-c", str(path), "backtest", "--from", str(start), "--to", str(start + 1), "--out", str(tmp_path / out))
        assert run.returncode == 0, run.stderr
        with (tmp_path / out / "opportunities.csv").open() as f:
            (row,) = [r for r in csv.DictReader(f) if r["account"] == accounts["alice"]]
        return row

    cheap = opportunity(small_from, "cheap")
    assert int(cheap["l1_fee_wei"]) == small and int(cheap["l1_gas"]) == 0
    assert cheap["taken"] == "yes"
    dear = opportunity(big_from, "dear")
    assert int(dear["l1_fee_wei"]) == big
    assert dear["taken"] == "no" and dear["reason"] == "unprofitable"
    price = 3000 * E  # pricing.value in keeper_config
    l1_cheap, l1_dear = ceil_div(small * price, E), ceil_div(big * price, E)

    def amount(text: str) -> int:
        whole, _, frac = text.partition(".")
        return int(whole) * E + int((frac or "0").ljust(18, "0"))

    # the same liquidation, the same L2 gas at both blocks' fees: the costs differ by the L1 fees' difference
    # (± the L2 part's block-to-block base fee change, bounded by its 12.5 % step)
    l2_cheap, l2_dear = amount(cheap["gas_cost"]) - l1_cheap, amount(dear["gas_cost"]) - l1_dear
    assert 0 < l2_cheap and 0 < l2_dear
    assert amount(dear["gas_cost"]) > amount(dear["reward"])
    assert perp.chain.nonce(KEEPER) == nonce0  # a backtest never sends


async def test_arbitrum_cancellation_carries_the_l1_gas(perp, accounts, tmp_path):
    """A cancellation (self-transfer, no data) on Arbitrum gets 21,000 + twice the L1 gas the NodeInterface
    charges for it; with no L1 model it stays 21,000."""
    ni = install_arbitrum(perp.chain, 3 * GWEI, 10**8)
    engine, _log = await start_engine(config(perp, tmp_path))
    try:
        assert engine.txs is not None
        l1_gas, _, _ = ni.functions.gasEstimateL1Component(KEEPER, False, b"").call()
        assert l1_gas > 0
        assert await engine.txs.cancel_gas() == CANCEL_GAS + 2 * l1_gas
        perp.chain.tx(ni.functions.set_params(6 * GWEI, 10**8, 140))
        assert await engine.txs.cancel_gas() > CANCEL_GAS + 2 * l1_gas  # read when the cancellation is made
    finally:
        await engine.close()
    perp.chain.rpc("anvil_setCode", [ARB_NODE_INTERFACE, "0x"])
    engine, _log = await start_engine(config(perp, tmp_path / "none"))
    try:
        assert engine.txs is not None and await engine.txs.cancel_gas() == CANCEL_GAS
    finally:
        await engine.close()
