"""Curve crvUSD / LlamaLend (LLAMMA) liquidation maths — pure, integers (docs/PROTOCOLS.md §B).

Units: stablecoin (borrowed token) amounts are 1e18 (crvUSD has 18 decimals); collateral amounts
are in the collateral's native units unless a name says `_18`; prices are stablecoin per collateral,
1e18; ratios (frac, discounts, haircut) are 1e18.
"""

from __future__ import annotations

from dataclasses import dataclass

WAD = 10**18


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def health(
    x_down: int,
    debt: int,
    liquidation_discount: int,
    *,
    full: bool = False,
    n1: int = 0,
    active_band: int = 0,
    price_oracle: int = 0,
    p_up_n1: int = 0,
    y: int = 0,
    collateral_precision: int = 1,
    borrowed_precision: int = 1,
    divisor_has_borrowed_precision: bool = False,
) -> int:
    """Controller.health(user, full): ⌊x_down·(1 − ld)/debt⌋ − 1 (1e18), plus, when `full` and the
    loan is not in soft liquidation (n1 > active band) and the oracle is above its top band,
    the value of its collateral above that band: (p_o − p_up(n1))·y·COLLATERAL_PRECISION/debt
    (divided by debt·BORROWED_PRECISION in the 0.3.10 contracts)."""
    if debt == 0:
        raise ZeroDivisionError("Loan doesn't exist")
    h = x_down * (WAD - liquidation_discount) // debt - WAD
    if full and n1 > active_band and price_oracle > p_up_n1:
        div = debt * borrowed_precision if divisor_has_borrowed_precision else debt
        h += (price_oracle - p_up_n1) * y * collateral_precision // div
    return h


def in_soft_liquidation(n1: int, active_band: int) -> bool:
    """A loan is in soft liquidation once the active band reached its top band (n1 ≤ active band)."""
    return n1 <= active_band


def converted_share(x: int, y: int, price_oracle: int, collateral_precision: int = 1) -> int:
    """Share (1e18) of the loan's band value already converted to the stablecoin, at the oracle price."""
    y_value = y * collateral_precision * price_oracle // WAD
    total = x + y_value
    return 0 if total == 0 else x * WAD // total


def f_remove(frac: int, health_limit: int) -> int:
    """Share of the user's bands withdrawn for a liquidation of `frac` of the debt (1e18):
    1 for frac = 1, else ((1 + h/2)/(1 + h)·(1 − frac) + frac)·frac with h the liquidation discount."""
    if frac >= WAD:
        return WAD
    f = (WAD + health_limit // 2) * (WAD - frac) // (WAD + health_limit)
    return (f + frac) * frac // WAD


def debt_repaid(debt: int, frac: int, *, ceil: bool) -> int:
    """d = debt·frac/1e18, floored (M2, LlamaLend 0.3.10) or ceiled (V3)."""
    return ceil_div(debt * frac, WAD) if ceil else debt * frac // WAD


def tokens_to_pay(debt: int, x: int, frac: int, health_limit: int, *, ceil: bool) -> int:
    """Controller.tokens_to_liquidate: max(d − x·f_remove, 0), what the liquidator pays."""
    return max(debt_repaid(debt, frac, ceil=ceil) - x * f_remove(frac, health_limit) // WAD, 0)


def collateral_value(y: int, price_oracle: int, haircut: int, collateral_precision: int = 1) -> int:
    """Stablecoin value (1e18) of `y` collateral (native units) at the oracle price, less the sale haircut."""
    return y * collateral_precision * price_oracle // WAD * (WAD - haircut) // WAD


@dataclass(frozen=True)
class Payout:
    frac: int
    debt_repaid: int  # d, 1e18
    x_withdrawn: int  # stablecoin taken from the user's bands, 1e18
    y_withdrawn: int  # collateral taken from the user's bands, native units
    pay: int  # stablecoin the liquidator pays: max(d − x, 0)
    receive_stable: int  # stablecoin the liquidator receives: max(x − d, 0)
    value: int  # net value to the liquidator before gas: y value (after haircut) + x − d


def payout(
    *,
    debt: int,
    x: int,
    y: int,
    frac: int,
    health_limit: int,
    price_oracle: int,
    haircut: int,
    collateral_precision: int = 1,
    ceil: bool = False,
) -> Payout:
    """What liquidating `frac` of a loan moves (exact for frac = 1, band-rounding approximate otherwise)."""
    d = debt_repaid(debt, frac, ceil=ceil)
    fr = f_remove(frac, health_limit)
    xw = x * fr // WAD
    yw = y * fr // WAD
    value = collateral_value(yw, price_oracle, haircut, collateral_precision) + xw - d
    return Payout(frac, d, xw, yw, max(d - xw, 0), max(xw - d, 0), value)


def affordable_frac(pay_full: int, available: int, min_frac: int) -> int | None:
    """Largest frac (1e18) whose payment fits `available`, assuming payment ∝ frac (a first guess the
    caller confirms on-chain with tokens_to_liquidate(user, frac)); None below `min_frac`."""
    if pay_full <= available:
        return WAD
    if pay_full == 0:
        return WAD
    frac = available * WAD // pay_full
    return frac if frac >= min_frac else None


def min_x_for(x_expected: int, slippage: int) -> int:
    """The `min_x` slippage guard: what the bands should yield in stablecoin, less a tolerance."""
    return x_expected * (WAD - slippage) // WAD
