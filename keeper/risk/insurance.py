"""Insurance-fund drawdown and ADL ranking — pure, integer-exact (docs/PROTOCOLS.md §I).

The insurance fund's balance is sampled at block timestamps; its drawdown is measured from the
highest balance of a rolling window (8 h by default): `(peak − current) / peak`. An alarm fires when
the drawdown reaches the trigger (≥, 30 % by default) and clears once it is back at or below the
stop level (≤, 25 % by default) — the hysteresis of §I.1.

The ADL ranking (§I.2) orders open positions by how much they would be deleveraged first on a venue
that has auto-deleveraging: profitable positions by PnL % × leverage, losing ones by PnL % ÷ leverage,
highest first. Perp v1 has no ADL of its own: the keeper only reports the ranking.

Units: amounts and ratios are 18-decimal fixed point (1e18 = one quote token = 1.0 = 100 %).
Comparisons with a threshold are exact (cross-multiplied), never on a rounded ratio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

WAD = 10**18
DEFAULT_WINDOW = 8 * 3600  # s
DEFAULT_TRIGGER = 30 * WAD // 100
DEFAULT_STOP = 25 * WAD // 100

K = TypeVar("K", bound=Hashable)


def _tdiv(n: int, d: int) -> int:
    """Integer division truncating toward zero (Solidity int256 `/`)."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


# ---- drawdown (§I.1) ------------------------------------------------------------------------------


def drawdown(peak: int, current: int) -> int:
    """(peak − current)/peak, 1e18, floored; 0 when the peak is not positive or current ≥ peak."""
    if peak <= 0 or current >= peak:
        return 0
    return (peak - current) * WAD // peak


def drawdown_from_losses(peak: int, losses: int, margin: int) -> int:
    """The seed's form: the losses the positions' margin did not cover, over the window's peak:
    (losses − margin)/peak, 1e18, floored (0 when the margin covers them). Equal to
    `drawdown(peak, peak − (losses − margin))`: the fund paid what the margin could not."""
    return drawdown(peak, peak - max(losses - margin, 0))


def reached(peak: int, current: int, ratio: int) -> bool:
    """drawdown(peak, current) ≥ ratio, exactly (no rounding): (peak − current)·1e18 ≥ ratio·peak."""
    return peak > 0 and (peak - current) * WAD >= ratio * peak


def at_or_below(peak: int, current: int, ratio: int) -> bool:
    """drawdown(peak, current) ≤ ratio, exactly. True for a fund with no positive peak (no drawdown)."""
    return peak <= 0 or (peak - current) * WAD <= ratio * peak


def allowance(peak: int, ratio: int) -> int:
    """How much the fund may lose from its peak before the drawdown reaches `ratio`: ⌊peak·ratio/1e18⌋."""
    return peak * ratio // WAD


def excess_over(peak: int, current: int, ratio: int) -> int:
    """What the fund has lost beyond the `ratio` allowance (0 below it): (peak − current) − allowance.
    On a venue with ADL this is what deleveraging would have to cover to bring the drawdown back to
    `ratio` (§I.1's worked example: 7,000 lost − 6,000 allowed = 1,000)."""
    return max(peak - current - allowance(peak, ratio), 0)


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: int  # s (block timestamp)
    balance: int  # 1e18
    block: int = 0  # block number, when known (a sample of a block at or above a new one is replaced)


