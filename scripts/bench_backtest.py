#!/usr/bin/env python
"""`keeper backtest` timing over ~1,000 blocks of the demo world (`make demo`'s positions: Perp v1 ETH/BTC
with 30 positions and a crvUSD LLAMMA market with 15 loans) on a local anvil.

The range holds the demo's ETH −8 % crash (perp), a LLAMMA oracle fall, a rival key liquidating the
under-water perp positions by direct calls, and empty blocks up to --blocks. The script times the `keeper
backtest` CLI over the whole range (cold: every block replayed) and again (from its cache), and prints
the RPC-free sweep too.

    .venv/bin/python scripts/bench_backtest.py [--blocks 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.devtools.anvil import AnvilProcess
from keeper.devtools.chain import DevChain
from keeper.devtools.configfile import write_config
from keeper.devtools.scenario import WORLD_ACCOUNTS, build_world, keeper_protocols, move_market

E = 10**18
KEEPER, KEEPER_KEY = ANVIL_ADDRESSES[9], ANVIL_KEYS[9]  # anvil's public test key 9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--keep", default="", help="folder for the config and the backtest output (default: a temporary one)")
    args = ap.parse_args()
    node = AnvilProcess(timestamp=int(time.time()) - 30 * 86400, accounts=WORLD_ACCOUNTS).start()
    try:
        chain = DevChain(node.url)
        world = build_world(chain, KEEPER)
        perp, crv = world.perp, world.crv
        start = chain.block_number()
        move_market(chain, perp, "ETH", Decimal(-8), world.whale)
        move_market(chain, crv, "ETH", Decimal(-12), world.arbitrageur)
        move_market(chain, crv, "ETH", Decimal(-5), world.arbitrageur, steps=1)  # the demo's 5 % gap: health < 0
        rival = world.traders[-1]
        mmr = perp.clearing_house.functions.maintenanceMarginRatio().call()
        for market, trader in world.book:
            if trader != rival and perp.position(market, trader)["size"] != 0 and perp.margin_ratio(market, trader) < mmr:
                try:
                    perp.liquidate(rival, market, trader)
                except Exception:  # noqa: BLE001 - lockout / bad debt: the rival just moves on
                    pass
        end = start + args.blocks - 1
        chain.mine(max(0, end - chain.block_number()))
        end = chain.block_number() if chain.block_number() < end else end
        folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-backtest-"))
        folder.mkdir(parents=True, exist_ok=True)
        cfg = write_config(
            folder / "keeper.toml",
            {
                "chain": {"rpc_urls": [node.url], "chain_id": 31337},
                "key": {"private_key_env": "KEEPER_PRIVATE_KEY"},
                "pricing": {"source": "fixed", "value": "3000"},
                "profit": {"min_profit": "0.5"},
                "state": {"path": str(folder / "state.sqlite")},
                "log": {"format": "json", "level": "warning"},
                "protocols": keeper_protocols(perp, crv, perp.start_block),
            },
        )
        env = {**os.environ, "KEEPER_PRIVATE_KEY": KEEPER_KEY}
        cmd = [sys.executable, "-m", "keeper", "-c", str(cfg), "backtest", "--from", str(start), "--to", str(end)]
        cmd += ["--sweep", "min_profit=0,1,5,20", "--out", str(folder / "out"), "--no-progress"]
        timings = []
        for label in ("cold", "cached"):
            t0 = time.monotonic()
            run = subprocess.run(cmd, capture_output=True, text=True, env=env)
            timings.append((label, time.monotonic() - t0))
            if run.returncode != 0:
                print(run.stdout, run.stderr, file=sys.stderr)
                return 1
            if label == "cold":
                print(run.stdout)
        blocks = end - start + 1
        for label, secs in timings:
            print(f"bench_backtest: {label}: {blocks} blocks in {secs:.1f}s (whole CLI run, start-up included)")
        return 0
    finally:
        node.stop()


if __name__ == "__main__":
    raise SystemExit(main())
