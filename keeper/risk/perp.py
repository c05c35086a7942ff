"""Perpetual Protocol v1 / Palmswap v1 risk maths — pure, integer-exact, with the contracts' rounding.

Units: every amount and ratio is 18-decimal fixed point (1e18 = 1.0 = one quote token / one base
token). Signed fixed-point operations truncate toward zero (SignedSafeMath); unsigned ones floor.
References are to docs/PROTOCOLS.md §A.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

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
    return _output(dir_base == Dir.ADD_TO_AMM, base, quote_reserve, base_reserve, mul_d(quote_reserve, base_reserve) * WAD)


def _output(add: bool, base: int, quote_reserve: int, base_reserve: int, kw: int) -> int:
    """output_price with kw = mulD(quote reserve, base reserve)·1e18 given (a per-reserves constant)."""
    if base == 0:
        return 0
    if add:
        base_after = base_reserve + base
    else:
        if base_reserve <= base:
            raise AmmMathError("base asset after is 0")
        base_after = base_reserve - base
    quote_after, rest = divmod(kw, base_after)  # divD(k, base_after) and whether it rounded
    sold = quote_after - quote_reserve if quote_after > quote_reserve else quote_reserve - quote_after
    if rest:
        if add:
            if sold == 0:
                raise AmmMathError("SafeMath: subtraction overflow")
            return sold - 1
        return sold + 1
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
    return twap_output(dir_base, base, twap_terms(snapshots, now, interval))


@dataclass(frozen=True, slots=True)
class TwapTerms:
    """What Amm.getOutputTwap walks at a given time, newest snapshot first: each snapshot's
    (quote reserve, base reserve, k·1e18, weight in seconds), and the divisor of the weighted sum.
    The same for every position of a market in a block; only the output price depends on the size."""

    terms: tuple[tuple[int, int, int, int], ...]
    divisor: int
    first: int = 0  # index (in the snapshots given) of the oldest term; the terms cover snapshots[first:]


def _term(s: Snapshot, weight: int) -> tuple[int, int, int, int]:
    return s.quote_reserve, s.base_reserve, mul_d(s.quote_reserve, s.base_reserve) * WAD, weight


def twap_terms(snapshots: list[Snapshot] | tuple[Snapshot, ...], now: int, interval: int = TWAP_INTERVAL) -> TwapTerms:
    """The contract's walk: back from the latest snapshot, each weighted by how long it was current,
    the oldest cut at now − interval; divided by `interval`, or by the covered period when the
    history starts inside the window. The latest alone when interval is 0, when there is one
    snapshot, or when the latest is at or before now − interval."""
    last = len(snapshots) - 1
    cur = snapshots[last]
    base_ts = now - interval
    if interval == 0 or last == 0 or cur.timestamp <= base_ts:
        return TwapTerms((_term(cur, 1),), 1, last)
    prev_ts = cur.timestamp
    period = now - prev_ts
    terms = [_term(cur, period)]
    for idx in range(last - 1, -1, -1):
        cur = snapshots[idx]
        if cur.timestamp <= base_ts:
            terms.append(_term(cur, prev_ts - base_ts))
            return TwapTerms(tuple(terms), interval, idx)
        tf = prev_ts - cur.timestamp
        terms.append(_term(cur, tf))
        period += tf
        prev_ts = cur.timestamp
    return TwapTerms(tuple(terms), period, 0)


def twap_output(dir_base: Dir, base: int, twap: TwapTerms) -> int:
    """output_twap from precomputed terms: Σ output price at each snapshot × its weight / divisor,
    with the contract's reverts in its order (newest snapshot first). The per-block evaluation uses
    TwapMemo, which gives the same integer incrementally."""
    add = dir_base == Dir.ADD_TO_AMM
    weighted = 0
    if base != 0:
        for q, b, kw, weight in twap.terms:
            weighted += _output(add, base, q, b, kw) * weight
    if twap.divisor == 0:
        raise AmmMathError("division by zero")
    return weighted // twap.divisor


class _TwapRun:
    """One (direction, size)'s output price at each snapshot from serial `start` on (the window it was
    last used for, nothing older), and `mid`: the sum of the fixed-weight terms (output × the seconds
    the snapshot stayed current) of the snapshots strictly between serials `lo` and `hi`, the ends of
    that window (lo = -1: not computed)."""

    __slots__ = ("start", "solds", "generation", "used", "lo", "hi", "mid")

    def __init__(self, start: int, generation: int):
        self.start = start
        self.solds: list[int] = []
        self.generation = generation
        self.used = 0
        self.lo = self.hi = -1
        self.mid = 0


class TwapMemo:
    """Incremental Amm.getOutputTwap for one market, exact to the wei.

    getOutputTwap is Σ output(snapshot, size)·seconds current / period. Between blocks the window
    only slides: the newest snapshot's and the oldest one's weights change, every snapshot in
    between keeps its weight. So per (direction, size) the memo keeps each snapshot's output price
    in the window and the sum of the fixed-weight terms, slid along with the window (a term enters
    when its snapshot gets a successor, leaves when it becomes the oldest); a block then costs one
    output price per new snapshot plus a few products, instead of one per snapshot in the 900 s
    window (~76 at 12 s blocks). Same integers, same sum, same reverts as `twap_output`. A snapshot that differs from
    the one seen before at its place (overwritten in its block, or a reorg) starts over."""

    def __init__(self) -> None:
        self.chain: list[Snapshot] = []  # consecutive snapshots, serials chain_start, chain_start + 1, …
        self.chain_start = 0
        self.generation = 0
        self.runs: dict[tuple[bool, int], _TwapRun] = {}
        self.block = 0  # bumped by `window` once per MarketState
        self._window: tuple[int, int] = (0, 0)  # (serial of the oldest term, number of terms)
        self._weights: tuple[int, int, int] = (0, 0, 0)  # (newest term's weight, oldest term's, divisor)
        self._qbk: list[tuple[int, int, int]] = []  # per chain entry: (quote reserve, base reserve, k·1e18)
        self._ts: list[int] = []  # per chain entry: its timestamp
        self._state: MarketState | None = None  # the block's state the window belongs to (held, not an id)

    def _align(self, m: MarketState) -> None:
        """Make `chain` hold the block's TWAP window (m.snapshots[first:]) as consecutive serials."""
        window = m.snapshots[m.twap.first :]
        chain, start = self.chain, self.chain_start
        pos = -1
        for i, s in enumerate(chain):  # where the window's oldest snapshot sits (usually near the front)
            if s is window[0] or s == window[0]:
                pos = i
                break
        if pos < 0:  # nothing in common: a fresh chain
            self.chain, self.chain_start = list(window), start + len(chain) + 1
            self.generation += 1
        else:
            for j, s in enumerate(window):
                if pos + j >= len(chain):
                    chain.extend(window[j:])
                    break
                if not (chain[pos + j] is s or chain[pos + j] == s):
                    del chain[pos + j :]
                    chain.extend(window[j:])
                    self.generation += 1  # serials from here on mean other snapshots now
                    break
            if pos > 16:  # keep the chain short; serials stay valid
                del chain[:pos]
                self.chain_start = start + pos
                pos = 0
        serial0 = self.chain_start + (pos if pos >= 0 else 0)
        self._window = (serial0, len(window))
        twap = m.twap
        self._weights = (twap.terms[0][3], twap.terms[-1][3], twap.divisor)
        # every run prices the same snapshots: their k·1e18 once per block, not once per size
        self._qbk = [(s.quote_reserve, s.base_reserve, mul_d(s.quote_reserve, s.base_reserve) * WAD) for s in self.chain]
        self._ts = [s.timestamp for s in self.chain]
        self.block += 1
        self._state = m
        for k in [k for k, r in self.runs.items() if r.used < self.block - 1]:
            del self.runs[k]  # sizes not evaluated last block (closed, changed, or healthy again)

    def output(self, dir_base: Dir, base: int, m: MarketState) -> int:
        """== twap_output(dir_base, base, m.twap)."""
        if base == 0:
            return twap_output(dir_base, 0, m.twap)
        return self.sized(dir_base == Dir.ADD_TO_AMM, base, m)

    def sized(self, add: bool, base: int, m: MarketState) -> int:
        """== twap_output(ADD_TO_AMM if add else REMOVE_FROM_AMM, base, m.twap) for base > 0 (the
        per-block path: one output price per new snapshot, then a few products)."""
        if self._state is not m:
            self._align(m)
        serial0, n = self._window
        key = (add, base)
        run = self.runs.get(key)
        # a run from before a change of the chain, or one that does not reach the window (its pricing
        # reverted at a snapshot that has left the window since): priced afresh from the window's start
        if run is None or run.generation != self.generation or run.start > serial0 or run.start + len(run.solds) < serial0:
            run = self.runs[key] = _TwapRun(serial0, self.generation)
        run.used = self.block
        solds, start, cs = run.solds, run.start, self.chain_start
        hi = serial0 + n - 1  # serial of the newest term
        if start + len(solds) <= hi:  # the snapshots this run has not priced yet
            self._extend(solds, add, base, start + len(solds) - cs, hi + 1 - cs)
        w_last, w_first, divisor = self._weights
        if n == 1:
            weighted = solds[hi - start] * w_last
            run.lo = -1
        else:
            ts = self._ts
            if run.lo >= 0 and serial0 >= run.lo and hi >= run.hi and run.lo + 1 >= cs:
                mid = run.mid
                for k in range(run.hi, hi):  # snapshots that got a successor: their weight is fixed now
                    mid += solds[k - start] * (ts[k + 1 - cs] - ts[k - cs])
                for k in range(run.lo + 1, serial0 + 1):  # the new oldest term and any older: out of the sum
                    mid -= solds[k - start] * (ts[k + 1 - cs] - ts[k - cs])
            else:
                mid = 0
                for k in range(serial0 + 1, hi):
                    mid += solds[k - start] * (ts[k + 1 - cs] - ts[k - cs])
            run.lo, run.hi, run.mid = serial0, hi, mid
            weighted = solds[hi - start] * w_last + mid + solds[serial0 - start] * w_first
        if serial0 > start:  # older snapshots are out of every later window
            del solds[: serial0 - start]
            run.start = serial0
        if divisor == 0:
            raise AmmMathError("division by zero")
        return weighted // divisor

    def _extend(self, solds: list[int], add: bool, base: int, lo: int, hi: int) -> None:
        """Append the output prices at chain entries lo..hi-1 to a run (`_output`, inlined: the cold
        start of a size prices the whole window)."""
        qbk = self._qbk
        for j in range(lo, hi):
            q, b, kw = qbk[j]
            if add:
                base_after = b + base
            else:
                if b <= base:
                    raise AmmMathError("base asset after is 0")
                base_after = b - base
            quote_after, rest = divmod(kw, base_after)
            sold = quote_after - q if quote_after > q else q - quote_after
            if rest:
                if add:
                    if sold == 0:
                        raise AmmMathError("SafeMath: subtraction overflow")
                    sold -= 1
                else:
                    sold += 1
            solds.append(sold)


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


