"""The perp per-block prefilter, vectorised: numpy arrays of every market's positions and a float
bound on each position's SPOT margin ratio.

The exact integer maths (keeper.risk.perp) stays the only judge. This module only *proves* that a
position's spot ratio is at or above a threshold: exactly the test `perp.ratios(pos, m,
skip_twap_above=threshold)` makes before it returns None ("clearly healthy"). A position it cannot
prove so (near the threshold, or anything the float maths cannot represent: a huge value, a
reserve the trade would empty, a tiny notional, NaN) goes to the exact maths, so the per-block
result is the same as evaluating every position exactly.

The bound. With u = 2⁻⁵³ (float64 rounding) and the contract's integers:
- spot notional N = |Amm.getOutputPrice(close dir, |size|)| = Q·s/(B ± s) (+ for a long, closing
  adds base; − for a short) within 1e18/(B ± s) + 2 wei: kw = ⌊Q·B/1e18⌋·1e18 is Q·B less under
  1e18, then a floor and the ±1 the contract applies on an inexact division; the float quotient
  adds a few u relative, and 2u(B + s)/(B − s) relative for a short whose B − s cancels;
- funding FP = (CPF − lastCPF)·size/1e18 truncated: the float difference of two converted values
  is off by at most 2u(|CPF| + |lastCPF|), the truncation by 1 wei;
- ratio = (margin ± (N − open notional) − FP)·1e18/N truncated: the numerator's error is the sum
  of its terms' errors plus a few u of their magnitudes, the quotient's that relative to N less
  its error, plus a few u relative and 1 for the truncation.
Every bound is taken 2–4× wider than the analysis gives, plus a relative band of 1e-9: a
position closer than that to the threshold costs one exact evaluation, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from keeper.risk.perp import WAD, Position

U = 2.0**-53  # float64 unit roundoff
BAND = 1e-9  # relative safety band on top of the error bound
MIN_NOTIONAL = 1e6  # wei: positions whose spot notional could be below this go to the exact maths
_WAD_F = float(WAD)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
V = TypeVar("V")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _f(x: int) -> float:
    """float(x), or inf when it does not fit (the bound then proves nothing: exact maths)."""
    try:
        return float(x)
    except OverflowError:
        return float("inf")


def spot_ratio_at_least(
    size: FloatArray,
    margin: FloatArray,
    open_notional: FloatArray,
    last_cpf: FloatArray,
    quote_reserve: int,
    base_reserve: int,
    cpf: int,
    threshold: int,
) -> BoolArray:
    """True where the position's exact SPOT margin ratio (perp.ratios' spot_mr) is ≥ `threshold`
    for sure; False where that cannot be proven (the exact maths decides those).

    The arrays are the positions' integers as float64 (size signed); the scalars are the market's
    exact integers (getReserve, getLatestCumulativePremiumFraction) and the threshold (1e18)."""
    q, b, c, thr = _f(quote_reserve), _f(base_reserve), _f(cpf), _f(threshold)
    with np.errstate(all="ignore"):
        s = np.abs(size)
        long = size > 0
        base_after = np.where(long, b + s, b - s)
        base_lo = base_after - 4 * U * (b + s)  # a short must leave the reserve non-empty, exactly
        n = q * s / base_after
        # B − s of a large short cancels: its float carries up to 2u(B + s) absolute error
        err_n = (16 * U + 8 * U * (b + s) / base_lo) * n + 2 * _WAD_F / base_lo + 4
        n_lo = n - err_n
        dc = c - last_cpf
        fp = dc * size / _WAD_F
        err_fp = 8 * U * (abs(c) + np.abs(last_cpf)) * s / _WAD_F + 8 * U * np.abs(fp) + 2
        pnl = np.where(long, n - open_notional, open_notional - n)
        num = margin + pnl - fp
        err_num = err_n + err_fp + 8 * U * (np.abs(margin) + n + np.abs(open_notional) + np.abs(fp) + np.abs(num))
        mr = num / n * _WAD_F
        err_mr = (err_num + np.abs(num) * err_n / n_lo) / n_lo * (2 * _WAD_F) + (8 * U + BAND) * np.abs(mr) + 4
        floor = thr + (8 * U + BAND) * abs(thr) + 4
        out: BoolArray = (base_lo > 0) & (n_lo > MIN_NOTIONAL) & (mr - err_mr >= floor)
    return out


class TrackedPositions(dict[K, V]):
    """A dict that records which keys were set or deleted since `take_changes` (the prefilter's
    dirty set: its arrays are updated with what changed, not rebuilt every block)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.changed: set[K] = set(self)
        self.reset = True  # every key may have changed: rebuild

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            self.changed.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        k, v = super().popitem()
        self.changed.add(k)
        return k, v

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key not in self:
            self.changed.add(key)
        return super().setdefault(key, default)

    def clear(self) -> None:
        super().clear()
        self.changed.clear()
        self.reset = True

    def update(self, *args: Any, **kw: Any) -> None:
        other: dict[K, V] = dict(*args, **kw)
        super().update(other)
        self.changed.update(other)

    def __ior__(self, other: Any) -> TrackedPositions[K, V]:  # type: ignore[override,misc]  # dict's is typed for dicts only
        self.update(other)
        return self

    def take_changes(self) -> tuple[bool, set[K]]:
        """(rebuild everything?, keys set or deleted) since the last call; starts a new record."""
        reset, changed = self.reset, self.changed
        self.reset, self.changed = False, set()
        return reset, changed


