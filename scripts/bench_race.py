#!/usr/bin/env python
"""Race benchmark (`make bench-race`): the keeper daemon against a plain bot on the same anvil chain.

For each seed (default 1..5) the script
1. builds the reference world once on a builder anvil (keeper/devtools/scenario.py: a Perp v1
   ClearingHouse with the 30 positions of BOOK in ETH and BTC, a crvUSD-style LLAMMA market with 15
   loans), gives each side 1M crvUSD and no allowance (the keeper is anvil key 9, the plain bot key 8;
   both hold 10,000 ETH for gas), and snapshots it;
2. prepares the seed's crash on the builder (evm_revert to the snapshot each time): the seed picks the
   kind (perp only, LLAMMA only, or both: seeds 1, 4 both, 2, 5 perp, 3 LLAMMA, cycling) and the moves.
   Perp: the index and the vAMM spot move to the crash price (ETH down 7–13 %, BTC down 4–10 % or up
   4–10 %), but no time passes, so the 15-minute TWAP still holds the old price and nothing is
   liquidatable yet (the ClearingHouse takes the better of spot and TWAP PnL). LLAMMA: the oracle falls
   10–14 % in 4–6 steps with arbitrage after each (soft liquidation, health stays ≥ 0). The state is
   dumped (anvil_dumpState);
3. starts a race anvil from that dump with `--block-time` (default 1 s) and `--order fees`, then at the
   same head the keeper daemon (`keeper run` subprocess with its own config and key, as `keeper demo`
   runs it) and the plain bot (`python -m keeper.devtools.plainbot`, its own key; positions found from
   PositionChanged / Borrow logs). Both get `--warmup` blocks to index, then the crash lands in one block:
   900 s pass (the TWAP catches up with the spot: perp positions become liquidatable) and the LLAMMA
   oracle gaps down 4–7 % (loans' health < 0);
4. runs until nothing is liquidatable any more (perp: `liquidate` succeeds in an eth_call from a neutral
   address; LLAMMA: users_to_liquidate()) with an empty pool, or `--quiet` blocks pass without a
   liquidation, or `--blocks` blocks pass; then stops both sides (the keeper's /metrics scraped first);
5. attributes from the chain alone (every block's receipts from the crash on): per side liquidations,
   reward (perp: the PositionLiquidated liquidationFee paid to it, USDC; LLAMMA: the Liquidate event's
   collateral received valued at the LLAMMA oracle price after the crash + stablecoin received − debt
   repaid, crvUSD), gas paid (priced at 3,000 USD per ETH), transactions mined, reverted ones and among
   them lost races (the same position was liquidated earlier in that block by the other side) and
   out-of-gas ones (gas used = gas limit), share of
   the total reward, and first-block share (the side's reward that landed in the first block after the
   crash, as a share of the scenario's total reward).

Latency (head-to-broadcast: new head seen → last raw transaction accepted by the node), p50 / p99 over
the blocks where a side sent something: the plain bot logs it per block; the keeper logs it per head
(`head_sends_done`, head_to_broadcast_ms; the same figure feeds its `keeper_head_to_broadcast_seconds`
histogram on /metrics, read when the log has none).

The keeper runs with a bounty hunter's bid, `gas.tip_policy = "share"`, `tip_share = 0.5` (half of what
the liquidation leaves after the base fee, under the default 5 gwei tip cap and break-even); the plain
bot tips the node's default. `--keeper-config '{"gas": {"tip_policy": "fixed"}}'` races the fixed tip.

Target (issue 8): the keeper takes ≥ 90 % of the total reward with 0 reverted sends except lost races,
in every scenario. The script prints a table per scenario and a total, and exits 0 unless the benchmark
itself failed (a node or a side died). `--json FILE` writes every figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_abi import decode as abi_decode  # noqa: E402
from eth_utils import keccak, to_checksum_address  # noqa: E402

from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS  # noqa: E402
from keeper.devtools.anvil import AnvilProcess, free_port, rpc  # noqa: E402
from keeper.devtools.chain import DevChain  # noqa: E402
from keeper.devtools.configfile import write_config  # noqa: E402
from keeper.devtools.demo import DemoDaemon  # noqa: E402
from keeper.devtools.llamma_env import lower_price_in_steps  # noqa: E402
from keeper.devtools.logs import read_events  # noqa: E402
from keeper.devtools.perp_env import deploy_perp  # noqa: E402
from keeper.devtools.plainbot import calldata  # noqa: E402
from keeper.devtools.scenario import (  # noqa: E402
    KEEPER_CRVUSD,
    WORLD_ACCOUNTS,
    attach_llamma,
    attach_perp,
    keeper_protocols,
    llamma_info,
    perp_info,
    populate_world,
    scaled,
)

E = 10**18
KEEPER_KEY, KEEPER = ANVIL_KEYS[9], ANVIL_ADDRESSES[9]  # anvil's public test keys: benchmark only
BOT_KEY, BOT = ANVIL_KEYS[8], ANVIL_ADDRESSES[8]
STABLE_EACH = 1_000_000  # crvUSD per side
NATIVE_PRICE = Decimal(3000)  # USD per ETH, to price gas (the keeper's config uses the same)
NEUTRAL = to_checksum_address("0x" + "5e" * 20)  # eth_call sender for "can anyone still liquidate this?"
KINDS = ("both", "perp", "llamma")
SIDES = ("keeper", "plainbot")
T_LIQUIDATED = "0x" + keccak(text="PositionLiquidated(address,address,uint256,uint256,uint256,address,uint256)").hex()
T_LIQUIDATE = "0x" + keccak(text="Liquidate(address,address,uint256,uint256,uint256)").hex()


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---- scenarios -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    seed: int
    kind: str  # both | perp | llamma
    eth_pct: Decimal  # perp index + spot move, percent
    btc_pct: Decimal
    soft_pct: Decimal  # LLAMMA oracle fall before the crash (soft liquidation)
    soft_steps: int
    gap_pct: Decimal  # LLAMMA oracle gap in the crash block

    @property
    def perp(self) -> bool:
        return self.kind in ("both", "perp")

    @property
    def llamma(self) -> bool:
        return self.kind in ("both", "llamma")

    def describe(self) -> str:
        parts = []
        if self.perp:
            parts.append(f"ETH {self.eth_pct:+.1f} %, BTC {self.btc_pct:+.1f} %")
        if self.llamma:
            parts.append(f"LLAMMA −{self.soft_pct:.1f} % soft in {self.soft_steps} steps then −{self.gap_pct:.1f} % gap")
        return f"{self.kind}: " + "; ".join(parts)


def scenario(seed: int) -> Scenario:
    rng = random.Random(seed)

    def pct(lo: float, hi: float) -> Decimal:
        return Decimal(rng.randint(int(lo * 10), int(hi * 10))) / 10

    eth = -pct(7, 13)
    btc = pct(4, 10) * (1 if rng.random() < 0.3 else -1)
    return Scenario(seed, KINDS[(seed - 1) % 3], eth, btc, pct(10, 14), rng.randint(4, 6), pct(4, 7))


# ---- the prepared world ----------------------------------------------------------------------------


@dataclass
class Prepared:
    state_file: Path
    timestamp: int  # of the last block in the dump
    head: int
    info: dict[str, Any]  # perp / llamma addresses, positions, loans
    oracle_after_gap: int  # LLAMMA oracle price set in the crash block (0: no LLAMMA crash)


class Builder:
    """The builder anvil: the world built once, each seed's pre-crash state prepared from a snapshot."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.node = AnvilProcess(
            timestamp=int(time.time()) - 30 * 86400, accounts=WORLD_ACCOUNTS, log_path=str(workdir / "builder-anvil.log")
        ).start()
        self.chain = DevChain(self.node.url)
        t0 = time.monotonic()
        perp = deploy_perp(self.chain)
        world = populate_world(self.chain, perp, KEEPER)
        crv = world.crv
        crv.fund_stablecoin(KEEPER, crv.usd(STABLE_EACH - KEEPER_CRVUSD))
        crv.fund_stablecoin(BOT, crv.usd(STABLE_EACH))
        self.world = world
        self.info = {
            "perp": perp_info(perp),
            "llamma": llamma_info(crv),
            "positions": world.book,
            "loans": world.borrowers,
        }
        self.snap = self.chain.snapshot()
        say(
            f"world built in {time.monotonic() - t0:.1f} s: {len(world.book)} perp positions, {len(world.borrowers)} loans; "
            f"keeper {KEEPER}, plain bot {BOT}, {STABLE_EACH:,} crvUSD each, no allowance"
        )

    def prepare(self, scn: Scenario) -> Prepared:
        self.chain.revert_to(self.snap)
        self.snap = self.chain.snapshot()
        w = self.world
        perp, crv = w.perp, w.crv
        if scn.perp:
            for market, pct in (("ETH", scn.eth_pct), ("BTC", scn.btc_pct)):
                target = scaled(perp.oracle_price(market), pct)
                perp.set_oracle_price(market, target)
                perp.move_spot_price(market, target, w.whale)
        gap = 0
        if scn.llamma:
            lower_price_in_steps(crv, scaled(crv.oracle_price(), -scn.soft_pct), scn.soft_steps, w.arbitrageur)
            gap = scaled(crv.oracle_price(), -scn.gap_pct)
        dumped = rpc(self.node.url, "anvil_dumpState", timeout=120)
        raw = bytes.fromhex(dumped[2:])
        try:
            raw = gzip.decompress(raw)
        except OSError:
            pass  # an uncompressed dump
        state = json.loads(raw)
        path = self.workdir / f"state-{scn.seed}.json"
        path.write_bytes(raw)
        return Prepared(path, int(str(state["block"]["timestamp"]), 0), self.chain.block_number(), self.info, gap)

    def stop(self) -> None:
        self.node.stop()


