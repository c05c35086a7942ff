"""`keeper whatif`: what becomes liquidatable if prices move — protocol-agnostic.

A shock names asset symbols (`ETH=-10%`); each adapter says which of its markets carry which symbol
(`Adapter.shock_symbols`, matched case-insensitively, ETH ≡ WETH and BTC ≡ WBTC) and re-evaluates
every position with those markets' oracle and market prices moved (`Adapter.evaluate_shocked`, exact
integer maths; the perp adapter's model is in keeper/risk/perp_liq.py). An adapter without a what-if
model raises NotImplementedError and is skipped with a note. The liquidation map repeats that per price
step and reports, per value token, the positions, notional and reward that become liquidatable at each
step (new ones) and in total. Nothing here signs, sends or writes to the chain or the state file.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from keeper.types import Evaluation, PositionKey, Status

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.types import Block

WAD = 10**18
ALIASES = {"WETH": "ETH", "WBTC": "BTC"}
# What the protocol would liquidate (by anyone, now): the keeper's own reasons not to (lockout, bad debt
# only a backstop LP may take, no money for it, unprofitable) do not take a position out of the set.
LIQUIDATABLE = frozenset({Status.PARTIAL, Status.FULL, Status.LOCKOUT, Status.BAD_DEBT, Status.UNAFFORDABLE, Status.UNPROFITABLE})
MAX_STEPS = 1000


class ShockError(ValueError):
    """A shock, a step range or a symbol the user gave is not valid (exit 2, the message names it)."""


def canonical(symbol: str) -> str:
    """Upper case, WETH → ETH, WBTC → BTC."""
    s = symbol.strip().upper()
    return ALIASES.get(s, s)


def parse_percent(text: str) -> Decimal:
    """ "-10%", "+5%", "−2.5 %", "3" → Decimal percent (−10, 5, −2.5, 3)."""
    t = text.strip().replace("−", "-").replace(" ", "")
    t = t.removesuffix("%")
    try:
        value = Decimal(t)
    except InvalidOperation:
        raise ShockError(f"{text!r} is not a percentage (e.g. -10%)") from None
    if not value.is_finite():
        raise ShockError(f"{text!r} is not a percentage (e.g. -10%)")
    return value


def factor_of(pct: Decimal) -> int:
    """Percent → price factor, 1e18 fixed point, exact (−10 → 0.9e18). Must leave a positive price."""
    f = (Decimal(100) + pct) * 10**16
    if f != f.to_integral_value():
        raise ShockError(f"{pct}%: at most 16 decimal places")
    if f <= 0:
        raise ShockError(f"{pct}%: a price cannot fall by 100 % or more")
    return int(f)


def parse_shock(text: str) -> tuple[str, Decimal]:
    """ "ETH=-10%" → ("ETH", Decimal(-10)); the symbol canonical."""
    sym, sep, pct = text.partition("=")
    if not sep or not sym.strip():
        raise ShockError(f"--shock {text!r}: expected SYMBOL=±P% (e.g. ETH=-10%)")
    value = parse_percent(pct)
    factor_of(value)
    return canonical(sym), value


def parse_steps(text: str, step: Decimal) -> list[Decimal]:
    """ "-1%..-30%" with step 1 → [−1, −2, …, −30]: from the first to the last, inclusive, `step` apart
    (its sign follows the range)."""
    first, sep, last = text.partition("..")
    if not sep:
        raise ShockError(f"--steps {text!r}: expected FROM..TO (e.g. -1%..-30%)")
    a, b = parse_percent(first), parse_percent(last)
    if step <= 0:
        raise ShockError(f"--step {step}%: must be > 0")
    n = int(abs(b - a) / step) + 1
    if n > MAX_STEPS:
        raise ShockError(f"--steps {text!r}: {n} steps (at most {MAX_STEPS}); use a larger --step")
    sign = -1 if b < a else 1
    out = [a + sign * step * i for i in range(n)]
    for p in out:
        factor_of(p)
    return out


def symbol_table(adapters: Iterable[Adapter]) -> dict[str, dict[str, str]]:
    """adapter name → {market: canonical symbol}."""
    return {a.name: {m: canonical(s) for m, s in a.shock_symbols().items()} for a in adapters}


def match(symbols: dict[str, dict[str, str]], shocks: dict[str, Decimal]) -> dict[str, dict[str, int]]:
    """adapter name → {market: factor} for the shocked symbols; a symbol no market carries is a ShockError
    naming it (and the known ones)."""
    known = {s for table in symbols.values() for s in table.values()}
    unknown = sorted(set(shocks) - known)
    if unknown:
        raise ShockError(
            f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (markets here: {', '.join(sorted(known)) or 'none'})"
        )
    out: dict[str, dict[str, int]] = {}
    for name, table in symbols.items():
        factors = {m: factor_of(shocks[s]) for m, s in table.items() if s in shocks}
        if factors:
            out[name] = factors
    return out


async def evaluate_shocked(a: Adapter, head: Block, factors: dict[str, int], twap: str) -> list[Evaluation]:
    """The adapter's what-if evaluation, passing the TWAP model only to adapters whose method takes one.
    Raises NotImplementedError for an adapter without a what-if model."""
    if "twap" in inspect.signature(a.evaluate_shocked).parameters:
        return await a.evaluate_shocked(head, factors, twap=twap)  # type: ignore[call-arg]
    return await a.evaluate_shocked(head, factors)


@dataclass(frozen=True)
class Hit:
    """A position liquidatable under the shock."""

    protocol: str
    kind: str  # adapter kind (perp_v1, llamma)
    market: str  # label
    market_address: str
    account: str
    status: str  # under the shock: partial, full, lockout, bad-debt, …
    now: str | None  # its status now (None: not evaluated now)
    reward: int | None  # value token 1e18, the keeper's reward under the shock
    notional: int | None  # value token 1e18
    cost: int | None  # estimated gas cost (value token 1e18) at the head's fees, typical gas; None: no price
    value_symbol: str

    @property
    def key(self) -> PositionKey:
        return PositionKey(self.protocol, self.market_address, self.account)

    @property
    def profit(self) -> int | None:
        """reward − estimated gas cost (the reward alone when the cost is unknown)."""
        if self.reward is None:
            return None
        return self.reward - (self.cost or 0)

    @property
    def new(self) -> bool:
        """Not liquidatable now (by the current evaluation)."""
        return self.now not in LIQUIDATABLE


def hits(
    a: Adapter,
    evals: Iterable[Evaluation],
    markets: Iterable[str],
    now: dict[PositionKey, str],
    cost: int | None,
) -> list[Hit]:
    """The liquidatable positions of `markets` among `evals`, as Hits."""
    wanted = set(markets)
    out = []
    for e in evals:
        if e.key.market not in wanted or e.status not in LIQUIDATABLE:
            continue
        notional = e.fields.get("notional")
        out.append(
            Hit(
                protocol=a.name,
                kind=a.kind,
                market=a.market_label(e.key.market),
                market_address=e.key.market,
                account=e.key.account,
                status=str(e.status),
                now=now.get(e.key),
                reward=e.est_reward,
                notional=notional if isinstance(notional, int) else None,
                cost=cost,
                value_symbol=a.value_symbol,
            )
        )
    out.sort(key=lambda h: (-(h.reward or 0), h.protocol, h.market, h.account))
    return out


@dataclass(frozen=True)
class MapRow:
    """One price step of the liquidation map, for one value token."""

    pct: Decimal
    value_symbol: str
    new_positions: int  # liquidatable at this step, not at the step before
    new_notional: int  # value token 1e18
    new_reward: int
    total_positions: int  # liquidatable at this step
    total_notional: int
    total_reward: int


def liquidation_map(steps: list[tuple[Decimal, list[Hit]]], value_symbols: Iterable[str] = ()) -> list[MapRow]:
    """Per step (in the order given; the first is the baseline) and value token (those of the hits and
    `value_symbols`): what is liquidatable, and what became so since the previous step. A position's
    notional and reward are those at the step where it is counted. A liquidation that would lose the
    liquidator money (LLAMMA: debt above the collateral's value, i.e. bad debt) counts with reward 0:
    nobody takes it for a reward, though its notional is still at risk."""
    symbols = sorted({h.value_symbol for _, hs in steps for h in hs} | set(value_symbols))
    rows: list[MapRow] = []
    prev: set[PositionKey] = set()
    for pct, hs in steps:
        for sym in symbols:
            mine = [h for h in hs if h.value_symbol == sym]
            new = [h for h in mine if h.key not in prev]
            rows.append(
                MapRow(
                    pct,
                    sym,
                    len(new),
                    sum(h.notional or 0 for h in new),
                    sum(max(0, h.reward or 0) for h in new),
                    len(mine),
                    sum(h.notional or 0 for h in mine),
                    sum(max(0, h.reward or 0) for h in mine),
                )
            )
        prev = {h.key for h in hs}
    return rows


def pct_text(pct: Decimal) -> str:
    """Decimal percent → "+5%", "-10%", "0%", "-2.5%"."""
    s = format(pct.normalize(), "f") if pct != 0 else "0"
    return f"{'+' if pct > 0 else ''}{s}%"
