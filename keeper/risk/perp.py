"""Perpetual Protocol v1 / Palmswap v1 risk maths — pure, integer-exact, with the contracts' rounding.

Units: every amount and ratio is 18-decimal fixed point (1e18 = 1.0 = one quote token / one base
token). Signed fixed-point operations truncate toward zero (SignedSafeMath); unsigned ones floor.
References are to shared/spec/PROTOCOLS.md §A.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

WAD = 10**18
MAX_ORACLE_SPREAD_RATIO = 10**17  # 10 %, Amm.isOverSpreadLimit (≥)
TWAP_INTERVAL = 900  # s, Amm.getOutputTwap fixed window


class Dir(IntEnum):
    ADD_TO_AMM = 0
    REMOVE_FROM_AMM = 1


class PnlOption(IntEnum):
    SPOT = 0
    TWAP = 1
    ORACLE = 2


class AmmMathError(ArithmeticError):
    """The contract would revert computing this (e.g. 'base asset after is 0')."""


# ---- fixed point ---------------------------------------------------------------------------------


def mul_d(a: int, b: int) -> int:
    """Unsigned ⌊a·b/1e18⌋."""
    return a * b // WAD


def div_d(a: int, b: int) -> int:
    """Unsigned ⌊a·1e18/b⌋."""
    return a * WAD // b


def _tdiv(n: int, d: int) -> int:
    """Integer division truncating toward zero (Solidity int256 `/`)."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def smul_d(a: int, b: int) -> int:
    """Signed a·b/1e18 truncated toward zero."""
    return _tdiv(a * b, WAD)


def sdiv_d(a: int, b: int) -> int:
    """Signed a·1e18/b truncated toward zero."""
    if b == 0:
        raise AmmMathError("division by zero")
    return _tdiv(a * WAD, b)


# ---- vAMM (A.6) ------------------------------------------------------------------------------------


def output_price(dir_base: Dir, base: int, quote_reserve: int, base_reserve: int) -> int:
    """Quote received/paid for `base` going into (ADD, closing a long) or out of (REMOVE, closing a
    short) the vAMM with the given reserves: Amm.getOutputPriceWithReserves."""
    if base == 0:
        return 0
    k = mul_d(quote_reserve, base_reserve)
    if dir_base == Dir.ADD_TO_AMM:
        base_after = base_reserve + base
    else:
        if base_reserve <= base:
            raise AmmMathError("base asset after is 0")
        base_after = base_reserve - base
    quote_after = div_d(k, base_after)
    sold = quote_after - quote_reserve if quote_after > quote_reserve else quote_reserve - quote_after
    if (k * WAD) % base_after != 0:
        if dir_base == Dir.ADD_TO_AMM:
            if sold == 0:
                raise AmmMathError("SafeMath: subtraction overflow")
            sold -= 1
        else:
            sold += 1
    return sold


def input_price(dir_quote: Dir, quote: int, quote_reserve: int, base_reserve: int) -> int:
    """Base received/paid for `quote` going into (ADD, opening a long) or out of (REMOVE) the vAMM."""
    if quote == 0:
        return 0
    k = mul_d(quote_reserve, base_reserve)
    if dir_quote == Dir.ADD_TO_AMM:
        quote_after = quote_reserve + quote
    else:
        if quote_reserve <= quote:
            raise AmmMathError("quote asset after is 0")
        quote_after = quote_reserve - quote
    base_after = div_d(k, quote_after)
    bought = base_after - base_reserve if base_after > base_reserve else base_reserve - base_after
    if (k * WAD) % quote_after != 0:
        if dir_quote == Dir.ADD_TO_AMM:
            if bought == 0:
                raise AmmMathError("SafeMath: subtraction overflow")
            bought -= 1
        else:
            bought += 1
    return bought


def spot_price(quote_reserve: int, base_reserve: int) -> int:
    return div_d(quote_reserve, base_reserve)


@dataclass(frozen=True, slots=True)
class Snapshot:
    quote_reserve: int
    base_reserve: int
    timestamp: int
    block_number: int