# ---- the two sides ---------------------------------------------------------------------------------


class PlainBotProcess:
    def __init__(self, workdir: Path, url: str, info: dict[str, Any], poll_interval: float):
        self.log_path = workdir / "plainbot.log"
        self.log_path.write_text("")
        env = {**os.environ, "PLAINBOT_PRIVATE_KEY": BOT_KEY}
        args = [
            sys.executable,
            "-m",
            "keeper.devtools.plainbot",
            "--rpc",
            url,
            "--clearing-house",
            info["perp"]["clearing_house"],
            "--controller",
            info["llamma"]["markets"]["ETH"]["controller"],
            "--from-block",
            str(info["perp"]["start_block"]),
            "--poll-interval",
            str(poll_interval),
            "--log",
            str(self.log_path),
        ]
        self._err = open(workdir / "plainbot.stderr", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._err, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def events(self, name: str | None = None) -> list[dict]:
        return read_events(self.log_path, name)

    def processed(self) -> int:
        blocks = self.events("plainbot_block")
        return blocks[-1]["block"] if blocks else -1

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
        self._err.close()
        return self.proc.returncode


def wait_until(pred, timeout: float, what: str, alive=None) -> None:
    """Poll `pred()` (bounded) — the sides are other processes and the chain mines on its own clock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None:
            alive()
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- attribution -----------------------------------------------------------------------------------


@dataclass
class SideStats:
    liquidations: int = 0
    reward: Decimal = Decimal(0)  # USD (USDC + crvUSD)
    reward_perp: Decimal = Decimal(0)
    reward_llamma: Decimal = Decimal(0)
    first_block_reward: Decimal = Decimal(0)
    gas_wei: int = 0
    txs: int = 0
    approvals: int = 0
    reverted: int = 0
    lost_races: int = 0
    out_of_gas: int = 0  # reverted with gas used = gas limit
    latency: list[float] = field(default_factory=list)
    latency_source: str = "n/a"
    share: float = 0.0
    first_block_share: float = 0.0

    @property
    def gas_usd(self) -> Decimal:
        return Decimal(self.gas_wei) * NATIVE_PRICE / E


def side_of(address: str) -> str | None:
    a = to_checksum_address(address)
    return "keeper" if a == KEEPER else "plainbot" if a == BOT else None


def position_of(tx: dict, clearing_house: str, controller: str) -> tuple[str, str] | None:
    """(contract, account) a liquidation transaction targets, from its calldata: the first two arguments
    (amm, trader) of any ClearingHouse call, the first one (user) of any controller call."""
    to, data = to_checksum_address(tx["to"] or NEUTRAL), tx["input"]
    if len(data) < 10 + 128:
        return None
    if to == clearing_house:
        amm, trader = abi_decode(["address", "address"], bytes.fromhex(data[10:138]))
        return (to_checksum_address(amm), to_checksum_address(trader))
    if to == controller:
        (user,) = abi_decode(["address"], bytes.fromhex(data[10:74]))
        return (to, to_checksum_address(user))
    return None


def attribute(
    url: str, info: dict[str, Any], start: int, first: int, last: int, llamma_price: int
) -> tuple[dict[str, SideStats], dict[str, Any]]:
    """Every side's figures over blocks start..last (`first`: the first block after the crash)."""
    clearing_house = to_checksum_address(info["perp"]["clearing_house"])
    controller = to_checksum_address(info["llamma"]["markets"]["ETH"]["controller"])
    stats = {s: SideStats() for s in SIDES}
    by_block_reward: dict[int, Decimal] = defaultdict(Decimal)
    landed_first = None
    for b in range(start, last + 1):
        block = rpc(url, "eth_getBlockByNumber", [hex(b), True])
        receipts = {r["transactionHash"]: r for r in rpc(url, "eth_getBlockReceipts", [hex(b)])}
        liquidated_at: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)  # position → (tx index, side)
        reverted: list[tuple[int, str, tuple[str, str] | None]] = []
        for tx in block["transactions"]:
            r = receipts[tx["hash"]]
            idx = int(r["transactionIndex"], 16)
            for lg in r["logs"]:
                t0 = lg["topics"][0]
                if t0 == T_LIQUIDATED:
                    amm, trader = _addr(lg["topics"][2]), _addr(lg["topics"][1])
                    _n, _s, fee, liquidator, _bad = abi_decode(
                        ["uint256", "uint256", "uint256", "address", "uint256"], bytes.fromhex(lg["data"][2:])
                    )
                    who = side_of(liquidator)
                    liquidated_at[(amm, trader)].append((idx, who or "other"))
                    if who:
                        reward = Decimal(fee) / E
                        stats[who].liquidations += 1
                        stats[who].reward += reward
                        stats[who].reward_perp += reward
                        by_block_reward[b] += reward
                        if b == first:
                            stats[who].first_block_reward += reward
                elif t0 == T_LIQUIDATE:
                    who = side_of(_addr(lg["topics"][1]))
                    user = _addr(lg["topics"][2])
                    liquidated_at[(to_checksum_address(lg["address"]), user)].append((idx, who or "other"))
                    y, x, debt = abi_decode(["uint256", "uint256", "uint256"], bytes.fromhex(lg["data"][2:]))
                    if who:
                        reward = (Decimal(y) * llamma_price / E + x - debt) / E
                        stats[who].liquidations += 1
                        stats[who].reward += reward
                        stats[who].reward_llamma += reward
                        by_block_reward[b] += reward
                        if b == first:
                            stats[who].first_block_reward += reward
            who = side_of(tx["from"])
            if who is None:
                continue
            st = stats[who]
            st.txs += 1
            st.gas_wei += int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16)
            if tx["input"].startswith("0x095ea7b3"):
                st.approvals += 1
            if int(r["status"], 16) == 0:
                st.reverted += 1
                st.out_of_gas += int(r["gasUsed"], 16) == int(tx["gas"], 16)
                reverted.append((idx, who, position_of(tx, clearing_house, controller)))
        for idx, who, pos in reverted:
            if pos is not None and any(i < idx and s != who for i, s in liquidated_at.get(pos, [])):
                stats[who].lost_races += 1
        if landed_first is None and by_block_reward.get(b):
            landed_first = b
    total = sum((s.reward for s in stats.values()), Decimal(0))
    for s in stats.values():
        s.share = float(s.reward / total) if total else 0.0
        s.first_block_share = float(s.first_block_reward / total) if total else 0.0
    return stats, {"total_reward": total, "first_liquidation_block": landed_first}


