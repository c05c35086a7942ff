"""Swap routes for the LLAMMA liquidator contract (contracts/llamma/Liquidator.vy): the route model, its
configuration, and quoting a whole route by `eth_call` at a block.

A route is 1–3 hops; each hop swaps `token_in` for `token_out` in one pool:

- `curve`        Curve stableswap: `get_dy(int128 i, int128 j, dx)`, `exchange(int128, int128, dx, min_dy)`
- `curve_crypto` Curve cryptoswap: `get_dy(uint256 i, uint256 j, dx)`, `exchange(uint256, uint256, dx, min_dy)`
- `univ2`        Uniswap V2 pair: the contract transfers `dx` in and calls `swap(amount0Out, amount1Out, to, b"")`
                 with the output from `getReserves()` and the pair's 0.3 % fee (997/1000); `i` = 0 when
                 token_in is token0, else 1, and `j = 1 − i`.

Quotes never come from an oracle: every hop is asked at the same block (`get_dy` for Curve; `getReserves`
and `token0` for a pair, then the pair's own integer formula). Each hop's output is the next hop's input.
The pool's tokens are checked in the same round trip (`coins(i)`, `coins(j)`, `token0()`): a hop whose pool
holds other tokens than configured raises RouteError instead of quoting something else.

Round trips, for any number of input amounts (`quote_curve`): one JSON-RPC batch with every token check,
every pair's reserves and, when the route starts with a Curve hop, its get_dy; then one batch per later
Curve hop (its input is the previous hop's output). Pairs are priced locally. So 1 to 3 per route.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from pydantic import Field, model_validator

from keeper.config import Address, Model
from keeper.rpc import ExecutionReverted, RpcClient, RpcError, block_tag, call_object

HopKind = Literal["curve", "curve_crypto", "univ2"]
KIND_CODES: dict[str, int] = {"curve": 0, "curve_crypto": 1, "univ2": 2}  # Liquidator.vy Hop.kind
MAX_HOPS = 3
UNIV2_FEE_NUM, UNIV2_FEE_DEN = 997, 1000


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


GET_DY_INT128 = _selector("get_dy(int128,int128,uint256)")
GET_DY_UINT256 = _selector("get_dy(uint256,uint256,uint256)")
COINS_UINT256 = _selector("coins(uint256)")
GET_RESERVES = _selector("getReserves()")
TOKEN0 = _selector("token0()")


class RouteError(Exception):
    """The route cannot be quoted as configured (wrong tokens in a pool, a pool that does not answer)."""


@dataclass(frozen=True)
class Hop:
    pool: str
    kind: HopKind
    i: int
    j: int
    token_in: str
    token_out: str

    @property
    def kind_code(self) -> int:
        return KIND_CODES[self.kind]

    def as_tuple(self) -> tuple[str, int, int, int, str, str]:
        """The hop as Liquidator.vy's `Hop` struct: (pool, kind 0|1|2, i, j, token_in, token_out)."""
        return (self.pool, self.kind_code, self.i, self.j, self.token_in, self.token_out)


# ---- configuration --------------------------------------------------------------------------------


class HopConfig(Model):
    pool: Address = Field(description="The pool (Curve) or pair (Uniswap V2) of this hop.")
    kind: HopKind = Field(
        description="'curve' (stableswap, int128 indices), 'curve_crypto' (cryptoswap, uint256 indices) or 'univ2' (a pair)."
    )
    i: int = Field(ge=0, le=7, description="Index of token_in in the pool (univ2: 0 if token_in is token0, else 1).")
    j: int = Field(ge=0, le=7, description="Index of token_out in the pool (univ2: 1 − i).")
    token_in: Address = Field(description="Token this hop sells (the first hop: the market's collateral).")
    token_out: Address = Field(description="Token this hop buys (the last hop: the market's stablecoin).")

    @model_validator(mode="after")
    def _consistent(self) -> HopConfig:
        if self.i == self.j:
            raise ValueError(f"i and j are both {self.i}: a hop swaps between two different coins")
        if self.token_in == self.token_out:
            raise ValueError("token_in and token_out are the same token")
        if self.kind == "univ2" and {self.i, self.j} != {0, 1}:
            raise ValueError("a univ2 pair has two tokens: i and j must be 0 and 1 (i = 0 when token_in is token0)")
        return self

    def hop(self) -> Hop:
        return Hop(self.pool, self.kind, self.i, self.j, self.token_in, self.token_out)