@dataclass(frozen=True)
class MarketState:
    quote_reserve: int
    base_reserve: int
    oracle_price: int  # getUnderlyingPrice, 1e18
    cpf: int  # getLatestCumulativePremiumFraction, signed
    snapshots: tuple[Snapshot, ...]  # tail sufficient for the TWAP at `now` (see output_twap)
    now: int  # timestamp the contract would see (latest block for eth_call)
    twap_memo: TwapMemo | None = field(default=None, compare=False, repr=False)  # the market's, kept across blocks

    # Per-market values every position of the block shares: computed once, on first use (a
    # failure is not cached, so it raises where and when the contract's maths would).
    @cached_property
    def spot(self) -> int:
        return spot_price(self.quote_reserve, self.base_reserve)

    @cached_property
    def kw(self) -> int:
        """mulD(quote reserve, base reserve)·1e18, the numerator of every output price."""
        return mul_d(self.quote_reserve, self.base_reserve) * WAD

    @cached_property
    def deviation(self) -> int:
        """|spot − oracle|/oracle, 1e18 (signed divD truncation, then abs), as isOverSpreadLimit."""
        if self.oracle_price == 0:
            raise AmmMathError("underlying price is 0")
        return abs(sdiv_d(self.spot - self.oracle_price, self.oracle_price))

    @cached_property
    def twap(self) -> TwapTerms:
        return twap_terms(self.snapshots, self.now)


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
        return _output(pos.size > 0, b, m.quote_reserve, m.base_reserve, m.kw)
    if option == PnlOption.TWAP:
        if m.twap_memo is not None:
            return m.twap_memo.output(pos.close_dir, b, m)
        return twap_output(pos.close_dir, b, m.twap)
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
    twap_notional: int
    twap_pnl: int
    twap_mr: int
    contract_mr: int  # getMarginRatio: MAX_PNL pair of spot and TWAP
    oracle_mr: int | None  # only when over the spread limit
    effective_mr: int  # what internalLiquidate compares with the MMR
    over_spread: bool


