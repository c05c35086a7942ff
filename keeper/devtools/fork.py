"""`keeper fork`: an anvil fork of a real chain (or of any node) made ready for the keeper.

Everything here talks JSON-RPC to the fork node only (never to the origin it forks) and finds the
contracts' storage by asking them, never by assuming a layout:
- native funding: `anvil_setBalance`;
- token funding (`set_token_balance`): the balance slot is found by probing — the slots a traced
  `balanceOf(holder)` reads (prestateTracer), then `keccak(pad(holder) ‖ pad(s))` (Solidity mappings)
  and `keccak(pad(s) ‖ pad(holder))` (Vyper HashMaps) for s in 0..63 — each written on an
  `evm_snapshot` and kept only when `balanceOf` then answers the written amount; or, with a holder,
  by impersonating it and transferring;
- oracle moves (`move_market`): the market's oracle is found through the protocol (Perp v1
  `Amm.priceFeed()` / `priceFeedKey()` / `getUnderlyingPrice()`; LLAMMA `AMM.price_oracle_contract()` /
  `price_oracle()`, docs/PROTOCOLS.md §A.6, §B.5), then moved by impersonating its owner and calling
  its setter when the setter accepts the owner (the reference feeds), else by overriding the storage
  word the price read comes from (found by tracing the read and checking every candidate), else by
  pointing the AMM at a settable oracle of the fork's own (the AMM's storage word holding the
  oracle's address, found the same way) — what a computed oracle (crvUSD's EMA oracles) needs;
  then the vAMM / LLAMMA is arbitraged to the new price by an impersonated account funded as above.

Amounts are integers (token units, wei, 1e18 prices); PCT is a Decimal only to build the target.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, localcontext
from math import isqrt
from pathlib import Path
from typing import Any

from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from keeper.devtools.anvil import AnvilError, rpc

WAD = 10**18
MAX_UINT256 = 2**256 - 1
BALANCE_PROBE_SLOTS = 64
# an address nobody holds a key for: the fork's arbitrageur, always impersonated
ARBITRAGEUR = to_checksum_address(keccak(b"keeper fork arbitrageur")[-20:])
GAS_MONEY = 10 * WAD


class ForkError(RuntimeError):
    """A fork operation that cannot be done (the message says why and what to try)."""


# ---- JSON-RPC and ABI helpers ----------------------------------------------------------------------


def _sig_types(sig: str) -> list[str]:
    inner = sig[sig.index("(") + 1 : sig.rindex(")")]
    if not inner:
        return []
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return [*out, cur]


def calldata(sig: str, *args: Any) -> str:
    return "0x" + (function_signature_to_4byte_selector(sig) + encode(_sig_types(sig), list(args))).hex()


@dataclass
class Node:
    """The fork node (an anvil): calls, impersonated sends, snapshots."""

    url: str
    timeout: float = 30.0

    def rpc(self, method: str, params: list | None = None) -> Any:
        return rpc(self.url, method, params, timeout=self.timeout)

    def call(self, to: str, sig: str, *args: Any, out: str = "uint256", sender: str | None = None) -> Any:
        """eth_call `sig(args)` on `to`; decodes one value of type `out` (a tuple for "(a,b)")."""
        tx = {"to": to, "data": calldata(sig, *args)}
        if sender:
            tx["from"] = sender
        raw = bytes.fromhex(self.rpc("eth_call", [tx, "latest"])[2:])
        multi = out.startswith("(") and out.endswith(")")  # "(a,b)": several values; "(a,b)[]" is one
        vals = decode(_sig_types(out) if multi else [out], raw)
        return vals if multi else vals[0]

    def answers(self, to: str, sig: str, *args: Any, out: str = "uint256", sender: str | None = None) -> Any | None:
        """The call's value, or None when it reverts / returns nothing decodable."""
        try:
            return self.call(to, sig, *args, out=out, sender=sender)
        except Exception:  # noqa: BLE001 - any failure (revert, no data, bad data) means "does not answer"
            return None

    def balance(self, addr: str) -> int:
        return int(self.rpc("eth_getBalance", [addr, "latest"]), 16)

    def set_balance(self, addr: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [addr, hex(wei)])

    def storage(self, addr: str, slot: int) -> int:
        return int(self.rpc("eth_getStorageAt", [addr, hex(slot), "latest"]), 16)

    def set_storage(self, addr: str, slot: int, value: int) -> None:
        self.rpc("anvil_setStorageAt", [addr, "0x" + slot.to_bytes(32, "big").hex(), "0x" + value.to_bytes(32, "big").hex()])

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def chain_id(self) -> int:
        return int(self.rpc("eth_chainId"), 16)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Everything inside is undone afterwards."""
        snap = self.rpc("evm_snapshot")
        try:
            yield
        finally:
            self.rpc("evm_revert", [snap])

    def send_as(self, sender: str, to: str, data: str, value: int = 0, what: str = "transaction") -> dict:
        """Send as `sender` by impersonation (gas money topped up); wait (bounded) for the receipt."""
        sender = to_checksum_address(sender)
        if self.balance(sender) < GAS_MONEY // 10:
            self.set_balance(sender, self.balance(sender) + GAS_MONEY)
        self.rpc("anvil_impersonateAccount", [sender])
        try:
            tx_hash = self.rpc("eth_sendTransaction", [{"from": sender, "to": to, "data": data, "value": hex(value)}])
        finally:
            self.rpc("anvil_stopImpersonatingAccount", [sender])
        deadline = time.monotonic() + self.timeout
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                break
            if time.monotonic() > deadline:
                raise ForkError(f"{what}: not mined within {self.timeout:.0f} s (is the fork mining?)")
            time.sleep(0.02)  # polling the node for a receipt, bounded
        if int(receipt["status"], 16) != 1:
            raise ForkError(f"{what} reverted (tx {tx_hash})")
        return receipt

    def trace_storage(self, to: str, data: str) -> dict[str, dict[int, int]]:
        """address → {slot: value} of every storage word a call to `to` reads (prestateTracer)."""
        try:
            out = self.rpc(
                "debug_traceCall",
                [{"to": to, "data": data}, "latest", {"tracer": "prestateTracer", "tracerConfig": {"disableCode": True}}],
            )
        except AnvilError:
            return {}
        return {
            to_checksum_address(addr): {int(k, 16): int(v, 16) for k, v in (acct.get("storage") or {}).items()}
            for addr, acct in out.items()
        }


# ---- token balances ----------------------------------------------------------------------------


def _mapping_slots(holder: str) -> Iterator[int]:
    h = bytes.fromhex(to_checksum_address(holder)[2:]).rjust(32, b"\0")
    for s in range(BALANCE_PROBE_SLOTS):
        p = s.to_bytes(32, "big")
        yield int.from_bytes(keccak(h + p), "big")  # Solidity: keccak(key . slot)
        yield int.from_bytes(keccak(p + h), "big")  # Vyper HashMap: keccak(slot . key)


def find_balance_slot(node: Node, token: str, holder: str) -> int | None:
    """The storage slot of `token` holding `holder`'s balance, found by probing (see the module doc)."""
    token = to_checksum_address(token)
    traced = node.trace_storage(token, calldata("balanceOf(address)", holder)).get(token, {})
    probe_value = 0x5EED_F0C4_0000_0001  # fits a packed uint64/uint96 balance too
    seen: set[int] = set()
    for slot in [*traced, *_mapping_slots(holder)]:
        if slot in seen:
            continue
        seen.add(slot)
        with node.snapshot():
            node.set_storage(token, slot, probe_value)
            hit = node.answers(token, "balanceOf(address)", holder) == probe_value
        if hit:
            return slot
    return None


