"""Perp v1 prices under a move: liquidation prices and what-if market states — pure, integer-exact.

Everything here is keeper/risk/perp.py's own maths (the contracts' integers and rounding) applied to a
market state moved to another price. The move model ("sustained"): the index (oracle) is at price p,
arbitrage has traded the vAMM to p — the constant-product trade, on the Amm's own k = mulD(Q, B):
Q' = ⌊√(p·k)⌋, and the base reserve the swap leaves, B' = ⌈k·1e18/Q'⌉ (the Amm's getInputPrice rounds
1 wei in its favour; Q'/B' is p to ~1e-18 relative) — and the price has held for the 900 s TWAP window,
so the TWAP is the spot too. Funding is as of now (the CPF does not move). The "instant" variant keeps
the current TWAP (the trade's snapshot has no weight yet). Markets only: the Amm's fluctuation and trade
limits, which would spread a large move over several blocks, are not modelled.

A liquidation price is found by integer bisection of that model over a price grid (multiples of
`tick`, e.g. one unit of the quote token): the contract's decision (`perp.ratios` + `perp.liquidation`,
the 10 % oracle rule included) at each price, so at the returned price the model's position is
liquidatable and one tick towards safety it is not. Units: 1e18 fixed point, like perp.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import isfinite, isqrt, sqrt

from keeper.risk.perp import (
    TWAP_INTERVAL,
    WAD,
    AmmMathError,
    MarketState,
    PerpParams,
    Position,
    Snapshot,
    TwapMemo,
    funding_payment,
    liquidation,
    mul_d,
    ratios,
)

MAX_DOUBLINGS = 200  # a boundary beyond 2^200 × the start price does not exist for practical purposes


def reserves_at(quote_reserve: int, base_reserve: int, price: int) -> tuple[int, int]:
    """(Q', B') after the constant-product trade that takes the vAMM's spot to `price` (1e18):
    k = mulD(Q, B), Q' = ⌊√(price·k)⌋, B' = ⌈k·1e18/Q'⌉ — what swapInput leaves, in either direction
    (getInputPrice's ±1 keeps the wei on the Amm's side)."""
    if price <= 0:
        raise AmmMathError("price must be > 0")
    k = mul_d(quote_reserve, base_reserve)
    q = isqrt(price * k)
    if q == 0:
        raise AmmMathError("quote asset after is 0")
    b = -(-k * WAD // q)
    if b == 0:
        raise AmmMathError("base asset after is 0")
    return q, b


def market_at(
    m: MarketState, price: int, *, oracle: int | None = None, sustained: bool = True, memo: TwapMemo | None = None
) -> MarketState:
    """`m` with the index at `oracle` (default `price`) and the vAMM traded to `price` (reserves_at).
    sustained: the 900 s TWAP is the new spot (one snapshot at the new reserves, a full window old);
    else the current TWAP (the snapshots as they are; `memo`, a TwapMemo of its own, may speed up many
    evaluations of the same snapshots — never the daemon's, whose per-block state it would disturb)."""
    q, b = reserves_at(m.quote_reserve, m.base_reserve, price)
    snaps = (Snapshot(q, b, m.now - TWAP_INTERVAL, 0),) if sustained else m.snapshots
    return MarketState(q, b, price if oracle is None else oracle, m.cpf, snaps, m.now, twap_memo=None if sustained else memo)


def shocked_market(m: MarketState, factor: int, *, sustained: bool = True, memo: TwapMemo | None = None) -> MarketState:
    """The market after a shock: index × factor (1e18: 0.9e18 = −10 %, mulD), the vAMM traded to the
    new index (market_at)."""
    if factor <= 0:
        raise AmmMathError("shock factor must be > 0")
    return market_at(m, mul_d(m.oracle_price, factor), sustained=sustained, memo=memo)


def liquidatable_at(pos: Position, m: MarketState, p: PerpParams, price: int) -> tuple[bool, bool]:
    """(liquidatable, full) for `pos` with the market moved to `price` (sustained). A price at which the
    contract's maths reverts (the vAMM cannot price the position) is not liquidatable there."""
    try:
        s = market_at(m, price)
        r = ratios(pos, s)
        if r is None:  # only with skip_twap_above, not given here
            return False, False
        liq = liquidation(pos, s, p, r)
    except AmmMathError:
        return False, False
    return liq.liquidatable, liq.liquidatable and not liq.partial


def estimate(pos: Position, m: MarketState, threshold: int) -> int | None:
    """A float guess (1e18, only a starting point for the exact search) of the index price at which the
    position's margin ratio reaches `threshold` under the sustained move: with Q'B' = k, the close returns
    N = Q'·s/(B' ± s) (+ long, − short), the ratio (margin ± (N − open notional) − funding)/N equals the
    threshold at N* = (open + FP − margin)/(1 − t) (long) or (margin + open − FP)/(1 + t) (short), and
    x = √p solves √k·s·x² ∓ N*·s·x − N*·√k = 0. None when there is no positive root."""
    try:
        s = abs(pos.size) / WAD
        k = mul_d(m.quote_reserve, m.base_reserve) / WAD
        fp = funding_payment(pos, m.cpf) / WAD
        t = threshold / WAD
        margin, opened = pos.margin / WAD, pos.open_notional / WAD
        n = (opened + fp - margin) / (1 - t) if pos.size > 0 else (margin + opened - fp) / (1 + t)
        if not n > 0 or s == 0:
            return None
        root = sqrt(n * n * s * s + 4 * k * s * n)
        x = ((n * s if pos.size > 0 else -n * s) + root) / (2 * sqrt(k) * s)
        price = x * x * WAD
        return int(price) if isfinite(price) and price >= 1 else None
    except (OverflowError, ValueError, ZeroDivisionError):
        return None


HINT_WINDOW = 10**6  # the first bracket tried around a guess: ± guess / this (1 ppm), then the full search


def _edge(pred: Callable[[int], bool], long: bool, start: int, hint: int | None = None) -> int | None:
    """Integer bisection for where `pred` (liquidatable at grid point n ≥ 1) flips.

    long (liquidatable below): n with pred(n) and not pred(n + 1). short (liquidatable above): n with
    pred(n) and not pred(n − 1). A bracket ± 1 ppm around `hint` (a guess) is tried first; otherwise the
    bracket is found by doubling / halving from `start`. Then bisection, keeping the ends' values; None
    when no such point is found on the grid (never liquidatable, or at every price down to one tick, or
    beyond MAX_DOUBLINGS doublings)."""
    if hint is not None and hint >= 1:
        w = hint // HINT_WINDOW + 1
        lo, hi = max(hint - w, 1), hint + w
        if lo < hi and pred(lo) == long and pred(hi) != long:
            while hi - lo > 1:  # long: pred(lo), not pred(hi); short: not pred(lo), pred(hi)
                mid = (lo + hi) // 2
                if pred(mid) == long:
                    lo = mid
                else:
                    hi = mid
            return lo if long else hi
    n0 = max(start, 1)
    inside = pred(n0)
    if long:
        if inside:  # liquidatable here: the boundary is above
            lo, hi = n0, 2 * n0
            for _ in range(MAX_DOUBLINGS):
                if not pred(hi):
                    break
                lo, hi = hi, 2 * hi
            else:
                return None
        else:
            hi, lo = n0, n0 // 2
            while lo >= 1 and not pred(lo):
                hi, lo = lo, lo // 2
            if lo < 1:
                return None
        while hi - lo > 1:  # pred(lo), not pred(hi)
            mid = (lo + hi) // 2
            if pred(mid):
                lo = mid
            else:
                hi = mid
        return lo
    if inside:  # liquidatable here: the boundary is below
        hi, lo = n0, n0 // 2
        while lo >= 1 and pred(lo):
            hi, lo = lo, lo // 2
        if lo < 1:
            return None
    else:
        lo, hi = n0, 2 * n0
        for _ in range(MAX_DOUBLINGS):
            if pred(hi):
                break
            lo, hi = hi, 2 * hi
        else:
            return None
    while hi - lo > 1:  # not pred(lo), pred(hi)
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True, slots=True)
class LiquidationPrices:
    liq_price: int | None  # index price (1e18) at which the position becomes liquidatable; None: none found
    full_liq_price: int | None  # … at which the liquidation becomes full (not partial); None: none found