def output_twap(dir_base: Dir, base: int, snapshots: list[Snapshot], now: int, interval: int = TWAP_INTERVAL) -> int:
    """Amm.getOutputTwap: time-weighted output price over `interval` seconds before `now`.

    `snapshots` is the tail of Amm.reserveSnapshots in index order, starting at (or before) the
    last snapshot with timestamp ≤ now − interval, or at index 0 (then `snapshots[0]` must be the
    contract's snapshot 0: `covers_genesis` semantics are implied by passing the full history).
    """
    last = len(snapshots) - 1
    cur = snapshots[last]
    price = output_price(dir_base, base, cur.quote_reserve, cur.base_reserve)
    if interval == 0:
        return price
    base_ts = now - interval
    if last == 0 or cur.timestamp <= base_ts:
        return price
    prev_ts = cur.timestamp
    period = now - prev_ts
    weighted = price * period
    idx = last
    while True:
        if idx == 0:
            if period == 0:
                raise AmmMathError("division by zero")
            return weighted // period
        idx -= 1
        cur = snapshots[idx]
        price = output_price(dir_base, base, cur.quote_reserve, cur.base_reserve)
        if cur.timestamp <= base_ts:
            weighted += price * (prev_ts - base_ts)
            break
        tf = prev_ts - cur.timestamp
        weighted += price * tf
        period += tf
        prev_ts = cur.timestamp
    return weighted // interval


def twap_window(snapshots_tail_needed: list[Snapshot], now: int, interval: int = TWAP_INTERVAL) -> bool:
    """Whether the given tail (index order) reaches back far enough for output_twap: its first
    snapshot is at or before now − interval (the contract stops there)."""
    return bool(snapshots_tail_needed) and snapshots_tail_needed[0].timestamp <= now - interval


# ---- positions and margin (A.4) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    size: int  # signed base, 1e18 (> 0 long, < 0 short)
    margin: int  # quote, 1e18
    open_notional: int  # quote, 1e18
    last_cpf: int  # signed, lastUpdatedCumulativePremiumFraction
    block_number: int = 0

    @property
    def is_long(self) -> bool:
        return self.size > 0

    @property
    def close_dir(self) -> Dir:
        return Dir.ADD_TO_AMM if self.size > 0 else Dir.REMOVE_FROM_AMM


@dataclass(frozen=True, slots=True)
class MarketState:
    quote_reserve: int
    base_reserve: int
    oracle_price: int  # getUnderlyingPrice, 1e18
    cpf: int  # getLatestCumulativePremiumFraction, signed
    snapshots: tuple[Snapshot, ...]  # tail sufficient for the TWAP at `now` (see output_twap)
    now: int  # timestamp the contract would see (latest block for eth_call)

    @property
    def spot(self) -> int:
        return spot_price(self.quote_reserve, self.base_reserve)


@dataclass(frozen=True, slots=True)
class PerpParams:
    mmr: int  # maintenanceMarginRatio, 1e18
    lfr: int  # liquidationFeeRatio, 1e18
    plr: int  # partialLiquidationRatio, 1e18
    partial_on_spot_ratio: bool = True  # v2.3 HEAD gates partial on the SPOT ratio; v2.2 on the combined one
    backstop_rule: bool = True  # v2.3 HEAD: bad debt needs a backstop LP; v2.2: no such rule
    keeper_is_backstop: bool = False


def funding_payment(pos: Position, cpf: int) -> int:
    """FP = (CPF_latest − pos.lastCPF)·size, signed, truncated; > 0 means the trader pays."""
    if pos.size == 0:
        return 0
    return smul_d(cpf - pos.last_cpf, pos.size)


def notional(pos: Position, m: MarketState, option: PnlOption) -> int:
    b = abs(pos.size)
    if option == PnlOption.SPOT:
        return output_price(pos.close_dir, b, m.quote_reserve, m.base_reserve)
    if option == PnlOption.TWAP:
        return output_twap(pos.close_dir, b, list(m.snapshots), m.now)
    return mul_d(b, m.oracle_price)


def unrealized_pnl(pos: Position, position_notional: int) -> int:
    return position_notional - pos.open_notional if pos.size > 0 else pos.open_notional - position_notional


def remaining_margin(pos: Position, pnl: int, cpf: int) -> tuple[int, int]:
    """(remain margin, bad debt) after funding: s = margin + pnl − FP; s < 0 → (0, −s)."""
    s = pos.margin + pnl - funding_payment(pos, cpf)
    return (s, 0) if s >= 0 else (0, -s)


def margin_ratio_from(pos: Position, position_notional: int, cpf: int) -> int:
    """(remain − bad debt)/notional = (margin + pnl − FP)/notional, signed, truncated toward 0."""
    s = pos.margin + unrealized_pnl(pos, position_notional) - funding_payment(pos, cpf)
    return sdiv_d(s, position_notional)


@dataclass(frozen=True, slots=True)
class Ratios:
    spot_notional: int
    spot_pnl: int
    spot_mr: int
    twap_notional: int | None
    twap_pnl: int | None
    twap_mr: int | None
    contract_mr: int | None  # getMarginRatio: MAX_PNL pair of spot and TWAP
    oracle_mr: int | None
    effective_mr: int | None  # what internalLiquidate compares with the MMR
    over_spread: bool


