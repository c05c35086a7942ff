"""`keeper fork` against a LOCAL origin chain running the reference deployments (no other network is
reachable here): the keeper is funded on the fork, `keeper fork move` crashes the market, `keeper run`
liquidates on the fork, and the origin is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_utils import keccak, to_checksum_address

from keeper.config import load_config
from keeper.devtools.chain import DevChain
from keeper.devtools.fork import Market, Node, find_balance_slot, oracle_price, set_oracle
from keeper.devtools.llamma_env import deploy_llamma
from keeper.devtools.perp_env import BUY, deploy_perp
from keeper.presets import PRESETS
from tests.conftest import start_anvil
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, Daemon

pytestmark = [pytest.mark.chain, pytest.mark.slow]
E = 10**18
LIQUIDATED_TOPIC = "0x5225638a979dd133f201045ab4169ec2189874d864f2b5a10be72ac6e4b421b4"  # docs/PROTOCOLS.md §A.3
LLAMMA_LIQUIDATE_TOPIC = "0x642dd4d37ddd32036b9797cec464c0045dd2118c549066ae6b0f88e32240c2d0"  # §B.2


def keeper_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=90, **kw)


class Fork:
    """`keeper fork ...` as a subprocess; fork.json is its readiness signal."""

    def __init__(self, workdir: Path, *args: str, env: dict | None = None):
        self.workdir = workdir
        self.out = open(workdir.parent / "fork.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "fork", "--workdir", str(workdir), *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        try:
            while not (workdir / "fork.json").exists():
                assert self.proc.poll() is None, f"keeper fork exited {self.proc.returncode}:\n{self.output()}"
                assert time.monotonic() < deadline, f"keeper fork not ready:\n{self.output()}"
                time.sleep(0.1)  # polling a subprocess for its state file, bounded
        except AssertionError:
            self.stop()
            raise
        self.state = json.loads((workdir / "fork.json").read_text())
        self.url = self.state["rpc_url"]

    def output(self) -> str:
        return (self.workdir.parent / "fork.out").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.out.close()
        return self.proc.returncode


def origin_view(chain: DevChain, addresses: list[str], reads) -> dict:
    return {
        "block": chain.block_number(),
        "hash": chain.w3.eth.get_block("latest")["hash"],
        "balances": [chain.w3.eth.get_balance(a) for a in addresses],
        "reads": reads(),
    }


def test_fork_perp_funded_moved_liquidated_origin_unchanged(tmp_path):
    """The perp-v1-xdai preset on an origin with chain id 100, its ClearingHouse and USDC overridden
    with the local reference deployment's (`--set`, `--stablecoin`)."""
    origin = start_anvil(accounts=20, chain_id=100)
    fork = daemon = None
    try:
        chain = DevChain(origin.url)
        acc = chain.w3.eth.accounts
        perp = deploy_perp(chain)
        traders = acc[10:14]
        for t in traders:
            perp.fund_trader(t, 301 * E)
            perp.open_position(t, "ETH", BUY, 300 * E, 10 * E)

        def reads() -> list:
            return [perp.position("ETH", t) for t in traders] + [perp.oracle_price("ETH"), perp.reserves("ETH")]

        fork = Fork(
            tmp_path / "fork",
            "--preset",
            "perp-v1-xdai",
            "--set",
            f"protocols.0.clearing_house={perp.clearing_house.address}",
            "--set",
            f"protocols.0.start_block={perp.start_block}",
            "--stablecoin",
            perp.usdc.address,
            "--fork-url",
            origin.url,
            "--fund-native",
            "5",
            "--fund-stablecoin",
            "1000",
        )
        keeper = fork.state["keeper"]
        before = origin_view(chain, [keeper], reads)
        # funded on the fork: native by anvil_setBalance, USDC (6 decimals) by a probed balance slot
        node = Node(fork.url)
        assert node.balance(keeper) == 5 * E
        assert node.call(perp.usdc.address, "balanceOf(address)", keeper) == 1000 * 10**6
        assert "storage slot" in fork.output()
        cfg = (fork.workdir / "keeper.toml").read_text()
        assert fork.url in cfg and "chain_id = 100" in cfg and 'preset = "perp-v1-xdai"' in cfg and "keystore" in cfg
        loaded = load_config(fork.workdir / "keeper.toml", environ={})
        assert loaded.protocols[0].clearing_house == perp.clearing_house.address  # the override beside the preset
        assert loaded.price_source(loaded.protocols[0]).value == 1  # the preset's native price (xDAI = 1 USDC)
        assert (fork.workdir / "keystore.json").stat().st_mode & 0o077 == 0

        moved = keeper_cmd("fork", "move", "ETH", "-6%", "--workdir", str(fork.workdir))
        assert moved.returncode == 0, moved.stderr
        amm = perp.amms["ETH"].address
        assert node.call(amm, "getUnderlyingPrice()") == 2820 * E
        q, b = node.call(amm, "getReserve()", out="(uint256,uint256)")
        assert abs(q * E // b - 2820 * E) * 10**6 <= 2820 * E

        daemon = Daemon(fork.workdir / "keeper.toml", tmp_path / "d.log").start()
        start = node.block_number()

        def liquidated() -> list:
            node.rpc("evm_mine")
            logs = node.rpc("eth_getLogs", [{"fromBlock": hex(start), "toBlock": "latest", "topics": [LIQUIDATED_TOPIC]}])
            return [log for log in logs if log["address"].lower() == perp.clearing_house.address.lower()]

        def done() -> bool:
            on_chain = {log["topics"][1] for log in liquidated()}
            sent, landed = daemon.events("liquidation_sent"), daemon.events("liquidation_landed")
            return len(on_chain) == len(traders) and len(landed) == len(sent)  # receipts are read on later blocks

        daemon.wait_for(done, timeout=60, what="liquidations on the fork")
        assert daemon.stop(signal.SIGTERM) == 0
        assert {r["account"] for r in daemon.events("liquidation_landed")} == set(traders)
        assert node.rpc("eth_getTransactionCount", [keeper, "latest"]) != "0x0"

        # Ctrl-C/SIGTERM: exit 0, the state file is gone, the fork's port is closed
        assert fork.stop() == 0, fork.output()
        assert not (fork.workdir / "fork.json").exists()
        gone = keeper_cmd("fork", "move", "ETH", "-1%", "--workdir", str(fork.workdir))
        assert gone.returncode == 1 and "no running fork" in gone.stderr
        # the origin never saw any of it
        assert origin_view(chain, [keeper], reads) == before
        assert before["balances"] == [0]
        assert not chain.w3.eth.get_logs({"fromBlock": 0, "topics": [LIQUIDATED_TOPIC]})
    finally:
        if daemon:
            daemon.stop(signal.SIGTERM)
        if fork:
            fork.stop()
        origin.stop()


def test_fork_llamma_stablecoin_by_slot_probe_and_storage_oracle_move(tmp_path):
    """A Vyper token's balance slot and the LLAMMA oracle's price word are both found by probing."""
    origin = start_anvil(accounts=20)
    fork = daemon = None
    try:
        chain = DevChain(origin.url)
        acc = chain.w3.eth.accounts
        m = deploy_llamma(chain, variant="v3", collateral_decimals=8)
        borrowers = acc[10:14]
        for i, u in enumerate(borrowers):
            col = m.units(5 + i)
            m.create_loan(u, col, m.max_borrowable(col, 10) * 97 // 100, 10)
        (tmp_path / "crv.toml").write_text(
            f'[[protocols]]\nkind = "llamma"\nname = "crv"\nfactory = "{m.factory.address}"\nstart_block = 0\n\n'
            '[pricing]\nsource = "fixed"\nvalue = "3000"\n'
        )
        oracle_before = m.oracle_price()
        fork = Fork(
            tmp_path / "fork",
            "--protocol-file",
            str(tmp_path / "crv.toml"),
            "--fork-url",
            origin.url,
            "--fund-stablecoin",
            "250000",
            "--key-env",
            KEY_ENV,
            env={KEY_ENV: KEEPER_KEY},
        )
        keeper = fork.state["keeper"]
        assert keeper == KEEPER  # the key in the environment variable is the one funded
        cfg = (fork.workdir / "keeper.toml").read_text()
        assert f'private_key_env = "{KEY_ENV}"' in cfg and KEEPER_KEY[2:] not in cfg + fork.output()
        node = Node(fork.url)
        assert node.call(m.stablecoin.address, "balanceOf(address)", keeper) == m.usd(250000)
        # two sudden oracle updates, each arbitraged: the loans' converted bands lose enough to be under water
        moved = keeper_cmd("fork", "move", "WBTC", "-12%", "--steps", "2", "--via", "storage", "--workdir", str(fork.workdir))
        assert moved.returncode == 0, moved.stderr
        assert "storage override" in moved.stdout
        assert node.call(m.amm.address, "price_oracle()") == oracle_before * 88 // 100
        # the LLAMMA was arbitraged: its active band moved down with the oracle
        assert node.call(m.amm.address, "active_band()", out="int256") > m.amm.functions.active_band().call()
        under_water = node.call(m.controller.address, "users_to_liquidate()", out="(address,uint256,uint256,uint256,int256)[]")
        assert {to_checksum_address(u[0]) for u in under_water} == set(borrowers)

        # the keeper liquidates on the fork, paying d − x from the crvUSD the fork gave it
        daemon = Daemon(fork.workdir / "keeper.toml", tmp_path / "d.log").start()

        def cleared() -> bool:
            node.rpc("evm_mine")
            left = node.call(m.controller.address, "users_to_liquidate()", out="(address,uint256,uint256,uint256,int256)[]")
            return not left and len(daemon.events("liquidation_landed")) >= len(borrowers)  # receipts read on later blocks

        daemon.wait_for(cleared, timeout=60, what="LLAMMA liquidations on the fork")
        assert daemon.stop(signal.SIGTERM) == 0
        assert {r["account"] for r in daemon.events("liquidation_landed")} == set(borrowers)
        assert node.call(m.stablecoin.address, "balanceOf(address)", keeper) < m.usd(250000)
        assert fork.stop(signal.SIGINT) == 0  # Ctrl-C
        # origin unchanged
        assert m.oracle_price() == oracle_before
        assert m.stablecoin.functions.balanceOf(keeper).call() == 0
        assert not chain.w3.eth.get_logs({"fromBlock": 0, "topics": [LLAMMA_LIQUIDATE_TOPIC]})
        assert {u[0] for u in m.controller.functions.users_to_liquidate().call()} == set()
    finally:
        if daemon:
            daemon.stop(signal.SIGTERM)
        if fork:
            fork.stop()
        origin.stop()


def test_fork_usage_errors_exit_2(tmp_path):
    r = keeper_cmd("fork", "--preset", "nope", "--fork-url", "http://127.0.0.1:1", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and "--preset" in r.stderr and "Traceback" not in r.stderr
    r = keeper_cmd("fork", "--preset", "perp-v1-xdai", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and "--fork-url" in r.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    r = keeper_cmd("fork", "--preset", "perp-v1-xdai", "--fork-url", "http://127.0.0.1:1", "--workdir", str(tmp_path / "busy"))
    assert r.returncode == 2 and "--workdir" in r.stderr and (tmp_path / "busy" / "x").read_text() == "mine"
    r = keeper_cmd("fork", "move", "ETH", "abc", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and "pct" in r.stderr


def test_fork_preset_chain_id_must_match_the_forked_chain(tmp_path):
    origin = start_anvil()
    try:
        r = keeper_cmd("fork", "--preset", "perp-v1-xdai", "--fork-url", origin.url, "--workdir", str(tmp_path / "w"))
        assert r.returncode == 2 and "chain 31337" in r.stderr and "chain 100" in r.stderr
        assert not (tmp_path / "w" / "fork.json").exists()
    finally:
        origin.stop()


def test_presets_addresses_are_well_formed():
    from eth_utils import is_checksum_address  # noqa: PLC0415

    for p in PRESETS.values():
        for k, v in [*p.protocol.items(), *p.native_price.items()]:
            if k in ("clearing_house", "factory", "feed"):
                assert is_checksum_address(v), (p.name, k, v)
        assert p.stablecoin is None or is_checksum_address(p.stablecoin)


# runtime code of a token whose balanceOf(holder) reads a Solidity mapping at slot 5: keccak(pad(holder) . pad(5))
SOLIDITY_BALANCE_OF = "0x600435600052600560205260406000205460005260206000f3"


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "enumerated"])
def test_balance_slot_probe_finds_vyper_and_solidity_layouts(anvil, monkeypatch, traced):
    """Found from a traced balanceOf, and (no tracer) by enumerating both mapping layouts."""
    chain = DevChain(anvil.url)
    node = Node(anvil.url)
    if not traced:
        monkeypatch.setattr(Node, "trace_storage", lambda self, to, data: {})
    holder = chain.accounts[3]
    vyper_token = chain.deploy("common/ERC20", "T", "T", 6)  # HashMap: keccak(slot . key)
    sol_token = "0x00000000000000000000000000000000000050aa"
    node.rpc("anvil_setCode", [sol_token, SOLIDITY_BALANCE_OF])
    for token in (vyper_token.address, sol_token):
        slot = find_balance_slot(node, token, holder)
        assert slot is not None
        node.set_storage(token, slot, 77)
        assert node.call(token, "balanceOf(address)", holder) == 77
    assert find_balance_slot(node, sol_token, holder) == int.from_bytes(
        keccak(bytes.fromhex(holder[2:]).rjust(32, b"\0") + (5).to_bytes(32, "big")), "big"
    )


@pytest.mark.parametrize("via", ["impersonate", "storage", "replace"])
def test_oracle_moves_every_way_on_perp_and_llamma(anvil, via):
    """Each way of moving an oracle, on both protocols, read back through the protocol's own view;
    after `replace` the next move sets the fork's settable oracle."""
    chain = DevChain(anvil.url)
    perp = deploy_perp(chain, warmup_seconds=0)
    crv = deploy_llamma(chain, variant="m2")
    node = Node(anvil.url)
    markets = [
        Market("perp_v1", "ETH", perp.amms["ETH"].address, clearing_house=perp.clearing_house.address),
        Market("llamma", "0", crv.amm.address, controller=crv.controller.address),
    ]
    for m in markets:
        before = oracle_price(node, m)
        how = set_oracle(node, m, before * 93 // 100, via)
        assert oracle_price(node, m) == before * 93 // 100
        assert {"impersonate": "impersonated", "storage": "storage override", "replace": "replaced"}[via] in how
        if via == "replace":
            assert "settable oracle" in set_oracle(node, m, before * 90 // 100, "auto")
            assert oracle_price(node, m) == before * 90 // 100
    assert perp.amms["ETH"].functions.getUnderlyingPrice().call()[0] == oracle_price(node, markets[0])