class RouteConfig(Model):
    """A market's route, collateral → … → stablecoin. In TOML either `{ hops = [ {…}, … ] }` or the bare list."""

    hops: list[HopConfig] = Field(
        min_length=1, max_length=MAX_HOPS, description="1–3 hops; each hop's token_out is the next hop's token_in."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        return {"hops": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _chained(self) -> RouteConfig:
        for k in range(1, len(self.hops)):
            prev, cur = self.hops[k - 1], self.hops[k]
            if prev.token_out != cur.token_in:
                raise ValueError(
                    f"hops[{k}].token_in {cur.token_in} is not hops[{k - 1}].token_out {prev.token_out}: hops must chain"
                )
        pools = [h.pool for h in self.hops]
        for k, p in enumerate(pools):
            if p in pools[:k]:
                raise ValueError(f"hops[{k}].pool {p} appears twice in the route (its quote would be stale)")
        tokens = [self.hops[0].token_in, *(h.token_out for h in self.hops)]
        if len(set(tokens)) != len(tokens):
            raise ValueError("the route passes through the same token twice")
        return self

    @property
    def token_in(self) -> str:
        return self.hops[0].token_in

    @property
    def token_out(self) -> str:
        return self.hops[-1].token_out

    def to_hops(self) -> list[Hop]:
        return [h.hop() for h in self.hops]

    def endpoint_problem(self, collateral: str, stablecoin: str) -> str | None:
        """Why this route cannot serve a market with these tokens (None: it can): it must start at the
        collateral and end at the stablecoin (the contract asserts both)."""
        if self.token_in != to_checksum_address(collateral):
            return f"the route starts at {self.token_in}, not at the market's collateral {to_checksum_address(collateral)}"
        if self.token_out != to_checksum_address(stablecoin):
            return f"the route ends at {self.token_out}, not at the market's stablecoin {to_checksum_address(stablecoin)}"
        return None


# ---- maths --------------------------------------------------------------------------------------------


def univ2_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut, exactly (integers, floor): the most a pair pays for `amount_in`
    under its 0.3 % fee and k-check. 0 for an empty pool or no input."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        return 0
    with_fee = amount_in * UNIV2_FEE_NUM
    return with_fee * reserve_out // (reserve_in * UNIV2_FEE_DEN + with_fee)


def min_out_for(quote: int, slippage: Decimal) -> int:
    """⌊quote × (1 − slippage)⌋, exactly (slippage a Decimal in [0, 1])."""
    if not (0 <= slippage <= 1) or not slippage.is_finite():
        raise ValueError(f"slippage must be between 0 and 1, got {slippage}")
    if quote <= 0:
        return 0
    num, den = slippage.as_integer_ratio()
    return quote * (den - num) // den


# ---- quoting ----------------------------------------------------------------------------------------


def _eth_call(to: str, data: bytes, block: int | str) -> tuple[str, list]:
    return ("eth_call", [call_object(to, data), block_tag(block)])


def _get_dy(hop: Hop, amount: int) -> bytes:
    selector = GET_DY_INT128 if hop.kind == "curve" else GET_DY_UINT256
    types = ["int128", "int128", "uint256"] if hop.kind == "curve" else ["uint256", "uint256", "uint256"]
    return selector + abi_encode(types, [hop.i, hop.j, amount])


def _raw(answer: Any, what: str) -> bytes:
    if isinstance(answer, RpcError):
        raise RouteError(f"{what}: {getattr(answer, 'reason', '') or answer.message}")
    if not isinstance(answer, str) or not answer.startswith("0x"):
        raise RouteError(f"{what}: malformed answer {answer!r}")
    return bytes.fromhex(answer[2:])


def _address(answer: Any, what: str) -> str:
    raw = _raw(answer, what)
    if len(raw) < 32:
        raise RouteError(f"{what}: no address returned ({len(raw)} bytes; no contract there?)")
    return to_checksum_address(abi_decode(["address"], raw[:32])[0])


def _checks(hop: Hop) -> list[tuple[str, bytes, str]]:
    """(what, calldata, expected address) token checks of one hop."""
    if hop.kind == "univ2":
        token0 = hop.token_in if hop.i == 0 else hop.token_out
        return [(f"{hop.pool}.token0()", TOKEN0, token0)]
    return [
        (f"{hop.pool}.coins({hop.i})", COINS_UINT256 + abi_encode(["uint256"], [hop.i]), hop.token_in),
        (f"{hop.pool}.coins({hop.j})", COINS_UINT256 + abi_encode(["uint256"], [hop.j]), hop.token_out),
    ]


def _dy_answer(answer: Any, hop: Hop) -> int:
    """A get_dy answer → the amount; a revert means the pool cannot take this amount: 0."""
    if isinstance(answer, ExecutionReverted):
        return 0
    raw = _raw(answer, f"{hop.pool}.get_dy")
    if len(raw) < 32:
        raise RouteError(f"{hop.pool}.get_dy: no amount returned ({len(raw)} bytes; not a {hop.kind} pool?)")
    return int(abi_decode(["uint256"], raw[:32])[0])


async def quote_curve(rpc: RpcClient, hops: list[Hop], amounts: list[int], block: int | str) -> list[int]:
    """What the route pays for each of `amounts` (token_in base units → token_out base units) at `block`.

    Batches: the first holds every hop's token check, every pair's reserves and a first Curve hop's get_dy
    for all amounts; each later Curve hop costs one more (all amounts together). An amount a Curve
    pool refuses to quote (get_dy reverts) and everything after a zero output quote 0.
    Raises RouteError when a pool holds other tokens than configured or does not answer a view."""
    if not hops:
        raise RouteError("empty route")
    if len(hops) > MAX_HOPS:
        raise RouteError(f"{len(hops)} hops; at most {MAX_HOPS}")
    for k in range(1, len(hops)):
        if hops[k - 1].token_out != hops[k].token_in:
            raise RouteError(f"hops {k - 1} and {k} do not chain")
    outs = [max(int(a), 0) for a in amounts]
    if not any(outs):
        return outs
    # first batch: token checks, pair reserves, and the first hop's get_dy when it is a Curve hop
    calls: list[tuple[str, list]] = []
    checks: list[tuple[str, str]] = []
    for h in hops:
        for what, data, expected in _checks(h):
            calls.append(_eth_call(h.pool, data, block))
            checks.append((what, expected))
    pairs = [k for k, h in enumerate(hops) if h.kind == "univ2"]
    calls += [_eth_call(hops[k].pool, GET_RESERVES, block) for k in pairs]
    first = 0
    wanted: list[int] = []
    if hops[0].kind != "univ2":
        wanted = [n for n, a in enumerate(outs) if a > 0]
        calls += [_eth_call(hops[0].pool, _get_dy(hops[0], outs[n]), block) for n in wanted]
    answers = await rpc.batch(calls)
    for (what, expected), ans in zip(checks, answers, strict=False):
        got = _address(ans, what)
        if got != to_checksum_address(expected):
            raise RouteError(f"{what} is {got}, the route says {to_checksum_address(expected)}")
    reserves: dict[int, tuple[int, int]] = {}
    off = len(checks)
    for m, k in enumerate(pairs):
        raw = _raw(answers[off + m], f"{hops[k].pool}.getReserves()")
        if len(raw) < 64:
            raise RouteError(f"{hops[k].pool}.getReserves(): {len(raw)} bytes (not a Uniswap V2 pair?)")
        r0, r1 = abi_decode(["uint256", "uint256"], raw[:64])
        reserves[k] = (int(r0), int(r1)) if hops[k].i == 0 else (int(r1), int(r0))  # (reserve_in, reserve_out)
    off += len(pairs)
    if hops[0].kind != "univ2":
        dys = [_dy_answer(a, hops[0]) for a in answers[off:]]
        for n, dy in zip(wanted, dys, strict=True):
            outs[n] = dy
        first = 1
    for k in range(first, len(hops)):
        h = hops[k]
        if h.kind == "univ2":
            r_in, r_out = reserves[k]
            outs = [univ2_amount_out(a, r_in, r_out) for a in outs]
            continue
        wanted = [n for n, a in enumerate(outs) if a > 0]
        if not wanted:
            break
        answers = await rpc.batch([_eth_call(h.pool, _get_dy(h, outs[n]), block) for n in wanted])
        for n, ans in zip(wanted, answers, strict=True):
            outs[n] = _dy_answer(ans, h)
    return outs


async def quote_route(rpc: RpcClient, hops: list[Hop], amount_in: int, block: int | str) -> int:
    """What the whole route pays for `amount_in` at `block` (0 for 0); see quote_curve."""
    if amount_in <= 0:
        return 0
    return (await quote_curve(rpc, hops, [amount_in], block))[0]
