"""A plain liquidation bot: the rival the race benchmark (`scripts/bench_race.py`) and chain tests run
against the keeper. It does what a simple bounty hunter's bot does, nothing more:

- positions come from events, as a simple bot finds them: every `PositionChanged(trader, amm)` of the
  ClearingHouses and every `Borrow(user)` of the LLAMMA controllers since `from_block`, re-scanned
  incrementally at each new block (or it is handed the list);
- at each new block, one `eth_call` per known position: `getMarginRatio(amm, trader)` below the
  ClearingHouse's `maintenanceMarginRatio`, or LLAMMA `health(user, true) < 0`;
- for every liquidatable position not already in flight: `eth_estimateGas`, then it signs and sends at
  once, all at the same head on consecutive nonces, with the node's default tip
  (`eth_maxPriorityFeePerGas`, or a fixed tip) and `maxFeePerGas = 2 × base fee + tip`; no profit
  check, no simulation of the sequence, gas limit = estimate × `gas_margin`;
- LLAMMA: full `liquidate(user, 0)`; when its allowance to the controller is short (below 2**128) it
  sends `approve(controller, max)` first in the same block (the nonce before), and liquidations whose
  estimate fails for want of that allowance go out with a fixed `fallback_gas` limit;
- a position whose estimate fails is skipped this block (not liquidatable for it, e.g. bad debt that
  only a backstop may take).

Run it in-process (`await PlainBot(...).run(max_blocks=...)`) or as a process:

    python -m keeper.devtools.plainbot --rpc URL --key-env PLAINBOT_KEY \
        --clearing-house 0x… --controller 0x… --from-block 0 --log plainbot.jsonl

It logs one JSON line per event (`plainbot_started`, `plainbot_block`, `plainbot_sent`,
`plainbot_send_failed`, `plainbot_landed`) to `--log` (default stdout) and stops on SIGTERM / SIGINT.
`plainbot_block` carries `head_to_broadcast` (seconds from the new head seen to the last raw transaction
accepted by the node) for blocks where it sent something.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TextIO

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from keeper.rpc import RpcClient, RpcError

MAX_UINT256 = 2**256 - 1
ALLOWANCE_SHORT = 2**128  # below this the bot re-approves max before paying liquidations
GWEI = 10**9

POSITION_CHANGED = (
    "PositionChanged(address,address,uint256,uint256,int256,uint256,int256,int256,int256,uint256,uint256,uint256,int256)"
)
BORROW = "Borrow(address,uint256,uint256)"


@cache
def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


@cache
def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    return selector(signature) + abi_encode(types, args)


def _addr_topic(t: str) -> str:
    return to_checksum_address("0x" + t[-40:])


@dataclass(frozen=True)
class Target:
    """One position: a perp position (`market` = the Amm) or a LLAMMA loan (`market` = "")."""

    kind: str  # "perp" | "llamma"
    contract: str  # ClearingHouse / Controller
    account: str  # trader / borrower
    market: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.contract.lower(), self.market.lower(), self.account.lower())


@dataclass
class Sent:
    tx_hash: str
    target: Target | None  # None: an approval
    nonce: int
    block_seen: int


@dataclass
class BlockReport:
    block: int
    checked: int = 0
    liquidatable: int = 0
    sent: int = 0
    approvals: int = 0
    estimate_failed: int = 0
    head_to_broadcast: float | None = None


@dataclass
class PlainBot:
    rpc_url: str
    private_key: str
    clearing_houses: list[str] = field(default_factory=list)
    controllers: list[str] = field(default_factory=list)
    from_block: int = 0
    targets: list[Target] | None = None  # handed list: no discovery
    poll_interval: float = 0.05
    tip_wei: int | None = None  # None: eth_maxPriorityFeePerGas once per block
    gas_margin_pct: int = 120  # gas limit = estimate × this / 100
    fallback_gas: int = 1_500_000  # LLAMMA liquidation sent behind its approval, estimate unavailable
    log: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        self.account = Account.from_key(self.private_key)
        self.address: str = self.account.address
        self.rpc = RpcClient([self.rpc_url], max_retries=1)
        self.known: dict[tuple[str, str, str], Target] = {}
        for t in self.targets or []:
            self.known[t.key] = t
        self.scanned_to = self.from_block - 1
        self.mmr: dict[str, int] = {}
        self.stable: dict[str, str] = {}  # controller → borrowed token
        self.in_flight: dict[str, Sent] = {}  # tx hash → what it was
        self.flying: set[tuple[str, str, str]] = set()
        self.approval_in_flight: set[str] = set()
        self._approval_for: dict[str, str] = {}  # approval tx hash → controller
        self.nonce: int | None = None
        self.chain_id = 0
        self.reports: list[BlockReport] = []
        self.landed = 0
        self.reverted = 0

    # ---- plumbing ------------------------------------------------------------------------------
    def emit(self, event: str, **kw: Any) -> None:
        if self.log is not None:
            self.log({"event": event, "ts": time.time(), **kw})

    async def call(self, to: str, data: bytes) -> bytes:
        return await self.rpc.eth_call(to, data, sender=self.address)

    async def start(self) -> PlainBot:
        await self.rpc.start()
        self.chain_id = await self.rpc.chain_id()
        self.nonce = await self.rpc.nonce(self.address, "pending")
        for ch in self.clearing_houses:
            (self.mmr[ch.lower()],) = abi_decode(["uint256"], await self.call(ch, selector("maintenanceMarginRatio()")))
        for c in self.controllers:
            (amm,) = abi_decode(["address"], await self.call(c, selector("amm()")))
            (coin,) = abi_decode(["address"], await self.call(amm, calldata("coins(uint256)", ["uint256"], [0])))
            self.stable[c.lower()] = to_checksum_address(coin)
        return self

    async def close(self) -> None:
        await self.rpc.close()

    # ---- discovery -----------------------------------------------------------------------------
    async def discover(self, head: int) -> None:
        if self.targets is not None or head <= self.scanned_to:
            return
        lo = self.scanned_to + 1
        if self.clearing_houses:
            logs = await self.rpc.get_logs(self.clearing_houses, [topic(POSITION_CHANGED)], lo, head)
            for lg in logs:
                t = Target("perp", to_checksum_address(lg["address"]), _addr_topic(lg["topics"][1]), _addr_topic(lg["topics"][2]))
                self.known.setdefault(t.key, t)
        if self.controllers:
            logs = await self.rpc.get_logs(self.controllers, [topic(BORROW)], lo, head)
            for lg in logs:
                t = Target("llamma", to_checksum_address(lg["address"]), _addr_topic(lg["topics"][1]))
                self.known.setdefault(t.key, t)
        self.scanned_to = head

    # ---- one head ------------------------------------------------------------------------------
    async def is_liquidatable(self, t: Target) -> bool:
        try:
            if t.kind == "perp":
                out = await self.call(
                    t.contract, calldata("getMarginRatio(address,address)", ["address", "address"], [t.market, t.account])
                )
                (ratio,) = abi_decode(["int256"], out)
                return ratio < self.mmr[t.contract.lower()]
            out = await self.call(t.contract, calldata("health(address,bool)", ["address", "bool"], [t.account, True]))
            (health,) = abi_decode(["int256"], out)
            return health < 0
        except RpcError:
            return False  # closed position / repaid loan: the view reverts

    def liquidate_data(self, t: Target) -> bytes:
        if t.kind == "perp":
            return calldata("liquidate(address,address)", ["address", "address"], [t.market, t.account])
        return calldata("liquidate(address,uint256)", ["address", "uint256"], [t.account, 0])

    async def settle_in_flight(self) -> None:
        if not self.in_flight:
            return
        hashes = list(self.in_flight)
        receipts = await asyncio.gather(*(self.rpc.receipt(h) for h in hashes))
        for h, r in zip(hashes, receipts, strict=True):
            if r is None:
                continue
            s = self.in_flight.pop(h)
            ok = int(r["status"], 16) == 1
            if s.target is None:
                self.approval_in_flight.discard(s.tx_hash)
            else:
                self.flying.discard(s.target.key)
            self.landed += ok
            self.reverted += not ok
            self.emit(
                "plainbot_landed",
                tx_hash=h,
                status=int(r["status"], 16),
                block=int(r["blockNumber"], 16),
                kind=s.target.kind if s.target else "approval",
                account=s.target.account if s.target else None,
                gas_used=int(r["gasUsed"], 16),
            )

    async def on_head(self, head: int, seen: float) -> BlockReport:
        rep = BlockReport(head)
        block, _ = await asyncio.gather(self.rpc.get_block(head), self.discover(head))
        await self.settle_in_flight()
        targets = [t for t in self.known.values() if t.key not in self.flying]
        rep.checked = len(targets)
        flags = await asyncio.gather(*(self.is_liquidatable(t) for t in targets))
        liq = [t for t, f in zip(targets, flags, strict=True) if f]
        rep.liquidatable = len(liq)
        if not liq:
            return rep
        tip = self.tip_wei if self.tip_wei is not None else int(await self.rpc.request("eth_maxPriorityFeePerGas"), 16)
        base = int((block or {}).get("baseFeePerGas", "0x0"), 16)
        max_fee = 2 * base + tip
        # approvals first where a controller's allowance is short (one per controller, before its liquidations)
        approve: list[str] = []
        for c in sorted({t.contract for t in liq if t.kind == "llamma"}):
            if self._approving(c):
                continue
            token = self.stable[c.lower()]
            (allowance,) = abi_decode(
                ["uint256"],
                await self.call(token, calldata("allowance(address,address)", ["address", "address"], [self.address, c])),
            )
            if allowance < ALLOWANCE_SHORT:
                approve.append(c)
        gases = await asyncio.gather(*(self._estimate(t) for t in liq), return_exceptions=True)
        plan: list[tuple[Target | None, str, bytes, int]] = []
        for c in approve:
            data = calldata("approve(address,uint256)", ["address", "uint256"], [c, MAX_UINT256])
            gas = await self._estimate_raw(self.stable[c.lower()], data)
            plan.append((None, self.stable[c.lower()], data, gas * self.gas_margin_pct // 100))
        for t, g in zip(liq, gases, strict=True):
            if isinstance(g, int):
                plan.append((t, t.contract, self.liquidate_data(t), g * self.gas_margin_pct // 100))
            elif t.kind == "llamma" and (t.contract in approve or self._approving(t.contract)):
                plan.append((t, t.contract, self.liquidate_data(t), self.fallback_gas))
            else:
                rep.estimate_failed += 1
        if not plan:
            return rep
        assert self.nonce is not None
        raws: list[tuple[Target | None, str, int, bytes]] = []
        for target, to, data, gas in plan:
            tx = {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": self.nonce,
                "to": to,
                "value": 0,
                "data": data,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
            }
            signed = self.account.sign_transaction(tx)
            raws.append((target, to, self.nonce, bytes(signed.raw_transaction)))
            self.nonce += 1
        for sent_for, to, nonce, raw in raws:
            try:
                h = await self.rpc.send_raw(raw)
            except RpcError as exc:
                self.emit("plainbot_send_failed", block=head, nonce=nonce, error=str(exc))
                self.nonce = await self.rpc.nonce(self.address, "pending")
                break
            self.in_flight[h] = Sent(h, sent_for, nonce, head)
            if sent_for is None:
                self.approval_in_flight.add(h)
                self._approval_for[h] = next(c for c in approve if self.stable[c.lower()] == to)
                rep.approvals += 1
            else:
                self.flying.add(sent_for.key)
                rep.sent += 1
            self.emit(
                "plainbot_sent",
                block=head,
                tx_hash=h,
                nonce=nonce,
                kind=sent_for.kind if sent_for else "approval",
                contract=sent_for.contract if sent_for else to,
                market=sent_for.market if sent_for else "",
                account=sent_for.account if sent_for else "",
                tip=tip,
            )
        rep.head_to_broadcast = time.monotonic() - seen
        return rep

    def _approving(self, controller: str) -> bool:
        return any(self._approval_for.get(h) == controller for h in self.approval_in_flight)

    async def _estimate_raw(self, to: str, data: bytes) -> int:
        return await self.rpc.estimate_gas(to, data, sender=self.address)

    async def _estimate(self, t: Target) -> int:
        return await self._estimate_raw(t.contract, self.liquidate_data(t))

    # ---- loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None, max_blocks: int | None = None) -> list[BlockReport]:
        """Poll for new heads until `stop` is set or `max_blocks` heads were processed."""
        last = -1
        self.emit("plainbot_started", address=self.address, nonce=self.nonce, positions=len(self.known))
        while (stop is None or not stop.is_set()) and (max_blocks is None or len(self.reports) < max_blocks):
            head = await self.rpc.block_number()
            if head > last:
                seen = time.monotonic()
                last = head
                rep = await self.on_head(head, seen)
                self.reports.append(rep)
                self.emit(
                    "plainbot_block",
                    block=head,
                    positions=len(self.known),
                    checked=rep.checked,
                    liquidatable=rep.liquidatable,
                    sent=rep.sent,
                    approvals=rep.approvals,
                    estimate_failed=rep.estimate_failed,
                    head_to_broadcast=rep.head_to_broadcast,
                )
                continue
            if stop is not None:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_interval)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(self.poll_interval)  # head polling interval, as a polling bot does
        return self.reports


def _json_log(fh: TextIO) -> Callable[[dict[str, Any]], None]:
    def write(rec: dict[str, Any]) -> None:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()

    return write


def _csv(values: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [to_checksum_address(x) for x in v.split(",") if x.strip()]
    return out


async def _amain(args: argparse.Namespace) -> int:
    key = os.environ.get(args.key_env)
    if not key:
        print(f"plainbot: set the private key in ${args.key_env}", file=sys.stderr)
        return 2
    fh: TextIO = open(args.log, "a") if args.log else sys.stdout  # noqa: SIM115 - closed below
    try:
        bot = PlainBot(
            args.rpc,
            key,
            clearing_houses=_csv(args.clearing_house),
            controllers=_csv(args.controller),
            from_block=args.from_block,
            poll_interval=args.poll_interval,
            tip_wei=None if args.tip_gwei is None else int(args.tip_gwei * GWEI),
            log=_json_log(fh),
        )
        await bot.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await bot.run(stop=stop, max_blocks=args.max_blocks)
        finally:
            bot.emit("plainbot_stopped", landed=bot.landed, reverted=bot.reverted)
            await bot.close()
    finally:
        if fh is not sys.stdout:
            fh.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plainbot", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rpc", required=True)
    p.add_argument("--key-env", default="PLAINBOT_PRIVATE_KEY", help="environment variable holding the private key")
    p.add_argument("--clearing-house", action="append", help="Perp v1 ClearingHouse address(es), comma-separated")
    p.add_argument("--controller", action="append", help="LLAMMA controller address(es), comma-separated")
    p.add_argument("--from-block", type=int, default=0, help="first block scanned for PositionChanged / Borrow")
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between eth_blockNumber polls")
    p.add_argument("--tip-gwei", type=float, default=None, help="fixed tip (default: eth_maxPriorityFeePerGas)")
    p.add_argument("--max-blocks", type=int, default=None)
    p.add_argument("--log", default=None, help="JSON-lines log file (default: stdout)")
    return asyncio.run(_amain(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