def _addr(t: str) -> str:
    return to_checksum_address("0x" + t[-40:])


# ---- latency ---------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def histogram_quantiles(metrics: str, name: str) -> tuple[float | None, float | None, int]:
    """p50 / p99 (bucket upper bounds) and the count of a Prometheus histogram in a /metrics text."""
    buckets: dict[float, float] = defaultdict(float)
    for line in metrics.splitlines():
        m = re.match(rf"^{name}_bucket\{{(.*)\}} ([0-9.eE+-]+)$", line)
        if not m:
            continue
        le = re.search(r'le="([^"]+)"', m.group(1))
        if le:
            buckets[float(le.group(1))] += float(m.group(2))  # summed over label sets
    if not buckets:
        return None, None, 0
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count == 0:
        return None, None, 0

    def q(p: float) -> float:
        return next(b for b in bounds if buckets[b] >= p * count)

    return q(0.5), q(0.99), int(count)


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            return resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return ""


def keeper_latency(metrics: str, log_path: Path) -> tuple[list[float], tuple[float | None, float | None], str]:
    """Exact per-head figures from the keeper's `head_sends_done` log lines (head_to_broadcast_ms); the
    /metrics histogram (bucket upper bounds) only when the log has none."""
    values = [
        float(rec["head_to_broadcast_ms"]) / 1000
        for rec in read_events(log_path)
        if rec.get("event") == "head_sends_done" and isinstance(rec.get("head_to_broadcast_ms"), int | float)
    ]
    if values:
        return values, (quantile(values, 0.5), quantile(values, 0.99)), f"JSON log ({len(values)} heads with sends)"
    p50, p99, n = histogram_quantiles(metrics, "keeper_head_to_broadcast_seconds")
    if n:
        return [], (p50, p99), f"/metrics histogram ({n} blocks)"
    return [], (None, None), "n/a (keeper exposes no head_to_broadcast yet)"


