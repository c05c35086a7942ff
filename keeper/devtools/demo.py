"""`keeper demo` / `make demo`: an embedded anvil chain with the reference protocols — a Perp v1
ClearingHouse with ~30 positions in two markets and a crvUSD-style LLAMMA market with 15 loans —
a scripted crash, and the REAL daemon (`keeper run` as a subprocess, one config, one key, one
nonce stream) liquidating them; then a summary of what it earned, ending with one parsable line:

    demo: liquidations=N partial=P full=F reward=R cost=C profit=X

(reward, cost and profit in quote-token units: USDC for the perp markets and crvUSD for the
LLAMMA market, both USD stablecoins). The crash produces partial and full liquidations, an
over-spread flash crash (10 % rule: nothing is liquidated), a lockout window (5 % rule: nothing is
sent until the price is back within 5 %), bad debt that a non-backstop keeper leaves alone, loans
in soft liquidation that are left alone, and hard liquidations of loans whose health fell below 0.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from decimal import Decimal
from math import isqrt
from pathlib import Path

from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.devtools.anvil import AnvilProcess, free_port
from keeper.devtools.chain import DevChain
from keeper.devtools.configfile import write_config
from keeper.devtools.llamma_env import LlammaDeployment
from keeper.devtools.logs import read_events
from keeper.devtools.paths import demo_requirements_line
from keeper.devtools.perp_env import BUY, USDC_UNIT, PerpDeployment, deploy_perp
from keeper.devtools.pools import deploy_curve_pool, deploy_liquidator
from keeper.devtools.scenario import BOOK, WORLD_ACCOUNTS, keeper_protocols, populate_world

E = 10**18
KEEPER_KEY = ANVIL_KEYS[9]  # anvil's public test key 9 — demo only
KEEPER = ANVIL_ADDRESSES[9]
NATIVE_PRICE = "3000"  # USDC per ETH, to cost gas in the summary and in the keeper's decisions


def say(msg: str = "") -> None:
    print(msg, flush=True)


class DemoDaemon:
    def __init__(self, workdir: Path, config: Path, port: int):
        self.port = port
        self.log_path = workdir / "keeper.log"
        env = {**os.environ, "KEEPER_PRIVATE_KEY": KEEPER_KEY}
        self._fh = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "-c", str(config), "run"], stdout=self._fh, stderr=subprocess.STDOUT, env=env
        )

    def events(self, name: str | None = None) -> list[dict]:
        return read_events(self.log_path, name)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def processed(self) -> tuple[int, int]:
        """(latest block the daemon processed, its pending transactions), from its /health."""
        try:
            h = self.health()
        except urllib.error.HTTPError as exc:  # 503 still carries the JSON body
            h = json.loads(exc.read())
        except OSError:
            return -1, 0
        c = h["components"]
        return c["head"]["block"] or -1, c["transactions"]["pending"]


def next_block(chain: DevChain, daemon: DemoDaemon, timeout: float = 20.0) -> int:
    """Mine one block and wait (bounded) until the daemon has processed it; returns its pending count."""
    chain.mine()
    target = chain.block_number()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"the keeper daemon exited; see {daemon.log_path}")
        block, pending = daemon.processed()
        if block >= target:
            return pending
        time.sleep(0.05)  # polling another process's /health, bounded by `timeout`
    raise RuntimeError(f"the keeper did not process block {target} within {timeout}s; see {daemon.log_path}")


def settle(chain: DevChain, daemon: DemoDaemon, quiet_blocks: int = 2, max_blocks: int = 200) -> None:
    """Advance block by block until the keeper has nothing in flight and sent nothing new for
    `quiet_blocks` consecutive blocks (it has done what it decided to do)."""
    quiet, sent = 0, len(daemon.events("liquidation_sent"))
    for _ in range(max_blocks):
        pending = next_block(chain, daemon)
        now = len(daemon.events("liquidation_sent"))
        quiet = quiet + 1 if (now == sent and pending == 0) else 0
        sent = now
        if quiet >= quiet_blocks:
            return
    raise RuntimeError(f"the keeper kept sending for {max_blocks} blocks; see {daemon.log_path}")


def statuses(daemon: DemoDaemon, book: list[tuple[str, str]]) -> dict[str, str]:
    last: dict[str, str] = {}
    for r in daemon.events("position_status"):
        last[r["account"]] = r["status"]
    return {t: last.get(t, "healthy") for _, t in book}


class DemoError(Exception):
    """The demo cannot run here; the message (one line) says why and what to do."""


MARKER = ".keeper-demo"  # written into every folder the demo creates: only those it reuses
# what one demo run writes into its folder (a reused folder loses these and nothing else)
DEMO_FILES = (
    "keeper.toml",
    "keeper.log",
    "anvil.log",
    "state.sqlite",
    "state.sqlite-wal",
    "state.sqlite-shm",
    "state.sqlite-journal",
    "state.sqlite.lock",
)


def prepare_workdir(workdir: str | Path) -> Path:
    """The demo's folder: created (with a marker file) when missing; an empty folder is taken; a
    folder the demo made before is reused (only its own files are replaced); any other non-empty
    folder is refused. Never deletes a file the demo did not write."""
    wd = Path(workdir).expanduser().absolute()
    if wd.exists() and not wd.is_dir():
        raise DemoError(f"--workdir {wd} exists and is not a folder; choose a new or empty folder")
    if wd.is_dir():
        if any(wd.iterdir()) and not (wd / MARKER).is_file():
            raise DemoError(
                f"--workdir {wd} is not empty and was not created by `keeper demo`; "
                "choose a new or empty folder (nothing was changed)"
            )
        for name in DEMO_FILES:
            f = wd / name
            if f.is_file() or f.is_symlink():
                f.unlink()
    else:
        wd.mkdir(parents=True)
    (wd / MARKER).write_text("Created by `keeper demo`, which may reuse this folder and replace its own files in it.\n")
    return wd


def run_demo(workdir: str = "demo-run") -> int:
    needs = demo_requirements_line()
    if needs is not None:
        print(f"keeper: {needs}", file=sys.stderr)
        return 2
    try:
        wd = prepare_workdir(workdir)
    except DemoError as exc:
        print(f"keeper demo: {exc}", file=sys.stderr)
        return 2
    say("keeper demo — local anvil chain, reference Perp v1 (Palmswap parameters), the real keeper daemon\n")
    node = AnvilProcess(timestamp=int(time.time()) - 30 * 86400, accounts=WORLD_ACCOUNTS, log_path=str(wd / "anvil.log")).start()
    daemon = None
    try:
        chain = DevChain(node.url)
        t0 = time.monotonic()
        perp = deploy_perp(chain)
        say(f"[1/6] deployed USDC, PriceFeed, InsuranceFund, ClearingHouse and 2 vAMMs (ETH 3,000, BTC 60,000) on {node.url}")
        # the positions of BOOK, the LLAMMA market and its loans; the keeper holds no crvUSD at all
        world = populate_world(chain, perp, KEEPER, keeper_crvusd=0)
        crv, book, whale, borrowers = world.crv, world.book, world.whale, world.borrowers
        # LLAMMA in callback mode: the keeper's liquidator contract sells the collateral on a deep
        # ETH/crvUSD pool (Curve stableswap ABI) in the same transaction
        pool = deploy_curve_pool(chain, crv.stablecoin, crv.collateral, "stable", (crv.usd(POOL_ETH * 3000), crv.units(POOL_ETH)))
        liquidator = deploy_liquidator(chain, KEEPER)
        longs = sum(1 for m in BOOK if m[1] == BUY)
        say(
            f"[2/6] opened {len(book)} perp positions ({longs} long, {len(book) - longs} short, 2x–10x) in ETH and BTC, "
            f"and {len(borrowers)} crvUSD loans (4–11 bands) on a LLAMMA ETH market"
        )

        port = free_port()
        cfg = {
            "chain": {"rpc_urls": [node.url], "chain_id": 31337, "poll_interval": 0.05},
            "key": {"private_key_env": "KEEPER_PRIVATE_KEY"},
            "pricing": {"source": "fixed", "value": NATIVE_PRICE},
            "profit": {"min_profit": "0.5"},
            "state": {"path": str(wd / "state.sqlite")},
            "http": {"listen": f"127.0.0.1:{port}"},
            "log": {"format": "json"},
            "protocols": callback_mode(keeper_protocols(perp, crv, perp.start_block), crv, pool.address, liquidator.address),
        }
        config = write_config(wd / "keeper.toml", cfg)
        daemon = DemoDaemon(wd, config, port)
        next_block(chain, daemon, timeout=60)
        say(f"[3/6] keeper daemon running as {KEEPER} (pid {daemon.proc.pid}, /health and /metrics on :{port})")

        # Phase A: ETH slides 8 % (index and market): 10x longs are closed in full, 8x–9x partially.
        perp.set_oracle_price("ETH", 2760 * E)
        perp.move_spot_price("ETH", 2760 * E, whale)
        perp.advance_twap(900)
        settle(chain, daemon)
        kinds = Counter(r["kind"] for r in daemon.events("liquidation_landed"))
        say(f"[4/6] ETH −8 %: {sum(kinds.values())} liquidations landed ({kinds['partial']} partial, {kinds['full']} full)")

        # Phase B: flash crash of the ETH vAMM alone, 13 % under the index, held 15 minutes: the 10 % rule
        # (oracle margin ratio) keeps positions that are healthy on the oracle price alive.
        sent_before = len(daemon.events("liquidation_sent"))
        perp.move_spot_price("ETH", 2400 * E, whale)
        perp.advance_twap(900)
        settle(chain, daemon)
        over = [t for t, s in statuses(daemon, book).items() if s == "over-spread"]
        say(
            f"      ETH vAMM flash crash −13 % vs index: {len(over)} positions under water on market prices only "
            f"(over-spread): {len(daemon.events('liquidation_sent')) - sent_before} transactions sent"
        )
        perp.move_spot_price("ETH", 2760 * E, whale)  # arbitrage brings the vAMM back to the index
        perp.advance_twap(900)
        settle(chain, daemon)

        # Phase C: BTC vAMM −7 % vs index with the 5 % lockout on: nothing is sent until the index follows.
        perp.move_spot_price("BTC", 55_800 * E, whale)
        perp.set_lockout("BTC", 5 * E // 100)
        perp.advance_twap(900)
        sent_before = len(daemon.events("liquidation_sent"))
        settle(chain, daemon, quiet_blocks=3)
        locked = [t for t, s in statuses(daemon, book).items() if s == "lockout"]
        say(
            f"[5/6] BTC −7 % vs index with the 5 % lockout on: {len(locked)} liquidatable positions held back, "
            f"{len(daemon.events('liquidation_sent')) - sent_before} transactions sent"
        )
        perp.set_oracle_price("BTC", 56_400 * E)  # the index follows: deviation 1 %
        settle(chain, daemon)
        say(
            f"      BTC index follows (deviation 1 %): lockout over, {len(daemon.events('liquidation_landed'))} "
            "liquidations landed so far"
        )

        # Phase D: ETH falls to 2,550 (−15 %): full liquidations; the thinnest positions are bankrupt.
        perp.set_oracle_price("ETH", 2550 * E)
        perp.move_spot_price("ETH", 2550 * E, whale)
        perp.advance_twap(900)
        settle(chain, daemon)
        bad = [t for t, s in statuses(daemon, book).items() if s == "bad-debt"]
        say(f"[6/6] ETH −15 %: full liquidations; {len(bad)} bankrupt positions left to a backstop LP (bad debt)")

        # LLAMMA: the collateral price falls 12 % in steps with arbitrage after each (soft liquidation:
        # bands convert to crvUSD, health stays ≥ 0 and the keeper leaves them alone), then a 5 % gap.
        arb = world.arbitrageur
        crv.lower_price_in_steps(crv.oracle_price() * 88 // 100, 6, arb)
        arbitrage_pool(chain, crv, pool, arb)
        settle(chain, daemon)
        soft = {r.get("account", r.get("user")) for r in daemon.events("loan_soft_liquidation_entered")}
        sent_llamma = [r for r in daemon.events("liquidation_sent") if r["protocol"] == "crvusd"]
        say(
            f"      crvUSD market −12 % in 6 steps with arbitrage: {len(soft)} loans in soft liquidation, "
            f"{len(sent_llamma)} hard liquidations (health ≥ 0)"
        )
        crv.set_oracle_price(crv.oracle_price() * 95 // 100)
        arbitrage_pool(chain, crv, pool, arb)  # the market follows the oracle down
        under = len(crv.controller.functions.users_to_liquidate().call())
        settle(chain, daemon)
        left = len(crv.controller.functions.users_to_liquidate().call())
        landed_llamma = [r for r in daemon.events("liquidation_landed") if r["protocol"] == "crvusd"]
        say(
            f"      then a 5 % gap: {under} loans with health < 0 → {len(landed_llamma)} hard liquidations, "
            f"{left} left in users_to_liquidate()"
        )
        code = daemon.stop()
        say(f"      keeper stopped with SIGTERM (exit code {code})\n")
        return summary(wd, perp, crv, daemon, code, time.monotonic() - t0)
    finally:
        if daemon is not None and daemon.alive():
            daemon.stop()
        node.stop()


POOL_ETH = 2000  # ETH (and its value in crvUSD) in the demo's ETH/crvUSD pool


def callback_mode(protocols: list[dict], crv: LlammaDeployment, pool: str, liquidator: str) -> list[dict]:
    """The demo's LLAMMA market liquidated through the keeper's liquidator contract along one pool."""
    hop = {"pool": pool, "kind": "curve", "i": 1, "j": 0, "token_in": crv.collateral.address, "token_out": crv.stablecoin.address}
    for p in protocols:
        if p["kind"] == "llamma":
            p.update(mode="callback", liquidator=liquidator, routes={crv.controller.address: {"hops": [hop]}})
    return protocols


def arbitrage_pool(chain: DevChain, crv: LlammaDeployment, pool, arb: str) -> None:
    """Sell collateral into the constant-product pool until its price is the LLAMMA oracle's (what an
    arbitrageur does after a crash): x' = √(x·y/p)."""
    x = crv.collateral.functions.balanceOf(pool.address).call()
    y = crv.stablecoin.functions.balanceOf(pool.address).call()
    dx = isqrt(x * y * E // crv.oracle_price()) - x
    if dx <= 0:
        return
    crv.fund_collateral(arb, dx)
    chain.tx(crv.collateral.functions.approve(pool.address, dx), sender=arb)
    chain.tx(pool.functions.exchange(1, 0, dx, 0), sender=arb)


def summary(wd: Path, perp: PerpDeployment, crv: LlammaDeployment, daemon: DemoDaemon, exit_code: int, seconds: float) -> int:
    db = sqlite3.connect(wd / "state.sqlite")
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT * FROM txs WHERE status='mined' AND kind IN ('partial','full','frac') ORDER BY mined_block, id"
    ).fetchall()
    price = Decimal(NATIVE_PRICE)
    say(f"{'block':>6}  {'protocol':9} {'market':6} {'account':12} {'kind':7} {'reward':>12} {'gas cost':>10} {'profit':>12}")
    kinds: Counter[str] = Counter()
    reward_by: defaultdict[str, Decimal] = defaultdict(Decimal)
    cost_by: defaultdict[str, Decimal] = defaultdict(Decimal)
    labels = {c.address: n for n, c in perp.amms.items()} | {crv.controller.address: "ETH"}
    for r in rows:
        reward = Decimal(int(r["reward"] or 0)) / E
        cost = Decimal(r["gas_used"] * int(r["effective_gas_price"])) / E * price
        kinds["partial" if r["kind"] in ("partial", "frac") else "full"] += 1
        reward_by[r["protocol"]] += reward
        cost_by[r["protocol"]] += cost
        say(
            f"{r['mined_block']:>6}  {r['protocol']:9} {labels.get(r['market'], r['market'][:6]):6} {r['account'][:10]}… "
            f"{r['kind']:7} {reward:>12.4f} {cost:>10.4f} {reward - cost:>12.4f}"
        )
    other = dict(
        db.execute(
            "SELECT kind || ':' || status, COUNT(*) FROM txs WHERE NOT (status='mined' AND kind IN "
            "('partial','full','frac')) GROUP BY kind, status"
        ).fetchall()
    )
    usdc = Decimal(perp.usdc_balance(KEEPER) * USDC_UNIT) / E
    skipped = Counter(r["reason"] for r in daemon.events("liquidation_skipped"))
    say("")
    for proto, unit in (("palmswap", "USDC"), ("crvusd", "crvUSD")):
        say(
            f"{proto:9}: reward {reward_by[proto]:.6f} {unit}, gas {cost_by[proto]:.6f} {unit}, "
            f"profit {reward_by[proto] - cost_by[proto]:.6f} {unit}"
        )
    say(f"keeper USDC balance {usdc:.6f} = realised perp rewards {reward_by['palmswap']:.6f}")
    stable = Decimal(crv.stablecoin.functions.balanceOf(KEEPER).call()) / E
    weth = Decimal(crv.collateral.functions.balanceOf(KEEPER).call()) / E
    llamma = [r for r in daemon.events("liquidation_landed") if r["protocol"] == "crvusd"]
    for r in llamma:
        say(
            f"crvusd {r['account'][:10]}… frac {Decimal(int(r['frac'])) / E:.2f}: sold {Decimal(int(r['collateral_sold'])) / E:.6f} ETH "
            f"for {Decimal(int(r['proceeds'])) / E:.6f} crvUSD, estimated gain {Decimal(r['expected_reward']):.6f}, "
            f"realised {Decimal(r['reward']):.6f}, gas {r['gas_used']}"
        )
    exact = all(Decimal(r["reward"]) == Decimal(r["expected_reward"]) for r in llamma)  # logged as exact decimals
    say(
        f"keeper crvUSD {stable:.6f} (it started with none), ETH collateral left {weth:.6f}; callback mode: "
        f"{len(llamma)} liquidations through the liquidator contract, realised = estimated: {'yes' if exact else 'NO'}"
    )
    say(f"gas priced at {NATIVE_PRICE} per ETH; other keeper transactions: {other or 'none'}")
    if skipped:
        say(f"skips by reason: {dict(skipped)}")
    say(f"elapsed: {seconds:.1f} s; logs: {daemon.log_path}; journal: {wd / 'state.sqlite'}\n")
    n = sum(kinds.values())
    total_reward, total_cost = sum(reward_by.values()), sum(cost_by.values())
    say(
        f"demo: liquidations={n} partial={kinds['partial']} full={kinds['full']} "
        f"reward={total_reward:.6f} cost={total_cost:.6f} profit={total_reward - total_cost:.6f}"
    )
    ok = (
        n > 0
        and exit_code == 0
        and abs(usdc - reward_by["palmswap"]) < Decimal("0.000001")
        and reward_by["crvusd"] > 0
        and exact
        and stable == reward_by["crvusd"]
    )
    return 0 if ok else 1