def over_spread(m: MarketState) -> bool:
    """Amm.isOverSpreadLimit: |spot − oracle|/oracle ≥ 10 % (signed divD truncation, then abs)."""
    return m.deviation >= MAX_ORACLE_SPREAD_RATIO


def price_deviation(m: MarketState) -> int:
    """|spot − index|/index, 1e18, with the same truncation as isOverSpreadLimit."""
    return m.deviation


def ratios(pos: Position, m: MarketState, *, skip_twap_above: int | None = None) -> Ratios | None:
    """Every margin ratio the contract uses for this position.

    skip_twap_above: if the SPOT ratio is ≥ this, return None without the (costlier) TWAP and
    oracle ratios — the position is clearly healthy (the MAX-PnL ratio is then at least the spot
    one for any position with leverage > 1). Used by the per-block prefilter only.
    """
    spot_n = _output(pos.size > 0, abs(pos.size), m.quote_reserve, m.base_reserve, m.kw)  # notional(SPOT)
    spot_pnl = unrealized_pnl(pos, spot_n)
    fp = funding_payment(pos, m.cpf)
    spot_mr = sdiv_d(pos.margin + spot_pnl - fp, spot_n)  # margin_ratio_from, sharing FP
    ovs = over_spread(m)
    if skip_twap_above is not None and spot_mr >= skip_twap_above:
        return None
    twap_n = notional(pos, m, PnlOption.TWAP)
    twap_pnl = unrealized_pnl(pos, twap_n)
    twap_mr = sdiv_d(pos.margin + twap_pnl - fp, twap_n)
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
    """What `liquidate` would do for this position now."""
    if not r.effective_mr - p.mmr < 0:
        return Liquidation(False, False, 0, 0, 0, False, 0)
    gate = r.spot_mr if p.partial_on_spot_ratio else r.effective_mr
    if gate > p.lfr and 0 < p.plr < WAD:
        partial_base = abs(smul_d(pos.size, p.plr))
        quote = _output(pos.size > 0, partial_base, m.quote_reserve, m.base_reserve, m.kw)  # output_price(close dir, …)
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
    unit = int(10 ** (18 - decimals))
    return amount_1e18 // unit * unit