# ---- one race --------------------------------------------------------------------------------------


def remaining(chain: DevChain, info: dict[str, Any]) -> tuple[int, int]:
    """(perp positions anyone could still liquidate, loans with health < 0)."""
    ch = info["perp"]["clearing_house"]
    amms = info["perp"]["amms"]
    perp_left = 0
    for market, trader in info["positions"]:
        data = calldata("liquidate(address,address)", ["address", "address"], [amms[market], trader])
        try:
            chain.w3.eth.call({"from": NEUTRAL, "to": ch, "data": data})
            perp_left += 1
        except Exception:  # noqa: BLE001 - any revert: not liquidatable
            pass
    ctrl = chain.w3.eth.contract(
        address=info["llamma"]["markets"]["ETH"]["controller"],
        abi=[
            {
                "name": "users_to_liquidate",
                "type": "function",
                "stateMutability": "view",
                "inputs": [],
                "outputs": [
                    {
                        "name": "",
                        "type": "tuple[]",
                        "components": [
                            {"name": "user", "type": "address"},
                            {"name": "x", "type": "uint256"},
                            {"name": "y", "type": "uint256"},
                            {"name": "debt", "type": "uint256"},
                            {"name": "health", "type": "int256"},
                        ],
                    }
                ],
            }
        ],
    )
    return perp_left, len(ctrl.functions.users_to_liquidate().call())