def over_spread(m: MarketState) -> bool:
    """Amm.isOverSpreadLimit: |spot − oracle|/oracle ≥ 10 % (signed divD truncation, then abs)."""
    if m.oracle_price == 0:
        raise AmmMathError("underlying price is 0")
    return abs(sdiv_d(m.spot - m.oracle_price, m.oracle_price)) >= MAX_ORACLE_SPREAD_RATIO


def price_deviation(m: MarketState) -> int:
    """|spot − index|/index, 1e18, with the same truncation as isOverSpreadLimit."""
    if m.oracle_price == 0:
        raise AmmMathError("underlying price is 0")
    return abs(sdiv_d(m.spot - m.oracle_price, m.oracle_price))


def ratios(pos: Position, m: MarketState, *, skip_twap_above: int | None = None) -> Ratios:
    """Every margin ratio the contract uses for this position.

    skip_twap_above: if the SPOT ratio is ≥ this, skip the (costlier) TWAP and oracle ratios —
    the position is clearly healthy (the MAX-PnL ratio is then at least the spot one for any
    position with leverage > 1). Used by the per-block prefilter only.
    """
    spot_n = notional(pos, m, PnlOption.SPOT)
    spot_pnl = unrealized_pnl(pos, spot_n)
    spot_mr = margin_ratio_from(pos, spot_n, m.cpf)
    ovs = over_spread(m)
    if skip_twap_above is not None and spot_mr >= skip_twap_above:
        return Ratios(spot_n, spot_pnl, spot_mr, None, None, None, None, None, None, ovs)
    twap_n = notional(pos, m, PnlOption.TWAP)
    twap_pnl = unrealized_pnl(pos, twap_n)
    twap_mr = margin_ratio_from(pos, twap_n, m.cpf)
    contract_mr = spot_mr if spot_pnl > twap_pnl else twap_mr  # strict >: ties take the TWAP pair
    effective = contract_mr
    oracle_mr = None
    if ovs:
        oracle_mr = margin_ratio_from(pos, notional(pos, m, PnlOption.ORACLE), m.cpf)
        if oracle_mr - contract_mr > 0:
            effective = oracle_mr
    return Ratios(spot_n, spot_pnl, spot_mr, twap_n, twap_pnl, twap_mr, contract_mr, oracle_mr, effective, ovs)


# ---- liquidation outcome (A.5) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Liquidation:
    liquidatable: bool  # effective mr < mmr (strict)
    partial: bool
    quote: int  # quote notional closed (the reverse trade's quote, or the full close's output)
    fee_to_liquidator: int  # 1e18 quote: ⌊mulD(quote, lfr)/2⌋
    bad_debt: int  # total bad debt a full close would realise (0 for partial)
    needs_backstop: bool  # the contract would revert "not backstop LP" for a non-backstop keeper
    base_closed: int  # |base| the keeper expects to be closed (approximate for partial closes)


def liquidation(pos: Position, m: MarketState, p: PerpParams, r: Ratios) -> Liquidation:
    """What `liquidate` would do for this position now (requires a full `ratios`)."""
    assert r.effective_mr is not None, "ratios() was computed with skip_twap_above"
    if not r.effective_mr - p.mmr < 0:
        return Liquidation(False, False, 0, 0, 0, False, 0)
    gate = r.spot_mr if p.partial_on_spot_ratio else r.effective_mr
    if gate > p.lfr and 0 < p.plr < WAD:
        partial_base = abs(smul_d(pos.size, p.plr))
        quote = output_price(pos.close_dir, partial_base, m.quote_reserve, m.base_reserve)
        fee = mul_d(quote, p.lfr) // 2
        return Liquidation(True, True, quote, fee, 0, False, partial_base)
    quote = r.spot_notional  # swapOutput(dir, |size|) on the current reserves
    fee = mul_d(quote, p.lfr) // 2
    remain, bad_debt = remaining_margin(pos, r.spot_pnl, m.cpf)
    if fee > remain:
        bad_debt += fee - remain
    needs_backstop = p.backstop_rule and bad_debt > 0 and not p.keeper_is_backstop
    return Liquidation(True, False, quote, fee, bad_debt, needs_backstop, abs(pos.size))


def token_floor(amount_1e18: int, decimals: int) -> int:
    """What a DecimalERC20 transfer of an 18-decimal amount actually moves, back in 1e18 units."""
    if decimals >= 18:
        return amount_1e18
    unit = 10 ** (18 - decimals)
    return amount_1e18 // unit * unit
