"""Reference swap pools and the LLAMMA liquidator contract on a dev chain (tests and the demo).

    pool = deploy_curve_pool(chain, m.collateral, m.stablecoin, kind="crypto", amounts=(m.units(1000), m.usd(2_500_000)))
    pair = deploy_univ2_pair(chain, m.collateral, m.stablecoin, amounts=(m.units(1000), m.usd(2_500_000)))
    route = [curve_hop(chain, pool, m.collateral, m.stablecoin)]
    liq = deploy_liquidator(chain, owner=keeper_address)
    quote = quote_route(chain, route, y)           # what the route pays for y collateral, by eth_call
    chain.tx(liq.functions.liquidate(m.controller.address, user, 0, 10**18, route_tuples(route), quote, 0, 1), sender=owner)

Pools (contracts/pools/): CurveStablePool (stableswap ABI, int128 indices), CurveCryptoPool
(cryptoswap ABI, uint256 indices) — both constant product with a fee in Curve's 1e10 units (default
0.04 %) on their internal balances — and UniV2Pair (Uniswap V2 pair semantics, 0.3 % fee k-check,
token0 < token1 by address). Amounts are native token units. Seeding mints the test tokens (their
minter is chain.admin) or, for WETH9, wraps the admin's ETH.

The liquidator's route is a list of Hop(pool, kind, i, j, token_in, token_out) with kind 0 =
Curve stableswap, 1 = Curve cryptoswap, 2 = Uniswap V2 pair (i = 0 if token_in is token0 else 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception

from keeper.devtools.chain import DevChain

MAX_UINT256 = 2**256 - 1
CURVE_FEE_DENOMINATOR = 10**10
CURVE_DEFAULT_FEE = 4 * 10**6  # 0.04 %
KIND_STABLESWAP = 0
KIND_CRYPTOSWAP = 1
KIND_UNIV2 = 2
MAX_HOPS = 3

PoolKind = Literal["stable", "crypto"]
_CURVE_CONTRACT = {"stable": "pools/CurveStablePool", "crypto": "pools/CurveCryptoPool"}

TokenLike = Contract | str


def _address(token: TokenLike) -> str:
    return Web3.to_checksum_address(token if isinstance(token, str) else token.address)


@dataclass(frozen=True)
class Hop:
    """One hop of a liquidator route (the contract's `Hop` struct)."""

    pool: str
    kind: int  # KIND_STABLESWAP, KIND_CRYPTOSWAP or KIND_UNIV2
    i: int
    j: int
    token_in: str
    token_out: str

    def as_tuple(self) -> tuple[str, int, int, int, str, str]:
        return (self.pool, self.kind, self.i, self.j, self.token_in, self.token_out)


def route_tuples(route: Sequence[Hop]) -> list[tuple[str, int, int, int, str, str]]:
    """The route as the ABI encoder wants it (a list of struct tuples)."""
    return [h.as_tuple() for h in route]


# ---- funding ---------------------------------------------------------------------------------


def fund_token(chain: DevChain, token: TokenLike, holder: str, amount: int) -> None:
    """Give `holder` `amount` of a test token: mint (minter: chain.admin) or, for WETH9, wrap the
    admin's ETH and transfer it."""
    if amount <= 0:
        return
    c = chain.at("common/ERC20", _address(token))
    try:
        mintable = bool(c.functions.minters(chain.admin).call())
    except (ContractLogicError, Web3Exception):
        mintable = False  # no minters(): WETH9 (its fallback answers with no data)
    if mintable:
        chain.tx(c.functions.mint(holder, amount))
        return
    weth = chain.at("llamma/WETH", c.address)
    admin = chain.admin
    balance = chain.w3.eth.get_balance(Web3.to_checksum_address(admin))
    if balance < amount + 10**18:
        chain.set_balance(admin, balance + amount + 10**18)
    chain.tx(weth.functions.deposit(), sender=admin, value=amount)
    if Web3.to_checksum_address(holder) != Web3.to_checksum_address(admin):
        chain.tx(weth.functions.transfer(holder, amount), sender=admin)


# ---- Curve-ABI pools -----------------------------------------------------------------------------


def deploy_curve_pool(
    chain: DevChain,
    coin0: TokenLike,
    coin1: TokenLike,
    kind: PoolKind = "stable",
    amounts: tuple[int, int] = (0, 0),
    fee: int = CURVE_DEFAULT_FEE,
) -> Contract:
    """A 2-coin pool with the Curve stableswap (`kind="stable"`) or cryptoswap (`"crypto"`) ABI,
    coins(0) = coin0, coins(1) = coin1, seeded with `amounts` (native units) by chain.admin."""
    if kind not in _CURVE_CONTRACT:
        raise ValueError(f"unknown Curve pool kind {kind!r}")
    pool = chain.deploy(_CURVE_CONTRACT[kind], _address(coin0), _address(coin1), fee)
    add_curve_liquidity(chain, pool, amounts)
    return pool


def add_curve_liquidity(chain: DevChain, pool: Contract, amounts: tuple[int, int]) -> None:
    """Mint `amounts` of coins 0 and 1 to chain.admin and add them to the pool (no LP token)."""
    if not any(amounts):
        return
    admin = chain.admin
    for k in range(2):
        if amounts[k] > 0:
            token = chain.at("common/ERC20", pool.functions.coins(k).call())
            fund_token(chain, token, admin, amounts[k])
            chain.tx(token.functions.approve(pool.address, amounts[k]), sender=admin)
    chain.tx(pool.functions.add_liquidity(list(amounts)), sender=admin)


def curve_pool_kind(pool: Contract) -> int:
    """KIND_STABLESWAP if the pool's get_dy takes int128 indices, else KIND_CRYPTOSWAP."""
    for e in pool.abi:
        entry: dict[str, Any] = dict(e)
        if entry.get("type") == "function" and entry.get("name") == "get_dy":
            return KIND_STABLESWAP if entry["inputs"][0]["type"] == "int128" else KIND_CRYPTOSWAP
    raise ValueError(f"{pool.address} has no get_dy in its ABI")


def curve_hop(chain: DevChain, pool: Contract, token_in: TokenLike, token_out: TokenLike) -> Hop:
    """The hop selling token_in for token_out on a Curve-ABI pool (indices read from coins())."""
    coins: list[str] = [Web3.to_checksum_address(pool.functions.coins(k).call()) for k in range(2)]
    t_in, t_out = _address(token_in), _address(token_out)
    if {t_in, t_out} != set(coins):
        raise ValueError(f"pool {pool.address} does not trade {t_in} for {t_out}")
    return Hop(pool.address, curve_pool_kind(pool), coins.index(t_in), coins.index(t_out), t_in, t_out)


# ---- Uniswap V2 pairs ----------------------------------------------------------------------------


def deploy_univ2_pair(chain: DevChain, token_a: TokenLike, token_b: TokenLike, amounts: tuple[int, int] = (0, 0)) -> Contract:
    """A Uniswap V2 pair of the two tokens (token0 = the lower address, as Uniswap sorts them),
    seeded with amounts[0] of token_a and amounts[1] of token_b (transfer, then sync())."""
    a, b = _address(token_a), _address(token_b)
    if int(a, 16) == int(b, 16):
        raise ValueError("identical tokens")
    token0, token1 = (a, b) if int(a, 16) < int(b, 16) else (b, a)
    pair = chain.deploy("pools/UniV2Pair", token0, token1)
    add_univ2_liquidity(chain, pair, {a: amounts[0], b: amounts[1]})
    return pair


def add_univ2_liquidity(chain: DevChain, pair: Contract, amounts: dict[str, int]) -> None:
    """Mint {token address: amount} to the pair and sync() its reserves."""
    for token, amount in amounts.items():
        fund_token(chain, token, pair.address, amount)
    chain.tx(pair.functions.sync())


def univ2_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut (0.3 % fee), the amount the liquidator asks the pair for."""
    in_with_fee = amount_in * 997
    return in_with_fee * reserve_out // (reserve_in * 1000 + in_with_fee)


def univ2_hop(pair: Contract, token_in: TokenLike, token_out: TokenLike) -> Hop:
    t_in, t_out = _address(token_in), _address(token_out)
    t0 = Web3.to_checksum_address(pair.functions.token0().call())
    t1 = Web3.to_checksum_address(pair.functions.token1().call())
    if {t_in, t_out} != {t0, t1}:
        raise ValueError(f"pair {pair.address} does not trade {t_in} for {t_out}")
    i = 0 if t_in == t0 else 1
    return Hop(pair.address, KIND_UNIV2, i, 1 - i, t_in, t_out)


# ---- quotes --------------------------------------------------------------------------------------


def quote_hop(chain: DevChain, hop: Hop, amount: int, block_identifier: Any = "latest") -> int:
    """What `hop` pays for `amount` of token_in, by eth_call at `block_identifier`."""
    if hop.kind == KIND_UNIV2:
        pair = chain.at("pools/UniV2Pair", hop.pool)
        r0, r1, _ = pair.functions.getReserves().call(block_identifier=block_identifier)
        r_in, r_out = (r0, r1) if hop.i == 0 else (r1, r0)
        return univ2_amount_out(amount, r_in, r_out)
    name = "pools/CurveStablePool" if hop.kind == KIND_STABLESWAP else "pools/CurveCryptoPool"
    pool = chain.at(name, hop.pool)
    return int(pool.functions.get_dy(hop.i, hop.j, amount).call(block_identifier=block_identifier))


def quote_route(chain: DevChain, route: Sequence[Hop], amount: int, block_identifier: Any = "latest") -> int:
    """What the whole route pays for `amount` of its first token (hops quoted in sequence; exact
    when no pool appears twice in the route)."""
    out = amount
    for hop in route:
        if out == 0:
            return 0
        out = quote_hop(chain, hop, out, block_identifier)
    return out


# ---- the liquidator ------------------------------------------------------------------------------


def deploy_liquidator(chain: DevChain, owner: str, keep_proceeds: bool = False, *, sender: str | None = None) -> Contract:
    """contracts/llamma/Liquidator.vy owned by `owner`, deployed from `sender` (default: the owner if
    it is one of the node's unlocked accounts, else chain.admin)."""
    owner = Web3.to_checksum_address(owner)
    if sender is None:
        sender = owner if owner in chain.accounts else chain.admin
    return chain.deploy("llamma/Liquidator", owner, keep_proceeds, sender=sender)