class RollingPeak:
    """The highest balance among the samples of the last `window` seconds.

    A sample stays in the window while `now − timestamp ≤ window`, `now` being the newest sample's
    timestamp; the newest sample is always in it. A monotonic queue gives the peak in O(1) amortised
    per sample. A sample older than the newest (a reorg, or the same block read again) first drops
    the samples it replaces: those with a later timestamp, or, with block numbers, those of its block
    and after."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.samples: deque[Sample] = deque()  # every sample in the window, oldest first
        self._maxq: deque[Sample] = deque()  # strictly decreasing balances, oldest first; front = peak

    def add(self, timestamp: int, balance: int, block: int = 0) -> None:
        s = Sample(timestamp, balance, block)
        if self.samples and (
            timestamp < self.samples[-1].timestamp or (block and self.samples[-1].block and block <= self.samples[-1].block)
        ):
            self._drop_replaced(s)
        self.samples.append(s)
        q = self._maxq
        while q and q[-1].balance <= balance:
            q.pop()
        q.append(s)
        self._prune(timestamp)

    def _drop_replaced(self, s: Sample) -> None:
        keep = [x for x in self.samples if x.timestamp <= s.timestamp and not (s.block and x.block and x.block >= s.block)]
        self.samples = deque(keep)
        self._maxq = deque()
        for x in keep:  # rebuild: the popped samples may matter again
            while self._maxq and self._maxq[-1].balance <= x.balance:
                self._maxq.pop()
            self._maxq.append(x)

    def _prune(self, now: int) -> None:
        cutoff = now - self.window
        while self.samples and self.samples[0].timestamp < cutoff:
            self.samples.popleft()
        while self._maxq and self._maxq[0].timestamp < cutoff:
            self._maxq.popleft()

    def clear(self) -> None:
        self.samples.clear()
        self._maxq.clear()

    @property
    def peak(self) -> int:
        return self._maxq[0].balance if self._maxq else 0

    @property
    def current(self) -> int:
        return self.samples[-1].balance if self.samples else 0

    @property
    def drawdown(self) -> int:
        return drawdown(self.peak, self.current)


class Transition(StrEnum):
    TRIGGERED = "triggered"
    CLEARED = "cleared"


class DrawdownAlarm:
    """Hysteresis: fires once when the drawdown reaches `trigger` (≥), clears once it is back at or
    below `stop` (≤); in between it keeps its state. 0 ≤ stop ≤ trigger ≤ 1e18, trigger > 0."""

    def __init__(self, trigger: int = DEFAULT_TRIGGER, stop: int = DEFAULT_STOP) -> None:
        if not 0 < trigger <= WAD:
            raise ValueError("trigger must be in (0, 1]")
        if not 0 <= stop <= trigger:
            raise ValueError("stop must be in [0, trigger]")
        self.trigger = trigger
        self.stop = stop
        self.active = False

    def update(self, peak: int, current: int) -> Transition | None:
        if not self.active and reached(peak, current, self.trigger):
            self.active = True
            return Transition.TRIGGERED
        if self.active and at_or_below(peak, current, self.stop):
            self.active = False
            return Transition.CLEARED
        return None


# ---- ADL ranking (§I.2) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdlScore:
    pnl: int  # unrealised PnL (signed, 1e18 quote)
    margin: int  # the position's margin (1e18 quote)
    notional: int  # the position's notional (1e18 quote)
    pnl_ratio: int  # pnl/margin, signed, truncated toward 0 (1e18 = +100 %)
    leverage: int  # notional/margin, floored (1e18 = 1x)
    score: int  # pnl_ratio × leverage if pnl > 0, else pnl_ratio ÷ leverage (1e18), one rounding


def adl_score(pnl: int, margin: int, notional: int) -> AdlScore | None:
    """The ADL score of one position; None when it has no positive margin or notional (unrankable).

    Profitable (pnl > 0): (pnl/margin)·(notional/margin) = pnl·notional/margin², floored.
    Otherwise: (pnl/margin)/(notional/margin) = pnl/notional (the margin cancels), truncated toward 0.
    Each is computed with a single division, so it does not compound the two ratios' roundings."""
    if margin <= 0 or notional <= 0:
        return None
    pnl_ratio = _tdiv(pnl * WAD, margin)
    leverage = notional * WAD // margin
    if pnl > 0:
        score = pnl * notional * WAD // (margin * margin)
    else:
        score = _tdiv(pnl * WAD, notional)
    return AdlScore(pnl, margin, notional, pnl_ratio, leverage, score)


def adl_ranking(scores: Sequence[tuple[K, int]]) -> list[tuple[K, int, int]]:
    """(key, rank, score), highest score first, rank 1 = first in line; equal scores keep their input
    order (give the keys in a fixed order, e.g. by account, for a deterministic ranking)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i][1])
    return [(scores[i][0], n, scores[i][1]) for n, i in enumerate(order, start=1)]