def set_token_balance(node: Node, token: str, holder: str, amount: int, *, from_holder: str | None = None) -> str:
    """Give `holder` exactly `amount` token units (or, with `from_holder`, transfer `amount` from it by
    impersonation). Returns how ("storage slot 0x…" / "transfer from 0x…")."""
    token, holder = to_checksum_address(token), to_checksum_address(holder)
    if from_holder:
        have = node.call(token, "balanceOf(address)", from_holder)
        if have < amount:
            raise ForkError(f"holder {from_holder} has {have} token units of {token}, less than {amount}")
        node.send_as(from_holder, token, calldata("transfer(address,uint256)", holder, amount), what="stablecoin transfer")
        return f"transfer from {to_checksum_address(from_holder)}"
    slot = find_balance_slot(node, token, holder)
    if slot is None:
        raise ForkError(
            f"cannot find the balance slot of token {token} by probing (a rebasing or unusual token?): "
            "pass --stablecoin-holder ADDRESS to transfer from a holder instead"
        )
    node.set_storage(token, slot, amount)
    if node.call(token, "balanceOf(address)", holder) != amount:
        raise ForkError(f"writing the balance slot of {token} did not change balanceOf")
    return f"storage slot {hex(slot)}"


def ensure_token(node: Node, token: str, holder: str, amount: int, spender: str | None = None) -> None:
    """At least `amount` of `token` at `holder` (topped up by storage) and, with `spender`, an unlimited approval."""
    have = node.call(token, "balanceOf(address)", holder)
    if have < amount:
        set_token_balance(node, token, holder, amount)
    if spender and node.call(token, "allowance(address,address)", holder, spender) < amount:
        node.send_as(holder, token, calldata("approve(address,uint256)", spender, MAX_UINT256), what="approve")


