"""`keeper liquidator deploy|status|sweep` as an operator runs them (subprocess `python -m keeper ...`) on anvil
with a reference LLAMMA market: deploy puts the committed build on chain, owned by the keeper's key, and
prints the config line; status is read-only (no key needed, nothing sent, no file created) and reports code,
owner, keep_proceeds and the market's token balances; sweep sends the contract's whole balance to the owner
and prints the amount; a key that is not the owner, an empty balance and a running keeper send nothing.
The committed build (abis/llamma/Liquidator.json) equals a fresh compile of contracts/llamma/Liquidator.vy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.abi import abi_dir
from keeper.commands.liquidator import liquidator_abi
from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.devtools.chain import DevChain
from keeper.devtools.compile import compile_contract
from keeper.devtools.liquidator_artifact import build_artifact, render
from keeper.devtools.llamma_env import LlammaDeployment, deploy_llamma
from keeper.statelock import acquire_state_lock
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, keeper_config, write_config

pytestmark = pytest.mark.chain

OTHER, OTHER_KEY = ANVIL_ADDRESSES[8], ANVIL_KEYS[8]
ADDRESS_LINE = re.compile(r'^\s*liquidator = "(0x[0-9a-fA-F]{40})"$', re.MULTILINE)


def test_the_committed_build_is_a_fresh_compile_of_the_source():
    committed = (abi_dir() / "llamma" / "Liquidator.json").read_text()
    fresh = build_artifact()
    assert committed == render(fresh), "stale abis/llamma/Liquidator.json: run python -m keeper.devtools.liquidator_artifact"
    data = json.loads(committed)
    assert data["bytecode"].startswith("0x") and data["compiler"].startswith("vyper 0.4")
    names = {e.get("name") for e in data["abi"]}
    assert {"liquidate", "callback_liquidate", "sweep", "owner", "keep_proceeds", "Liquidation"} <= names
    # the route argument is what keeper.routes.Hop.as_tuple() produces
    liquidate = liquidator_abi().fn("liquidate")
    assert liquidate.input_types == (
        "address",
        "address",
        "uint256",
        "uint256",
        "(address,uint8,uint256,uint256,address,address)[]",
        "uint256",
        "uint256",
        "uint8",
    )
    assert liquidator_abi().fn("sweep").input_types == ("address",)


@pytest.fixture(scope="module")
def world(module_anvil) -> tuple[DevChain, LlammaDeployment]:
    chain = DevChain(module_anvil.url)
    return chain, deploy_llamma(chain, variant="v3", collateral_decimals=8)


@pytest.fixture
def fresh(world):
    chain, m = world
    with chain.reverted():
        yield chain, m


def write_cfg(tmp: Path, url: str, m: LlammaDeployment, key: dict | None = None, **llamma) -> Path:
    protocol = {"kind": "llamma", "name": "crvusd", "controllers": [m.controller.address], **llamma}
    cfg = keeper_config(url, tmp / "state" / "keeper.sqlite", [protocol])
    if key is not None:
        cfg["key"] = key
    (tmp / "state").mkdir(exist_ok=True)
    return write_config(tmp / "keeper.toml", cfg)


def cli(cfg: Path, *args: str, key: str | None = KEEPER_KEY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), "liquidator", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )


def deploy(cfg: Path, *args: str) -> str:
    proc = cli(cfg, "deploy", *args)
    assert proc.returncode == 0, proc.stderr
    found = ADDRESS_LINE.findall(proc.stdout)
    assert len(found) == 1, proc.stdout
    assert KEEPER_KEY.lower().removeprefix("0x") not in (proc.stdout + proc.stderr).lower()
    return found[0]


def liquidator(chain: DevChain, address: str):
    return chain.at("llamma/Liquidator", address)


def test_deploy_owned_by_the_keeper_with_the_committed_code(fresh, tmp_path):
    chain, m = fresh
    cfg = write_cfg(tmp_path, chain.url, m)
    nonce = chain.nonce(KEEPER)
    address = deploy(cfg)
    assert chain.nonce(KEEPER) == nonce + 1  # one transaction, from the keeper's key
    c = liquidator(chain, address)
    assert c.functions.owner().call() == KEEPER
    assert c.functions.keep_proceeds().call() is False
    runtime = chain.w3.eth.get_code(address)
    assert "0x" + runtime.hex().removeprefix("0x") == compile_contract("llamma/Liquidator").bytecode_runtime
    kept = liquidator(chain, deploy(cfg, "--keep-proceeds"))
    assert kept.functions.keep_proceeds().call() is True
    assert kept.functions.owner().call() == KEEPER


def test_deploy_without_a_key_is_a_configuration_error_and_sends_nothing(fresh, tmp_path):
    chain, m = fresh
    cfg = write_cfg(tmp_path, chain.url, m)
    proc = cli(cfg, "deploy", key=None)
    assert proc.returncode == 2
    assert KEY_ENV in proc.stderr and "Traceback" not in proc.stderr


def test_status_is_read_only_and_reports_owner_flag_and_balances(fresh, tmp_path):
    chain, m = fresh
    cfg = write_cfg(tmp_path, chain.url, m)
    address = deploy(cfg)
    m.fund_stablecoin(address, m.usd(1234))
    m.fund_collateral(address, m.units("0.5"))
    # no key at all: the keeper's address from key.address; nothing can be signed
    cfg = write_cfg(tmp_path, chain.url, m, liquidator=address, key={"private_key_env": "NO_SUCH_VAR", "address": KEEPER})
    before = sorted(p.name for p in (tmp_path / "state").iterdir())
    nonces = chain.nonce(KEEPER), chain.nonce(OTHER)
    block = chain.block_number()
    proc = cli(cfg, "status", key=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(rf"ok\s+liquidator {address} \(crvusd\) code", out)
    assert f"{KEEPER} = the keeper" in out
    assert "keep_proceeds" in out and "false" in out
    stable_sym = m.stablecoin.functions.symbol().call()
    coll_sym = m.collateral.functions.symbol().call()
    assert re.search(rf"holds {stable_sym}\s+1234 {stable_sym} \({m.usd(1234)} base units\)", out), out
    assert re.search(rf"holds {coll_sym}\s+0\.5 {coll_sym} \({m.units('0.5')} base units\)", out), out
    assert (chain.nonce(KEEPER), chain.nonce(OTHER)) == nonces and chain.block_number() == block
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == before  # status created no file (deploy left its .lock)


def test_status_fails_when_the_owner_is_not_the_keeper_or_there_is_no_code(fresh, tmp_path):
    chain, m = fresh
    address = deploy(write_cfg(tmp_path, chain.url, m))
    cfg = write_cfg(tmp_path, chain.url, m, liquidator=address, key={"private_key_env": "NO_SUCH_VAR", "address": OTHER})
    proc = cli(cfg, "status", key=None)
    assert proc.returncode == 1
    assert re.search(rf"FAIL\s+liquidator {address} \(crvusd\) owner\s+{KEEPER} ≠ keeper {OTHER}", proc.stdout), proc.stdout
    nowhere = "0x" + "42" * 20
    proc = cli(cfg, "status", "--liquidator", nowhere, key=None)
    assert proc.returncode == 1 and "no contract code" in proc.stdout
    # no liquidator configured and none given: a usage error naming the setting
    proc = cli(write_cfg(tmp_path, chain.url, m), "status")
    assert proc.returncode == 2 and "liquidator" in proc.stderr


def test_sweep_sends_the_whole_balance_to_the_owner_and_prints_it(fresh, tmp_path):
    chain, m = fresh
    cfg = write_cfg(tmp_path, chain.url, m)
    address = deploy(cfg)
    cfg = write_cfg(tmp_path, chain.url, m, liquidator=address)
    amount = m.usd("777.25")
    m.fund_stablecoin(address, amount)
    owner_before = m.stablecoin.functions.balanceOf(KEEPER).call()
    proc = cli(cfg, "sweep", m.stablecoin.address)
    assert proc.returncode == 0, proc.stderr
    symbol = m.stablecoin.functions.symbol().call()
    assert f"swept 777.25 {symbol} ({amount} base units) from {address} to {KEEPER}" in proc.stdout
    assert m.stablecoin.functions.balanceOf(address).call() == 0
    assert m.stablecoin.functions.balanceOf(KEEPER).call() == owner_before + amount
    # nothing left: nothing sent
    nonce = chain.nonce(KEEPER)
    proc = cli(cfg, "sweep", m.stablecoin.address)
    assert proc.returncode == 0 and "nothing to sweep" in proc.stdout
    assert chain.nonce(KEEPER) == nonce


def test_sweep_refuses_a_key_that_is_not_the_owner_and_a_running_keeper(fresh, tmp_path):
    chain, m = fresh
    address = deploy(write_cfg(tmp_path, chain.url, m))
    m.fund_collateral(address, m.units("2"))
    cfg = write_cfg(tmp_path, chain.url, m, liquidator=address)
    nonce = chain.nonce(OTHER)
    proc = cli(cfg, "sweep", m.collateral.address, key=OTHER_KEY)
    assert proc.returncode == 1 and f"owned by {KEEPER}, not by the keeper's key {OTHER}" in proc.stderr
    assert chain.nonce(OTHER) == nonce
    # the contract itself refuses a non-owner too (checked from OTHER by eth_call)
    chain.expect_revert(liquidator(chain, address).functions.sweep(m.collateral.address), sender=OTHER)
    # a keeper daemon holding the state file: sweep waits for the operator to stop it
    with acquire_state_lock(tmp_path / "state" / "keeper.sqlite"):
        nonce = chain.nonce(KEEPER)
        proc = cli(cfg, "sweep", m.collateral.address)
        assert proc.returncode == 2 and "in use by pid" in proc.stderr
        assert chain.nonce(KEEPER) == nonce
    assert m.collateral.functions.balanceOf(address).call() == m.units("2")
    proc = cli(cfg, "sweep", m.collateral.address)
    assert proc.returncode == 0, proc.stderr
    assert m.collateral.functions.balanceOf(address).call() == 0
    assert "swept 2 " in proc.stdout
