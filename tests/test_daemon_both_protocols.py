"""One daemon, one config, one key: a perp market and a LLAMMA market liquidated together, with a
single gap-free nonce stream; SIGTERM → exit 0."""

from __future__ import annotations

import signal

import pytest

from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import deploy_llamma
from keeper.devtools.perp_env import BUY, deploy_perp
from tests.conftest import start_anvil
from tests.harness import KEEPER, Daemon, keeper_config, perp_protocol, write_config

pytestmark = [pytest.mark.chain, pytest.mark.slow]
E = 10**18


def test_one_daemon_liquidates_perp_and_llamma_with_one_nonce_stream(tmp_path):
    node = start_anvil(accounts=30)
    daemon = None
    try:
        chain = DevChain(node.url)
        acc = chain.w3.eth.accounts
        perp = deploy_perp(chain)
        traders = acc[10:14]
        for t in traders:
            perp.fund_trader(t, 301 * E)
            perp.open_position(t, "ETH", BUY, 300 * E, 10 * E)
        crv = deploy_llamma(chain, variant="v3", collateral_decimals=8)
        borrowers = acc[14:24]
        for i, u in enumerate(borrowers):
            n, col = 4 + i % 6, crv.units(5 + i)
            crv.create_loan(u, col, crv.max_borrowable(col, n) * (85 + i) // 100, n)
        crv.fund_stablecoin(KEEPER, crv.usd(10**6))
        protocols = [perp_protocol(perp), {"kind": "llamma", "name": "crv", "factory": crv.factory.address, "start_block": 0}]
        cfg = write_config(tmp_path / "k.toml", keeper_config(node.url, tmp_path / "s.sqlite", protocols))
        daemon = Daemon(cfg, tmp_path / "d.log").start()
        daemon.wait_for(lambda: daemon.events("keeper_started"), what="start")
        start = chain.block_number()
        # both markets crash in the same stretch of blocks
        perp.set_oracle_price("ETH", 2820 * E)
        perp.move_spot_price("ETH", 2820 * E, acc[25])
        perp.advance_twap(900)
        crv.lower_price_in_steps(crv.oracle_price() * 88 // 100, 6, acc[26])
        crv.set_oracle_price(crv.oracle_price() * 95 // 100)
        assert crv.controller.functions.users_to_liquidate().call()

        def done() -> bool:
            chain.mine()
            perp_liq = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
            if crv.controller.functions.users_to_liquidate().call() or len(perp_liq) < len(traders):
                return False
            # Every keeper transaction on chain has its sent line and every liquidation its landed line
            # (a receipt is read on one of the daemon's next blocks: the chain alone is not enough).
            sent = daemon.events("liquidation_sent")
            approvals = daemon.events("approval_sent") + daemon.events("setup_sent")
            landed = daemon.events("liquidation_landed")
            return chain.nonce(KEEPER) == len(sent) + len(approvals) and len(landed) == len(sent)

        daemon.wait_for(done, timeout=120, what="both protocols liquidated")
        assert daemon.stop(signal.SIGTERM) == 0
        landed = daemon.events("liquidation_landed")
        assert {r["protocol"] for r in landed} == {"perp", "crv"}
        # one nonce stream: every keeper transaction on chain, nonces 0..n-1 without gaps or reuse
        nonces = []
        for b in range(start, chain.block_number() + 1):
            for tx in chain.w3.eth.get_block(b, full_transactions=True).transactions:
                if tx["from"] == KEEPER:
                    nonces.append(tx["nonce"])
        assert sorted(nonces) == list(range(len(nonces))) == list(range(chain.nonce(KEEPER)))
        sends = ("liquidation_sent", "approval_sent", "setup_sent")
        assert len(nonces) == sum(len(daemon.events(e)) for e in sends)
    finally:
        if daemon:
            daemon.stop(signal.SIGTERM)
        node.stop()