@dataclass
class RaceResult:
    scenario: Scenario
    crash_block: int
    last_block: int
    blocks: int
    end_reason: str
    liquidatable_at_crash: tuple[int, int]
    left: tuple[int, int]
    total_reward: Decimal
    stats: dict[str, SideStats]
    latency: dict[str, tuple[float | None, float | None]]
    keeper_exit: int | None
    bot_exit: int | None


def race(scn: Scenario, prepared: Prepared, args: argparse.Namespace, workdir: Path) -> RaceResult:
    info = prepared.info
    node = AnvilProcess(
        timestamp=prepared.timestamp + 1,
        accounts=WORLD_ACCOUNTS,
        block_time=args.block_time,
        load_state=str(prepared.state_file),
        extra_args=["--order", "fees"],
        log_path=str(workdir / "anvil.log"),
    ).start()
    daemon: DemoDaemon | None = None
    bot: PlainBotProcess | None = None
    try:
        chain = DevChain(node.url)
        perp = attach_perp(chain, info["perp"])
        crv = attach_llamma(chain, info["llamma"], "ETH")
        pre = remaining(chain, info)
        port = free_port()
        cfg = {
            "chain": {"rpc_urls": [node.url], "chain_id": 31337, "poll_interval": args.poll_interval},
            "key": {"private_key_env": "KEEPER_PRIVATE_KEY"},
            "pricing": {"source": "fixed", "value": str(NATIVE_PRICE)},
            "profit": {"min_profit": "0.5"},
            # a bounty hunter's bid: half of what is left after the base fee, under the default caps
            # (5 gwei tip, break-even); `--keeper-config '{"gas": {"tip_policy": "fixed"}}'` for the fixed 1 gwei tip
            "gas": {"tip_policy": "share", "tip_share": "0.5"},
            "state": {"path": str(workdir / "state.sqlite")},
            "http": {"listen": f"127.0.0.1:{port}"},
            "log": {"format": "json"},
            "protocols": keeper_protocols(perp, crv, info["perp"]["start_block"]),
        }
        for k, v in json.loads(args.keeper_config or "{}").items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
        config = write_config(workdir / "keeper.toml", cfg)
        # both sides start at the same head
        daemon = DemoDaemon(workdir, config, port)
        if not args.alone:
            bot = PlainBotProcess(workdir, node.url, info, args.poll_interval)

        def alive() -> None:
            if daemon is not None and not daemon.alive():
                raise RuntimeError(f"the keeper daemon exited; see {daemon.log_path}")
            if bot is not None and not bot.alive():
                raise RuntimeError(f"the plain bot exited; see {bot.log_path}")

        start = chain.block_number()
        ready_at = start + args.warmup
        wait_until(
            lambda: daemon.processed()[0] >= ready_at and (bot is None or bot.processed() >= ready_at),
            90,
            "both sides to index the chain",
            alive,
        )
        # the crash, in one block: right after a new block, before the next one is mined
        head = chain.block_number()
        wait_until(lambda: chain.block_number() > head, 10 + args.block_time * 2, "a block")
        if scn.perp:
            chain.increase_time(900)  # the 15-minute TWAP catches up with the moved spot
        gap_tx = None
        if scn.llamma:
            gap_tx = crv.oracle.functions.set_price(prepared.oracle_after_gap).transact({"from": chain.admin})
        if gap_tx is not None:
            crash_block = chain.w3.eth.wait_for_transaction_receipt(gap_tx, timeout=30)["blockNumber"]
        else:
            wait_until(lambda: chain.block_number() > head + 1, 10 + args.block_time * 2, "the crash block")
            crash_block = head + 2
        at_crash = remaining(chain, info)
        say(
            f"  crash in block {crash_block}: {at_crash[0]} perp positions and {at_crash[1]} loans liquidatable "
            f"(before it: {pre[0]} and {pre[1]})"
        )
        # run
        last_seen = crash_block
        quiet, end_reason, left, clear = 0, "", at_crash, 0
        while True:
            wait_until(lambda seen=last_seen: chain.block_number() > seen, 10 + args.block_time * 2, "the next block", alive)
            last_seen = chain.block_number()
            left = remaining(chain, info)
            landed = bool(
                chain.w3.eth.get_logs({"fromBlock": last_seen, "toBlock": last_seen, "topics": [[T_LIQUIDATED, T_LIQUIDATE]]})
            )
            quiet = 0 if landed else quiet + 1
            clear = clear + 1 if left == (0, 0) else 0
            if clear >= 2:  # one more block after the last liquidation: what was sent at that head lands
                end_reason = "nothing liquidatable"
                break
            if quiet >= args.quiet:
                end_reason = f"{args.quiet} blocks without a liquidation ({left[0]} perp positions, {left[1]} loans liquidatable)"
                break
            if last_seen - crash_block >= args.blocks:
                end_reason = f"{args.blocks} blocks ({left[0]} perp positions, {left[1]} loans still liquidatable)"
                break
        metrics = scrape(port)
        keeper_exit = daemon.stop()
        bot_exit = bot.stop() if bot is not None else None
        stats, totals = attribute(
            node.url, info, start + 1, crash_block + 1, last_seen, prepared.oracle_after_gap or crv.oracle_price()
        )
        kvals, klat, ksrc = keeper_latency(metrics, daemon.log_path)
        stats["keeper"].latency = kvals
        stats["keeper"].latency_source = ksrc
        latency: dict[str, tuple[float | None, float | None]] = {"keeper": klat, "plainbot": (None, None)}
        if bot is not None:
            vals = [r["head_to_broadcast"] for r in bot.events("plainbot_block") if r.get("head_to_broadcast") is not None]
            stats["plainbot"].latency = vals
            stats["plainbot"].latency_source = f"its log ({len(vals)} blocks)"
            latency["plainbot"] = (quantile(vals, 0.5), quantile(vals, 0.99))
        return RaceResult(
            scn,
            crash_block,
            last_seen,
            last_seen - crash_block,
            end_reason,
            at_crash,
            left,
            totals["total_reward"],
            stats,
            latency,
            keeper_exit,
            bot_exit,
        )
    finally:
        if daemon is not None and daemon.alive():
            daemon.stop()
        if bot is not None and bot.alive():
            bot.stop()
        node.stop()