def liquidation_prices(pos: Position, m: MarketState, p: PerpParams, *, tick: int = 1, hints: bool = True) -> LiquidationPrices:
    """The index prices, on the grid of multiples of `tick` (wei of 1e18 price), at which `pos` becomes
    liquidatable and at which its liquidation becomes full, under the sustained move (module docstring).

    Long: liquidatable at liq_price, not at liq_price + tick (full likewise). Short: liquidatable at
    liq_price, not at liq_price − tick. full_liq_price is further from the current price than liq_price
    (equal to it when the contract never closes partially: partialLiquidationRatio 0 or ≥ 1). `hints`:
    start each search at a float guess (`estimate`); the result is the exact search's either way."""
    if tick <= 0:
        raise ValueError("tick must be > 0")
    if pos.size == 0:
        return LiquidationPrices(None, None)
    long = pos.size > 0

    def liq(n: int) -> bool:
        return liquidatable_at(pos, m, p, n * tick)[0]

    def full(n: int) -> bool:
        return liquidatable_at(pos, m, p, n * tick)[1]

    def guess(threshold: int) -> int | None:
        g = estimate(pos, m, threshold) if hints else None
        return None if g is None else g // tick

    n_liq = _edge(liq, long, m.oracle_price // tick, guess(p.mmr))
    if n_liq is None:
        return LiquidationPrices(None, None)
    if not 0 < p.plr < WAD:
        return LiquidationPrices(n_liq * tick, n_liq * tick)
    n_full = _edge(full, long, n_liq, guess(p.lfr))
    return LiquidationPrices(n_liq * tick, None if n_full is None else n_full * tick)


def price_tick(quote_decimals: int) -> int:
    """One unit of the quote token as a 1e18 price step (1e12 for a 6-decimal USDC), at least 1 wei."""
    return 10 ** (18 - quote_decimals) if quote_decimals < 18 else 1
