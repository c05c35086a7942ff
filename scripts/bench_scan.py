#!/usr/bin/env python
"""Benchmark of the keeper's per-block scan over N real perp positions (`make bench`).

For each N (default 1,000 and 10,000) the script
1. starts its own anvil (`--prune-history`: only recent states in memory, so 100k positions fit)
   and deploys the reference perp protocol: ETH and BTC markets, plus SOL and BNB (4 markets) from
   100,000 positions on (`--markets`);
2. builds N real positions on-chain: N/M impersonated traders (M markets), each funded (USDC mint +
   approve) and opening one position per market (longs and shorts, margin 50–1,000 USDC, leverage
   1–10x), sent as JSON-RPC batches of eth_sendTransaction with automine off and mined 250 per block;
3. runs the daemon's own per-block path, `Daemon.process(head)` in dry run (sync → evaluate →
   candidate selection → confirm → simulate; nothing is sent), after the daemon's head poll, over
     steady   new empty blocks, no price move;
     move     every block of a market move (ETH and SOL −move, BTC and BNB +move in `ramp` blocks, then held with
              small trades each block so the 900 s TWAP catches up);
     stressed more blocks at the moved prices (still trading): candidates and full TWAP evaluations;
4. prints, per phase, the wall time per block split into sync (RPC), local evaluation (adapter
   evaluate + the engine's status tracking; wall and CPU time) and confirm/simulate, the JSON-RPC
   calls and HTTP requests per block (head poll included), contract reads inside Multicall3,
   candidates, the initial index (first block from start_block), and the keeper's peak Python heap
   (tracemalloc, on a fresh keeper: initial index + one block); then one summary line per N:
   eval_ms_* over every measured block, rpc_calls_per_block in the steady phase, candidates and
   stressed_* in the stressed phase; anvil's resident memory (current and peak) after the build and
   at the end.

Blocks are 12 s apart. Timings exclude anvil's own mining. On a shared machine compare the eval
CPU time with the wall time: the difference is time spent waiting for a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from math import isqrt
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keeper.config import parse_config  # noqa: E402
from keeper.daemon import Daemon  # noqa: E402
from keeper.devtools.anvil import AnvilProcess  # noqa: E402
from keeper.devtools.chain import DevChain  # noqa: E402
from keeper.devtools.perp_env import (  # noqa: E402
    BUY,
    DEFAULT_MARKETS,
    SELL,
    USDC_UNIT,
    WAD,
    MarketSpec,
    PerpDeployment,
    deploy_perp,
)
from keeper.log import configure_logging  # noqa: E402
from keeper.rpc import RpcClient  # noqa: E402
from keeper.types import Block  # noqa: E402
from tests.harness import KEEPER_KEY, KEY_ENV, keeper_config, perp_protocol  # noqa: E402

BLOCK_SECONDS = 12
BLOCK_GAS_LIMIT = 3_000_000_000
TX_BATCH = 500  # eth_sendTransaction per JSON-RPC batch while building
WAVE = 250  # transactions per mined block while building
TRADER_BASE = 0xBE7C << 144  # generated trader addresses (impersonated by anvil)
WHALE = to_checksum_address(f"0x{0xB16 << 148:040x}")
# ETH and BTC (the default deployment), then two more for the 4-market runs
MARKETS = (
    *DEFAULT_MARKETS,
    MarketSpec("SOL", price=150 * WAD, base_reserve=200_000 * WAD),
    MarketSpec("BNB", price=600 * WAD, base_reserve=50_000 * WAD),
)


# ---- raw transactions ------------------------------------------------------------------------------


@cache
def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def calldata(signature: str, *args) -> str:
    types = signature[signature.index("(") + 1 : -1]
    # split the top level of the argument list (tuples stay whole)
    parts, depth, cur = [], 0, ""
    for ch in types:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur:
        parts.append(cur)
    return "0x" + (_selector(signature) + abi_encode(parts, list(args))).hex()


OPEN = "openPosition(address,uint8,(uint256),(uint256),(uint256))"


def tx(sender: str, to: str, data: str, gas: int, nonce: int) -> tuple[str, list]:
    return "eth_sendTransaction", [{"from": sender, "to": to, "data": data, "gas": hex(gas), "nonce": hex(nonce)}]


async def send_and_mine(rpc: RpcClient, txs: list[tuple[str, list]]) -> int:
    """Send the transactions (automine off) in waves of WAVE, mining each wave into a block, and
    check every receipt. Returns the number of blocks mined.

    Waves keep anvil fast: its pool insertion costs time proportional to the pool size and its
    receipts time proportional to the block size (per receipt)."""
    blocks = 0
    for i in range(0, len(txs), WAVE):
        wave = txs[i : i + WAVE]
        hashes = await rpc.batch(wave)
        errors = [h for h in hashes if isinstance(h, Exception)]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(wave)} transactions refused, first: {errors[0]}")
        receipts = []
        while len(receipts) < len(wave):
            await rpc.request("anvil_mine", ["0x1", hex(BLOCK_SECONDS)])
            blocks += 1
            mined = await rpc.request("eth_getBlockReceipts", ["latest"])
            if not mined:
                raise RuntimeError(f"transactions not mined: {await rpc.request('txpool_status')}")
            receipts += mined
        failed = [r for r in receipts if r["status"] != "0x1"]
        if failed or len(receipts) != len(wave):
            raise RuntimeError(f"{len(failed)} of {len(wave)} transactions failed, first: {failed[:1]}")
    return blocks


@dataclass
class Build:
    positions: int
    traders: int
    txs: int
    blocks: int
    seconds: float


async def build_positions(url: str, perp: PerpDeployment, n: int, seed: int) -> Build:
    """N real positions: trader j opens one position in each market (alternating sides), random size."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    rpc = await RpcClient([url], timeout=600, batch_size=TX_BATCH).start()
    try:
        ch, usdc, admin = perp.clearing_house.address, perp.usdc.address, perp.chain.admin
        amms = [c.address for c in perp.amms.values()]
        traders = [to_checksum_address(f"0x{TRADER_BASE + j + 1:040x}") for j in range(-(-n // len(amms)))]
        opens: dict[str, list[tuple[str, int, int, int]]] = {t: [] for t in traders}
        for i in range(n):
            j, m = divmod(i, len(amms))
            side = BUY if (j + m) % 2 == 0 else SELL
            opens[traders[j]].append((amms[m], side, rng.randint(50, 1000) * WAD, rng.randint(1, 10) * WAD))
        await rpc.batch([("anvil_setBalance", [t, hex(10**21)]) for t in traders])
        await rpc.request("evm_setAutomine", [False])
        admin_nonce = await rpc.nonce(admin, "latest")
        funding = []
        for j, t in enumerate(traders):
            units = sum(margin for _a, _s, margin, _l in opens[t]) // USDC_UNIT
            funding.append(tx(admin, usdc, calldata("mint(address,uint256)", t, units), 150_000, admin_nonce + j))
            funding.append(tx(t, usdc, calldata("approve(address,uint256)", ch, 2**256 - 1), 100_000, 0))
        blocks = await send_and_mine(rpc, funding)
        a0, s0, m0, l0 = opens[traders[0]][0]
        gas = 2 * int(
            await rpc.request(
                "eth_estimateGas", [{"from": traders[0], "to": ch, "data": calldata(OPEN, a0, s0, (m0,), (l0,), (0,))}]
            ),
            16,
        )
        trades = [
            tx(t, ch, calldata(OPEN, amm, side, (margin,), (lev,), (0,)), gas, 1 + k)
            for t in traders
            for k, (amm, side, margin, lev) in enumerate(opens[t])
        ]
        blocks += await send_and_mine(rpc, trades)
        await rpc.request("evm_setAutomine", [True])
        return Build(n, len(traders), len(funding) + len(trades), blocks, time.perf_counter() - t0)
    finally:
        await rpc.close()


class Market:
    """Moves the markets with a whale's 1x trades and follows with the oracle."""

    def __init__(self, rpc: RpcClient, perp: PerpDeployment):
        self.rpc, self.perp = rpc, perp
        self.nonces: dict[str, int] = {}

    async def _nonce(self, who: str) -> int:
        if who not in self.nonces:
            self.nonces[who] = await self.rpc.nonce(who, "latest")
        self.nonces[who] += 1
        return self.nonces[who] - 1

    async def fund_whale(self) -> None:
        await self.rpc.request("anvil_setBalance", [WHALE, hex(10**21)])
        await self.rpc.request("evm_setAutomine", [False])
        await send_and_mine(
            self.rpc,
            [
                tx(
                    self.perp.chain.admin,
                    self.perp.usdc.address,
                    calldata("mint(address,uint256)", WHALE, 10**9 * 10**6),
                    150_000,
                    await self._nonce(self.perp.chain.admin),
                ),
                tx(
                    WHALE,
                    self.perp.usdc.address,
                    calldata("approve(address,uint256)", self.perp.clearing_house.address, 2**256 - 1),
                    100_000,
                    await self._nonce(WHALE),
                ),
            ],
        )

    async def step(self, targets: dict[str, int], oracle: dict[str, int]) -> None:
        """One block: trade each market's spot to its target, set the oracle prices."""
        txs = []
        for name, target in targets.items():
            q, b = self.perp.reserves(name)
            q_after = isqrt(target * (q * b // WAD))
            side, quote = (BUY, q_after - q) if q_after > q else (SELL, q - q_after)
            quote -= quote % USDC_UNIT
            if quote:
                data = calldata(OPEN, self.perp.amms[name].address, side, (quote,), (WAD,), (0,))
                txs.append(tx(WHALE, self.perp.clearing_house.address, data, 3_000_000, await self._nonce(WHALE)))
        for name, price in oracle.items():
            data = calldata("setPrice(bytes32,uint256)", self.perp.price_feed_keys[name], price)
            txs.append(
                tx(self.perp.chain.admin, self.perp.price_feed.address, data, 100_000, await self._nonce(self.perp.chain.admin))
            )
        await send_and_mine(self.rpc, txs)


# ---- instrumentation of the engine -------------------------------------------------------------------


@dataclass
class BlockStats:
    wall: float = 0.0
    parts: Counter = field(default_factory=Counter)  # section → seconds (wall)
    cpu: Counter = field(default_factory=Counter)  # section → seconds of this thread's CPU time
    calls: Counter = field(default_factory=Counter)  # section → JSON-RPC calls
    reads: Counter = field(default_factory=Counter)  # section → contract reads (inside Multicall3 or batches)
    methods: Counter = field(default_factory=Counter)
    http: int = 0
    candidates: int = 0
    twap_evals: int = 0
    positions: int = 0


class Probe:
    """Times the engine's per-block sections by wrapping the real methods (the path is unchanged)."""

    def __init__(self, engine: Daemon, profile: cProfile.Profile | None = None):
        self.engine = engine
        self.profile = profile  # --profile: cProfile of the evaluation sections only
        self.adapter = engine.adapters[0]
        self.cur = BlockStats()
        self.section = "other"
        self._wrap_async(self.adapter, "sync", "sync")
        self._wrap_async(self.adapter, "confirm", "confirm")
        self._wrap_async(engine.executor, "execute", "simulate")
        self._wrap(self.adapter, "evaluate", "evaluate")
        self._wrap(engine.pipeline, "_track_statuses", "track")
        run = engine.calls.run

        async def counted_run(calls, *args, **kw):
            self.cur.reads[self.section] += len(calls)
            return await run(calls, *args, **kw)

        engine.calls.run = counted_run

    def _enter(self, section: str):
        prev, self.section = self.section, section
        return prev, time.perf_counter(), time.thread_time(), self.engine.rpc.stats.calls

    def _leave(self, section: str, token) -> None:
        prev, t0, cpu0, c0 = token
        self.cur.parts[section] += time.perf_counter() - t0
        self.cur.cpu[section] += time.thread_time() - cpu0
        self.cur.calls[section] += self.engine.rpc.stats.calls - c0
        self.section = prev

    def _wrap_async(self, obj, name: str, section: str) -> None:
        orig = getattr(obj, name)

        async def wrapped(*args, **kw):
            token = self._enter(section)
            try:
                return await orig(*args, **kw)
            finally:
                self._leave(section, token)

        setattr(obj, name, wrapped)

    def _wrap(self, obj, name: str, section: str) -> None:
        orig = getattr(obj, name)

        def wrapped(*args, **kw):
            token = self._enter(section)
            if self.profile is not None:
                self.profile.enable()
            try:
                out = orig(*args, **kw)
            finally:
                if self.profile is not None:
                    self.profile.disable()
                self._leave(section, token)
            if name == "evaluate":
                self.cur.positions += len(out)
                self.cur.candidates += sum(1 for e in out if e.candidate)
                self.cur.twap_evals += sum(1 for e in out if e.fields.get("twap_mr") is not None)
            return out

        setattr(obj, name, wrapped)

    async def block(self) -> BlockStats:
        """The daemon's step for one new head: poll it, then Daemon.process."""
        rpc = self.engine.rpc
        self.cur = BlockStats()
        calls0, http0, methods0 = rpc.stats.calls, rpc.stats.http_requests, Counter(rpc.stats.by_method)
        error0 = self.engine.last_error
        t0 = time.perf_counter()
        token = self._enter("head poll")
        head = Block.from_rpc(await rpc.get_block("latest"))
        self._leave("head poll", token)
        await self.engine.process(head)
        s = self.cur
        s.wall = time.perf_counter() - t0
        s.parts["other"] = s.wall - sum(s.parts.values())
        s.calls["other"] = rpc.stats.calls - calls0 - sum(s.calls.values())
        s.http = rpc.stats.http_requests - http0
        s.methods = Counter(rpc.stats.by_method) - methods0
        if self.engine.last_error != error0:  # the engine survives a failed block; a benchmark must not
            raise RuntimeError(f"block {head.number} failed: {self.engine.last_error}")
        return s


# ---- the benchmark ---------------------------------------------------------------------------------------


def engine_config(url: str, perp: PerpDeployment, state: Path) -> dict:
    return keeper_config(url, state, [perp_protocol(perp)])


async def open_engine(url: str, perp: PerpDeployment, state: Path) -> Daemon:
    os.environ[KEY_ENV] = KEEPER_KEY
    engine = await Daemon.open(parse_config(engine_config(url, perp, state), environ={}), dry_run=True)
    return engine


def eval_s(b: BlockStats) -> float:
    """The block's local evaluation: adapter.evaluate + the engine's status tracking (wall)."""
    return b.parts["evaluate"] + b.parts["track"]


def eval_cpu_s(b: BlockStats) -> float:
    return b.cpu["evaluate"] + b.cpu["track"]


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def med_max(values: list[float]) -> str:
    return f"{ms(statistics.median(values))} / {ms(max(values))}"


def print_phase_table(phases: dict[str, list[BlockStats]]) -> None:
    print(
        f"{'phase':<9} {'blocks':>6} {'wall ms':>15} {'sync ms':>13} {'eval ms':>15} {'eval cpu ms':>15} {'track ms':>13} "
        f"{'confirm+sim ms':>15} {'rpc calls':>9} {'http':>5} {'reads':>6} {'candidates':>10} {'twap evals':>10}"
    )
    print(
        "  (ms: median / max per block; eval = adapter.evaluate + engine status tracking, cpu = its thread CPU time,\n"
        "   track = the status tracking part (wall);\n"
        "   rpc calls (JSON-RPC, head poll included), http, reads (contract calls inside Multicall3), candidates,\n"
        "   twap evals (positions given the full TWAP/oracle evaluation): median per block)"
    )
    for name, blocks in phases.items():
        med = statistics.median
        print(
            f"{name:<9} {len(blocks):>6} {med_max([b.wall for b in blocks]):>15} "
            f"{med_max([b.parts['sync'] for b in blocks]):>13} {med_max([eval_s(b) for b in blocks]):>15} "
            f"{med_max([eval_cpu_s(b) for b in blocks]):>15} {med_max([b.parts['track'] for b in blocks]):>13} "
            f"{med_max([b.parts['confirm'] + b.parts['simulate'] for b in blocks]):>15} "
            f"{med([sum(b.calls.values()) for b in blocks]):>9g} {med([b.http for b in blocks]):>5g} "
            f"{med([sum(b.reads.values()) for b in blocks]):>6g} {med([b.candidates for b in blocks]):>10g} "
            f"{med([b.twap_evals for b in blocks]):>10g}"
        )
    for name, blocks in phases.items():
        methods: Counter = Counter()
        reads: Counter = Counter()
        for b in blocks:
            methods += b.methods
            reads += b.reads
        per = ", ".join(f"{m} {c / len(blocks):.1f}" for m, c in methods.most_common())
        per_reads = ", ".join(f"{s} {c / len(blocks):.1f}" for s, c in reads.most_common())
        print(f"  {name}: JSON-RPC calls per block by method: {per}; contract reads per block: {per_reads or '0'}")


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident set size of a process (this one by default), MB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def run_size(n: int, args: argparse.Namespace, workdir: Path) -> str:
    print(f"\n=== N = {n:,} positions (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs) ===", flush=True)
    markets = (4 if n >= 100_000 else 2) if args.markets == "auto" else int(args.markets)
    node = AnvilProcess(
        timestamp=int(time.time()) - 30 * 86400,
        gas_limit=BLOCK_GAS_LIMIT,
        extra_args=["--auto-impersonate", "--prune-history", str(args.prune_history)],
    ).start()
    assert node.pid is not None

    def anvil_memory() -> str:
        rss, hwm = rss_mb(node.pid or 0)
        return f"anvil RSS {rss:,.0f} MB, peak {hwm:,.0f} MB"

    engine: Daemon | None = None
    scripting = await RpcClient([node.url], timeout=600, batch_size=TX_BATCH).start()  # not the keeper's client
    try:
        chain = DevChain(node.url, timeout=600)
        perp = deploy_perp(chain, MARKETS[:markets])
        build = await build_positions(node.url, perp, n, args.seed)
        anvil_after_build = anvil_memory()
        print(
            f"build: {build.positions:,} positions in {markets} markets of {build.traders:,} traders, {build.txs:,} "
            f"transactions in {build.blocks} blocks, {build.seconds:.1f} s; {anvil_after_build}",
            flush=True,
        )

        engine = await open_engine(node.url, perp, workdir / f"bench-{n}.sqlite")
        profile = cProfile.Profile() if args.profile else None
        probe = Probe(engine, profile)
        market = Market(scripting, perp)
        index = await probe.block()
        adapter = probe.adapter
        if adapter.position_count() != n:
            raise RuntimeError(f"indexed {adapter.position_count()} positions, built {n}")
        print(
            f"initial index (first block from start_block {perp.start_block}): {ms(index.wall)} ms, of which sync "
            f"{ms(index.parts['sync'])} ms; {sum(index.calls.values())} JSON-RPC calls "
            f"({', '.join(f'{m} {c}' for m, c in index.methods.most_common())}) in {index.http} HTTP requests, "
            f"{sum(index.reads.values())} contract reads; {adapter.position_count():,} positions",
            flush=True,
        )

        phases: dict[str, list[BlockStats]] = {"steady": [], "move": [], "stressed": []}
        for _ in range(args.blocks):
            await scripting.request("anvil_mine", ["0x1", hex(BLOCK_SECONDS)])
            phases["steady"].append(await probe.block())

        await market.fund_whale()
        await probe.block()  # the whale's funding block (not a measured phase)
        start = {name: perp.spot_price(name) for name in perp.amms}
        moved = {k: start[k] * (WAD + (1 if i % 2 else -1) * args.move) // WAD for i, k in enumerate(start)}
        noise = WAD // 2000  # ±0.05 % trades once the move is done
        for i in range(args.ramp + args.hold + args.blocks):
            if i < args.ramp:
                targets = {k: start[k] + (moved[k] - start[k]) * (i + 1) // args.ramp for k in start}
            else:
                sign = 1 if i % 2 else -1
                targets = {k: moved[k] * (WAD + sign * noise) // WAD for k in start}
            await market.step(targets, {k: min(i + 1, args.ramp) * (moved[k] - start[k]) // args.ramp + start[k] for k in start})
            s = await probe.block()
            phases["move" if i < args.ramp + args.hold else "stressed"].append(s)

        print(
            f"market move: {' and '.join(list(start)[::2])} {args.move / WAD:.1%} down, "
            f"{' and '.join(list(start)[1::2])} {args.move / WAD:.1%} up in {args.ramp} blocks, "
            f"held {args.hold} blocks with ±0.05 % trades every block; blocks {BLOCK_SECONDS} s apart"
        )
        print_phase_table(phases)
        if profile is not None:
            print("  cProfile of the evaluation sections, every measured block (top 30 by own time):")
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(30)
        print(f"  load average now {os.getloadavg()[0]:.2f} (wall times include waiting for a CPU; cpu times do not)")
        statuses = engine.status_counts.get(adapter.name, Counter())
        print("  statuses after the stressed phase: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()))
        await engine.close()
        engine = None

        # Memory: a fresh keeper under tracemalloc, from the initial index through one more block.
        gc.collect()
        tracemalloc.start()
        engine = await open_engine(node.url, perp, workdir / f"bench-{n}-mem.sqlite")
        await engine.process(Block.from_rpc(await engine.rpc.get_block("latest")))
        await market.step({k: moved[k] * (WAD + noise) // WAD for k in start}, {})
        await engine.process(Block.from_rpc(await engine.rpc.get_block("latest")))
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss, hwm = rss_mb()
        print(
            f"memory: keeper heap after index + one block {current / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB "
            f"(tracemalloc); process RSS {rss:.0f} MB, peak {hwm:.0f} MB (includes the web3 build tooling); "
            f"{anvil_memory()}"
        )

        steady, stressed = phases["steady"], phases["stressed"]
        every = [b for blocks in phases.values() for b in blocks]
        evals = [eval_s(b) for b in every]
        per_phase = " ".join(
            f"{name}_eval_ms={ms(statistics.median(eval_s(b) for b in blocks))}/{ms(max(eval_s(b) for b in blocks))}"
            for name, blocks in phases.items()
        )
        return (
            f"bench N={n}: eval_ms_median={ms(statistics.median(evals))} eval_ms_max={ms(max(evals))} "
            f"{per_phase} eval_cpu_ms_median={ms(statistics.median(eval_cpu_s(b) for b in every))} "
            f"rpc_calls_per_block={statistics.median(sum(b.calls.values()) for b in steady):g} markets={len(adapter.markets())} "
            f"candidates={statistics.median(b.candidates for b in stressed):g} peak_mem_mb={peak / 2**20:.1f} "
            f"stressed_rpc_calls_per_block={statistics.median(sum(b.calls.values()) for b in stressed):g} "
            f"stressed_eval_ms_median={ms(statistics.median(eval_s(b) for b in stressed))} "
            f"sync_ms_median={ms(statistics.median(b.parts['sync'] for b in every))} "
            f"index_s={index.wall:.2f} build_s={build.seconds:.1f} anvil_rss_mb={rss_mb(node.pid)[0]:.0f} "
            f"anvil_peak_rss_mb={rss_mb(node.pid)[1]:.0f}"
        )
    finally:
        if engine is not None:
            await engine.close()
        await scripting.close()
        node.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="comma-separated position counts (default 1000,10000)")
    p.add_argument("--blocks", type=int, default=20, help="measured blocks in the steady and stressed phases")
    p.add_argument("--ramp", type=int, default=25, help="blocks over which the market moves")
    p.add_argument("--hold", type=int, default=75, help="blocks the moved price is held before the stressed phase (900 s TWAP)")
    p.add_argument("--move", default="0.045", help="relative price move (ETH, SOL down; BTC, BNB up), default 0.045")
    p.add_argument("--markets", default="auto", help="markets (2 or 4); auto: 4 from 100,000 positions on, else 2")
    p.add_argument("--prune-history", type=int, default=64, help="states anvil keeps in memory (its --prune-history)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print a cProfile of the evaluation sections per N")
    args = p.parse_args()
    args.move = int(float(args.move) * WAD)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        configure_logging("info", "json", stream=open(Path(tmp) / "keeper.log", "w"))  # noqa: SIM115 - the daemon's logs
        print(f"keeper logs (JSON, as the daemon writes them) go to {tmp}/keeper.log")
        summaries = [asyncio.run(run_size(n, args, Path(tmp))) for n in sizes]
    print()
    for line in summaries:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
