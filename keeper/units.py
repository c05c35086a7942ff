"""Exact conversions between human decimal amounts and on-chain integers. Floats only for display."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext

WAD = 10**18
GWEI = 10**9


def to_decimal(value: object) -> Decimal:
    """Decimal from str/int/Decimal/float; floats go through repr so 0.1 stays 0.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | str):
        try:
            return Decimal(str(value).strip().replace("_", ""))
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {value!r}") from exc
    raise ValueError(f"not a number: {value!r}")


def to_units(value: object, decimals: int = 18) -> int:
    """Human amount → integer base units, exactly; rejects digits below the unit."""
    d = to_decimal(value)
    with localcontext() as ctx:
        ctx.prec = 100
        scaled = d.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {decimals} decimals")
        return int(scaled)


def from_units(amount: int, decimals: int = 18) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 100
        return Decimal(amount).scaleb(-decimals)


def decimal_text(amount: int, decimals: int = 18) -> str:
    """An integer amount as an exact decimal string in token units, no exponent, no trailing zeros
    (12_500000000000000000 → "12.5"). Machine output (logs, `--json`) uses this."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals)
    return f"{sign}{whole}" + (f".{frac:0{decimals}d}".rstrip("0") if frac else "")


def fmt_units(amount: int | None, decimals: int = 18, places: int = 6) -> str:
    """Display an integer amount with `places` decimals (rounded down toward zero)."""
    if amount is None:
        return "-"
    with localcontext() as ctx:
        ctx.prec = 100
        q = Decimal(1).scaleb(-places) if places > 0 else Decimal(1)
        return str(from_units(amount, decimals).quantize(q, rounding=ROUND_DOWN))


def fmt_ratio(ratio_1e18: int | None, places: int = 4) -> str:
    """A 1e18 fixed-point ratio as a percentage string, e.g. 62500000000000000 → '6.2500%'."""
    if ratio_1e18 is None:
        return "-"
    return fmt_units(ratio_1e18 * 100, 18, places) + "%"