class MarketArrays(Generic[K, T]):
    """One market's positions: parallel Python lists (key, Position, the caller's item) and float64
    arrays of the integers the bound needs. Removal moves the last entry into the hole."""

    def __init__(self, capacity: int = 64) -> None:
        self.n = 0
        self.keys: list[K] = []
        self.positions: list[Position] = []
        self.items: list[T] = []
        self.index: dict[K, int] = {}
        self.size: FloatArray = np.zeros(capacity)
        self.margin: FloatArray = np.zeros(capacity)
        self.open_notional: FloatArray = np.zeros(capacity)
        self.last_cpf: FloatArray = np.zeros(capacity)

    def _grow(self) -> None:
        cap = max(2 * len(self.size), 64)
        for name in ("size", "margin", "open_notional", "last_cpf"):
            old = getattr(self, name)
            new = np.zeros(cap)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def _set(self, i: int, pos: Position) -> None:
        self.size[i] = _f(pos.size)
        self.margin[i] = _f(pos.margin)
        self.open_notional[i] = _f(pos.open_notional)
        self.last_cpf[i] = _f(pos.last_cpf)

    def upsert(self, key: K, pos: Position, make_item: Callable[[K], T], item: T | None = None) -> None:
        """Add or update `key`; a new entry's item is `item`, else make_item(key)."""
        i = self.index.get(key)
        if i is None:
            if self.n == len(self.size):
                self._grow()
            i = self.index[key] = self.n
            self.n += 1
            self.keys.append(key)
            self.positions.append(pos)
            self.items.append(make_item(key) if item is None else item)
        else:
            self.positions[i] = pos
        self._set(i, pos)

    def remove(self, key: K) -> None:
        i = self.index.pop(key, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:
            k = self.keys[i] = self.keys[last]
            self.positions[i] = self.positions[last]
            self.items[i] = self.items[last]
            self.index[k] = i
            for arr in (self.size, self.margin, self.open_notional, self.last_cpf):
                arr[i] = arr[last]
        self.keys.pop()
        self.positions.pop()
        self.items.pop()
        self.n = last

    def unproven(self, quote_reserve: int, base_reserve: int, cpf: int, threshold: int) -> list[int]:
        """Indexes of the positions whose spot ratio ≥ threshold is not proven (exact maths for these)."""
        n = self.n
        clear = spot_ratio_at_least(
            self.size[:n], self.margin[:n], self.open_notional[:n], self.last_cpf[:n], quote_reserve, base_reserve, cpf, threshold
        )
        idx: list[int] = np.flatnonzero(~clear).tolist()
        return idx


class PositionBook(Generic[K, T]):
    """Every position by market (`market_of(key)`), kept in step with a position dict incrementally:
    `sync` applies a TrackedPositions' changes, or rebuilds from any other mapping."""

    def __init__(self, market_of: Callable[[K], str], make_item: Callable[[K], T]) -> None:
        self.market_of = market_of
        self.make_item = make_item
        self.markets: dict[str, MarketArrays[K, T]] = {}
        self._source: object | None = None
        self.layout = 0  # bumped whenever a key is added or removed or the book is rebuilt (items move)

    def __len__(self) -> int:
        return sum(m.n for m in self.markets.values())

    def _upsert(self, key: K, pos: Position) -> None:
        market = self.market_of(key)
        arrays = self.markets.get(market)
        if arrays is None:
            arrays = self.markets[market] = MarketArrays()
        if key not in arrays.index:
            self.layout += 1
        arrays.upsert(key, pos, self.make_item)

    def _remove(self, key: K) -> None:
        arrays = self.markets.get(self.market_of(key))
        if arrays is not None and key in arrays.index:
            self.layout += 1
            arrays.remove(key)

    def sync(self, positions: Mapping[K, Position]) -> None:
        if isinstance(positions, TrackedPositions) and positions is self._source:
            reset, changed = positions.take_changes()
            if not reset:
                self._apply(positions, changed)
                return
        elif isinstance(positions, TrackedPositions):
            positions.take_changes()
        self._rebuild(positions)
        self._source = positions if isinstance(positions, TrackedPositions) else None

    def _apply(self, positions: Mapping[K, Position], changed: Iterable[K]) -> None:
        for key in changed:
            pos = positions.get(key)
            if pos is None:
                self._remove(key)
            else:
                self._upsert(key, pos)

    def _rebuild(self, positions: Mapping[K, Position]) -> None:
        """Keep the items (and their order) of keys still present; drop the rest; add the new ones."""
        self.layout += 1
        old = self.markets
        self.markets = {}
        for key, pos in positions.items():
            market = self.market_of(key)
            prev = old.get(market)
            i = prev.index.get(key) if prev is not None else None
            arrays = self.markets.get(market)
            if arrays is None:
                arrays = self.markets[market] = MarketArrays()
            arrays.upsert(key, pos, self.make_item, prev.items[i] if prev is not None and i is not None else None)