# ---- the on-chain decision (confirmation) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainReads:
    """What the ClearingHouse and the Amm answer for one position in the confirmation block."""

    position: Position  # getPosition
    margin_ratio: int  # getMarginRatio (MAX_PNL of spot and TWAP)
    spot_notional: int  # getPositionNotionalAndUnrealizedPnl(…, SPOT_PRICE)
    spot_pnl: int
    oracle_notional: int | None  # (…, ORACLE); None when the read failed
    oracle_pnl: int | None
    over_spread: bool  # Amm.isOverSpreadLimit
    cpf: int  # getLatestCumulativePremiumFraction
    spot_price: int  # Amm.getSpotPrice
    index_price: int  # Amm.getUnderlyingPrice


@dataclass(frozen=True, slots=True)
class ChainDecision:
    spot_mr: int  # the SPOT-only ratio (v2.3's partial gate)
    oracle_mr: int | None  # only when over the spread limit
    effective_mr: int  # what internalLiquidate compares with the MMR
    liquidatable: bool
    partial: bool
    base_closed: int  # |mulD(size, plr)| for a partial close, |size| for a full one
    deviation: int  # |spot − index|/index, 1e18


def ratio_from_pnl(pos: Position, position_notional: int, pnl: int, cpf: int) -> int:
    """ClearingHouse._getMarginRatio from a notional/PnL pair the contract returned."""
    return sdiv_d(pos.margin + pnl - funding_payment(pos, cpf), position_notional)