# ---- markets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    kind: str  # "perp_v1" | "llamma"
    name: str  # "ETH" (perp price-feed key) / "0" (LLAMMA market index) ...
    amm: str
    controller: str | None = None  # LLAMMA
    clearing_house: str | None = None  # perp


def _bytes32_name(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


def list_markets(node: Node, protocol: dict[str, Any]) -> list[Market]:
    """Every market of one [[protocols]] table, read from the chain."""
    kind = protocol.get("kind")
    if kind == "perp_v1":
        ch = to_checksum_address(protocol["clearing_house"])
        fund = node.call(ch, "insuranceFund()", out="address")
        amms = node.call(fund, "getAllAmms()", out="address[]")
        out = []
        for amm in amms:
            key = node.answers(amm, "priceFeedKey()", out="bytes32")
            out.append(Market("perp_v1", _bytes32_name(key) if key else amm, to_checksum_address(amm), clearing_house=ch))
        return out
    if kind == "llamma":
        factory = to_checksum_address(protocol["factory"])
        n = node.answers(factory, "n_collaterals()")
        if n is None:
            n = node.call(factory, "market_count()")
        out = []
        for i in range(n):
            ctrl = node.call(factory, "controllers(uint256)", i, out="address")
            amm = node.call(factory, "amms(uint256)", i, out="address")
            out.append(Market("llamma", str(i), to_checksum_address(amm), controller=to_checksum_address(ctrl)))
        return out
    raise ForkError(f"protocol kind {kind!r} has no markets to move (perp_v1 and llamma do)")


def find_market(node: Node, protocols: list[dict[str, Any]], market: str) -> Market:
    """MARKET: a perp price-feed key ("ETH"), a LLAMMA market index ("0"), a collateral symbol
    ("WETH"), or an Amm/AMM/Controller address."""
    found: list[Market] = []
    for p in protocols:
        found += list_markets(node, p)
    want = market.lower()
    for m in found:
        if want in (m.name.lower(), m.amm.lower(), (m.controller or "").lower()):
            return m
    for m in found:
        if m.kind == "llamma":
            coll = node.answers(m.amm, "coins(uint256)", 1, out="address")
            if coll and (node.answers(coll, "symbol()", out="string") or "").lower() == want:
                return m
    names = ", ".join(m.name for m in found) or "none"
    raise ForkError(f"unknown market {market!r} (markets on this fork: {names})")


def oracle_price(node: Node, m: Market) -> int:
    if m.kind == "perp_v1":
        return int(node.call(m.amm, "getUnderlyingPrice()"))
    return int(node.call(m.amm, "price_oracle()"))


# ---- oracle moves ------------------------------------------------------------------------------


def _impersonate_setter(node: Node, m: Market, target: int) -> str | None:
    """The oracle's owner calls its setter (reference feeds: PriceFeed.setPrice / PriceOracle.set_price)."""
    if m.kind == "perp_v1":
        feed = node.call(m.amm, "priceFeed()", out="address")
        key = node.call(m.amm, "priceFeedKey()", out="bytes32")
        data = calldata("setPrice(bytes32,uint256)", key, target)
    else:
        feed = node.call(m.amm, "price_oracle_contract()", out="address")
        data = calldata("set_price(uint256)", target)
    owner = node.answers(feed, "owner()", out="address")
    if not owner:
        return None
    try:
        node.rpc("eth_call", [{"from": owner, "to": feed, "data": data}, "latest"])
    except AnvilError:
        return None  # not this setter, or not this owner
    node.send_as(owner, feed, data, what="oracle update")
    return f"impersonated oracle owner {to_checksum_address(owner)} ({feed})"


WIDTHS = (256, 224, 192, 160, 128, 112, 96, 80, 64, 48, 32)


def _field_candidates(value: int, price: int) -> Iterator[tuple[int, int, int]]:
    """(shift, width, scale) such that the word holds price / scale as a field at bit `shift`."""
    for k in range(19):
        scale = 10**k
        if price % scale:
            break
        raw = price // scale
        for shift in range(0, 256, 8):
            for width in WIDTHS:
                if shift + width <= 256 and (value >> shift) & ((1 << width) - 1) == raw:
                    yield shift, width, scale


def _storage_override(node: Node, m: Market, target: int) -> str | None:
    """Override the storage word the oracle read takes its price from (found by tracing the read)."""
    sig = "getUnderlyingPrice()" if m.kind == "perp_v1" else "price_oracle()"
    current = oracle_price(node, m)
    traced = node.trace_storage(m.amm, calldata(sig))
    for addr, slots in traced.items():
        for slot, value in slots.items():
            for shift, width, scale in _field_candidates(value, current):
                raw = target // scale
                if raw >= 1 << width:
                    continue
                mask = ((1 << width) - 1) << shift
                new = (value & ~mask) | (raw << shift)
                snap = node.rpc("evm_snapshot")
                node.set_storage(addr, slot, new)
                if node.answers(m.amm, sig) == raw * scale:
                    return f"storage override {addr} slot {hex(slot)}"
                node.rpc("evm_revert", [snap])
    return None


# A settable oracle: whatever is called (price(), price_w(), getPrice(bytes32), getTwapPrice(...)),
# it returns storage word 0 — `PUSH1 0 SLOAD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN`.
FIXED_ORACLE_CODE = "0x60005460005260206000f3"


def _oracle_of(node: Node, m: Market) -> str:
    sig = "priceFeed()" if m.kind == "perp_v1" else "price_oracle_contract()"
    return to_checksum_address(node.call(m.amm, sig, out="address"))


def _fixed_oracle(node: Node, m: Market, target: int) -> str | None:
    """The market already reads one of our settable oracles (an earlier `--via replace`): set it."""
    oracle = _oracle_of(node, m)
    if node.rpc("eth_getCode", [oracle, "latest"]).lower() != FIXED_ORACLE_CODE:
        return None
    node.set_storage(oracle, 0, target)
    return f"the fork's settable oracle {oracle}"


def _replace_oracle(node: Node, m: Market, target: int) -> str | None:
    """Point the AMM at a settable oracle of our own: the storage word of the AMM holding the oracle's
    address (found by tracing the price read) is overwritten with it."""
    sig = "getUnderlyingPrice()" if m.kind == "perp_v1" else "price_oracle()"
    oracle = _oracle_of(node, m)
    fixed = to_checksum_address(keccak(b"keeper fork oracle" + bytes.fromhex(m.amm[2:]))[-20:])
    node.rpc("anvil_setCode", [fixed, FIXED_ORACLE_CODE])
    node.set_storage(fixed, 0, target)
    for slot, value in node.trace_storage(m.amm, calldata(sig)).get(to_checksum_address(m.amm), {}).items():
        if value != int(oracle, 16):
            continue
        snap = node.rpc("evm_snapshot")
        node.set_storage(m.amm, slot, int(fixed, 16))
        if node.answers(m.amm, sig) == target:
            return f"the AMM's oracle replaced by the fork's settable oracle {fixed} (slot {hex(slot)} of {m.amm})"
        node.rpc("evm_revert", [snap])
    return None


VIAS = ("auto", "impersonate", "storage", "replace")


def set_oracle(node: Node, m: Market, target: int, via: str = "auto") -> str:
    """Make the market's oracle read `target` (1e18); returns how. via: auto (each in turn) | impersonate
    (the oracle owner's setter) | storage (the price word) | replace (the AMM pointed at a settable oracle)."""
    if via not in VIAS:
        raise ForkError(f"unknown --via {via!r} (one of {', '.join(VIAS)})")
    how = _fixed_oracle(node, m, target)
    if how is None and via in ("auto", "impersonate"):
        how = _impersonate_setter(node, m, target)
    if how is None and via in ("auto", "storage"):
        how = _storage_override(node, m, target)
    if how is None and via in ("auto", "replace"):
        how = _replace_oracle(node, m, target)
    if how is None:
        raise ForkError(f"could not move the oracle of {m.name} (--via {via}): no owner setter accepted, no storage word found")
    got = oracle_price(node, m)
    if got != target and abs(got - target) * 10**6 > target:
        raise ForkError(f"oracle of {m.name} reads {got} after the move, expected {target}")
    return how


# ---- arbitrage ---------------------------------------------------------------------------------


def arbitrage_perp(node: Node, m: Market, target: int, arbitrageur: str = ARBITRAGEUR, max_rounds: int = 60) -> int:
    """Trade the vAMM spot to `target` (1e18) at 1x leverage as an impersonated, storage-funded account,
    in steps within the Amm's fluctuation limit (one block each). Returns the number of trades."""
    assert m.clearing_house is not None
    quote_token = node.call(m.amm, "quoteAsset()", out="address")
    unit = 10 ** (18 - node.call(quote_token, "decimals()"))
    limit = node.call(m.amm, "fluctuationLimitRatio()")
    trades = 0
    for _ in range(max_rounds):
        q, b = node.call(m.amm, "getReserve()", out="(uint256,uint256)")
        spot = q * WAD // b
        if abs(spot - target) * 10**9 <= target:
            break
        step = target
        if limit:  # stay within the per-block fluctuation limit (90 % of it)
            lo, hi = spot - spot * limit * 9 // (10 * WAD), spot + spot * limit * 9 // (10 * WAD)
            step = min(max(target, lo), hi)
        k = q * b // WAD
        q_after = isqrt(step * k)
        side, quote = (0, q_after - q) if q_after > q else (1, q - q_after)
        quote -= quote % unit
        if quote == 0:
            break
        ensure_token(node, quote_token, arbitrageur, (quote + WAD) // unit, spender=m.clearing_house)
        data = calldata("openPosition(address,uint8,(uint256),(uint256),(uint256))", m.amm, side, (quote,), (WAD,), (0,))
        node.send_as(arbitrageur, m.clearing_house, data, what="vAMM arbitrage trade")
        trades += 1
    return trades


def arbitrage_llamma(node: Node, m: Market, arbitrageur: str = ARBITRAGEUR, max_rounds: int = 3) -> int:
    """Trade the LLAMMA to its oracle price (AMM.get_amount_for_price), as in the sandbox. Returns trades."""
    trades = 0
    for _ in range(max_rounds):
        p_o = node.call(m.amm, "price_oracle()")
        amount, pump = node.call(m.amm, "get_amount_for_price(uint256)", p_o, out="(uint256,bool)")
        if amount == 0:
            break
        i, j = (0, 1) if pump else (1, 0)
        if node.call(m.amm, "get_dy(uint256,uint256,uint256)", i, j, amount) == 0:
            break
        token = node.call(m.amm, "coins(uint256)", i, out="address")
        ensure_token(node, token, arbitrageur, amount, spender=m.amm)
        data = calldata("exchange(uint256,uint256,uint256,uint256)", i, j, amount, 0)
        node.send_as(arbitrageur, m.amm, data, what="LLAMMA arbitrage trade")
        trades += 1
    return trades


@dataclass
class MoveResult:
    market: str
    before: int
    target: int
    how: str
    trades: int


def move_market(
    node: Node,
    protocols: list[dict[str, Any]],
    market: str,
    pct: Decimal,
    *,
    via: str = "auto",
    advance: int | None = None,
    steps: int | None = None,
) -> MoveResult:
    """Move `market`'s oracle by `pct` percent and arbitrage its AMM after it, as the sandbox does
    (keeper/devtools/scenario.py): perp — the index set, the vAMM traded to it, then `advance` seconds
    (default 900) in one block so the 15-minute TWAP follows; LLAMMA — the oracle moved geometrically
    in `steps` steps (default one per 2 %), the AMM arbitraged after each, `advance` default 0."""
    from keeper.devtools.scenario import scaled  # noqa: PLC0415 - the sandbox's rounding of a move

    m = find_market(node, protocols, market)
    before = oracle_price(node, m)
    target = scaled(before, pct)
    trades = 0
    if m.kind == "perp_v1":
        how = set_oracle(node, m, target, via)
        trades = arbitrage_perp(node, m, target)
    else:
        n = max(1, math.ceil(abs(pct) / 2)) if steps is None else steps
        ratio = Decimal(target) / Decimal(before)
        how = ""
        for k in range(1, n + 1):
            with localcontext() as ctx:
                ctx.prec = 80
                price = target if k == n else int(Decimal(before) * ratio ** (Decimal(k) / Decimal(n)))
            how = set_oracle(node, m, price, via)
            trades += arbitrage_llamma(node, m)
    seconds = (900 if m.kind == "perp_v1" else 0) if advance is None else advance
    if seconds:
        node.rpc("evm_increaseTime", [seconds])
        node.rpc("evm_mine")
    return MoveResult(m.name, before, target, how, trades)


# ---- fork state file ---------------------------------------------------------------------------

STATE_FILE = "fork.json"
MARKER = ".keeper-fork"


def write_state(workdir: Path, state: dict[str, Any]) -> Path:
    path = workdir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)
    return path


def read_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ForkError(
            f"no running fork in {workdir} ({path} not found): start one with `keeper fork --workdir {workdir} ...`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ForkError(f"cannot read {path}: {exc}") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