# ---- report ----------------------------------------------------------------------------------------


def ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f}"


HEADER = (
    f"  {'side':9} {'liqs':>4} {'reward USD':>11} {'share':>6} {'1st-blk':>7} {'gas USD':>8} {'txs':>4} "
    f"{'appr':>4} {'revert':>6} {'lost':>4} {'oog':>4} {'h2b p50/p99 ms':>15}"
)


def row(name: str, s: SideStats, lat: tuple[float | None, float | None]) -> str:
    return (
        f"  {name:9} {s.liquidations:>4} {s.reward:>11.2f} {s.share:>6.1%} {s.first_block_share:>7.1%} {s.gas_usd:>8.4f} "
        f"{s.txs:>4} {s.approvals:>4} {s.reverted:>6} {s.lost_races:>4} {s.out_of_gas:>4} {ms(lat[0]) + '/' + ms(lat[1]):>15}"
    )


def target_met(r: RaceResult) -> bool:
    k = r.stats["keeper"]
    return r.total_reward > 0 and k.share >= 0.9 and k.reverted - k.lost_races == 0


def report(results: list[RaceResult]) -> dict[str, Any]:
    say("\n=== per scenario ===")
    for r in results:
        say(
            f"seed {r.scenario.seed} ({r.scenario.describe()}): crash block {r.crash_block}, {r.blocks} blocks, "
            f"ended: {r.end_reason}; total reward {r.total_reward:.2f} USD"
        )
        say(HEADER)
        for side in SIDES:
            say(row(side, r.stats[side], r.latency[side]))
        k, b = r.stats["keeper"], r.stats["plainbot"]
        for proto, kr, br in (("perp", k.reward_perp, b.reward_perp), ("LLAMMA", k.reward_llamma, b.reward_llamma)):
            if kr + br:
                say(f"  {proto}: keeper {kr:.2f} / plain bot {br:.2f} USD (keeper {kr / (kr + br):.1%})")
        say(f"  keeper target (≥ 90 % of reward, 0 reverts except lost races): {'met' if target_met(r) else 'NOT met'}")
    tot = {s: SideStats() for s in SIDES}
    for r in results:
        for s in SIDES:
            a, b = tot[s], r.stats[s]
            a.liquidations += b.liquidations
            a.reward += b.reward
            a.first_block_reward += b.first_block_reward
            a.gas_wei += b.gas_wei
            a.txs += b.txs
            a.approvals += b.approvals
            a.reverted += b.reverted
            a.lost_races += b.lost_races
            a.out_of_gas += b.out_of_gas
            a.latency += b.latency
    total = sum((t.reward for t in tot.values()), Decimal(0))
    for t in tot.values():
        t.share = float(t.reward / total) if total else 0.0
        t.first_block_share = float(t.first_block_reward / total) if total else 0.0
    shares = [r.stats["keeper"].share for r in results]
    say(f"\n=== total over {len(results)} scenarios: reward {total:.2f} USD ===")
    say(HEADER)
    for side in SIDES:
        pooled = tot[side].latency  # every head's figure over all scenarios
        say(row(side, tot[side], (quantile(pooled, 0.5), quantile(pooled, 0.99)) if pooled else (None, None)))
    met = sum(target_met(r) for r in results)
    say(
        f"keeper share per scenario: {' / '.join(f'{s:.1%}' for s in shares)} (mean {sum(shares) / max(1, len(shares)):.1%}); "
        f"target met in {met}/{len(results)} scenarios"
    )
    say(
        f"bench_race: scenarios={len(results)} keeper_share={tot['keeper'].share:.4f} "
        f"keeper_min_share={min(shares, default=0):.4f} keeper_reverted={tot['keeper'].reverted} "
        f"keeper_lost_races={tot['keeper'].lost_races} target_met={met}/{len(results)}"
    )

    def js(s: SideStats, lat: tuple[float | None, float | None]) -> dict[str, Any]:
        d = asdict(s)
        for k in ("reward", "reward_perp", "reward_llamma", "first_block_reward"):
            d[k] = str(d[k])
        d["gas_usd"] = str(s.gas_usd)
        d["head_to_broadcast_p50"], d["head_to_broadcast_p99"] = lat
        return d

    return {
        "scenarios": [
            {
                "seed": r.scenario.seed,
                "scenario": {k: str(v) for k, v in asdict(r.scenario).items()},
                "crash_block": r.crash_block,
                "blocks": r.blocks,
                "end_reason": r.end_reason,
                "liquidatable_at_crash": {"perp": r.liquidatable_at_crash[0], "llamma": r.liquidatable_at_crash[1]},
                "left": {"perp": r.left[0], "llamma": r.left[1]},
                "total_reward": str(r.total_reward),
                "sides": {s: js(r.stats[s], r.latency[s]) for s in SIDES},
                "target_met": target_met(r),
                "exit_codes": {"keeper": r.keeper_exit, "plainbot": r.bot_exit},
            }
            for r in results
        ],
        "total": {"reward": str(total), "sides": {s: js(tot[s], (None, None)) for s in SIDES}, "target_met": met},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds or a range a..b (default 1,2,3,4,5)")
    p.add_argument("--blocks", type=int, default=40, help="stop a race this many blocks after the crash (default 40)")
    p.add_argument("--quiet", type=int, default=6, help="stop after this many blocks without a liquidation (default 6)")
    p.add_argument("--block-time", type=float, default=1.0, help="anvil --block-time in seconds (default 1)")
    p.add_argument("--warmup", type=int, default=3, help="blocks both sides get to index before the crash")
    p.add_argument("--poll-interval", type=float, default=0.05, help="head polling interval of both sides (s)")
    p.add_argument(
        "--keeper-config", default="", help='JSON merged into the keeper config, e.g. \'{"tx": {"max_sends_per_block": 32}}\''
    )
    p.add_argument("--alone", action="store_true", help="run the keeper without the plain bot (baseline)")
    p.add_argument("--workdir", default="", help="keep logs, configs and state dumps here (default: a temporary folder)")
    p.add_argument("--json", default="", help="write every figure to this file")
    args = p.parse_args()
    if ".." in args.seeds:
        lo, hi = args.seeds.split("..")
        seeds = list(range(int(lo), int(hi) + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-race-"))
    base.mkdir(parents=True, exist_ok=True)
    say(f"race benchmark: seeds {seeds}, {args.block_time:g} s blocks, up to {args.blocks} blocks per race; files in {base}")
    builder = Builder(base)
    results: list[RaceResult] = []
    try:
        for seed in seeds:
            scn = scenario(seed)
            say(f"\nseed {seed}: {scn.describe()}")
            prepared = builder.prepare(scn)
            wd = base / f"seed-{seed}"
            wd.mkdir(exist_ok=True)
            for f in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm", "keeper.log"):
                (wd / f).unlink(missing_ok=True)
            t0 = time.monotonic()
            r = race(scn, prepared, args, wd)
            results.append(r)
            k, b = r.stats["keeper"], r.stats["plainbot"]
            say(
                f"  {r.blocks} blocks in {time.monotonic() - t0:.0f} s ({r.end_reason}): keeper {k.reward:.2f} USD "
                f"({k.share:.1%}, {k.liquidations} liqs, {k.reverted} reverted), plain bot {b.reward:.2f} USD "
                f"({b.share:.1%}, {b.liquidations} liqs, {b.reverted} reverted)"
            )
    finally:
        builder.stop()
    out = report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