def deviation_ratio(spot: int, index: int) -> int:
    """|spot − index|/index, 1e18 (signed divD truncation, then abs), as Amm.isOverSpreadLimit."""
    if index == 0:
        raise AmmMathError("underlying price is 0")
    return abs(sdiv_d(spot - index, index))


def chain_decision(c: ChainReads, p: PerpParams) -> ChainDecision:
    """internalLiquidate's checks (§A.5 steps 2–5) on the values the contracts returned.
    Raises AmmMathError when they cannot be derived (an oracle read missing over the spread limit)."""
    pos = c.position
    spot_mr = ratio_from_pnl(pos, c.spot_notional, c.spot_pnl, c.cpf)
    effective, oracle_mr = c.margin_ratio, None
    if c.over_spread:
        if c.oracle_notional is None or c.oracle_pnl is None:
            raise AmmMathError("over the spread limit and the oracle-based notional could not be read")
        oracle_mr = ratio_from_pnl(pos, c.oracle_notional, c.oracle_pnl, c.cpf)
        if oracle_mr - effective > 0:
            effective = oracle_mr
    liquidatable = effective - p.mmr < 0
    gate = spot_mr if p.partial_on_spot_ratio else effective
    partial = liquidatable and gate > p.lfr and 0 < p.plr < WAD
    base = abs(smul_d(pos.size, p.plr)) if partial else abs(pos.size)
    return ChainDecision(spot_mr, oracle_mr, effective, liquidatable, partial, base, deviation_ratio(c.spot_price, c.index_price))


def chain_liquidation(c: ChainReads, p: PerpParams, d: ChainDecision, partial_quote: int | None) -> Liquidation:
    """The outcome of `liquidate` from on-chain values: a partial close's quote is
    Amm.getOutputPrice(close dir, base_closed) (`partial_quote`), a full close's the SPOT notional."""
    if not d.liquidatable:
        return Liquidation(False, False, 0, 0, 0, False, 0)
    if d.partial:
        if partial_quote is None:
            raise AmmMathError("the partial close's quote could not be read")
        return Liquidation(True, True, partial_quote, mul_d(partial_quote, p.lfr) // 2, 0, False, d.base_closed)
    quote = c.spot_notional
    fee = mul_d(quote, p.lfr) // 2
    remain, bad_debt = remaining_margin(c.position, c.spot_pnl, c.cpf)
    if fee > remain:
        bad_debt += fee - remain
    needs_backstop = p.backstop_rule and bad_debt > 0 and not p.keeper_is_backstop
    return Liquidation(True, False, quote, fee, bad_debt, needs_backstop, d.base_closed)
